"""Bad input in the browser: one clear message, and the page left as it was.

A handler that raises ``gr.Error`` makes Gradio paint a red "Error" badge on
every output of the event (over a whole conversation for a chatbot), on top of
the results a person had. :func:`soft` wraps a handler so that, for the browser,
the same message is a ``gr.Warning`` toast and every output is skipped (the old
results stay). Scripts keep the exception: :func:`wire` registers the wrapped
handler on the visible trigger with no API name, and the plain handler, which
raises, under the API name on a hidden button (``gradio_client`` calls it by
name; a browser never clicks it).
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Sequence

import gradio as gr

from playground.config import Settings
from playground.errors import PlaygroundError
from playground.ui.i18n import Texts
from playground.ui.widgets import user_message


def skips(count: int):
    """What a handler returns to leave ``count`` outputs as they are."""
    if count == 1:
        return gr.skip()
    return tuple(gr.skip() for _ in range(count))


def message_for(exc: BaseException, settings: Settings, texts: Texts | None = None) -> str:
    """The message a person reads: a keyed PlaygroundError in their language (``user_message``), any other
    one as its own text with the server's paths hidden. A ``gr.Error`` made from a PlaygroundError
    (``user_errors``) is read through the error it was made from."""
    original = exc
    if isinstance(exc, gr.Error) and isinstance(exc.__context__, PlaygroundError):
        original = exc.__context__
    if isinstance(original, gr.Error):
        return str(original.message)
    return user_message(original, settings, texts)


def _texts(args, kwargs) -> Texts | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, gr.Request):
            return Texts.for_request(value)
    return None


def soft(fn: Callable, settings: Settings, outputs: int) -> Callable:
    """``fn`` whose PlaygroundError or gr.Error becomes a warning toast and skipped outputs (a generator stays
    a generator: what it showed before the error stays too)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (gr.Error, PlaygroundError) as exc:
                gr.Warning(message_for(exc, settings, _texts(args, kwargs)))
                yield skips(outputs)
        return generator

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (gr.Error, PlaygroundError) as exc:
            gr.Warning(message_for(exc, settings, _texts(args, kwargs)))
            return skips(outputs)
    return plain


def wire(triggers: Sequence[Callable], fn: Callable, inputs: list, outputs: list, *, settings: Settings,
         api_name: str, elem_id: str, **options) -> list:
    """``fn`` on each of ``triggers`` (e.g. ``button.click``) with soft errors, and under ``api_name`` on a
    hidden button with the exception kept (``elem_id`` names that button). Returns the browser's events
    (to chain a step that only the page needs)."""
    events = [trigger(soft(fn, settings, len(outputs)), inputs, outputs, api_name=False, **options)
              for trigger in triggers]
    hidden = gr.Button(visible=False, elem_id=elem_id)
    hidden.click(fn, inputs, outputs, api_name=api_name, **options)
    return events
