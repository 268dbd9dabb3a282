"""The process-wide model cache: single-flight loads, LRU eviction under a byte budget."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from playground.models.cache import ModelCache

THREADS = 8


def _run_in_threads(fn, n=THREADS, timeout=30.0):
    """Run ``fn()`` in n threads released together; returns (results, errors) by thread index."""
    barrier = threading.Barrier(n)
    results: dict[int, object] = {}
    errors: dict[int, BaseException] = {}

    def work(i):
        barrier.wait()
        try:
            results[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors[i] = exc

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a cache call hung"
    return results, errors


def test_concurrent_requests_load_once():
    cache = ModelCache(budget_bytes=1000)
    calls = []
    value = object()

    def slow_loader():
        calls.append(threading.get_ident())
        time.sleep(0.5)
        return value, 10

    results, errors = _run_in_threads(lambda: cache.get_or_load("m", slow_loader))
    assert not errors
    assert len(calls) == 1
    assert len(results) == THREADS and all(r is value for r in results.values())
    stats = cache.stats()
    assert (stats.loads, stats.hits, stats.used_bytes, stats.keys) == (1, THREADS - 1, 10, ("m",))


def test_different_keys_load_independently():
    cache = ModelCache(budget_bytes=1000)
    counter = itertools.count()
    results, errors = _run_in_threads(lambda: cache.get_or_load(next(counter) % 2, lambda: (object(), 1)))
    assert not errors
    assert sorted(cache.keys()) == [0, 1]
    assert cache.stats().loads == 2


def test_hit_returns_cached_value_without_loading():
    cache = ModelCache(budget_bytes=100)
    first = cache.get_or_load("a", lambda: ("A", 1))
    assert cache.get_or_load("a", lambda: pytest.fail("loaded twice")) == first == "A"
    assert cache.stats().hits == 1
    assert cache.entry("a").size_bytes == 1 and cache.entry("a").load_seconds >= 0


def test_lru_eviction_order_under_budget():
    evicted = []
    cache = ModelCache(budget_bytes=100, on_evict=lambda key, value: evicted.append((key, value)))
    cache.get_or_load("a", lambda: ("A", 40))
    cache.get_or_load("b", lambda: ("B", 40))
    cache.get_or_load("a", lambda: pytest.fail("a is cached"))  # a becomes the most recently used
    cache.get_or_load("c", lambda: ("C", 40))  # over budget: b is the least recently used
    assert evicted == [("b", "B")]
    assert cache.keys() == ["a", "c"]
    cache.get_or_load("d", lambda: ("D", 70))  # needs both a and c gone
    assert evicted == [("b", "B"), ("a", "A"), ("c", "C")]
    assert cache.keys() == ["d"]
    assert cache.used_bytes == 70
    assert cache.stats().evictions == 3


def test_newest_entry_is_kept_even_when_over_budget():
    evicted = []
    cache = ModelCache(budget_bytes=100, on_evict=lambda key, value: evicted.append(key))
    cache.get_or_load("small", lambda: ("S", 10))
    assert cache.get_or_load("huge", lambda: ("H", 500)) == "H"
    assert evicted == ["small"]
    assert cache.keys() == ["huge"]


def test_failing_loader_reaches_every_waiter_and_a_later_call_retries():
    cache = ModelCache(budget_bytes=1000)
    calls = []

    def failing_loader():
        calls.append(1)
        time.sleep(0.5)
        raise RuntimeError("weights are corrupt")

    results, errors = _run_in_threads(lambda: cache.get_or_load("m", failing_loader))
    assert not results
    assert len(errors) == THREADS
    assert all(isinstance(e, RuntimeError) and "corrupt" in str(e) for e in errors.values())
    assert len(calls) == 1
    assert cache.keys() == [] and cache.stats().loads == 0

    assert cache.get_or_load("m", lambda: ("fixed", 1)) == "fixed"
    assert cache.keys() == ["m"]


def test_explicit_evict_and_clear_call_on_evict():
    evicted = []
    cache = ModelCache(budget_bytes=100, on_evict=lambda key, value: evicted.append(value))
    cache.get_or_load("a", lambda: ("A", 1))
    cache.get_or_load("b", lambda: ("B", 1))
    assert cache.evict("a") is True
    assert cache.evict("a") is False
    assert cache.peek("a") is None and cache.peek("b") == "B"
    cache.clear()
    assert evicted == ["A", "B"]
    assert cache.keys() == [] and cache.used_bytes == 0
