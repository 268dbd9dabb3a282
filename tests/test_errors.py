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


# ------------------------------------------------------------------ server paths in messages


def test_server_locations_are_replaced_by_placeholders(tmp_path, monkeypatch):
    import os
    import sysconfig
    import tempfile
    from pathlib import Path

    from playground.errors import redact_server_paths, server_locations

    monkeypatch.setenv("PLAYGROUND_MODELS_DIR", str(tmp_path / "models"))
    places = server_locations([("<data dir>", tmp_path / "data")])
    site_packages = sysconfig.get_paths()["purelib"]
    text = (f"{tmp_path / 'data' / 'runs' / 'r1'} | {tmp_path / 'models' / 'x.gguf'} | "
            f"{Path(tempfile.gettempdir()) / 'gradio' / 'a.csv'} | {os.getcwd()}/app.py | "
            f"'{site_packages}/datasets/load.py' | {Path.home() / '.cache'}")
    shown = redact_server_paths(text, places)
    assert "<data dir>/runs/r1" in shown and "<models dir>/x.gguf" in shown
    assert "<site-packages>/datasets/load.py" in shown and "<home>/.cache" in shown
    for place in (str(tmp_path), tempfile.gettempdir(), os.getcwd(), site_packages, str(Path.home())):
        assert place not in shown, shown


def test_redaction_leaves_ordinary_text_and_lookalikes_alone(tmp_path):
    from playground.errors import redact_server_paths

    places = (("<data dir>", str(tmp_path / "data")),)
    for text in ("hub:owner/name is not on the Hub", "1/2 of the rows", "and/or", "https://huggingface.co/x",
                 f"{tmp_path / 'database'}/x"):  # a sibling whose name starts like the data dir is not it
        assert redact_server_paths(text, places) == text
    assert redact_server_paths(f"({tmp_path / 'data'})", places) == "(<data dir>)"


def test_the_root_and_one_letter_paths_are_never_locations(monkeypatch):
    import os

    from playground.errors import redact_server_paths, server_locations

    monkeypatch.chdir("/")
    assert all(path not in ("/", "") for _, path in server_locations())
    assert redact_server_paths("see /etc/hosts") == "see /etc/hosts"
    assert os.getcwd() == "/"
