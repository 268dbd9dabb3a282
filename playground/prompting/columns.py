"""Side-by-side runs: up to four (strategy, model) columns on the same input, streamed one after another.

The Prompt Lab's comparison shows how strategies and models differ on one
input. Columns run in turn (on a small machine two models generating at once
would only slow each other down); while a single-path column generates, its
growing text is reported, so the page streams (the engine's own stream, no
thread in between). Each column keeps its own outcome: a template problem or a
model that cannot load marks that column and the others still run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

from playground.backends.base import Engine, GenerationParams
from playground.backends.slots import SlotHolder, no_slot
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
    Each column holds ``slot`` only while its model generates.
    """
    if not columns:
        raise InvalidParameterError("Add at least one column to compare.")
    if len(columns) > MAX_COLUMNS:
        raise InvalidParameterError(f"{len(columns)} columns; compare at most {MAX_COLUMNS} side by side.")
    states = [ColumnState(c) for c in columns]
    yield list(states)
    for i, column in enumerate(columns):
        if cancel is not None and cancel.is_set():
            states[i:] = [replace(s, status=CANCELLED) for s in states[i:]]
            yield list(states)
            break
        states[i] = replace(states[i], status=LOADING)
        yield list(states)
        try:
            engine = get_engine(column.model_id)
        except PlaygroundError as exc:
            states[i] = replace(states[i], status=FAILED, error=str(exc))
            yield list(states)
            continue
        states[i] = replace(states[i], status=RUNNING)
        yield list(states)
        last_yield = 0.0
        try:
            built = build_prompt(engine, column.setup, input_text, pool, embedder=embedder, params=column.params)
            for update in stream_prompt(engine, built, column.setup, column.params, cancel=cancel, slot=slot):
                if update.run is not None:
                    status = CANCELLED if update.run.cancelled else DONE
                    states[i] = replace(states[i], status=status, text=update.text, run=update.run)
                    yield list(states)
                    break
                states[i] = replace(states[i], text=update.text)
                now = time.perf_counter()
                if now - last_yield >= STREAM_INTERVAL_S:
                    last_yield = now
                    yield list(states)
        except PlaygroundError as exc:
            states[i] = replace(states[i], status=FAILED, error=str(exc))
            yield list(states)
