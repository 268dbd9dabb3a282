"""The run store: one directory per fine-tuning run, readable by the app, the worker and the CLI.

A run directory ``<root>/<run id>/`` holds:

- ``config.yaml``     the resolved config the run was submitted with (never rewritten);
- ``job.json``        entry ("module:function"), owner, created time (never rewritten);
                      a live worker holds a lock on it, which is how a restarted app tells
                      a run still training from one whose worker is gone;
- ``status.json``     queued | running | succeeded | failed | cancelled, message, pid, times;
- ``progress.jsonl``  one JSON event per line, appended and flushed by the trainer;
- ``worker.log``      stdout and stderr of the worker process;
- ``cancel``          present once a cancel was requested;
- the run's result, written by the trainer: ``adapter/`` or ``model/``, ``samples.jsonl``,
  ``metrics.json``, and ``downloads/`` (the record and its files: :mod:`playground.finetune.result`);
- ``.scratch-*``      a worker's scratch folders (:func:`scratch_dir`); the worker removes them, and the
                      job manager removes what a killed worker left (:meth:`RunStore.remove_scratch`).

Every file is written whole (temp file + ``os.replace``), and a new run is
assembled in a hidden directory and renamed into place, so a reader never sees
half a file or half a run. ``progress.jsonl`` is append-only; its reader skips a
last line that is still being written. Runs belong to an owner (an opaque
session or user key): one owner never sees, reads or cancels another's runs.
Run ids sort by creation time. A finished run can be removed (:meth:`RunStore.remove`, used by the data
dir's budget): it is renamed out of sight first, so readers see the whole run or none of it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import yaml

from playground.atomic import atomic_write_json, atomic_write_text, jsonable
from playground.errors import InvalidParameterError, PlaygroundError

try:  # POSIX; elsewhere liveness falls back to the pid
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})

CONFIG_FILE = "config.yaml"
JOB_FILE = "job.json"
STATUS_FILE = "status.json"
INPUTS_DIR = "inputs"  # the run's own copies of uploaded files it trains on
PROGRESS_FILE = "progress.jsonl"
LOG_FILE = "worker.log"
CANCEL_FILE = "cancel"
SCRATCH_PREFIX = ".scratch-"
REMOVING_PREFIX = ".removing-"

_RUN_ID = re.compile(r"^\d{8}-\d{6}-\d{6}-[0-9a-f]{6}$")
_ENTRY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# Config keys shown first in a run's one-line summary, in this order.
_SUMMARY_KEYS = ("model", "model_id", "method", "task", "dataset", "data", "max_steps", "steps", "epochs",
                 "num_train_epochs", "learning_rate", "lr")


class RunNotFoundError(PlaygroundError):
    """A run id that does not exist, or that belongs to someone else (the two look the same)."""


# ---------------------------------------------------------------- locks and scratch folders


def try_lock(path: Path, shared: bool = False) -> int | None:
    """An open descriptor holding a non-blocking ``flock`` on ``path`` (created if missing), or None if
    another process holds a conflicting lock. The lock lasts until the descriptor is closed or the
    process ends, however it ends."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    if fcntl is None:  # pragma: no cover - Windows: no locks, every claim succeeds
        return fd
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block, waiting for any holder.

    Two threads of one process conflict too (each opens its own descriptor), and the lock goes
    with the process however it ends, so a crashed holder never leaves it held.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def scratch_dir(run_dir: Path, name: str) -> Path:
    """A new, empty scratch folder inside ``run_dir`` for this process (``.scratch-<name>-<pid>``).

    Kept in the run's own folder rather than the system's temporary one, so the job manager can remove
    what a killed worker left (:meth:`RunStore.remove_scratch`); the worker removes it itself otherwise.
    """
    path = Path(run_dir) / f"{SCRATCH_PREFIX}{name}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _run_file(name: str) -> str:
    """How a message names one of the store's files (a full disk reads "Could not save the run file ...")."""
    return f"the run file {name}"


def check_entry(entry: str) -> str:
    if not isinstance(entry, str) or not _ENTRY.match(entry):
        raise InvalidParameterError(f"Job entry {entry!r} must look like 'package.module:function'.")
    return entry


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class RunStatus:
    """What ``status.json`` holds."""

    status: str
    message: str = ""
    pid: int | None = None  # the worker's pid once it runs (its process group has the same id)
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES given to the worker, when the manager pins one GPU per job
    started: float | None = None
    finished: float | None = None
    updated: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RunStatus":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


class Events(NamedTuple):
    """A batch of progress events and the line to ask from next time."""

    events: list[dict]
    next_line: int


@dataclass(frozen=True)
class RunRecord:
    """One run as the UI lists it: status, config summary and the latest progress."""

    id: str
    owner: str
    path: Path
    entry: str
    status: str
    message: str
    created: float
    started: float | None
    finished: float | None
    pid: int | None
    config: dict = field(compare=False, repr=False)
    config_summary: str = ""
    stage: str = ""  # latest "stage" event: its stage and message
    stage_message: str = ""
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    eta_s: float | None = None  # seconds left in every phase, counted from now (only while running)
    phase: str = ""  # the latest progress phase (playground.finetune.progress.PHASES) and its counts
    phase_done: int | None = None
    phase_total: int | None = None
    name: str = ""  # short and readable, unique among its owner's runs (the id stays the key)
    sweep: str = ""  # the sweep it belongs to (its runs go one after another; "" for a run on its own)
    metrics: dict | None = field(default=None, compare=False)
    events: int = 0  # complete lines in progress.jsonl; pass to read_events to get only newer ones
    queue_position: int | None = None  # filled by JobManager: 0 running, 1.. waiting, None otherwise

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def progress(self) -> float | None:
        """Fraction of steps done, 0..1, when the total is known."""
        if self.step is None or not self.total_steps:
            return None
        return max(0.0, min(1.0, self.step / self.total_steps))

    @property
    def elapsed_s(self) -> float | None:
        if self.started is None:
            return None
        return max(0.0, (self.finished or time.time()) - self.started)


@dataclass
class _Meta:
    """The parts of a run that never change once it exists."""

    owner: str
    entry: str
    created: float
    config: dict
    summary: str
    name: str = ""
    sweep: str = ""


@dataclass
class _Progress:
    """What has been read of one progress.jsonl: line offsets and the latest values."""

    end: int = 0  # bytes consumed (complete lines only)
    offsets: list[int] = field(default_factory=list)  # start of each complete line
    values: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- the store


class RunStore:
    """Run directories under ``root``; safe to share between threads and with worker processes."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._last_stamp = 0
        self._meta: dict[str, _Meta] = {}
        self._progress: dict[str, _Progress] = {}

    # --- creating -------------------------------------------------------
    def create(self, owner: str, config: Mapping[str, Any], entry: str, keep_files: Sequence[str] = (),
               sweep: str = "") -> str:
        """A new queued run for ``owner``; returns its id. The directory appears complete or not at all.

        ``sweep`` names the sweep the run belongs to (job.json keeps it; the job manager runs a sweep's runs
        one after another).

        ``keep_files`` names config keys whose value is a file the run needs later (an upload, which lives in
        a temporary folder that is cleaned up): each file is copied into the run's ``inputs/`` folder and the
        config points at the copy, so a run that waits in the queue still finds its data.
        """
        if not isinstance(owner, str) or not owner:
            raise InvalidParameterError("A run needs an owner (a non-empty session or user key).")
        check_entry(entry)
        plain = json.loads(json.dumps(dict(config), default=jsonable))
        created = time.time()
        run_id = self._new_id(created)
        name = short_run_name(plain, created, self._names_of(owner))
        staging = self.root / f".partial-{run_id}"
        staging.mkdir()
        try:
            for key in keep_files:
                source = Path(str(plain.get(key) or ""))
                if not source.is_file():
                    raise InvalidParameterError(f"The file for {key!r} is gone; upload it again.")
                (staging / INPUTS_DIR).mkdir(exist_ok=True)
                shutil.copyfile(source, staging / INPUTS_DIR / source.name)
                plain[key] = str(self.root / run_id / INPUTS_DIR / source.name)
            atomic_write_text(staging / CONFIG_FILE, yaml.safe_dump(plain, sort_keys=False, allow_unicode=True),
                              _run_file(CONFIG_FILE))
            job = {"entry": entry, "owner": owner, "created": created, "name": name}
            if sweep:
                job["sweep"] = str(sweep)
            atomic_write_json(staging / JOB_FILE, job, _run_file(JOB_FILE))
            atomic_write_json(staging / STATUS_FILE, {"status": QUEUED, "message": "", "updated": created},
                              _run_file(STATUS_FILE))
            os.rename(staging, self.root / run_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return run_id

    def _new_id(self, now: float) -> str:
        # Microseconds, strictly increasing within this process; the random tail keeps processes apart.
        with self._lock:
            stamp = max(int(now * 1_000_000), self._last_stamp + 1)
            self._last_stamp = stamp
        seconds, micros = divmod(stamp, 1_000_000)
        return time.strftime("%Y%m%d-%H%M%S", time.gmtime(seconds)) + f"-{micros:06d}-{secrets.token_hex(3)}"

    def _names_of(self, owner: str) -> set[str]:
        """The short names the owner's runs already have."""
        names = set()
        for run_id in self.run_ids():
            try:
                meta = self._meta_of(run_id)
            except RunNotFoundError:
                continue
            if meta.owner == owner:
                names.add(meta.name or run_id)
        return names

    # --- finding --------------------------------------------------------
    def path(self, run_id: str) -> Path:
        """The run's directory; RunNotFoundError for a malformed or unknown id."""
        if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or not (self.root / run_id).is_dir():
            raise RunNotFoundError(f"There is no run {run_id!r}.")
        return self.root / run_id

    def run_ids(self) -> list[str]:
        """Every run's id, oldest first."""
        try:
            names = [entry.name for entry in os.scandir(self.root) if entry.is_dir() and _RUN_ID.match(entry.name)]
        except FileNotFoundError:
            return []
        return sorted(names)

    def owner_of(self, run_id: str) -> str:
        return self._meta_of(run_id).owner

    def entry_of(self, run_id: str) -> str:
        return self._meta_of(run_id).entry

    def sweep_of(self, run_id: str) -> str:
        """The sweep the run belongs to ("" for a run on its own, or one that cannot be read)."""
        try:
            return self._meta_of(run_id).sweep
        except RunNotFoundError:
            return ""

    def check_owner(self, run_id: str, owner: str) -> None:
        """RunNotFoundError unless ``owner`` owns the run (someone else's run looks like no run at all)."""
        if self.owner_of(run_id) != owner:
            raise RunNotFoundError(f"There is no run {run_id!r}.")

    def list_runs(self, owner: str) -> list[RunRecord]:
        """The owner's runs, newest first."""
        records = []
        for run_id in reversed(self.run_ids()):
            try:
                if self.owner_of(run_id) == owner:
                    records.append(self._record(run_id))
            except RunNotFoundError:  # deleted meanwhile, or not a run after all
                continue
        return records

    def get(self, run_id: str, owner: str) -> RunRecord:
        self.check_owner(run_id, owner)
        return self._record(run_id)

    def record(self, run_id: str) -> RunRecord:
        """The record without an owner check, for the job manager, the worker and the CLI."""
        return self._record(run_id)

    def config(self, run_id: str) -> dict:
        return dict(self._meta_of(run_id).config)

    def _meta_of(self, run_id: str) -> _Meta:
        with self._lock:
            meta = self._meta.get(run_id)
        if meta is not None:
            return meta
        path = self.path(run_id)
        try:
            job = json.loads((path / JOB_FILE).read_text(encoding="utf-8"))
            config = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8")) or {}
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise RunNotFoundError(f"Run {run_id!r} is incomplete or damaged: {exc}") from None
        meta = _Meta(owner=str(job.get("owner", "")), entry=str(job.get("entry", "")),
                     created=float(job.get("created", 0.0)), config=config, summary=summarize_config(config),
                     name=str(job.get("name", "")), sweep=str(job.get("sweep", "") or ""))
        with self._lock:
            self._meta[run_id] = meta
        return meta

    # --- status ---------------------------------------------------------
    def status(self, run_id: str) -> RunStatus:
        try:
            data = json.loads((self.path(run_id) / STATUS_FILE).read_text(encoding="utf-8"))
            return RunStatus.from_json(data)
        except (OSError, ValueError, TypeError):
            return RunStatus(FAILED, "The run's status file is missing or unreadable.")

    def set_status(self, run_id: str, status: str, *, force: bool = False, **fields: Any) -> bool:
        """Record a new status (merging ``fields`` into status.json); False if the run had already ended.

        A terminal status is final: it is only replaced when ``force`` is true.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        path = self.path(run_id) / STATUS_FILE
        try:
            current = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            current = {}
        if current.get("status") in TERMINAL and not force:
            return False
        now = time.time()
        current.update(fields, status=status, updated=now)
        if status in TERMINAL and current.get("finished") is None:
            current["finished"] = now
        atomic_write_json(path, current, _run_file(STATUS_FILE))
        return True

    def request_cancel(self, run_id: str) -> None:
        atomic_write_json(self.path(run_id) / CANCEL_FILE, {"time": time.time()}, _run_file(CANCEL_FILE))

    def cancel_requested(self, run_id: str) -> bool:
        return (self.root / run_id / CANCEL_FILE).exists()

    def remove_scratch(self, run_id: str) -> int:
        """Remove the scratch folders a worker left in the run (see :func:`scratch_dir`); how many went.

        For the job manager once the run's worker is gone, however it ended.
        """
        try:
            leftovers = [p for p in self.path(run_id).iterdir() if p.name.startswith(SCRATCH_PREFIX)]
        except (RunNotFoundError, OSError):
            return 0
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
        return len(leftovers)

    def remove(self, run_id: str) -> bool:
        """Delete a finished run whose worker is gone; False (and nothing removed) for a queued or running one.

        The directory is renamed out of sight first, so a reader sees the whole run or no run at all.
        """
        path = self.path(run_id)
        if not self.status(run_id).terminal or self.worker_alive(run_id):
            return False
        hidden = self.root / f"{REMOVING_PREFIX}{run_id}-{os.getpid()}-{threading.get_ident()}"
        try:
            os.rename(path, hidden)
        except FileNotFoundError:  # removed by someone else meanwhile
            return False
        with self._lock:
            self._meta.pop(run_id, None)
            self._progress.pop(run_id, None)
        shutil.rmtree(hidden, ignore_errors=True)
        return True

    def sweep_removed(self) -> None:
        """Finish removals that a process ended in the middle of (hidden ``.removing-*`` folders)."""
        try:
            leftovers = [entry.path for entry in os.scandir(self.root) if entry.name.startswith(REMOVING_PREFIX)]
        except FileNotFoundError:
            return
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)

    def claim(self, run_id: str) -> int | None:
        """For the worker: hold the run (a lock on job.json) for the life of the process; None if taken."""
        return try_lock(self.path(run_id) / JOB_FILE)

    def worker_alive(self, run_id: str, pid: int | None = None) -> bool:
        """Whether a worker process holds the run (see ``claim``). The lock vanishes with the process,
        however it ends, so a reused pid cannot fool this test."""
        if fcntl is None:  # pragma: no cover - Windows
            import psutil

            return pid is not None and psutil.pid_exists(pid)
        if not (self.root / run_id / JOB_FILE).exists():
            return False
        fd = try_lock(self.root / run_id / JOB_FILE, shared=True)
        if fd is None:
            return True
        os.close(fd)
        return False

    # --- progress -------------------------------------------------------
    def read_events(self, run_id: str, since_line: int = 0, owner: str | None = None) -> Events:
        """The events of progress.jsonl from line ``since_line`` on, and the line to start from next time.

        A last line still being written is left for the next call; a line that is not a JSON
        object is skipped (it still counts as a line). Pass ``owner`` from the UI so one person
        cannot read another's run.
        """
        if owner is not None:
            self.check_owner(run_id, owner)
        path = self.path(run_id) / PROGRESS_FILE
        with self._lock:
            progress = self._refresh(run_id, path)
            start = max(0, int(since_line))
            if start >= len(progress.offsets):
                return Events([], len(progress.offsets))
            begin, end, count = progress.offsets[start], progress.end, len(progress.offsets)
        with open(path, "rb") as handle:
            handle.seek(begin)
            chunk = handle.read(end - begin)
        return Events([e for e in map(_parse_event, chunk.split(b"\n")) if e is not None], count)

    def _refresh(self, run_id: str, path: Path) -> _Progress:
        """Read the lines appended since last time (caller holds the lock)."""
        progress = self._progress.setdefault(run_id, _Progress())
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < progress.end:  # replaced or truncated: start over
            progress = self._progress[run_id] = _Progress()
        if size == progress.end:
            return progress
        with open(path, "rb") as handle:
            handle.seek(progress.end)
            chunk = handle.read(size - progress.end)
        complete = chunk.rfind(b"\n") + 1
        position = progress.end
        for line in chunk[:complete].split(b"\n")[:-1]:
            progress.offsets.append(position)
            position += len(line) + 1
            event = _parse_event(line)
            if event is not None:
                _fold(progress.values, event)
        progress.end = position
        return progress

    def _record(self, run_id: str) -> RunRecord:
        meta = self._meta_of(run_id)
        status = self.status(run_id)
        with self._lock:
            progress = self._refresh(run_id, self.path(run_id) / PROGRESS_FILE)
            values = dict(progress.values)
            count = len(progress.offsets)
        eta = values.get("eta_s")
        if status.status == RUNNING and isinstance(eta, (int, float)) and math.isfinite(eta):
            eta = max(0.0, eta - max(0.0, time.time() - values.get("eta_time", time.time())))
        else:
            eta = None
        return RunRecord(
            id=run_id, owner=meta.owner, path=self.root / run_id, entry=meta.entry, status=status.status,
            message=status.message, created=meta.created, started=status.started, finished=status.finished,
            pid=status.pid, config=meta.config, config_summary=meta.summary, stage=values.get("stage", ""),
            stage_message=values.get("stage_message", ""), step=values.get("step"),
            total_steps=values.get("total_steps"), loss=values.get("loss"), eval_loss=values.get("eval_loss"),
            eta_s=eta, metrics=values.get("metrics"), events=count, phase=values.get("phase", ""),
            phase_done=values.get("phase_done"), phase_total=values.get("phase_total"), name=meta.name or run_id,
            sweep=meta.sweep,
        )


def _parse_event(line: bytes) -> dict | None:
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _fold(values: dict[str, Any], event: dict) -> None:
    """Keep the latest step, loss, eta, stage and metrics from one event."""
    kind = event.get("event")
    if kind == "stage":
        values["stage"] = str(event.get("stage", ""))
        values["stage_message"] = str(event.get("message", ""))
        if event.get("phase"):
            values["phase"], values["phase_done"], values["phase_total"] = (
                str(event["phase"]), event.get("done"), event.get("total"))
        else:
            for key in ("phase", "phase_done", "phase_total"):
                values.pop(key, None)
        if "eta_s" in event:
            if isinstance(event["eta_s"], (int, float)):
                values["eta_s"], values["eta_time"] = event["eta_s"], event.get("time", time.time())
            else:
                values.pop("eta_s", None)
    elif kind == "start":
        values["total_steps"] = event.get("total_steps", values.get("total_steps"))
        values.setdefault("step", 0)
    elif kind == "step":
        for key in ("step", "total_steps", "loss", "eta_s"):
            if key in event:
                values[key] = event[key]
        values["eta_time"] = event.get("time", time.time())
        values["phase"], values["phase_done"], values["phase_total"] = ("training", event.get("step"),
                                                                        event.get("total_steps"))
    elif kind == "eval":
        values["eval_loss"] = event.get("eval_loss")
    elif kind == "done":
        values["metrics"] = event.get("metrics")
        values.pop("eta_s", None)
    elif kind == "cancelled" and "step" in event:
        values["step"] = event["step"]


_SIZE = re.compile(r"^\d+(\.\d+)?[kmb]$")


def model_short_name(model: str) -> str:
    """A model's first words, before its size: smollm2-135m-instruct -> smollm2, flan-t5-base -> flan-t5."""
    words = [w for w in re.split(r"[^a-z0-9.]+", Path(str(model)).name.lower()) if w]
    kept = []
    for word in words[:2]:
        if _SIZE.match(word):
            break
        kept.append(word.replace(".", ""))
    return "-".join(kept) or "model"


def short_run_name(config: Mapping[str, Any], created: float, taken: set[str] | frozenset = frozenset(),
                   token: Callable[[int], str] = secrets.token_hex) -> str:
    """A short readable name for a run, e.g. ``smollm2-lora-0412-a3`` (model, method, month and day, a random
    tail), not among ``taken`` (the owner's other runs); the tail grows when two letters are all used up."""
    method = re.sub(r"[^a-z0-9]+", "", str(config.get("method", "")).lower()) or "run"
    stem = f"{model_short_name(str(config.get('model', '')))}-{method}-{time.strftime('%m%d', time.gmtime(created))}"
    for length in (1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 8):
        name = f"{stem}-{token(length)}"
        if name not in taken:
            return name
    raise RuntimeError("no free run name")  # 8 random bytes collide essentially never


def summarize_config(config: Mapping[str, Any], limit: int = 5) -> str:
    """A one-line summary of a config: the best-known keys first, nested keys by their last part."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, (str, int, float, bool)) and value != "":
            flat[prefix] = value

    walk("", config)
    ranked = sorted(flat, key=lambda k: (_SUMMARY_KEYS.index(k.split(".")[-1])
                                         if k.split(".")[-1] in _SUMMARY_KEYS else len(_SUMMARY_KEYS)))
    return " · ".join(f"{key.split('.')[-1]}={flat[key]}" for key in ranked[:limit])
