"""What every suite of the bench shares: the figure record, the options, the log, the CPU watch and ABBA rounds.

Only the standard library is imported here, so the bench's command line starts without torch or llama.cpp.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

DEFAULT_MODEL = "smollm2-135m-instruct"
REPO_ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")


@dataclass
class Figure:
    """One measured number and how it compares with its target."""

    name: str
    value: float | None
    unit: str
    target: str = ""  # e.g. ">= 0.9", "< 0.5 s"; empty when the figure is informational
    passed: bool | None = None  # None: no target, or not measured on purpose
    detail: str = ""

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if isinstance(self.value, float):
            data["value"] = round(self.value, 4)
        return data


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda value, bound: value >= bound,
    "<=": lambda value, bound: value <= bound,
    ">": lambda value, bound: value > bound,
    "<": lambda value, bound: value < bound,
}
_TARGET = re.compile(r"^(>=|<=|>|<)\s*(\d+(?:\.\d*)?)(?:\s+\S+)?$")


@dataclass(frozen=True)
class Measure:
    """A figure before it is measured: its name, unit and target, stated once per figure.

    The target is the text the table shows (``">= 0.9"``, ``"< 10 s"``): a comparison, a number and
    optionally the unit; the pass/fail check is read from it, so the two cannot disagree. The same
    measure then makes the figure whether it was measured, failed or skipped.
    """

    name: str
    unit: str
    target: str = ""  # empty: informational, never passes or fails

    def __post_init__(self) -> None:
        if self.target and not _TARGET.match(self.target):
            raise ValueError(f"target {self.target!r} of {self.name!r} is not like '>= 0.9' or '< 10 s'")

    def check(self, value: float) -> bool | None:
        """Whether ``value`` meets the target (None when there is none)."""
        match = _TARGET.match(self.target)
        if match is None:
            return None
        return _COMPARISONS[match.group(1)](value, float(match.group(2)))

    def measured(self, value: float | None, detail: str, judged: bool = True) -> Figure:
        """The figure of ``value``; a missing value fails a target. ``judged=False`` shows the target unjudged."""
        if value is None:
            return Figure(self.name, None, self.unit, self.target, False if self.target else None, detail)
        return Figure(self.name, value, self.unit, self.target, self.check(value) if judged else None, detail)

    def not_measured(self, reason: str) -> Figure:
        """Could not be measured: fails its target (if it has one)."""
        return self.measured(None, f"not measured: {reason}")

    def failed(self, exc: BaseException) -> Figure:
        """Measuring raised ``exc``: the figure fails, whatever its target."""
        return Figure(self.name, None, self.unit, self.target, False, f"not measured: {error_text(exc)}")

    def skipped(self, reason: str) -> Figure:
        """Left out on purpose: neither passes nor fails."""
        return Figure(self.name, None, self.unit, self.target, None, reason)


@dataclass(frozen=True)
class BenchOptions:
    json: bool = False
    quick: bool = False
    data_dir: Path | None = None  # parent of the scratch folder; None: the system temp folder
    threads: int = 0  # 0: one per physical core, as the app does
    model: str = DEFAULT_MODEL
    skip_startup: bool = False
    skip_finetune: bool = False
    load: tuple[int, ...] = ()  # people per burst of the load run (its own run); empty: the other suites
    load_server: str | None = None  # the load run against this OpenAI-compatible server (e.g. "llama.cpp")
    cpu_demo: bool = False  # the CPU demo preset end to end, its own run (the other suites are left out)
    trainer_variants: bool = False  # packed and bf16 batches against padded ones, its own run
    skip_dpo: bool = False  # leave out the DPO CPU preset's figures
    dpo_only: bool = False  # the DPO CPU preset alone, its own run (the other suites are left out)

    @property
    def rounds(self) -> int:
        return 2 if self.quick else 3

    @property
    def new_tokens(self) -> int:
        return 64 if self.quick else 128

    @property
    def ttft_runs(self) -> int:
        return 3 if self.quick else 5

    @property
    def transformers_runs(self) -> int:
        return 1 if self.quick else 2

    @property
    def finetune_rounds(self) -> int:  # each round trains once with the app and once with the plain script
        return 1 if self.quick else 2

    @property
    def finetune_steps(self) -> int:  # the first step of each run is warm-up and not timed
        return 5 if self.quick else 8


def log(message: str) -> None:
    """Progress goes to stderr: stdout is the table or the JSON."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def alternate(rounds: int, first: Callable[[int], T], second: Callable[[int], T]) -> tuple[list[T], list[T]]:
    """Run both sides ``rounds`` times in ABBA order, so neither always goes first; each is given the round."""
    firsts: list[T] = []
    seconds: list[T] = []
    for round_ in range(rounds):
        order = ((first, firsts), (second, seconds))
        for run, runs in order if round_ % 2 == 0 else reversed(order):
            runs.append(run(round_))
    return firsts, seconds


def median_speed(runs: Sequence) -> float:
    """The median ``tokens_per_s`` of timed runs (generation streams or training runs)."""
    return statistics.median(r.tokens_per_s for r in runs)


def speeds(runs: Sequence) -> str:
    return ", ".join(f"{r.tokens_per_s:.1f}" for r in runs)


def per_round(runs: Sequence, against: Sequence) -> str:
    """The speed ratio of each round (``runs[i]`` over ``against[i]``), for a figure's detail."""
    return ", ".join(f"{a.tokens_per_s / b.tokens_per_s:.2f}" for a, b in zip(runs, against) if b.tokens_per_s)


class CpuWatch:
    """How much of the machine's CPU other programs used while a block ran (Linux ``/proc/stat``).

    Speed figures measured while other programs compete for the cores (llama.cpp's threads wait
    for each other at every token) say little about the code; the details quote this share.
    """

    def __init__(self) -> None:
        self._start = self._sample()
        self._start_own = self._own()

    @staticmethod
    def _sample() -> tuple[float, float] | None:
        try:
            fields = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:]
            ticks = [float(x) for x in fields[:8]]
            hz = float(os.sysconf("SC_CLK_TCK"))
        except (OSError, ValueError, IndexError, AttributeError):
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = ticks
        busy = user + nice + system + irq + softirq + steal
        return busy / hz, (busy + idle + iowait) / hz

    @staticmethod
    def _own() -> float:
        t = os.times()  # children count once reaped (the app.py started for the start-up figure)
        return t.user + t.system + t.children_user + t.children_system

    def others_share(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None:
            return None
        busy, total = end[0] - self._start[0], end[1] - self._start[1]
        if total <= 0:
            return None
        own = self._own() - self._start_own
        return min(1.0, max(0.0, (busy - own) / total))

    def note(self) -> str:
        share = self.others_share()
        if share is None:
            return ""
        return f"; other programs used {share:.0%} of the CPU meanwhile" + (
            " (figures unreliable)" if share >= 0.15 else "")
