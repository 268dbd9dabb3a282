"""Error toasts in the reader's language: a keyed PlaygroundError reads from the locale files, English stays
``str(error)``, and an error without a key (or with values its text lacks) falls back to the English text."""

from __future__ import annotations

import pytest

from playground.errors import ContextOverflowError, InvalidPromptError, PlaygroundError
from playground.ui.i18n import Texts, load_locales
from tests.helpers import offline_settings


def test_english_is_the_errors_own_text():
    exc = ContextOverflowError(900, 200, 1024)
    assert Texts("en").error(exc) == str(exc)


def test_a_keyed_error_reads_in_portuguese_and_french():
    exc = ContextOverflowError(900, 200, 1024)
    pt, fr = Texts("pt").error(exc), Texts("fr").error(exc)
    assert pt.startswith("O prompt tem 900 tokens") and "824" in pt
    assert fr.startswith("Le prompt fait 900 tokens") and "824" in fr
    empty = InvalidPromptError("The prompt is empty: type some text first.").keyed("error.empty_prompt")
    assert Texts("pt").error(empty) == "O prompt está vazio: digite algum texto primeiro."
    assert str(empty) == "The prompt is empty: type some text first."


@pytest.mark.parametrize("exc", [
    PlaygroundError("no key at all"),
    PlaygroundError("an unknown key").keyed("error.no_such_key"),
    PlaygroundError("a value missing").keyed("error.unknown_model", model="x"),  # {choices} is missing
])
def test_without_a_usable_key_the_english_text_is_shown(exc):
    assert Texts("pt").error(exc) == str(exc)


def test_the_errors_a_room_meets_carry_keys_from_their_raise_sites():
    from playground.backends.chat import check_message
    from playground.identity import RateLimiter
    from playground.models.catalog import Catalog
    from playground.prompting.data import UploadLimits, read_rows

    english = load_locales()["en"]
    raised = []
    for attempt in (lambda: check_message("  ", 100), lambda: check_message("x" * 101, 100),
                    lambda: Catalog.load().get("no-such-model"),
                    lambda: read_rows(b"x" * 20, "a.csv", UploadLimits(max_bytes=10))):
        with pytest.raises(PlaygroundError) as info:
            attempt()
        raised.append(info.value)
    limiter = RateLimiter(clock=lambda: 0.0)
    limiter.hit("generation", "me", 1, 60, "generations")
    with pytest.raises(PlaygroundError) as info:
        limiter.hit("generation", "me", 1, 60, "generations")
    raised.append(info.value)
    for exc in raised:
        assert exc.key in english, exc
        translated = Texts("pt").error(exc)
        assert translated != str(exc) and translated == Texts("pt")(exc.key, **exc.values)
    assert "no-such-model" in Texts("fr").error(raised[2])


def test_user_errors_shows_the_toast_in_the_given_language(tmp_path):
    import gradio as gr

    from playground.ui.widgets import user_errors, warning_text

    settings = offline_settings(tmp_path)
    with pytest.raises(gr.Error) as info, user_errors(settings, Texts("fr")):
        raise ContextOverflowError(900, 200, 1024)
    assert info.value.message.startswith("Le prompt fait 900 tokens") and info.value.title == "Erreur"
    with pytest.raises(gr.Error) as info, user_errors(settings):  # outside a request: English
        raise ContextOverflowError(900, 200, 1024)
    assert info.value.message == str(ContextOverflowError(900, 200, 1024)) and info.value.title == "Error"
    assert warning_text(ContextOverflowError(900, 200, 1024), settings, Texts("pt")).startswith("⚠ O prompt tem")


def test_a_browser_asking_for_portuguese_reads_the_toast_in_portuguese(tmp_path):
    """Through a real request: user_errors finds the reader's language without the handler passing it."""
    import gradio as gr
    from gradio_client import Client

    from playground.ui.widgets import user_errors

    settings = offline_settings(tmp_path)

    def answer(text):
        with user_errors(settings):
            raise InvalidPromptError("The prompt is empty: type some text first.").keyed("error.empty_prompt")

    def stream(text):
        yield "first"
        with user_errors(settings):
            raise ContextOverflowError(900, 200, 1024)

    with gr.Blocks() as demo:
        box, out = gr.Textbox(), gr.Textbox()
        gr.Button().click(answer, box, out, api_name="answer")
        gr.Button().click(stream, box, out, api_name="stream")
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        for header, expected in (("pt-BR,pt;q=0.9", "O prompt está vazio"), ("fr-FR", "Le prompt est vide"),
                                 ("en-US", "The prompt is empty")):
            client = Client(demo.local_url, headers={"Accept-Language": header}, verbose=False)
            with pytest.raises(Exception, match=expected):
                client.predict("x", api_name="/answer")
        client = Client(demo.local_url, headers={"Accept-Language": "pt-BR"}, verbose=False)
        with pytest.raises(Exception, match="O prompt tem 900 tokens"):
            client.predict("x", api_name="/stream")
    finally:
        demo.close()


def test_the_english_reference_lines_say_what_the_errors_say():
    """Translators read en.yaml: its line for a key is the error's own English text, with the same values."""
    from playground.backends.chat import check_message
    from playground.identity import RateLimiter
    from playground.models.catalog import Catalog
    from playground.prompting.data import read_rows

    limiter = RateLimiter(clock=lambda: 0.0)
    limiter.hit("run-address", "me", 1, 3600, "fine-tuning runs started from your network address")
    errors = [ContextOverflowError(10, 5000, 4096)]
    for attempt in (lambda: check_message("", 10), lambda: check_message("y" * 12_345, 10_000),
                    lambda: read_rows(b"z" * 2_500_000, "a.jsonl"), lambda: Catalog.load().get("no-such-model"),
                    lambda: limiter.hit("run-address", "me", 1, 3600,
                                        "fine-tuning runs started from your network address")):
        with pytest.raises(PlaygroundError) as info:
            attempt()
        errors.append(info.value)
    for exc in errors:
        assert Texts("en")(exc.key, **exc.values) == str(exc)
