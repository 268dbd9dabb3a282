"""The job manager: a FIFO queue of runs, each trained in its own child process.

``submit`` writes a queued run to the :class:`RunStore`; one scheduler thread
starts queued runs, oldest first, whenever one of ``slots`` is free, as
``python -m playground.finetune.worker RUN_DIR`` in a new process group with
stdout and stderr going to the run's ``worker.log``. A crash, a leak or an
out-of-memory kill ends that process only, and the memory goes back to the
system when it exits. The same thread watches the children: a worker that dies
without writing a final status leaves its run ``failed`` with the exit code or
signal, and the next queued run starts.

Sweeps: :meth:`JobManager.submit_sweep` queues several runs of one person as one
sweep (job.json names it); the scheduler starts a sweep's next run only once the
one before it has ended, whatever the number of slots, so the runs of a sweep
compare on an otherwise equal machine. :meth:`JobManager.cancel_sweep` stops the
running one and cancels the rest.

Cancel: a queued run is marked cancelled at once; a running one gets a
``cancel`` file and SIGTERM, which the trainer honours between steps, and its
process group is killed if it is still alive ``grace_s`` seconds later (30 by
default: one training step of a small model on two CPU cores takes several seconds,
and a trainer that stops cleanly saves what it has).

Restarts. Workers outlive the app (``shutdown`` leaves them running unless
asked), so a page reload or an app restart loses nothing. A new manager over
the same run directory:

- adopts runs whose worker is still alive (it holds a lock on the run's
  ``job.json``), watches them and counts them against the slots;
- marks ``failed`` runs left ``running`` whose worker is gone ("The app
  restarted while this run was in progress.");
- re-queues runs left ``queued``, oldest first: they never started, so the
  person who asked for them still gets them.

Disk: with a :class:`~playground.finetune.storage.DataBudget`, ``submit`` and the
start of each queued run first make room under the data dir's budget (removing
the oldest finished runs, never a queued or running one) and refuse with a
message when there is none; a run refused at its start ends ``failed`` with that
message. Once a worker is gone, however it ended, the scratch folders it kept in
its run directory are removed.

Only one manager per run directory schedules (it holds ``scheduler.lock``).
Another app process on the same data dir lists, reads and cancels runs but
refuses ``submit`` with a message, and takes over if the first one stops.
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from playground.errors import InvalidParameterError, PlaygroundError
from playground.finetune.runs import (
    CANCELLED,
    FAILED,
    LOG_FILE,
    QUEUED,
    RUNNING,
    RunRecord,
    RunStore,
    check_entry,
    try_lock,
)
from playground.finetune.storage import DataBudget, DataDirFullError
from playground.finetune.worker import EXIT_CLAIMED

log = logging.getLogger(__name__)

WORKER_MODULE = "playground.finetune.worker"
TRAIN_ENTRY = "playground.finetune.train:run_job"
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder that holds ``playground/``
_RESTARTED = "The app restarted while this run was in progress."


class SchedulerBusyError(PlaygroundError):
    """Another app process already runs the jobs of this data dir."""


def visible_gpus(hardware: Any) -> list[str]:
    """The CUDA devices a job may be pinned to (values for CUDA_VISIBLE_DEVICES); empty without CUDA.

    Never imports torch: uses CUDA_VISIBLE_DEVICES, torch if hardware detection already
    imported it, or the driver's list of GPUs.
    """
    if not getattr(hardware, "cuda", False):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [token.strip() for token in visible.split(",") if token.strip()]
    count = 0
    torch = sys.modules.get("torch")
    if torch is not None:
        count = int(torch.cuda.device_count())
    elif os.path.isdir("/proc/driver/nvidia/gpus"):
        count = len(os.listdir("/proc/driver/nvidia/gpus"))
    return [str(i) for i in range(max(count, 1))]


def automatic_slots(setting: int, gpus: Sequence[str]) -> int:
    """``job_slots`` resolved: the setting when positive, else one per visible GPU, else one."""
    return setting if setting > 0 else max(1, len(gpus))


@dataclass
class _Job:
    run_id: str
    pid: int | None
    process: subprocess.Popen | None  # None for a worker adopted from an earlier app process
    gpu: str | None = None
    sweep: str = ""  # the sweep the run belongs to: no other run of it starts while this one runs
    cancel_at: float | None = None  # when the cancel was seen; the group is killed grace_s later
    killed: bool = False


class JobManager:
    """Queue and run fine-tuning jobs in child processes; thread-safe, one per app."""

    def __init__(self, store: RunStore, slots: int, python: str = sys.executable, *,
                 gpus: Sequence[str] | None = None, grace_s: float = 30.0, poll_s: float = 0.2,
                 env: Mapping[str, str] | None = None, budget: DataBudget | None = None):
        if slots < 1:
            raise InvalidParameterError(f"A job manager needs at least one slot, not {slots}.")
        self.store = store
        self.slots = slots
        self.python = python
        # One GPU per job only when there are enough GPUs for every slot; otherwise jobs share them.
        self.gpus = list(gpus) if gpus and len(gpus) >= slots else []
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.env = dict(env or {})
        self.budget = budget
        self._cond = threading.Condition(threading.RLock())
        self._queue: collections.deque[str] = collections.deque()
        self._running: dict[str, _Job] = {}
        self._lock_fd: int | None = None
        self._stopping = False
        if self._try_lead():
            self._recover()
        self._thread = threading.Thread(target=self._loop, name="job-scheduler", daemon=True)
        self._thread.start()

    # --- public API -----------------------------------------------------
    @property
    def leading(self) -> bool:
        """Whether this manager schedules the jobs of its run directory (False: another process does)."""
        return self._lock_fd is not None

    def submit(self, owner: str, config: Mapping[str, Any], entry: str = TRAIN_ENTRY, *,
               admit: Callable[[list[RunRecord]], None] | None = None, keep_files: Sequence[str] = ()) -> str:
        """Queue a run for ``owner``; returns its id. The run starts when a slot is free.

        ``admit``, when given, sees the owner's runs (newest first, with queue positions) and may refuse
        the new one by raising; it is called under the manager's lock, so two submits by one person at the
        same moment cannot both pass a "one active run" rule. ``keep_files`` (config keys holding uploaded
        files) are copied into the run's folder (:meth:`RunStore.create`).
        """
        check_entry(entry)
        module = entry.partition(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise InvalidParameterError(f"Job entry {entry!r}: there is no module {module!r}.")
        if self.leading and not self._stopping:
            self.make_room()  # before anything is written; may refuse with DataDirFullError
        with self._cond:
            if self._stopping:
                raise SchedulerBusyError("The job manager is shutting down; no new runs can start.")
            if not self.leading:
                raise SchedulerBusyError(
                    f"Another app process already runs the fine-tuning jobs in {self.store.root}. "
                    "Start your run there, or give this app its own PLAYGROUND_DATA_DIR.")
            if admit is not None:
                admit(self.list_runs(owner))
            run_id = self.store.create(owner, config, entry, keep_files=keep_files)
            self._queue.append(run_id)
            self._cond.notify_all()
        return run_id

    def submit_sweep(self, owner: str, configs: Sequence[Mapping[str, Any]], sweep: str, entry: str = TRAIN_ENTRY, *,
                     admit: Callable[[list[RunRecord]], None] | None = None) -> list[str]:
        """Queue the runs of one sweep for ``owner`` (in order); returns their ids. They run one after another:
        the next starts once the one before it has ended. ``admit`` sees the owner's runs once, as for
        :meth:`submit` (a sweep counts as one start); all the runs are queued or none."""
        check_entry(entry)
        if not configs:
            raise InvalidParameterError("A sweep needs at least one run.")
        if not sweep:
            raise InvalidParameterError("A sweep needs a name.")
        if self.leading and not self._stopping:
            self.make_room()
        with self._cond:
            if self._stopping:
                raise SchedulerBusyError("The job manager is shutting down; no new runs can start.")
            if not self.leading:
                raise SchedulerBusyError(
                    f"Another app process already runs the fine-tuning jobs in {self.store.root}. "
                    "Start your sweep there, or give this app its own PLAYGROUND_DATA_DIR.")
            if admit is not None:
                admit(self.list_runs(owner))
            ids: list[str] = []
            try:
                for config in configs:
                    ids.append(self.store.create(owner, config, entry, sweep=sweep))
            except BaseException:
                for run_id in ids:  # all or none: the ones made so far never start
                    self.store.set_status(run_id, CANCELLED, message="The sweep could not be queued.")
                raise
            self._queue.extend(ids)
            self._cond.notify_all()
        return ids

    def sweep_runs(self, sweep: str, owner: str) -> list[RunRecord]:
        """The owner's runs of one sweep, oldest first (the order they run in), with queue positions."""
        return [r for r in reversed(self.list_runs(owner)) if sweep and r.sweep == sweep]

    def cancel_sweep(self, sweep: str, owner: str) -> int:
        """Stop the owner's sweep: its queued runs are cancelled first (so none starts), then the running one.
        Returns how many runs it stopped."""
        stopped = 0
        with self._cond:
            members = self.sweep_runs(sweep, owner)
            for record in sorted(members, key=lambda r: r.status == RUNNING):  # the queued ones first
                if not record.terminal and self.cancel(record.id, owner):
                    stopped += 1
        return stopped

    def make_room(self, needed: int = 0, keep: Sequence[str] = ()) -> list[str]:
        """Make ``needed`` more bytes fit the data dir's budget (see DataBudget.make_room); the runs removed.

        The manager's queued and running runs, and those in ``keep``, are never removed. Without a budget
        this does nothing. Raises DataDirFullError when there is no room to be made.
        """
        if self.budget is None or not self.budget.enabled:
            return []
        with self._cond:
            busy = set(self._running) | set(self._queue)
        return self.budget.make_room(needed, keep=keep, busy=busy)

    def queue_position(self, run_id: str) -> int | None:
        """0 while running, 1.. while waiting (1 = next), None once finished (or unknown)."""
        with self._cond:
            if run_id in self._running:  # until the exit is noticed, the worker's final status has the say
                return None if self.store.status(run_id).terminal else 0
            try:
                return self._queue.index(run_id) + 1
            except ValueError:
                return None

    def get(self, run_id: str, owner: str) -> RunRecord:
        """The owner's run with its queue position; RunNotFoundError for anyone else's."""
        return self._with_position(self.store.get(run_id, owner))

    def list_runs(self, owner: str) -> list[RunRecord]:
        """The owner's runs, newest first, with queue positions."""
        return [self._with_position(record) for record in self.store.list_runs(owner)]

    def cancel(self, run_id: str, owner: str) -> bool:
        """Stop the owner's run: a queued one at once, a running one within one training step.

        Returns False when the run had already ended. RunNotFoundError for anyone else's run.
        """
        self.store.check_owner(run_id, owner)
        with self._cond:
            if run_id in self._queue:
                self._queue.remove(run_id)
                self.store.set_status(run_id, CANCELLED, message="Cancelled before it started.")
                return True
            status = self.store.status(run_id)
            if status.status == QUEUED:  # queued by another manager's queue: it skips cancelled runs
                return self.store.set_status(run_id, CANCELLED, message="Cancelled before it started.")
            if status.status != RUNNING:
                return False
            self.store.request_cancel(run_id)
            job = self._running.get(run_id)
            if job is not None:
                self._terminate(job, time.time())
            elif status.pid and self.store.worker_alive(run_id, status.pid):
                _signal(status.pid, signal.SIGTERM)  # a run another app process watches
            self._cond.notify_all()
            return True

    def wait(self, run_id: str, timeout: float | None = None) -> RunRecord:
        """Block until the run has ended (or ``timeout`` seconds passed); returns its record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self._with_position(self.store.record(run_id))
            if record.terminal or (deadline is not None and time.monotonic() >= deadline):
                return record
            with self._cond:
                self._cond.wait(0.1)

    def shutdown(self, cancel_running: bool = False, timeout: float | None = None) -> None:
        """Stop scheduling. Running workers keep going (a restarted app adopts them) unless
        ``cancel_running``: then they are cancelled and killed after the grace period.
        Queued runs stay queued on disk; the next manager re-queues them."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if cancel_running:
            with self._cond:
                now = time.time()
                for job in self._running.values():
                    self.store.request_cancel(job.run_id)
                    self._terminate(job, now)
            deadline = time.monotonic() + self.grace_s + (timeout or 10.0)
            while self._running and time.monotonic() < deadline:
                self._watch()
                time.sleep(0.05)
        with self._cond:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # drops the scheduler lock
                self._lock_fd = None

    # --- scheduling -----------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                try:
                    if not self.leading and self._try_lead():
                        self._recover()
                    if self.leading:
                        self._watch()
                        self._start_queued()
                except Exception:  # noqa: BLE001 - the scheduler must outlive any one bad run
                    log.exception("job scheduler tick failed")
                self._cond.wait(self.poll_s)

    def _try_lead(self) -> bool:
        """Take the run directory's scheduler lock if nobody holds it."""
        self._lock_fd = try_lock(self.store.root / "scheduler.lock")
        return self._lock_fd is not None

    def _recover(self) -> None:
        """Adopt live workers, fail runs whose worker is gone, re-queue queued runs (oldest first)."""
        with self._cond:
            for run_id in self.store.run_ids():
                if run_id in self._running or run_id in self._queue:
                    continue
                status = self.store.status(run_id)
                if status.status == QUEUED:
                    self._queue.append(run_id)
                elif status.status == RUNNING:
                    if self.store.worker_alive(run_id, status.pid):
                        self._running[run_id] = _Job(run_id, status.pid, None, status.gpu,
                                                     self.store.sweep_of(run_id))
                    else:
                        self._settle(run_id, _RESTARTED, killed=False)
                        self.store.remove_scratch(run_id)

    def _start_queued(self) -> None:
        """Start queued runs, oldest first, while a slot is free; a run of a sweep whose run before it still runs
        waits in its place (others may pass it)."""
        busy = {job.sweep for job in self._running.values() if job.sweep}
        waiting: list[str] = []
        while self._queue and len(self._running) < self.slots:
            run_id = self._queue.popleft()
            if self.store.status(run_id).status != QUEUED:  # skips runs cancelled by another process
                continue
            sweep = self.store.sweep_of(run_id)
            if sweep and sweep in busy:
                waiting.append(run_id)
                continue
            self._start(run_id)
            if sweep:
                busy.add(sweep)
        self._queue.extendleft(reversed(waiting))

    def _start(self, run_id: str) -> None:
        try:
            self.make_room(keep=(run_id,))
        except DataDirFullError as exc:
            self.store.set_status(run_id, FAILED, message=str(exc))
            return
        used = {job.gpu for job in self._running.values()}
        gpu = next((g for g in self.gpus if g not in used), None)
        # Written before the child exists, so it never races the worker's own writes.
        self.store.set_status(run_id, RUNNING, message="Starting.", pid=None, gpu=gpu, started=time.time())
        run_dir = self.store.path(run_id)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        try:
            with open(run_dir / LOG_FILE, "ab") as log_file:
                process = subprocess.Popen(
                    [self.python, "-m", WORKER_MODULE, str(run_dir)], stdin=subprocess.DEVNULL,
                    stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as exc:
            self.store.set_status(run_id, FAILED, message=f"Could not start the worker process: {exc}")
            return
        self._running[run_id] = _Job(run_id, process.pid, process, gpu, self.store.sweep_of(run_id))

    # --- watching -------------------------------------------------------
    def _watch(self) -> None:
        """Settle runs whose worker ended; start the grace clock of cancelled ones; kill overdue ones."""
        now = time.time()
        with self._cond:
            for job in list(self._running.values()):
                if job.process is not None:
                    code = job.process.poll()
                    ended = code is not None
                    if ended:
                        _signal(job.pid, signal.SIGKILL, group=True)  # strays of the job (data loaders, ...)
                    if code == EXIT_CLAIMED:  # another worker has the run: watch that one instead
                        job.process, job.pid, ended = None, self.store.status(job.run_id).pid, False
                else:
                    code = None
                    ended = not self.store.worker_alive(job.run_id, job.pid)
                if ended:
                    del self._running[job.run_id]
                    if not self.store.status(job.run_id).terminal:
                        self._settle(job.run_id, _death_message(code), job.killed)
                    self.store.remove_scratch(job.run_id)  # what a killed worker could not remove itself
                    self._cond.notify_all()
                    continue
                if job.cancel_at is None and self.store.cancel_requested(job.run_id):
                    self._terminate(job, now)  # asked through another manager, or before the worker ran
                if job.cancel_at is not None and not job.killed and now - job.cancel_at >= self.grace_s:
                    log.warning("run %s did not stop within %.0f s of its cancel; killing it", job.run_id,
                                self.grace_s)
                    if job.pid is not None:
                        _signal(job.pid, signal.SIGKILL, group=True)
                    job.killed = True

    def _terminate(self, job: _Job, now: float) -> None:
        if job.cancel_at is None:
            job.cancel_at = now
        if job.pid is not None and (job.process is not None or self.store.worker_alive(job.run_id, job.pid)):
            _signal(job.pid, signal.SIGTERM)

    def _settle(self, run_id: str, reason: str, killed: bool) -> None:
        """Final status of a run whose worker ended without writing one."""
        if self.store.cancel_requested(run_id):
            how = f" (stopped by force after {self.grace_s:g} s)" if killed else ""
            self.store.set_status(run_id, CANCELLED, message=f"Cancelled{how}.")
        else:
            self.store.set_status(run_id, FAILED, message=reason)

    def _with_position(self, record: RunRecord) -> RunRecord:
        return replace(record, queue_position=self.queue_position(record.id))


def _death_message(code: int | None) -> str:
    """Why a worker ended without a final status, from its exit code."""
    if code is None:
        how = "ended"
    elif code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"was killed by {name}" + (" (often a sign of running out of memory)" if -code == signal.SIGKILL else "")
    else:
        how = f"exited with code {code}"
    return f"The worker process {how} before the run finished; see worker.log."


def _signal(pid: int, signum: int, group: bool = False) -> None:
    try:
        if group:
            os.killpg(pid, signum)  # the worker leads its own process group
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
