"""UI text in English, Portuguese and French, from one YAML file per language.

Static labels go to the browser as ``gr.I18n`` keys and are translated there.
Text a handler composes at run time (speeds, statuses) is translated here on
the server, in the language the browser asked for, from the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import gradio as gr
from gradio.i18n import I18nData
import yaml

LOCALES_DIR = Path(__file__).with_name("locales")
LANGUAGES = ("en", "pt", "fr")
DEFAULT_LANGUAGE = "en"


@lru_cache(maxsize=1)
def load_locales() -> dict[str, dict[str, str]]:
    """{language: {key: text}} read from the locale files (cached: they never change at run time)."""
    locales = {}
    for lang in LANGUAGES:
        data = yaml.safe_load((LOCALES_DIR / f"{lang}.yaml").read_text(encoding="utf-8")) or {}
        locales[lang] = {str(k): str(v) for k, v in data.items()}
    return locales


def t(key: str) -> I18nData:
    """A translatable label for a component; the browser shows it in the user's language."""
    if key not in load_locales()[DEFAULT_LANGUAGE]:
        raise KeyError(f"Missing translation key {key!r} in {LOCALES_DIR / 'en.yaml'}")
    return I18nData(key)


def make_i18n() -> gr.I18n:
    return gr.I18n(**load_locales())


def language_of(request: gr.Request | None) -> str:
    """The first supported language in the browser's Accept-Language header."""
    header = ""
    if request is not None:
        headers = getattr(request, "headers", None) or {}
        header = headers.get("accept-language", "") if hasattr(headers, "get") else ""
    for part in header.split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT_LANGUAGE


@dataclass(frozen=True)
class Texts:
    """Server-side translation for one request's language."""

    language: str = DEFAULT_LANGUAGE

    def __call__(self, key: str, **values) -> str:
        locales = load_locales()
        text = locales.get(self.language, {}).get(key) or locales[DEFAULT_LANGUAGE][key]
        return text.format(**values) if values else text

    @classmethod
    def for_request(cls, request: gr.Request | None) -> "Texts":
        return cls(language_of(request))
