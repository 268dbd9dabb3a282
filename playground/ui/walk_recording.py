"""Recording a walk in presenter mode: the tabs' main results, kept per browser session, saved as a walk to replay.

Nothing in the tabs changes. Once the app is built, :func:`install_recording` wraps the handlers of the events
whose results a walk keeps (``RECORDED_EVENTS``, by API name, and the same handlers on the page's own buttons,
which ``soft_errors.wire`` registers without a name): after a handler returns, or after a generator's last
yield, what it showed is turned into blocks (:func:`step_from_outputs`, by component kind) and added to the
recording of the request's browser session, if that session records. A recording that fails never costs the
presenter the result: the handler's outputs pass through unchanged.

:func:`recording_panel` is the small bar under the title in presenter mode: "● Record", the recording's status,
a title and "Save walk", which writes it to the person's walks (``playground.walks.WalkStore``).
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import gradio as gr
import pandas as pd
from gradio.i18n import I18nData

from playground import __version__
from playground.backends.chat import content_text
from playground.services import Services
from playground.ui.i18n import Texts, current_request, t
from playground.ui.widgets import user_errors
from playground.walks import Block, LossEvent, RecordingStatus, WalkRecorder, WalkStep, WalkStore, clip

log = logging.getLogger(__name__)

# API name of an event whose result a walk keeps -> the tab it belongs to (a locale key tab.<name>).
RECORDED_EVENTS = {
    "architectures_run": "architectures",
    "prompt_lab_run": "prompt_lab",
    "prompt_lab_compare": "prompt_lab",
    "prompt_lab_evaluate": "prompt_lab",
    "finetune_poll": "finetune",
    "quantized_chat": "quantized",
    "quantized_compare": "quantized",
    "quantization_ladder": "quantization",
}
# Outputs a step leaves out: the Fine-tune tab's drawn loss curve (the replay redraws it from the run's events)
# and its table, chart and picker of all the person's runs (their other runs are not this walk's business).
SKIPPED_OUTPUTS = frozenset({"ft-loss", "ft-runs", "ft-runs-chart", "ft-compare-runs"})
# Inputs worth showing beside a result: what was typed or chosen (sliders and numbers are the parameters).
INPUT_KINDS = (gr.Textbox, gr.Dropdown, gr.Radio, gr.CheckboxGroup)
MAX_INPUT_CHARS = 400
STATUS_POLL_S = 3.0


# ------------------------------------------------------------------------------ outputs into blocks


def _is_update(value: Any) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update"


@dataclass
class Shown:
    """What an event's outputs show once it ends: each output's value, and its visibility where the event set it
    (None: as it was before the event)."""

    values: list
    visible: list


def merged_outputs(previous: Shown | None, value: Any, outputs: Sequence) -> Shown:
    """The outputs as the page shows them after ``value``: a skip or an update without a value keeps what was
    there; an update with a value, or a plain value, replaces it; an update's ``visible`` is kept too."""
    count = len(outputs)
    if isinstance(value, dict) and not _is_update(value) and value and all(k in outputs for k in value):
        values = [value.get(component, gr.skip()) for component in outputs]  # {component: value}
    elif count == 1:
        values = [value]
    else:
        values = list(value) if isinstance(value, (tuple, list)) else [value]
    shown = Shown(list(previous.values), list(previous.visible)) if previous is not None else \
        Shown([None] * count, [None] * count)
    for index, new in enumerate(values[:count]):
        if _is_update(new):
            if "value" in new:
                shown.values[index] = new["value"]
            if "visible" in new:
                shown.visible[index] = new["visible"] is True
        else:
            shown.values[index] = new
    return shown


def session_blocks() -> dict:
    """The components as this browser session has them now (Gradio keeps a session's copy of each component an
    event updated: a row another event showed, a table it hid); empty outside an event."""
    from gradio.context import LocalContext

    config = LocalContext.blocks_config.get(None)
    return getattr(config, "blocks", None) or {}


def visible_now(component, blocks: dict) -> bool:
    """Whether ``component`` and every block around it are visible in this session (fields a tab shows only for
    some choices, such as the Prompt Lab's few-shot and chain-of-thought rows, are hidden otherwise)."""
    block = component
    while block is not None:
        current = blocks.get(getattr(block, "_id", None), block)
        if getattr(current, "visible", True) is not True:
            return False
        block = getattr(block, "parent", None)
    return True


def shown_text(value: Any, texts: Texts) -> str:
    """A component's label or choice as the reader saw it (a locale key, translated in the recording's language)."""
    if isinstance(value, I18nData):
        return texts(value.key) if texts.has(value.key) else value.key
    return "" if value is None else str(value)


def _label(component, texts: Texts) -> str:
    return shown_text(getattr(component, "label", None), texts)


def _table(value: Any, label: str) -> Block | None:
    if isinstance(value, pd.DataFrame):
        if value.empty:
            return None
        return Block.table([str(c) for c in value.columns], value.head(200).values.tolist(), label)
    if isinstance(value, dict) and "data" in value:
        return Block.table(value.get("headers") or [], value.get("data") or [], label) if value.get("data") else None
    if isinstance(value, list) and value and all(isinstance(row, (list, tuple)) for row in value):
        return Block.table([], value, label)
    return None


def _scores(value: Any, label: str) -> Block | None:
    if isinstance(value, dict) and "confidences" in value:
        pairs = {str(c.get("label")): c.get("confidence", 0.0) for c in value.get("confidences") or []}
    elif isinstance(value, dict):
        pairs = {str(k): v for k, v in value.items() if isinstance(v, (int, float))}
    elif isinstance(value, str) and value:
        pairs = {value: 1.0}
    else:
        return None
    return Block.scores(pairs, label) if pairs else None


def _chat(value: Any, label: str) -> Block | None:
    if not isinstance(value, (list, tuple)) or not value:
        return None
    messages = []
    for message in value:
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
        text = content_text(content, "\n")
        if role and text:
            messages.append((str(role), text))
    return Block.chat(messages, label) if messages else None


def _loss(value: Any) -> Block | None:
    """A Fine-tune poll's cursor (its loss points so far) as a loss curve; any other state has none."""
    points = getattr(value, "points", None)
    if not points:
        return None
    events = []
    for point in points:
        try:
            events.append(LossEvent(int(point.step), float(point.loss), str(point.kind)))
        except (AttributeError, TypeError, ValueError):
            return None
    block = Block.loss(events)
    return block if block.events else None


def block_for(component, value: Any, texts: Texts) -> Block | None:
    """What one output showed, as a block (None for nothing worth replaying: controls, files, plots, empties)."""
    if value is None or getattr(component, "elem_id", None) in SKIPPED_OUTPUTS:
        return None
    label = _label(component, texts)
    if isinstance(component, gr.State):  # BrowserState too
        return _loss(value)
    if isinstance(component, gr.Markdown):
        return Block.markdown(value, label) if isinstance(value, str) and value.strip() else None
    if isinstance(component, (gr.Textbox, gr.Code)):
        return Block.plain(value, label) if isinstance(value, str) and value.strip() else None
    if isinstance(component, gr.HTML):
        block = Block.html(value, label) if isinstance(value, str) else None
        return block if block is not None and not block.empty else None
    if isinstance(component, gr.Dataframe):
        return _table(value, label)
    if isinstance(component, gr.Label):
        return _scores(value, label)
    if isinstance(component, gr.Chatbot):
        return _chat(value, label)
    return None


def _choice_label(component, value: Any, texts: Texts) -> str:
    for choice in getattr(component, "choices", None) or []:
        shown, inner = choice if isinstance(choice, (tuple, list)) else (choice, choice)
        if inner == value:
            return shown_text(shown, texts)
    return shown_text(value, texts)


def inputs_block(components: Sequence, values: Sequence, texts: Texts, blocks: dict | None = None) -> Block | None:
    """What was typed or chosen for the result: (the field's label, its value) for each text or choice input
    that was on the page."""
    rows = []
    for component, value in zip(components, values):
        if not isinstance(component, INPUT_KINDS) or value in (None, "", []) or not visible_now(component, blocks or {}):
            continue
        if isinstance(value, (list, tuple)):
            shown = ", ".join(_choice_label(component, v, texts) for v in value)
        elif isinstance(component, (gr.Dropdown, gr.Radio)):
            shown = _choice_label(component, value, texts)
        else:
            shown = str(value)
        label = _label(component, texts)
        if label:
            rows.append((label, clip(shown, MAX_INPUT_CHARS)))
    if not rows:
        return None
    return Block.table([texts("replay.col.field"), texts("replay.col.value")], rows, texts("replay.inputs"))


def step_from_outputs(endpoint: str, block_fn, input_values: Sequence, shown: Shown, texts: Texts,
                      components: dict | None = None) -> tuple[WalkStep | None, str]:
    """(the step, the key it replaces itself under) for one finished event; (None, "") when it showed nothing.

    ``components`` are the session's components (:func:`session_blocks`): an output that is hidden on the page
    is left out. A Fine-tune poll is a step only once its run has loss points, and each later poll of the same
    run replaces it, so the walk keeps the run's last state (its whole curve, its scores)."""
    components = components or {}
    blocks = []
    for component, value, visible in zip(block_fn.outputs, shown.values, shown.visible):
        if visible is False or (visible is None and not visible_now(component, components)):
            continue  # hidden on the page: this event hid it, or it was hidden before
        block = block_for(component, value, texts)
        if block is not None:
            blocks.append(block)
    key = ""
    if endpoint == "finetune_poll":
        if not any(block.kind == "loss" for block in blocks):
            return None, ""
        cursor = next((value for value in shown.values if getattr(value, "points", None)), None)
        key = f"finetune_poll:{getattr(cursor, 'run_id', '')}"
    if not blocks:
        return None, ""
    asked = inputs_block(block_fn.inputs, input_values, texts, components)
    if asked is not None:
        blocks.insert(0, asked)
    english = Texts()
    title = english(f"replay.endpoint.{endpoint}")
    return WalkStep(tab=RECORDED_EVENTS[endpoint], endpoint=endpoint, title=title, blocks=tuple(blocks[:40])), key


# ------------------------------------------------------------------------------ the hook on the built app


def _request_of(args, kwargs) -> gr.Request | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, gr.Request):
            return value
    return current_request()


def _input_values(args: tuple, count: int) -> list:
    """The inputs' values among a handler's arguments (a gr.Request or gr.Progress Gradio adds is not one)."""
    return [value for value in args if not isinstance(value, (gr.Request, gr.Progress))][:count]


@dataclass
class _Hook:
    recorder: WalkRecorder
    endpoint: str
    block_fn: Any

    def done(self, request: gr.Request | None, args: tuple, shown: Shown | None) -> None:
        session = getattr(request, "session_hash", None)
        if shown is None or not session or not self.recorder.is_recording(session):
            return
        try:
            texts = Texts.for_request(request)
            step, key = step_from_outputs(self.endpoint, self.block_fn, _input_values(args, len(self.block_fn.inputs)),
                                          shown, texts, session_blocks())
            if step is not None:
                self.recorder.add(session, step, key=key, language=texts.language)
        except Exception:  # a recording that fails must not cost the presenter the result on screen
            log.warning("could not record a step of %s", self.endpoint, exc_info=True)


def recording(fn: Callable, hook: _Hook) -> Callable:
    """``fn`` that hands what it showed to ``hook`` when it ends (a generator: after its last yield)."""
    outputs = hook.block_fn.outputs
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            request = _request_of(args, kwargs)
            shown = None
            for value in fn(*args, **kwargs):
                shown = merged_outputs(shown, value, outputs)
                yield value
            hook.done(request, args, shown)
        return generator
    if inspect.isasyncgenfunction(fn) or inspect.iscoroutinefunction(fn):
        return fn  # no recorded event is async; left as it is rather than recorded wrongly

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        value = fn(*args, **kwargs)
        hook.done(_request_of(args, kwargs), args, merged_outputs(None, value, outputs))
        return value
    return plain


def _same_handler(a: Callable, b: Callable) -> bool:
    return inspect.unwrap(a) == inspect.unwrap(b)


def install_recording(demo: gr.Blocks, recorder: WalkRecorder) -> list[str]:
    """Wrap the handlers of ``RECORDED_EVENTS`` (named ones and the page's unnamed twins); returns the API names
    found, in the app's order."""
    named = {block_fn.api_name: block_fn.fn for block_fn in demo.fns.values()
             if block_fn.fn is not None and block_fn.api_name in RECORDED_EVENTS}
    for block_fn in demo.fns.values():
        if block_fn.fn is None:
            continue
        endpoint = next((name for name, fn in named.items() if _same_handler(block_fn.fn, fn)), None)
        if endpoint is not None:
            block_fn.fn = recording(block_fn.fn, _Hook(recorder, endpoint, block_fn))
    return list(named)


# ------------------------------------------------------------------------------ the bar under the title


def status_text(status: RecordingStatus, texts: Texts) -> str:
    if status.full:
        return texts("walk.status.full", steps=status.steps)
    if not status.recording and not status.steps:
        return texts("walk.idle")
    key = "walk.status.on" if status.recording else "walk.status.off"
    return texts(key, steps=status.steps, kb=max(1, round(status.size / 1000)) if status.steps else 0)


def offline_models(services: Services) -> list[str]:
    resolver = services.engines.resolver
    return [spec.id for spec in services.catalog.models if resolver.is_available_offline(spec)]


@dataclass(frozen=True)
class RecordingPanel:
    record: gr.Checkbox
    status: gr.Markdown


def recording_panel(services: Services, owner: gr.BrowserState, recorder: WalkRecorder,
                    store: WalkStore) -> RecordingPanel:
    """"● Record", the status, a title and "Save walk" (presenter mode only)."""
    settings = services.settings
    with gr.Row(elem_id="walk-recorder", elem_classes=["walk-recorder"], equal_height=True):
        record = gr.Checkbox(False, label=t("walk.record"), info=t("walk.record_info"), elem_id="walk-record",
                             scale=1, min_width=160)
        status = gr.Markdown(t("walk.idle"), elem_id="walk-status")
        title = gr.Textbox(label=t("walk.title"), placeholder=t("walk.title_placeholder"), max_length=200,
                           elem_id="walk-title", scale=2)
        save = gr.Button(t("walk.save"), elem_id="walk-save", scale=0, min_width=160)
    timer = gr.Timer(STATUS_POLL_S)

    def set_recording(on: bool, request: gr.Request) -> str:
        return status_text(recorder.set_recording(request.session_hash or "", bool(on)), Texts.for_request(request))

    def show_status(request: gr.Request) -> str:
        return status_text(recorder.status(request.session_hash or ""), Texts.for_request(request))

    def save_walk(title_value: str, token: str, request: gr.Request):
        texts = Texts.for_request(request)
        session = request.session_hash or ""
        walk = recorder.take(session, (title_value or "").strip() or texts("walk.default_title"), __version__,
                             offline_models(services))
        with user_errors(settings):
            store.save(walk, services.identities.owner_of(token or ""))
        gr.Info(texts("walk.saved", title=walk.title, steps=len(walk.steps)))
        return status_text(recorder.clear(session), texts), ""

    record.change(set_recording, record, status, api_name="walk_record", queue=False, show_progress="hidden")
    timer.tick(show_status, None, status, api_name="walk_status", queue=False, show_progress="hidden")
    save.click(save_walk, [title, owner], [status, title], api_name="walk_save", concurrency_limit=None,
               concurrency_id="walk-save")
    return RecordingPanel(record, status)
