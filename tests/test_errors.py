"""User-facing errors: one base class, and a context-overflow message with the numbers."""

from __future__ import annotations

import pytest

from playground import errors
from playground.errors import ContextOverflowError, InvalidPromptError, PlaygroundError


@pytest.mark.parametrize("name", ["SettingsError", "UnknownModelError", "ModelUnavailableError", "InvalidGGUFError",
                                  "InvalidPromptError", "ContextOverflowError", "InvalidParameterError",
                                  "EngineUnavailableError", "InvalidInputError", "NoMaskError",
                                  "UnsupportedTaskError"])
def test_every_error_is_a_playground_error(name):
    assert issubclass(getattr(errors, name), PlaygroundError)


def test_context_overflow_message_has_the_numbers():
    exc = ContextOverflowError(prompt_tokens=900, max_new_tokens=200, context_window=1024)
    assert isinstance(exc, InvalidPromptError)
    text = str(exc)
    for number in ("900", "200", "1024", "824"):
        assert number in text
    assert (exc.prompt_tokens, exc.max_new_tokens, exc.context_window) == (900, 200, 1024)


def test_context_overflow_never_suggests_a_negative_length():
    assert "at most 0 tokens" in str(ContextOverflowError(10, 5000, 4096))
