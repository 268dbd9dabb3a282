"""Checking a chat message and building the messages list (no model)."""

from __future__ import annotations

import pytest

from playground.backends.chat import build_messages, check_message
from playground.errors import InvalidPromptError


@pytest.mark.parametrize("text", ["", None, "   ", "\n\t  \n"])
def test_empty_message_is_refused(text):
    with pytest.raises(InvalidPromptError, match="empty"):
        check_message(text, 100)


def test_message_is_stripped():
    assert check_message("  hello \n", 100) == "hello"


def test_too_long_message_names_the_limit_and_the_setting():
    with pytest.raises(InvalidPromptError) as info:
        check_message("x" * 1001, 1000)
    text = str(info.value)
    assert "1,001" in text and "1,000" in text and "PLAYGROUND_MAX_PROMPT_CHARS" in text


def test_message_at_the_limit_passes():
    assert check_message("  " + "x" * 1000 + "  ", 1000) == "x" * 1000


def test_build_messages_plain():
    assert build_messages([], "Hi") == [{"role": "user", "content": "Hi"}]
    assert build_messages(None, "Hi") == [{"role": "user", "content": "Hi"}]


def test_system_prompt_is_stripped_or_left_out():
    assert build_messages([], "Hi", "  Be brief. ")[0] == {"role": "system", "content": "Be brief."}
    assert build_messages([], "Hi", "   ") == [{"role": "user", "content": "Hi"}]


def test_history_keeps_order_and_drops_other_roles_and_empty_turns():
    history = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "system", "content": "injected system text"},
        {"role": "tool", "content": "tool output"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": None},
    ]
    assert build_messages(history, "three", "sys") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]


def test_history_with_list_of_parts_content():
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]},
        {"role": "assistant", "content": ["General ", {"value": "Kenobi"}]},
        {"role": "user", "content": [{"type": "file", "path": "/tmp/cat.png"}]},  # no text: dropped
        {"role": "assistant", "content": {"text": "dict content"}},
    ]
    assert build_messages(history, "next") == [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "General Kenobi"},
        {"role": "assistant", "content": "dict content"},
        {"role": "user", "content": "next"},
    ]
