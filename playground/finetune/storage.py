"""The data dir's size budget: measure it cheaply, make room by removing the oldest finished runs, or refuse.

One instance per app (``Services`` makes it from ``PLAYGROUND_DATA_BUDGET_GB``;
the job manager calls it). Before a run starts and before a download is built,
:meth:`DataBudget.make_room` checks that the data dir plus what the work needs
stays under the budget. When it would not, it removes finished runs
(succeeded, failed, cancelled), the longest finished first, until it fits;
queued and running runs are never touched, nor a run whose download is being
built, nor anything outside ``runs/``: the converted-model cache is shared by
everyone, bounded by the catalog, and slow to rebuild (tens of seconds per
model), so it stays. If removing every finished run is not enough, the work is
refused with :class:`DataDirFullError` before anything is written, rather than
failing halfway through a write.

Measuring walks the data dir (one ``stat`` per file: milliseconds for thousands
of files, whatever their size), at most once per ``refresh_s`` seconds; in
between, the last figure is used and bumped by what each admitted piece of work
said it needs. Nothing measures on a page's poll.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from playground.errors import SaveError
from playground.finetune.result import DOWNLOAD_LOCK, DOWNLOADS_DIR
from playground.finetune.runs import RunNotFoundError, RunStore, try_lock

GB = 1_000_000_000


class DataDirFullError(SaveError):
    """The data dir's budget is used up and no finished run is left to remove."""


def disk_usage(root: Path) -> int:
    """Bytes the files under ``root`` take on disk (allocated blocks; hard links counted once); 0 if missing."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                info = entry.stat(follow_symlinks=False)
            except OSError:  # removed while walking
                continue
            if info.st_nlink > 1:
                key = (info.st_dev, info.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            blocks = getattr(info, "st_blocks", None)
            total += blocks * 512 if blocks is not None else info.st_size
    return total


def full_message(used: int, budget: int, needed: int = 0) -> str:
    """What a person sees when the budget refuses their work (no server path in it)."""
    need = f"; this needs about {needed / GB:.1f} GB more" if needed >= GB // 10 else ""
    return (f"The server's data folder is full ({used / GB:.1f} of {budget / GB:.1f} GB used{need}) and no finished "
            f"run is left to remove. Try again once running fine-tuning runs have finished, or ask whoever hosts "
            f"the app to free space or raise PLAYGROUND_DATA_BUDGET_GB.")


class DataBudget:
    """The budget of one data dir; thread-safe. ``budget_bytes`` 0 means no budget (nothing is measured)."""

    def __init__(self, data_dir: Path, store: RunStore, budget_bytes: int, *, refresh_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.data_dir = Path(data_dir)
        self.store = store
        self.budget_bytes = max(0, int(budget_bytes))
        self.refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._used: int | None = None
        self._measured_at = 0.0
        self.measurements = 0  # how many times the data dir was walked (for tests and the curious)

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def used_bytes(self, fresh: bool = False) -> int:
        """The data dir's size on disk: the last figure unless it is older than ``refresh_s`` or ``fresh``."""
        with self._lock:
            return self._measure(fresh)

    def make_room(self, needed: int = 0, *, keep: Iterable[str] = (), busy: Iterable[str] = ()) -> list[str]:
        """Make sure ``needed`` more bytes fit the budget; returns the ids of the runs removed for it.

        Runs in ``keep`` (the one being downloaded) and ``busy`` (the job manager's queued and running ones)
        are never removed. Raises DataDirFullError when removing every other finished run is not enough.
        """
        if not self.enabled:
            return []
        needed = max(0, int(needed))
        with self._lock:
            used = self._measure(False)
            if used + needed > self.budget_bytes:
                used = self._measure(True)  # the figure said full: look again before removing anything
            removed: list[str] = []
            if used + needed > self.budget_bytes:
                self.store.sweep_removed()
                for run_id in self._removable(set(keep) | set(busy)):
                    if used + needed <= self.budget_bytes:
                        break
                    freed = self._remove(run_id)
                    if freed is not None:
                        used -= freed
                        removed.append(run_id)
                self._used = max(0, used)
            if used + needed > self.budget_bytes:
                raise DataDirFullError(full_message(used, self.budget_bytes, needed))
            self._used = used + needed  # the work about to be written, until the next measurement
            return removed

    # -- helpers ---------------------------------------------------------------------------------------
    def _measure(self, fresh: bool) -> int:
        now = self._clock()
        if fresh or self._used is None or now - self._measured_at >= self.refresh_s:
            self._used = disk_usage(self.data_dir)
            self._measured_at = now
            self.measurements += 1
        return self._used

    def _removable(self, protected: set[str]) -> list[str]:
        """Finished runs that may go, the longest finished first."""
        candidates = []
        for run_id in self.store.run_ids():
            if run_id in protected:
                continue
            status = self.store.status(run_id)
            if status.terminal:
                candidates.append((status.finished or status.updated or 0.0, run_id))
        return [run_id for _, run_id in sorted(candidates)]

    def _remove(self, run_id: str) -> int | None:
        """Remove one run unless a download of it is being built; the bytes freed, or None if it stayed."""
        try:
            path = self.store.path(run_id)
        except RunNotFoundError:
            return None
        lock_fd = None
        if (path / DOWNLOADS_DIR).is_dir():
            try:
                lock_fd = try_lock(path / DOWNLOADS_DIR / DOWNLOAD_LOCK)
            except OSError:
                return None
            if lock_fd is None:  # an archive of it is being built right now
                return None
        try:
            size = disk_usage(path)
            return size if self.store.remove(run_id) else None
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
