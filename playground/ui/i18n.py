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


def current_request() -> gr.Request | None:
    """The request of the event being handled, or None outside one.

    Gradio keeps it in a context variable while a handler (or a generator's step) runs; reading it here lets
    error reporting answer in the reader's language without every handler passing its request along.
    """
    from gradio.context import LocalContext

    return LocalContext.request.get(None)


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

    def has(self, key: str) -> bool:
        return key in load_locales()[DEFAULT_LANGUAGE]

    def error(self, exc: BaseException | str) -> str:
        """The text of an error for this language.

        A PlaygroundError made with :meth:`~playground.errors.PlaygroundError.keyed` reads from the locale
        files; anything else, an unknown key, or values its text cannot take read as ``str(exc)``. English
        is always ``str(exc)``: the locale's English line is the translators' reference, not a second wording.
        """
        key = getattr(exc, "key", None)
        if self.language == DEFAULT_LANGUAGE or not key or not self.has(key):
            return str(exc)
        try:
            return self(key, **dict(getattr(exc, "values", None) or {}))
        except (KeyError, IndexError, ValueError, TypeError):  # a text that wants a value the error lacks
            return str(exc)

    @classmethod
    def for_request(cls, request: gr.Request | None) -> "Texts":
        return cls(language_of(request))

    @classmethod
    def current(cls) -> "Texts":
        """The texts for the language of the request being handled (English outside a request)."""
        return cls.for_request(current_request())
