"""Errors whose text is meant for the person using the app.

Every capability raises a subclass of :class:`PlaygroundError` for bad input
or a missing resource. The UI turns them into ``gr.Error`` with the same text,
the CLI prints them, and tests match on their class and message.

Two helpers keep those messages fit for a room of strangers: a full disk reads
as :func:`disk_full_error` (what could not be saved and what to do, never a raw
``[Errno 28]``), and :func:`redact_server_paths` replaces the server's own
places (data dir, models dir, temp folder, working dir, home, site-packages)
with short placeholders before a message is shown.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import site
import sys
import sysconfig
import tempfile
from types import MappingProxyType
from typing import Iterable, Mapping


class PlaygroundError(Exception):
    """A problem the user can act on; ``str(error)`` says what and how.

    ``str(error)`` is always English (the CLI, the logs and tests read it). An error a room often meets can
    also carry a translation key of the UI's locale files and the values its text needs
    (:meth:`keyed`); the UI then shows it in the reader's language, and falls back to the English text
    where it has no key.
    """

    key: str | None = None
    values: Mapping[str, object] = MappingProxyType({})

    def keyed(self, key: str, **values) -> "PlaygroundError":
        """This error, with the locale key and values of its translated text; returns ``self`` to raise."""
        self.key = key
        self.values = values
        return self


class SettingsError(PlaygroundError):
    """A configuration value (env var or CLI flag) is invalid."""


class UnknownModelError(PlaygroundError):
    """A model id that is not in the catalog."""


class ModelUnavailableError(PlaygroundError):
    """A catalog model whose weights cannot be found from any source."""


class InvalidGGUFError(PlaygroundError):
    """A GGUF file that is truncated, corrupted or not GGUF at all."""


class InvalidPromptError(PlaygroundError):
    """An empty prompt or one the model cannot take."""


class ContextOverflowError(InvalidPromptError):
    """The prompt plus the requested new tokens exceed the context window."""

    def __init__(self, prompt_tokens: int, max_new_tokens: int, context_window: int):
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.context_window = context_window
        room = max(context_window - max_new_tokens, 0)
        super().__init__(
            f"The prompt is {prompt_tokens} tokens and {max_new_tokens} new tokens were "
            f"requested, but the model's context window is {context_window} tokens. "
            f"Shorten the prompt to at most {room} tokens "
            f"or lower 'max new tokens'."
        )
        self.keyed("error.context_overflow", prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens,
                   context_window=context_window, room=room)


class EncoderInputOverflowError(ContextOverflowError):
    """An encoder-decoder's input exceeds the context window (its answer has positions of its own)."""

    def __init__(self, prompt_tokens: int, context_window: int):
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = 0
        self.context_window = context_window
        InvalidPromptError.__init__(
            self,
            f"The prompt is {prompt_tokens} tokens, but this encoder-decoder model reads at most {context_window} "
            f"tokens of input. Shorten the prompt (fewer or shorter demonstrations) to at most {context_window} "
            f"tokens.")
        self.keyed("error.encoder_overflow", prompt_tokens=prompt_tokens, context_window=context_window)


class InvalidParameterError(PlaygroundError):
    """A generation or training parameter out of its allowed range."""


class EngineUnavailableError(PlaygroundError):
    """The requested engine cannot run the requested model."""


class InferenceServerError(EngineUnavailableError):
    """The OpenAI-compatible server generation goes to cannot be reached, or refused a request; the message names
    its URL (never the API key)."""


class InvalidInputError(PlaygroundError):
    """Text or choices a tool cannot work with: empty text, a word that is not there, a bad span."""


class NoMaskError(InvalidInputError):
    """Fill-mask got a text with no mask token and no word that could be masked."""


class UnsupportedTaskError(PlaygroundError):
    """A model asked for a task its architecture or head cannot do (fill-mask on a decoder, ...)."""


class TemplateError(PlaygroundError):
    """A prompt template that does not parse, reaches for Python internals or uses an unknown variable."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(message)


class DataFileError(PlaygroundError):
    """An uploaded or bundled data file that cannot be used (format, columns, size, rows)."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(message)


class FinetuneConfigError(InvalidParameterError):
    """A fine-tuning config with an unknown key, a value out of range or a method the model cannot use."""


class TrainingError(PlaygroundError):
    """Fine-tuning could not start or finish: a model that cannot be trained this way, a failed step."""


class InsufficientMemoryError(TrainingError):
    """The memory estimate of a fine-tuning run does not fit the memory this machine has."""


class QuantizationUnavailableError(TrainingError):
    """4-bit (QLoRA) loading is not possible here: bitsandbytes missing or without support for this device."""


class SaveError(PlaygroundError):
    """A result (adapter, model, metrics, archive) could not be written: disk full, no permission, ..."""


class DiskFullError(SaveError):
    """A write failed because the server's disk (or the app's quota on it) is full."""


class WalkError(PlaygroundError):
    """A recorded walk (a presenter's replay) that cannot be read, saved or found: a bad file, a budget passed,
    an id that names no walk of this person."""


# --------------------------------------------------------------------------- disk full

# The system's ways of saying "no room left": the disk is full, or the user's quota on it is used up.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception it was raised from) is an OSError for a full disk or quota."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(what: str) -> DiskFullError:
    """The message for a write that found no room: what could not be saved, why, and what to do."""
    return DiskFullError(
        f"Could not save {what}: the server's disk is full (or the app's disk quota is used up). Free some space "
        f"(delete old fine-tuning runs or downloads you no longer need), or ask whoever hosts the app to make room "
        f"or give its data folder a larger budget, then try again.")


# --------------------------------------------------------------------------- server paths in messages


def server_locations(extra: Iterable[tuple[str, str | os.PathLike | None]] = ()
                     ) -> tuple[tuple[str, str], ...]:
    """(placeholder, absolute path) of the server's own places, longest path first.

    ``extra`` adds the running app's places (its data dir, its models dir); the rest are
    always known: PLAYGROUND_DATA_DIR / PLAYGROUND_MODELS_DIR from the environment, the
    Hugging Face and Gradio caches, the temporary folder, Python's packages, the working
    directory and the home directory.
    """
    candidates: list[tuple[str, str | os.PathLike | None]] = list(extra)
    environ = os.environ
    candidates += [("<data dir>", environ.get("PLAYGROUND_DATA_DIR")),
                   ("<models dir>", environ.get("PLAYGROUND_MODELS_DIR")),
                   ("<Hugging Face cache>", environ.get("HF_HUB_CACHE")),
                   ("<Hugging Face cache>", environ.get("HF_HOME")),
                   ("<datasets cache>", environ.get("HF_DATASETS_CACHE")),
                   ("<temp>", environ.get("GRADIO_TEMP_DIR")),
                   ("<temp>", tempfile.gettempdir())]
    paths = sysconfig.get_paths()
    candidates += [("<site-packages>", paths.get("purelib")), ("<site-packages>", paths.get("platlib"))]
    with contextlib.suppress(Exception):  # site may be stripped down in embedded interpreters
        candidates += [("<site-packages>", p) for p in site.getsitepackages()]
        candidates.append(("<site-packages>", site.getusersitepackages()))
    candidates += [("<python>", sys.prefix), ("<python>", sys.base_prefix), ("<python>", sys.exec_prefix)]
    with contextlib.suppress(OSError):  # the working directory may have been removed
        candidates.append(("<working dir>", os.getcwd()))
    candidates.append(("<home>", os.path.expanduser("~")))
    found: dict[str, str] = {}
    for placeholder, location in candidates:
        if not location:
            continue
        for text in {os.path.abspath(os.fspath(location)), os.path.realpath(os.fspath(location))}:
            text = text.rstrip("/\\")
            # The root (or a one-letter path) would swallow every path: never a location to hide.
            if len(text) > 2 and os.path.dirname(text) != text:
                found.setdefault(text, placeholder)
    return tuple(sorted(((p, t) for t, p in found.items()), key=lambda item: -len(item[1])))


def redact_server_paths(text: str, locations: Iterable[tuple[str, str]] | None = None) -> str:
    """``text`` with every known server location replaced by its placeholder (``<data dir>/runs/x``).

    A defence in depth for messages shown to users: messages should name what the user gave
    in the first place; this catches a path that slipped through (an exception's own text).
    """
    text = str(text)
    for placeholder, location in (server_locations() if locations is None else locations):
        if location in text:
            pattern = r"(?<![\w.-])" + re.escape(location) + r"(?=$|[/\\\s'\"`),:;\]}>])"
            text = re.sub(pattern, lambda _: placeholder, text)
    return text

