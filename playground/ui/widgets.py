"""Widgets several tabs share: generation parameters and error reporting."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from playground.backends.base import GenerationParams
from playground.config import Settings
from playground.errors import PlaygroundError, redact_server_paths, server_locations
from playground.ui.i18n import Texts, t

GENERATION_GROUP = "generation"  # the Gradio concurrency group of every generating event


@dataclass
class ParamWidgets:
    max_new_tokens: gr.Slider
    temperature: gr.Slider
    top_p: gr.Slider
    top_k: gr.Slider
    repetition_penalty: gr.Slider
    seed: gr.Number
    stop: gr.Textbox

    def as_list(self) -> list:
        return [self.max_new_tokens, self.temperature, self.top_p, self.top_k, self.repetition_penalty,
                self.seed, self.stop]


def parameter_widgets(settings: Settings, prefix: str, max_new_tokens: int = 256, temperature: float | None = None,
                      seed: int | None = None) -> ParamWidgets:
    """Sliders with the ranges and help texts of ``GenerationParams``; ``temperature`` and ``seed`` set a tab's
    own starting values (default: GenerationParams' temperature, and a random seed)."""
    defaults = GenerationParams()

    def slider(name: str, value, step, high=None):
        low, top = GenerationParams.bounds(name)
        return gr.Slider(low, high if high is not None else top, value=value, step=step, label=t(f"param.{name}"),
                         info=t(f"param.{name}.help"), elem_id=f"{prefix}-{name.replace('_', '-')}")

    limit = settings.request_token_limit
    return ParamWidgets(
        max_new_tokens=slider("max_new_tokens", min(max_new_tokens, limit), 1, high=limit),
        temperature=slider("temperature", defaults.temperature if temperature is None else temperature, 0.05),
        top_p=slider("top_p", defaults.top_p, 0.01),
        top_k=slider("top_k", defaults.top_k, 1, high=200),
        repetition_penalty=slider("repetition_penalty", defaults.repetition_penalty, 0.05),
        seed=gr.Number(value=-1 if seed is None else seed, precision=0, label=t("param.seed"),
                       info=t("param.seed.help"), elem_id=f"{prefix}-seed"),
        stop=gr.Textbox(value="", label=t("param.stop"), info=t("param.stop.help"), elem_id=f"{prefix}-stop"),
    )


def params_from_widgets(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed, stop,
                        token_limit: int) -> GenerationParams:
    """A validated GenerationParams from widget values (seed -1 or empty means random)."""
    seed_value = None if seed in (None, "") or int(seed) < 0 else int(seed)
    stops = tuple(s.replace("\\n", "\n") for s in (p.strip() for p in (stop or "").split(",")) if s)
    params = GenerationParams(
        max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_p=float(top_p),
        top_k=int(top_k), repetition_penalty=float(repetition_penalty), seed=seed_value, stop=stops,
    )
    return params.validated(token_limit)


def queue_status(position: int | None, texts: Texts) -> str:
    """What a person whose request waits for its turn reads in the status line ("" once it is not waiting):
    how many requests are ahead of theirs, or that the model is reading their prompt (position 0)."""
    if position is None:
        return ""
    if position == 0:
        return texts("status.reading_prompt")
    return texts("status.queue_one") if position == 1 else texts("status.queue_many", ahead=position)


def user_message(exc: BaseException | str, settings: Settings, texts: Texts | None = None) -> str:
    """The text of an error as a person may see it: in their language where the error has a locale key
    (``texts``, else the language of the request being handled), and with the server's places (data dir,
    models dir, temp folder, working dir, home, site-packages) replaced by short placeholders such as
    ``<data dir>``."""
    places = [("<data dir>", settings.data_dir), ("<models dir>", settings.models_dir)]
    return redact_server_paths((texts or Texts.current()).error(exc), server_locations(places))


def warning_text(exc: BaseException | str, settings: Settings, texts: Texts | None = None) -> str:
    """An error shown inside a component rather than as a toast: "⚠ " and its :func:`user_message`."""
    return f"⚠ {user_message(exc, settings, texts)}"


@contextlib.contextmanager
def user_errors(settings: Settings, texts: Texts | None = None):
    """Show a PlaygroundError as a Gradio error toast, in the reader's language where the error has a locale
    key (``texts``, else the language of the request being handled), server paths hidden (never a
    traceback)."""
    try:
        yield
    except PlaygroundError as exc:
        texts = texts or Texts.current()
        raise gr.Error(user_message(exc, settings, texts), title=texts("error.title"),
                       print_exception=False) from None


# Handlers of generating events in flight per generation slot: their generations wait for
# services.generation_slots, while the rest of each handler (rendering, loading a model) goes on beside them.
HANDLERS_PER_SLOT = 4


def generation_handlers(settings: Settings) -> int:
    """How many handlers of generating events may be in flight at once, app-wide: four per generation slot,
    plus one per sequence a llama.cpp model decodes together (``settings.parallel``), so a batched decode loop
    is given enough requests to fill its batch (a generation that joined the loop needs no slot)."""
    return settings.concurrency * HANDLERS_PER_SLOT + settings.parallel


def generation_event_options(settings: Settings) -> dict:
    """The queue options every generating event shares: one concurrency group ("generation"), sized by
    :func:`generation_handlers`. No event that does not generate may join it (tests/ui/test_event_queues.py)."""
    return dict(concurrency_limit=generation_handlers(settings), concurrency_id=GENERATION_GROUP)


def empty_table() -> pd.DataFrame:
    """A table's starting value before any result: no header row, so nothing is shown untranslated (headers
    are named in the reader's language by the handler that fills the table)."""
    return pd.DataFrame({"": []})


def _filled(value) -> bool:
    if value is None or (isinstance(value, str) and not value):
        return False
    return not (isinstance(value, pd.DataFrame) and value.empty and len(value.columns) == 0)


def _follow_values(events, components: list, prop: str) -> None:
    def follow(*values):
        updates = [gr.update(**{prop: _filled(value)}) for value in values]
        return updates[0] if len(updates) == 1 else updates

    for event in events:
        event.success(follow, components, components, api_name=False, queue=False, show_progress="hidden")


def reveal_when_filled(events, components: list) -> None:
    """After each of ``events``, show every one of ``components`` that now holds a value (and hide an empty
    one). The event itself returns plain values, so a script's result is the table or file, never a Gradio
    update; only the page needs to know what to show."""
    _follow_values(events, components, "visible")


def enable_when_filled(events, components: list) -> None:
    """After each of ``events``, make each of ``components`` (download buttons) clickable once it holds a
    file, and not while it is empty; the event itself returns the plain file path (see reveal_when_filled)."""
    _follow_values(events, components, "interactive")
