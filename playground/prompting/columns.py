"""Side-by-side runs: up to four (strategy, model) columns on the same input, streamed as they generate.

The Prompt Lab's comparison shows how strategies and models differ on one
input. Columns on different models run in turn (on a small machine two models
generating at once would only slow each other down); columns on one model whose
engine decodes many requests in a batch (llama.cpp's shared decode loop) run at
once. While a single-path column generates, its growing text is reported, so the
page streams. Each column keeps its own outcome: a template problem or a
model that cannot load marks that column and the others still run.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

from playground.backends.base import Engine, GenerationParams
from playground.backends.slots import SlotHolder, no_slot, requests_decoded_together
from playground.errors import InvalidParameterError, PlaygroundError
from playground.prompting.data import Example
from playground.prompting.demos import Embedder
from playground.prompting.strategies import PromptSetup, StrategyRun, build_prompt, stream_prompt
from playground.prompting.templates import PromptTemplate, TemplateLibrary

MAX_COLUMNS = 4
STREAM_INTERVAL_S = 0.08  # at most ~12 screen updates a second per column

WAITING, LOADING, RUNNING, DONE, FAILED, CANCELLED = "waiting", "loading", "running", "done", "failed", "cancelled"


def choose_template(library: TemplateLibrary, task: str, strategy: str, preferred: PromptTemplate | None
                    ) -> PromptTemplate:
    """``preferred`` if it suits ``strategy`` and ``task``, else the task's first library template that does.

    Raises InvalidParameterError when the task has no template for the strategy (e.g.
    chain-of-thought for summaries, which have no answer to vote on).
    """
    if preferred is not None and preferred.task == task and preferred.suits(strategy):
        return preferred
    for template in library.for_task(task, strategy):
        return template
    raise InvalidParameterError(f"No template of the task {task!r} suits the strategy {strategy!r}; choose "
                                f"another strategy for this task.")


@dataclass(frozen=True)
class Column:
    """One column to run: a prompt setup on a model."""

    setup: PromptSetup
    model_id: str
    params: GenerationParams
    template_name: str = ""  # shown above the column: which phrasing it used


@dataclass(frozen=True)
class ColumnState:
    """What one column shows at a moment."""

    column: Column
    status: str = WAITING
    text: str = ""  # the output so far (self-consistency: a path agreeing with the vote)
    run: StrategyRun | None = None
    error: str = ""


EngineGetter = Callable[[str], Engine]


def run_columns(columns: Sequence[Column], input_text: str, pool: Sequence[Example], get_engine: EngineGetter, *,
                embedder: Embedder | None = None, cancel: threading.Event | None = None,
                slot: SlotHolder = no_slot) -> Iterator[list[ColumnState]]:
    """Run the columns in turn; yield every column's state after each change.

    ``get_engine(model_id)`` loads (or finds) a model's engine. A column's
    PlaygroundError becomes its ``error``; any other exception is raised.
    Once ``cancel`` is set, the running column stops and the rest are marked cancelled.
    Each column holds ``slot`` only while its model generates. When a model decodes many
    requests in one batch (llama.cpp's shared decode loop), every column on that model
    runs at once with the first of them: one batch costs about what one column alone does.
    """
    if not columns:
        raise InvalidParameterError("Add at least one column to compare.")
    if len(columns) > MAX_COLUMNS:
        raise InvalidParameterError(f"{len(columns)} columns; compare at most {MAX_COLUMNS} side by side.")
    states = [ColumnState(c) for c in columns]
    yield list(states)
    started: set[int] = set()
    for i, column in enumerate(columns):
        if i in started:
            continue
        if cancel is not None and cancel.is_set():
            for j in range(i, len(columns)):
                if j not in started:
                    states[j] = replace(states[j], status=CANCELLED)
            yield list(states)
            break
        started.add(i)
        states[i] = replace(states[i], status=LOADING)
        yield list(states)
        try:
            engine = get_engine(column.model_id)
        except PlaygroundError as exc:
            states[i] = replace(states[i], status=FAILED, error=str(exc))
            yield list(states)
            continue
        batch = [i]
        if requests_decoded_together(engine) > 1:
            batch += [j for j in range(i + 1, len(columns))
                      if j not in started and columns[j].model_id == column.model_id]
        started.update(batch)
        run = lambda j: _run_column(states[j], engine, input_text, pool, embedder, cancel, slot)  # noqa: E731
        if len(batch) == 1:
            for state in run(i):
                states[i] = state
                yield list(states)
            continue
        for j, state in _together({j: run(j) for j in batch}):
            states[j] = state
            yield list(states)


def _run_column(state: ColumnState, engine: Engine, input_text: str, pool: Sequence[Example],
                embedder: Embedder | None, cancel: threading.Event | None, slot: SlotHolder
                ) -> Iterator[ColumnState]:
    """One column's states on its loaded engine, from running to done (or failed, or cancelled)."""
    column = state.column
    state = replace(state, status=RUNNING)
    yield state
    last_yield = 0.0
    try:
        built = build_prompt(engine, column.setup, input_text, pool, embedder=embedder, params=column.params)
        for update in stream_prompt(engine, built, column.setup, column.params, cancel=cancel, slot=slot):
            if update.run is not None:
                status = CANCELLED if update.run.cancelled else DONE
                yield replace(state, status=status, text=update.text, run=update.run)
                return
            state = replace(state, text=update.text)
            now = time.perf_counter()
            if now - last_yield >= STREAM_INTERVAL_S:
                last_yield = now
                yield state
    except PlaygroundError as exc:
        yield replace(state, status=FAILED, error=str(exc))


def _together(runs: dict[int, Iterator[ColumnState]]) -> Iterator[tuple[int, ColumnState]]:
    """(column, state) from several columns' runs going at once, each in its own thread, as they come."""
    updates: queue.SimpleQueue = queue.SimpleQueue()
    finished = object()

    def drive(j: int, states: Iterator[ColumnState]) -> None:
        try:
            for state in states:
                updates.put((j, state))
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            updates.put((j, exc))
        finally:
            updates.put((j, finished))

    threads = [threading.Thread(target=drive, args=item, name=f"column-{item[0]}", daemon=True)
               for item in runs.items()]
    for thread in threads:
        thread.start()
    running = len(threads)
    error: BaseException | None = None
    while running:
        j, item = updates.get()
        if item is finished:
            running -= 1
        elif isinstance(item, BaseException):
            error = error or item
        else:
            yield j, item
    if error is not None:
        raise error
