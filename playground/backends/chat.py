"""Chat: a history and a new message into a prompt, with the checks every tab needs, and the Quantized CPU
tab's controller (:class:`QuantizedChat`: a streamed answer on llama.cpp, and the precision comparison)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from playground.backends.base import GenerationParams, GenerationResult, Message
from playground.backends.compare import PrecisionComparison, compare_precisions
from playground.backends.selection import LLAMA_CPP
from playground.backends.slots import SlotHolder, no_slot
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


# --------------------------------------------------------------------------- the Quantized CPU tab's controller


@dataclass(frozen=True)
class ChatRequest:
    """One chat turn: the model, the new message, the conversation so far, the system prompt and the settings."""

    model_id: str
    message: str
    history: tuple = ()
    system: str = ""
    params: GenerationParams = field(default_factory=GenerationParams)


@dataclass(frozen=True)
class ChatUpdate:
    """The conversation after one step of an answer; ``result`` once it is finished."""

    history: list
    result: GenerationResult | None = None
    cancelled_waiting: bool = False  # stopped before a generation slot was free: nothing was generated


class QuantizedChat:
    """Chat with a GGUF model on llama.cpp, and the full-precision against quantised comparison.

    ``engines`` is the app's engine provider (``get(model_id, engine, progress)``, ``gguf_facts``);
    ``slot`` is held only while the model generates.
    """

    def __init__(self, engines, *, slot: SlotHolder = no_slot, max_chars: int = 20_000) -> None:
        self.engines = engines
        self.slot = slot
        self.max_chars = max_chars

    def reply(self, request: ChatRequest, cancel: threading.Event | None = None, progress=None
              ) -> Iterator[ChatUpdate]:
        """The answer to the new message, streamed: the conversation after each piece, then the result."""
        text = check_message(request.message, self.max_chars)
        engine = self.engines.get(request.model_id, LLAMA_CPP, progress=progress)
        generation = engine.stream(engine.format_chat(build_messages(request.history, text, request.system)),
                                   request.params)
        history = [*request.history, {"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        yield ChatUpdate(list(history))
        with self.slot(cancel) as admitted:
            if not admitted:
                yield ChatUpdate(list(history), cancelled_waiting=True)
                return
            answer = ""
            for piece in generation:
                if cancel is not None and cancel.is_set():
                    generation.cancel()
                answer += piece
                history[-1] = {"role": "assistant", "content": answer}
                yield ChatUpdate(list(history))
        assert generation.result is not None
        history[-1] = {"role": "assistant", "content": generation.result.text}
        yield ChatUpdate(list(history), result=generation.result)

    def compare(self, request: ChatRequest, progress=None) -> Iterator[PrecisionComparison]:
        """The same message in full precision (transformers) and quantised (llama.cpp): each step of both."""
        text = check_message(request.message, self.max_chars)
        updates = compare_precisions(self.engines, request.model_id, build_messages([], text, request.system),
                                     request.params, progress=progress, slot=self.slot)
        try:
            yield from updates
        finally:
            updates.close()
