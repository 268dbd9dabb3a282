"""Job entries for the job-manager tests: they follow the trainer's contract without training anything.

Each is named as ``"tests.finetune.fake_jobs:NAME"`` and runs inside a real worker
process; they read their knobs (``steps``, ``sleep_s``) from the run's config.yaml.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import yaml


def _config(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}


def quick(run_dir: Path, control) -> None:
    """A few steps with short sleeps, an eval, metrics.json and a done event."""
    config = _config(run_dir)
    steps, sleep_s = int(config.get("steps", 3)), float(config.get("sleep_s", 0.02))
    control.emit({"event": "stage", "stage": "train", "message": "Training"})
    control.emit({"event": "start", "total_steps": steps})
    for step in range(1, steps + 1):
        time.sleep(sleep_s)
        control.emit({"event": "step", "step": step, "total_steps": steps, "loss": 1.0 / step,
                      "eta_s": (steps - step) * sleep_s})
    control.emit({"event": "eval", "step": steps, "eval_loss": 0.5})
    metrics = {"train_loss": 1.0 / steps}
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    control.emit({"event": "done", "metrics": metrics})


def raises(run_dir: Path, control) -> None:
    """Fails after starting, the way a trainer fails on bad data."""
    control.emit({"event": "start", "total_steps": 10})
    raise ValueError("the data file has no rows")


def until_stopped(run_dir: Path, control) -> None:
    """Steps until a cancel arrives, then reports where it stopped (a well-behaved trainer)."""
    sleep_s = float(_config(run_dir).get("sleep_s", 0.05))
    control.emit({"event": "start", "total_steps": 100000})
    step = 0
    while not control.should_stop():
        step += 1
        time.sleep(sleep_s)
        control.emit({"event": "step", "step": step, "total_steps": 100000, "loss": 1.0, "eta_s": 100.0})
    control.emit({"event": "cancelled", "step": step})


def ignores_stop(run_dir: Path, control) -> None:
    """Never looks at should_stop(): only the grace-period kill ends it."""
    control.emit({"event": "start", "total_steps": 100000})
    while True:
        time.sleep(0.05)


def exits(run_dir: Path, control) -> None:
    """Ends the process without a word, like a crash in native code."""
    control.emit({"event": "step", "step": 1, "total_steps": 10, "loss": 2.0})
    os._exit(3)


def kills_itself(run_dir: Path, control) -> None:
    """Dies of SIGKILL, like a worker the out-of-memory killer chose."""
    control.emit({"event": "step", "step": 1, "total_steps": 10, "loss": 2.0})
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def holds_scratch(run_dir: Path, control) -> None:
    """Makes a scratch folder the way the trainer does, then works until killed (it never cleans up)."""
    from playground.finetune.runs import scratch_dir

    scratch_dir(run_dir, "trainer")
    control.emit({"event": "start", "total_steps": 100000})
    while True:
        time.sleep(0.05)


not_callable = 42
