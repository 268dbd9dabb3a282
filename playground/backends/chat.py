"""Turning a chat history and a new message into a prompt, with the checks every tab needs."""

from __future__ import annotations

from typing import Sequence

from playground.backends.base import Message
from playground.errors import InvalidPromptError

ROLES = ("system", "user", "assistant")


def check_message(text: str | None, max_chars: int) -> str:
    """The message stripped of surrounding space; raises InvalidPromptError when unusable."""
    text = (text or "").strip()
    if not text:
        raise InvalidPromptError("The message is empty: type something to send.")
    if len(text) > max_chars:
        raise InvalidPromptError(
            f"The message has {len(text):,} characters; the limit is {max_chars:,} "
            f"(PLAYGROUND_MAX_PROMPT_CHARS). Shorten it."
        )
    return text


def _content_text(content) -> str:
    # Chatbot histories may hold rich content (lists of parts); the models here read text only.
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    if isinstance(content, (list, tuple)):
        return "".join(_content_text(part) for part in content)
    return "" if content is None else str(content)


def build_messages(history: Sequence[dict], user_message: str, system_prompt: str = "") -> list[Message]:
    """Chat messages for a model: optional system prompt, the earlier turns, then the new message."""
    messages: list[Message] = []
    if system_prompt and system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt.strip()})
    for turn in history or []:
        role = turn.get("role")
        if role in ("user", "assistant"):
            text = _content_text(turn.get("content"))
            if text:
                messages.append({"role": role, "content": text})
    messages.append({"role": "user", "content": user_message})
    return messages
