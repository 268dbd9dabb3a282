"""Errors whose text is meant for the person using the app.

Every capability raises a subclass of :class:`PlaygroundError` for bad input
or a missing resource. The UI turns them into ``gr.Error`` with the same text,
the CLI prints them, and tests match on their class and message.
"""

from __future__ import annotations


class PlaygroundError(Exception):
    """A problem the user can act on; ``str(error)`` says what and how."""


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
        super().__init__(
            f"The prompt is {prompt_tokens} tokens and {max_new_tokens} new tokens were "
            f"requested, but the model's context window is {context_window} tokens. "
            f"Shorten the prompt to at most {max(context_window - max_new_tokens, 0)} tokens "
            f"or lower 'max new tokens'."
        )


class InvalidParameterError(PlaygroundError):
    """A generation or training parameter out of its allowed range."""


class EngineUnavailableError(PlaygroundError):
    """The requested engine cannot run the requested model."""


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
