"""Replay tab: a recorded walk shown step by step on stage, under a banner that says it is a replay.

Nothing is computed here: each step shows what the tabs showed when the walk was recorded (``playground.walks``),
in the language it was recorded in, and a fine-tuning run's loss curve redraws from its recorded events over the
number of seconds the presenter chooses (``loss_frames``). Previous and Next move one step; Play goes on from
the step shown to the end, staying a few seconds on each step. The steps' blocks are drawn by ``gr.render``
(one component per block: Markdown, text, HTML, a table, label scores, a chat); the loss curve has a component
of its own, so its frames only redraw the curve. Waiting between frames is ``asyncio.sleep``: a replay holds no
thread while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from dataclasses import dataclass
from typing import Callable

import gradio as gr

from playground.backends.base import CancelFlag
from playground.services import Services
from playground.ui.i18n import Texts, t
from playground.ui.render import line_chart_html, md_escape, table_html
from playground.ui.widgets import user_errors
from playground.walks import (
    DEFAULT_PACE_S,
    MAX_PACE_S,
    MIN_PACE_S,
    Block,
    Walk,
    WalkStore,
    blocks_from_dicts,
    loss_frames,
)

STEP_DWELL_S = 5.0  # how long Play stays on a step without a loss curve
PLAY_BUDGET_S = 15 * 60  # Play stops after this much replaying, however long the walk
REPLAY_SLOT = "replay"  # the session's running replay, which Stop (or the next replay) ends
WAKE_S = 0.25  # how often a waiting replay looks whether it was stopped
LANGUAGE_KEYS = {"en": "replay.language.en", "pt": "replay.language.pt", "fr": "replay.language.fr"}


@dataclass(frozen=True)
class ReplayTab:
    """What the app builder wires: the walk picker and how to list the person's walks in it."""

    walk: gr.Dropdown
    refresh: Callable


# ------------------------------------------------------------------------------ what a step looks like


def walk_choices(store: WalkStore, owner: str) -> list[tuple[str, str]]:
    """(label, walk id) of the walks this person may replay: the bundled ones, then their own, newest first."""
    # The title alone (★ before one's own walks, as before one's own runs): the date and the step count are in
    # the banner of every step, and a longer label does not fit a phone's picker.
    return [(info.title if info.bundled else f"★ {info.title}", info.walk_id) for info in store.list(owner)]


def banner_html(walk: Walk, texts: Texts) -> str:
    """The line over every replayed step: a replay, recorded on that day, nothing computed."""
    return (f'<div class="replay-banner" role="status" style="background:#9a3412;color:#ffffff;font-weight:700;'
            f'padding:10px 16px;border-radius:8px;letter-spacing:0.02em">'
            f'{html.escape(texts("replay.banner", date=walk.recorded_on))}</div>')


def _translated(texts: Texts, key: str, fallback: str) -> str:
    return texts(key) if texts.has(key) else fallback


def heading_text(walk: Walk, index: int, texts: Texts) -> str:
    step = walk.steps[index]
    tab = _translated(texts, f"tab.{step.tab}", step.tab)
    title = _translated(texts, f"replay.endpoint.{step.endpoint}", step.title)
    language = _translated(texts, LANGUAGE_KEYS.get(walk.language, ""), walk.language)
    return "\n\n".join([texts("replay.step", number=index + 1, total=len(walk.steps), tab=tab, title=title),
                        texts("replay.details", walk=md_escape(walk.title), language=language)])


def loss_html(block: Block, shown: int, texts: Texts) -> str:
    """The first ``shown`` events of a recorded loss curve, on the axes of the whole curve (they stay still
    while it redraws)."""
    events = block.events
    drawn = events[:shown]
    series = {texts("ft.loss_train"): [(e.step, e.loss) for e in drawn if e.kind == "train"],
              texts("ft.loss_validation"): [(e.step, e.loss) for e in drawn if e.kind == "validation"]}
    steps = [e.step for e in events] or [0]
    losses = [e.loss for e in events] or [0.0]
    return line_chart_html(series, title=texts("replay.loss_title"), x_title=texts("ft.axis_step"),
                           y_title=texts("ft.axis_loss"), empty=texts("replay.loss_starting"),
                           x_limits=(min(steps), max(steps)), y_limits=(min(losses), max(losses)))


def view_of(walk_id: str, index: int, walk: Walk) -> dict:
    """What the blocks area draws for a step (the loss curve is drawn apart)."""
    return {"walk": walk_id, "index": index,
            "blocks": [block.to_dict() for block in walk.steps[index].blocks if block.kind != "loss"]}


def draw_blocks(view: dict | None) -> None:
    """One component per block of the step, in the order it was recorded (inside ``gr.render``)."""
    if not view:
        return
    # The view comes from this server's own walk; it is read through the same checks as a file all the same.
    blocks = blocks_from_dicts(view.get("blocks") or [])
    for number, block in enumerate(blocks):
        common = dict(elem_id=f"replay-block-{number}", elem_classes=["replay-block", f"replay-{block.kind}"],
                      key=f"replay-block-{view.get('walk')}-{view.get('index')}-{number}")
        label = block.label or None
        if block.kind == "markdown":
            if label:
                gr.Markdown(f"**{md_escape(label)}**", elem_classes=["replay-caption"])
            gr.Markdown(block.text, **common)
        elif block.kind == "text":
            lines = block.text.count("\n") + 1
            gr.Textbox(block.text, label=label, show_label=bool(label), interactive=False, lines=min(max(lines, 2), 8),
                       max_lines=20, **common)
        elif block.kind == "html":
            gr.HTML(block.text, label=label, show_label=bool(label), container=bool(label), **common)
        elif block.kind == "table":
            caption = f'<div class="replay-caption"><b>{html.escape(label)}</b></div>' if label else ""
            gr.HTML(caption + table_html(block.columns, block.rows, "replay-table"), **common)
        elif block.kind == "label":
            gr.Label(dict(block.labels), label=label, show_label=bool(label), num_top_classes=len(block.labels),
                     **common)
        elif block.kind == "chat":
            gr.Chatbot([{"role": role, "content": content} for role, content in block.messages], label=label,
                       show_label=bool(label), height=360, layout="bubble", **common)


async def pause(seconds: float, stop: CancelFlag) -> bool:
    """Wait ``seconds`` (without holding a thread); False as soon as ``stop`` is set."""
    loop = asyncio.get_running_loop()
    end = loop.time() + max(0.0, seconds)
    while not stop.is_set():
        left = end - loop.time()
        if left <= 0:
            return True
        await asyncio.sleep(min(WAKE_S, left))
    return False


# ------------------------------------------------------------------------------ the tab


def build(services: Services, owner: gr.BrowserState, store: WalkStore) -> ReplayTab:
    settings = services.settings
    gr.Markdown(t("replay.intro"), elem_classes=["tab-intro"])
    with gr.Row(equal_height=False):
        # Custom values: a person's own walks join the list per browser (when the tab opens); the store checks
        # every id it is given (parse_walk_id) and shows nobody another person's walk.
        # The list is filled when the tab opens, in the reader's language (app.py: replay_walks).
        walk = gr.Dropdown([], value=None, label=t("replay.walk"), info=t("replay.walk_info"), allow_custom_value=True,
                           elem_id="replay-walk", scale=3, min_width=320)
        pace = gr.Slider(MIN_PACE_S, MAX_PACE_S, value=DEFAULT_PACE_S, step=1, label=t("replay.pace"),
                         info=t("replay.pace_info"), elem_id="replay-pace", scale=2)
    with gr.Row():
        previous = gr.Button(t("replay.previous"), elem_id="replay-previous")
        following = gr.Button(t("replay.next"), elem_id="replay-next")
        play = gr.Button(t("replay.play"), variant="primary", elem_id="replay-play")
        stop = gr.Button(t("replay.stop"), variant="stop", elem_id="replay-stop")
        delete = gr.Button(t("replay.delete"), size="sm", elem_id="replay-delete")
    banner = gr.HTML(elem_id="replay-banner")
    heading = gr.Markdown(t("replay.hint"), elem_id="replay-step")
    view = gr.State(None)  # the step the blocks area draws
    position = gr.State({})  # {"walk": id, "index": i} of the step shown

    @gr.render(inputs=[view], triggers=[view.change])
    def blocks(current):
        draw_blocks(current)

    loss = gr.HTML(visible=False, elem_id="replay-loss")
    gr.Markdown(t("replay.notice"), elem_classes=["notice"])
    # Hidden: the API's way to show a given step (gradio_client calls replay_show with a step number).
    number = gr.Number(1, precision=0, visible=False, elem_id="replay-number")
    show_api = gr.Button("", visible=False, elem_id="replay-show-api")

    nothing = tuple(gr.skip() for _ in range(5))  # a replay event that has no step to show leaves the page as it was

    @contextlib.contextmanager
    def replaying(request: gr.Request):
        """The session's stop flag for one replay event; a replay that starts stops the one before it."""
        session = request.session_hash or "anonymous"
        services.generations.cancel(session, REPLAY_SLOT)
        stop_flag = CancelFlag()
        services.generations.start(session, REPLAY_SLOT, stop_flag)
        try:
            yield stop_flag
        finally:
            services.generations.finish(session, REPLAY_SLOT, stop_flag)

    def load(walk_id: str, token: str) -> Walk:
        with user_errors(settings):
            return store.load(walk_id, services.identities.owner_of(token or ""))

    async def present(walk_id: str, walk: Walk, index: int, pace: float, texts: Texts, stop: CancelFlag):
        """The step's outputs, then the frames of its loss curve redrawn over ``pace`` seconds (until stopped)."""
        curve = walk.steps[index].loss_block
        first = loss_html(curve, 0, texts) if curve is not None else ""
        yield ({"walk": walk_id, "index": index}, banner_html(walk, texts), heading_text(walk, index, texts),
               view_of(walk_id, index, walk), gr.update(value=first, visible=curve is not None))
        if curve is None:
            return
        shown_at = 0.0
        frames = loss_frames(len(curve.events), pace)
        for frame in frames:
            if not await pause(frame.at_s - shown_at, stop):
                return
            shown_at = frame.at_s
            drawn = gr.update(value=loss_html(curve, frame.shown, texts))
            if frame is frames[-1]:  # whole again at the end: an API caller's result is the last yield
                yield (gr.skip(), banner_html(walk, texts), heading_text(walk, index, texts), gr.skip(), drawn)
            else:
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), drawn

    def _index(walk: Walk, wanted: int) -> int:
        return max(0, min(int(wanted), len(walk.steps) - 1))

    async def show(walk_id, step_number, pace_value, token, request: gr.Request):
        """Step ``step_number`` (from 1) of a walk, its loss curve redrawn over ``pace_value`` seconds."""
        texts = Texts.for_request(request)
        chosen = load(walk_id, token)
        if not chosen.steps:
            yield nothing
            return
        with replaying(request) as stop_flag:
            async for outputs in present(walk_id, chosen, _index(chosen, int(step_number or 1) - 1), pace_value,
                                         texts, stop_flag):
                yield outputs

    async def show_first(walk_id, pace_value, token, request: gr.Request):
        if not walk_id:
            yield nothing
            return
        async for outputs in show(walk_id, 1, pace_value, token, request):
            yield outputs

    def _where(walk_id: str, where: dict | None) -> int | None:
        where = where or {}
        return where.get("index") if where.get("walk") == walk_id else None

    def opened(walk_id, token) -> Walk | None:
        """The chosen walk, or None when none is chosen or it has no step to show."""
        chosen = load(walk_id, token) if walk_id else None
        return chosen if chosen is not None and chosen.steps else None

    async def move(walk_id, where, pace_value, token, request: gr.Request, by: int):
        chosen = opened(walk_id, token)
        if chosen is None:
            yield nothing
            return
        texts = Texts.for_request(request)
        current = _where(walk_id, where)
        index = 0 if current is None else _index(chosen, current + by)
        with replaying(request) as stop_flag:
            async for outputs in present(walk_id, chosen, index, pace_value, texts, stop_flag):
                yield outputs

    async def go_next(walk_id, where, pace_value, token, request: gr.Request):
        async for outputs in move(walk_id, where, pace_value, token, request, 1):
            yield outputs

    async def go_previous(walk_id, where, pace_value, token, request: gr.Request):
        async for outputs in move(walk_id, where, pace_value, token, request, -1):
            yield outputs

    async def play_walk(walk_id, where, pace_value, token, request: gr.Request):
        """From the step shown (the first, after the last) to the end, a few seconds on each step."""
        chosen = opened(walk_id, token)
        if chosen is None:
            yield nothing
            return
        texts = Texts.for_request(request)
        current = _where(walk_id, where)
        start = 0 if current is None or current >= len(chosen.steps) - 1 else current
        spent = 0.0
        with replaying(request) as stop_flag:
            for index in range(start, len(chosen.steps)):
                async for outputs in present(walk_id, chosen, index, pace_value, texts, stop_flag):
                    yield outputs
                spent += float(pace_value) if chosen.steps[index].loss_block is not None else 0.0
                if index == len(chosen.steps) - 1 or spent >= PLAY_BUDGET_S:
                    break
                if not await pause(STEP_DWELL_S, stop_flag):
                    break
                spent += STEP_DWELL_S

    def stop_replay(request: gr.Request):
        services.generations.cancel(request.session_hash or "anonymous", REPLAY_SLOT)

    def refresh(token, current, request: gr.Request):
        """The walks this person may replay (theirs appear once saved)."""
        choices = walk_choices(store, services.identities.owner_of(token or ""))
        ids = [walk_id for _, walk_id in choices]
        return gr.update(choices=choices, value=current if current in ids else (ids[0] if ids else None))

    def delete_walk(walk_id, token, request: gr.Request):
        texts = Texts.for_request(request)
        with user_errors(settings):
            store.delete(walk_id, services.identities.owner_of(token or ""))
        gr.Info(texts("replay.deleted"))
        return refresh(token, None, request)

    outputs = [position, banner, heading, view, loss]
    # A replay waits, it does not generate: its own group, no limit, so it never queues behind anyone's answer.
    waits = dict(concurrency_id="replay", concurrency_limit=None, show_progress="hidden")
    walk.input(show_first, [walk, pace, owner], outputs, api_name=False, **waits)  # a walk the person picks
    show_api.click(show, [walk, number, pace, owner], outputs, api_name="replay_show", **waits)
    following.click(go_next, [walk, position, pace, owner], outputs, api_name=False, **waits)
    previous.click(go_previous, [walk, position, pace, owner], outputs, api_name=False, **waits)
    play.click(play_walk, [walk, position, pace, owner], outputs, api_name=False, **waits)
    # Stop reaches the replay through the app's registry of running work (Gradio's cancels= would leave a
    # generator's waits to the event loop); a replay checks it between frames.
    stop.click(stop_replay, None, None, api_name="replay_stop", queue=False)
    delete.click(delete_walk, [walk, owner], walk, api_name="replay_delete", concurrency_id="replay-delete",
                 concurrency_limit=None)
    return ReplayTab(walk, refresh)
