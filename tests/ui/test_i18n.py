"""Every UI text exists in English, Portuguese and French, and the tabs use only known keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from playground.ui.i18n import LANGUAGES, Texts, language_of, load_locales, t

UI_DIR = Path(__file__).resolve().parents[2] / "playground" / "ui"


def test_every_language_has_every_key():
    locales = load_locales()
    english = set(locales["en"])
    for lang in LANGUAGES:
        assert set(locales[lang]) == english, f"{lang}: missing {english - set(locales[lang])}, " \
                                              f"extra {set(locales[lang]) - english}"
        assert all(text.strip() for text in locales[lang].values()), f"{lang} has an empty text"


def test_placeholders_match_across_languages():
    locales = load_locales()
    for key, text in locales["en"].items():
        names = set(re.findall(r"{(\w+)", text))
        for lang in LANGUAGES:
            assert set(re.findall(r"{(\w+)", locales[lang][key])) == names, f"{lang}:{key}"


def test_keys_used_in_the_ui_exist():
    used = set()
    for path in UI_DIR.rglob("*.py"):
        used |= set(re.findall(r"""\bt\(\s*["']([\w.]+)["']""", path.read_text(encoding="utf-8")))
    assert used, "no translation keys found in the UI"
    missing = used - set(load_locales()["en"])
    assert not missing


def test_unknown_key_is_an_error():
    with pytest.raises(KeyError):
        t("no.such.key")


class _Request:
    def __init__(self, header):
        self.headers = {"accept-language": header}


@pytest.mark.parametrize("header, lang", [
    ("pt-BR,pt;q=0.9,en;q=0.8", "pt"), ("fr-FR,fr;q=0.9", "fr"), ("de-DE,de;q=0.9,fr;q=0.5", "fr"),
    ("de-DE", "en"), ("", "en"),
])
def test_language_from_the_browser(header, lang):
    assert language_of(_Request(header)) == lang


def test_server_side_texts_are_translated_and_formatted():
    assert Texts("pt")("quant.send") == "Enviar"
    assert "2.0×" in Texts("fr")("stats.speedup", speedup=2.0, memory=5.0)


def test_a_comparison_where_llama_cpp_was_slower_says_slower():
    from types import SimpleNamespace

    from playground.ui.tabs.quantized_cpu import comparison_summary

    faster = comparison_summary(SimpleNamespace(speedup=2.5, memory_ratio=4.0), Texts("en"))
    slower = comparison_summary(SimpleNamespace(speedup=0.4, memory_ratio=4.0), Texts("en"))
    assert "2.5× faster" in faster
    assert "2.5× slower" in slower and "faster" not in slower
    assert "plus lent" in comparison_summary(SimpleNamespace(speedup=0.5, memory_ratio=4.0), Texts("fr"))
    assert comparison_summary(SimpleNamespace(speedup=None, memory_ratio=4.0), Texts("en")) == ""


def test_a_waiting_person_reads_their_place_in_line_in_their_language():
    from playground.ui.widgets import queue_status

    assert queue_status(None, Texts("en")) == ""
    assert queue_status(0, Texts("en")) == "Reading your prompt…"
    assert queue_status(1, Texts("en")) == "Waiting for the model — 1 request ahead of you"
    assert queue_status(3, Texts("en")) == "Waiting for the model — 3 requests ahead of you"
    assert queue_status(3, Texts("pt")) == "Aguardando o modelo — 3 pedidos na sua frente"
    assert queue_status(1, Texts("fr")) == "En attente du modèle — 1 requête avant la vôtre"
    assert queue_status(0, Texts("fr")) == "Lecture de votre prompt…"
