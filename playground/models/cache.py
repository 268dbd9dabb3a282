"""A process-wide cache of loaded models, shared by every user of the app.

Loading is single-flight: when many requests ask for the same model at the
same moment, one of them loads it and the others wait for that result. The
cache keeps the sum of the entries' sizes under a byte budget by evicting the
least recently used entries; an entry still being used by a request stays
alive through that request's reference and is freed when it finishes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable


@dataclass
class CacheEntry:
    value: Any
    size_bytes: int
    loaded_at: float
    load_seconds: float


@dataclass(frozen=True)
class CacheStats:
    loads: int
    hits: int
    evictions: int
    used_bytes: int
    budget_bytes: int
    keys: tuple


class _Pending:
    """A load in progress that other threads can wait on."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.entry: CacheEntry | None = None
        self.error: BaseException | None = None


Loader = Callable[[], tuple[Any, int]]


class ModelCache:
    """Thread-safe LRU cache keyed by anything hashable, bounded by bytes."""

    def __init__(self, budget_bytes: int, on_evict: Callable[[Hashable, Any], None] | None = None):
        self.budget_bytes = budget_bytes
        self._on_evict = on_evict
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, CacheEntry] = OrderedDict()
        self._pending: dict[Hashable, _Pending] = {}
        self._loads = self._hits = self._evictions = 0

    def get_or_load(self, key: Hashable, loader: Loader) -> Any:
        """The cached value for ``key``; ``loader`` returns (value, size in bytes) when absent."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return entry.value
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = _Pending()
        assert pending is not None
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            assert pending.entry is not None
            with self._lock:
                self._hits += 1
            return pending.entry.value
        return self._load(key, loader, pending)

    def _load(self, key: Hashable, loader: Loader, pending: _Pending) -> Any:
        start = time.perf_counter()
        try:
            value, size = loader()
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            pending.error = exc
            pending.done.set()
            raise
        entry = CacheEntry(value, int(size), time.time(), time.perf_counter() - start)
        with self._lock:
            self._loads += 1
            self._entries[key] = entry
            del self._pending[key]
            evicted = self._evict_over_budget(keep=key)
        pending.entry = entry
        pending.done.set()
        for old_key, old in evicted:
            self._release(old_key, old.value)
        return value

    def _evict_over_budget(self, keep: Hashable) -> list[tuple[Hashable, CacheEntry]]:
        evicted = []
        while self._used_bytes() > self.budget_bytes and len(self._entries) > 1:
            old_key = next(iter(self._entries))
            if old_key == keep:  # the newest entry is never evicted by its own load
                break
            evicted.append((old_key, self._entries.pop(old_key)))
            self._evictions += 1
        return evicted

    def _release(self, key: Hashable, value: Any) -> None:
        if self._on_evict is not None:
            self._on_evict(key, value)

    def evict(self, key: Hashable) -> bool:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._evictions += 1
        if entry is None:
            return False
        self._release(key, entry.value)
        return True

    def clear(self) -> None:
        for key in list(self.keys()):
            self.evict(key)

    def peek(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            return entry.value if entry else None

    def entry(self, key: Hashable) -> CacheEntry | None:
        with self._lock:
            return self._entries.get(key)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def _used_bytes(self) -> int:
        return sum(e.size_bytes for e in self._entries.values())

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used_bytes()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._loads, self._hits, self._evictions, self._used_bytes(), self.budget_bytes,
                              tuple(self._entries))
