"""``python -m playground.finetune.worker RUN_DIR``: run one job in its own process.

The job manager starts this module as a child process (its own process group,
stdout and stderr going to ``worker.log``), so a crash, a leak or an
out-of-memory kill ends the worker and never the app. The worker:

1. takes a lock on the run's ``job.json`` for as long as it lives (the job
   manager tests that lock to know whether a worker is still at work, even one
   started by an earlier app process);
2. writes status ``running`` with its pid, and turns SIGTERM into a cancel flag;
3. imports the entry named in ``job.json`` ("module:function") and calls
   ``entry(run_dir, control)``;
4. writes the final status: ``cancelled`` when the entry emitted a ``cancelled``
   event, or returned (or raised) after a cancel was requested without having
   emitted ``done``; ``failed`` with the exception's message when it raised (the
   traceback goes to worker.log); ``succeeded`` otherwise.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from playground.atomic import jsonable
from playground.errors import PlaygroundError
from playground.finetune.runs import (
    CANCEL_FILE,
    CANCELLED,
    FAILED,
    PROGRESS_FILE,
    RUNNING,
    SUCCEEDED,
    RunNotFoundError,
    RunStore,
    check_entry,
)

EXIT_CLAIMED = 75  # another worker already holds the run


class JobControl:
    """What a job's entry gets: ``should_stop()`` between steps and ``emit(event)`` for progress.

    Usable on its own (tests, notebooks): ``JobControl(run_dir)`` needs only the directory.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._progress: Any = None
        self.emitted_done = False
        self.emitted_cancelled = False
        self.cancelled_step: int | None = None

    def should_stop(self) -> bool:
        """True once a cancel was requested (the run's cancel file exists, or SIGTERM arrived)."""
        if not self._stop.is_set() and (self.run_dir / CANCEL_FILE).exists():
            self._stop.set()
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()

    def emit(self, event: dict) -> None:
        """Append ``event`` as one JSON line to progress.jsonl, with the time added, and flush it."""
        line = json.dumps({**event, "time": time.time()}, default=jsonable, ensure_ascii=False) + "\n"
        with self._lock:
            if self._progress is None:  # unbuffered append: one write per line
                self._progress = open(self.run_dir / PROGRESS_FILE, "ab", buffering=0)
            self._progress.write(line.encode("utf-8"))
        kind = event.get("event")
        if kind == "done":
            self.emitted_done = True
        elif kind == "cancelled":
            self.emitted_cancelled = True
            self.cancelled_step = event.get("step")

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.close()
                self._progress = None


def resolve_entry(entry: str) -> Callable[[Path, JobControl], None]:
    """The function that ``"package.module:function"`` names."""
    module_name, _, attribute = check_entry(entry).partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"job entry {entry!r} is not callable")
    return target


def describe_error(exc: BaseException) -> str:
    """The failure message a person sees: a PlaygroundError's own text, otherwise type and text."""
    text = str(exc) if isinstance(exc, PlaygroundError) else f"{type(exc).__name__}: {exc}".rstrip(": ")
    return text if len(text) <= 1000 else text[:997] + "..."


def outcome(control: JobControl, error: str | None) -> tuple[str, str]:
    """Final status and message from what the entry did."""
    if control.emitted_cancelled:
        step = control.cancelled_step
        return CANCELLED, f"Cancelled at step {step}." if step is not None else "Cancelled."
    if error is not None:
        if control.should_stop():
            return CANCELLED, f"Cancelled (the job stopped with: {error})."
        return FAILED, f"{error} (details in worker.log)"
    if not control.emitted_done and control.should_stop():
        return CANCELLED, "Cancelled."
    return SUCCEEDED, "Finished."


def run(run_dir: Path) -> int:
    """Run the job of ``run_dir`` in this process; returns the exit code."""
    run_dir = Path(run_dir).resolve()
    store = RunStore(run_dir.parent)
    run_id = run_dir.name
    try:
        entry = store.entry_of(run_id)
    except RunNotFoundError as exc:
        print(f"[worker] {exc}", file=sys.stderr)
        return 2
    if store.claim(run_id) is None:  # held until this process ends
        print(f"[worker] another worker is already running {run_id}; leaving it alone", flush=True)
        return EXIT_CLAIMED
    status = store.status(run_id)
    if status.terminal:
        print(f"[worker] run {run_id} is already {status.status}; nothing to do", flush=True)
        return 0
    control = JobControl(run_dir)
    signal.signal(signal.SIGTERM, lambda signum, frame: control.request_stop())
    if control.should_stop():
        store.set_status(run_id, CANCELLED, message="Cancelled before it started.")
        return 0
    store.set_status(run_id, RUNNING, pid=os.getpid(), started=time.time(), message="")
    print(f"[worker] {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} runs {entry} in {run_dir}", flush=True)

    error: str | None = None
    try:
        resolve_entry(entry)(run_dir, control)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            error = f"The job exited with code {exc.code}."
    except KeyboardInterrupt:
        control.request_stop()
    except BaseException as exc:  # noqa: BLE001 - any failure of the job is the run's failure
        traceback.print_exc()
        error = describe_error(exc)
    finally:
        control.close()
    status_name, message = outcome(control, error)
    store.set_status(run_id, status_name, message=message)
    print(f"[worker] {time.strftime('%Y-%m-%d %H:%M:%S')} {status_name}: {message}", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    return 1 if status_name == FAILED else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m playground.finetune.worker RUN_DIR", file=sys.stderr)
        return 2
    return run(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
