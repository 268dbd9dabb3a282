"""How far a run has come in every phase, and how long all of them still take.

A run goes through phases (:data:`PHASES`): scoring the base model (its test
loss in batches, then its answers one by one), training (steps, interleaved with
validation passes in batches), scoring the fine-tuned model the same way, and
saving. :class:`RunClock` is told how many units each phase has before the
run starts, and how many are done as they finish; it measures the seconds per
unit of each phase and answers :meth:`RunClock.remaining_s`: the time left in
*every* phase, not only the one running. A phase not measured yet borrows a
measured one's pace (:data:`BORROWS`): the fine-tuned answers take as long as
the base answers did, a validation batch as long as a test-loss batch, and a
training step about three forward passes over ``grad_accum`` batches (forward
and backward), until the first step is measured.

The clock is plain arithmetic over a clock function, so a test drives it with a
fake clock; the trainer emits its counts and ETA in progress events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

LOADING, BASELINE_LOSS, BASELINE, TRAINING, VALIDATION = "loading", "baseline_loss", "baseline", "training", "validation"
TUNED_LOSS, TUNED, QUANTIZED, SAVING = "tuned_loss", "tuned", "quantized", "saving"
PHASES = (LOADING, BASELINE_LOSS, BASELINE, TRAINING, VALIDATION, TUNED_LOSS, TUNED, QUANTIZED, SAVING)
# A phase without a measured pace takes another's, times a factor (a training step: forward and backward).
BORROWS = {
    BASELINE: ((TUNED, 1.0), (QUANTIZED, 1.0)),
    TUNED: ((BASELINE, 1.0), (QUANTIZED, 1.0)),
    QUANTIZED: ((TUNED, 1.0), (BASELINE, 1.0)),
    BASELINE_LOSS: ((VALIDATION, 1.0), (TUNED_LOSS, 1.0)),
    VALIDATION: ((BASELINE_LOSS, 1.0), (TUNED_LOSS, 1.0)),
    TUNED_LOSS: ((BASELINE_LOSS, 1.0), (VALIDATION, 1.0)),
}
TRAIN_STEP_PER_FORWARD = 3.0  # one training step ~ 3 forward passes (forward + backward ~ 2 more)


def validation_passes(total_steps: int, eval_every: int, has_validation: bool) -> int:
    """How many validation passes a run makes: one every ``eval_every`` steps, and one at the end if the last
    step is not one of them (the trainer measures the final validation loss either way)."""
    if not has_validation:
        return 0
    during = total_steps // eval_every if eval_every else 0
    return during + (0 if eval_every and total_steps % eval_every == 0 and during else 1)


def batches(examples: int, batch_size: int) -> int:
    return -(-max(examples, 0) // max(batch_size, 1))


@dataclass
class _Phase:
    total: int = 0
    done: int = 0
    seconds: float = 0.0  # time spent in it so far


@dataclass
class RunClock:
    """Units planned and done per phase, seconds spent per phase, and the time left in all of them."""

    clock: Callable[[], float] = time.perf_counter
    grad_accum: int = 1
    phases: dict[str, _Phase] = field(default_factory=dict)
    current: str = ""
    _since: float | None = None

    def plan(self, phase: str, total: int) -> None:
        """``phase`` has ``total`` units (0: the run skips it)."""
        self.phases.setdefault(phase, _Phase()).total = max(int(total), 0)

    def begin(self, phase: str, total: int | None = None) -> None:
        """``phase`` starts now (with ``total`` units, when given); time before this counts for no phase."""
        if total is not None:
            self.plan(phase, total)
        self.phases.setdefault(phase, _Phase())
        self._since = self.clock()
        self.current = phase

    def advance(self, phase: str, done: int) -> None:
        """``done`` units of ``phase`` are finished (cumulative); the time since the last call counts for it
        (so validation batches inside training count for validation, and the next step for training)."""
        now = self.clock()
        entry = self.phases.setdefault(phase, _Phase())
        if self._since is not None:
            entry.seconds += now - self._since
        self._since = now
        self.current = phase
        entry.done = max(entry.done, int(done))
        entry.total = max(entry.total, entry.done)

    def pace(self, phase: str) -> float | None:
        """Seconds per unit of ``phase``: measured, else borrowed (see :data:`BORROWS`); None when unknown."""
        measured = self._measured(phase)
        if measured is not None:
            return measured
        for other, factor in BORROWS.get(phase, ()):
            borrowed = self._measured(other)
            if borrowed is not None:
                return borrowed * factor
        if phase == TRAINING:
            forward = self.pace(BASELINE_LOSS)
            return None if forward is None else forward * TRAIN_STEP_PER_FORWARD * self.grad_accum
        return None

    def _measured(self, phase: str) -> float | None:
        entry = self.phases.get(phase)
        if entry is None or entry.done <= 0:
            return None
        seconds = entry.seconds
        if phase == self.current and self._since is not None:
            seconds += self.clock() - self._since
        return seconds / entry.done

    def remaining_s(self) -> float | None:
        """Seconds left over every planned phase; None while a phase with units left has no pace at all."""
        total = 0.0
        for phase, entry in self.phases.items():
            left = entry.total - entry.done
            if left <= 0:
                continue
            pace = self.pace(phase)
            if pace is None:
                if phase in (LOADING, SAVING):
                    continue  # short, and never worth a guess
                return None
            total += left * pace
        return total  # unrounded: on a fast machine a tiny model's phases left take milliseconds, never "0"


# The wall-clock sections of a run that its metrics report (``RunMetrics.phase_seconds``), in order.
RUN_SECTIONS = ("load", "base_scoring", "training", "tuned_scoring", "save")


@dataclass
class SectionTimer:
    """Wall-clock seconds per section of a run (:data:`RUN_SECTIONS`): ``enter(section)`` ends the section
    running and starts ``section``; a section entered twice adds up (the adapter saved for llama.cpp in the
    middle of the tuned scoring counts for ``save``). Plain arithmetic over a clock function, like
    :class:`RunClock`, so a test drives it with a fake clock."""

    clock: Callable[[], float] = time.perf_counter
    seconds: dict[str, float] = field(default_factory=dict)
    current: str = ""
    _since: float = 0.0

    def enter(self, section: str) -> None:
        now = self.clock()
        self._close(now)
        self.current, self._since = section, now

    def stop(self) -> None:
        self._close(self.clock())
        self.current = ""

    def _close(self, now: float) -> None:
        if self.current:
            self.seconds[self.current] = self.seconds.get(self.current, 0.0) + (now - self._since)

    def as_dict(self) -> dict[str, float]:
        """Seconds per section so far (the running one included), in :data:`RUN_SECTIONS` order, rounded to ms."""
        seconds = dict(self.seconds)
        if self.current:
            seconds[self.current] = seconds.get(self.current, 0.0) + (self.clock() - self._since)
        order = [s for s in RUN_SECTIONS if s in seconds] + [s for s in seconds if s not in RUN_SECTIONS]
        return {s: round(seconds[s], 3) for s in order}


def sections_text(seconds: dict[str, float]) -> str:
    """``load 12.3 s, base scoring 4.5 s, ...`` (empty when nothing was timed)."""
    return ", ".join(f"{name.replace('_', ' ')} {value:.1f} s" for name, value in seconds.items())
