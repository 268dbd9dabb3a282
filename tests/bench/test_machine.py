"""The machine ceilings on tiny sizes: what they return and how the figures are made (never how fast)."""

from __future__ import annotations

import pytest

from playground.bench import machine
from playground.bench.core import BenchOptions

MIB = 2**20


def _cache_tree(root, levels):
    for i, (level, size) in enumerate(levels):
        index = root / f"index{i}"
        index.mkdir(parents=True)
        (index / "level").write_text(f"{level}\n")
        (index / "size").write_text(f"{size}\n")
    return root


def test_the_last_level_cache_is_the_highest_level_reported(tmp_path):
    root = _cache_tree(tmp_path / "cache", [(1, "48K"), (1, "64K"), (2, "2048K"), (3, "491520K")])
    assert machine.last_level_cache_bytes(root) == 480 * MIB
    assert machine.last_level_cache_bytes(_cache_tree(tmp_path / "two", [(1, "32K"), (2, "1M")])) == MIB


def test_an_unreported_or_unreadable_cache_size_is_none(tmp_path):
    assert machine.last_level_cache_bytes(tmp_path / "missing") is None
    assert machine.last_level_cache_bytes(_cache_tree(tmp_path / "bad", [(3, "lots")])) is None


@pytest.mark.parametrize("cache, free, expected", [
    (None, None, 256 * MIB),  # no cache size: the floor
    (32 * MIB, 16 * 2**30, 256 * MIB),  # twice a small cache is under the floor
    (480 * MIB, 16 * 2**30, 960 * MIB),  # twice the cache
    (2 * 2**30, 16 * 2**30, 2**30),  # never more than 1 GiB
    (480 * MIB, 1 * 2**30, 256 * MIB),  # nor more than a quarter of the free memory
])
def test_the_bandwidth_array_outgrows_the_cache_within_a_memory_bound(cache, free, expected):
    assert machine.bandwidth_array_bytes(cache, free) == expected


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_read_bandwidth_reads_the_whole_array_on_each_thread_count(threads):
    rate, read = machine.read_bandwidth(MIB, rounds=2, threads=threads)
    assert read == MIB and rate > 0


def test_sgemm_counts_two_n_cubed_and_puts_torch_threads_back():
    import torch

    before = torch.get_num_threads()
    flops = machine.sgemm_flops(32, rounds=2, threads=1)
    assert flops > 0 and torch.get_num_threads() == before


def test_the_three_ceilings_are_informational_figures_in_their_units():
    figures = machine.bench_machine(2, BenchOptions(quick=True), array_bytes=MIB, sgemm_size=32, rounds=2)
    assert [(f.name, f.unit, f.target, f.passed) for f in figures] == [
        (machine.READ_ONE_THREAD.name, "GB/s", "", None),
        (machine.READ_ALL_THREADS.name, "GB/s", "", None),
        (machine.SGEMM.name, "GFLOP/s", "", None),
    ]
    assert all(f.value is not None and f.value > 0 for f in figures)
    assert "1 MiB float32 array" in figures[0].detail and "1 thread)" in figures[0].detail
    assert "2 threads" in figures[1].detail and "32x32" in figures[2].detail and "2 torch threads" in figures[2].detail


def test_a_ceiling_that_cannot_be_measured_fails_alone(monkeypatch):
    def broken(*args):
        raise RuntimeError("no torch here")

    monkeypatch.setattr(machine, "sgemm_flops", broken)
    figures = machine.bench_machine(1, BenchOptions(quick=True), array_bytes=MIB, sgemm_size=32, rounds=1)
    assert [f.passed for f in figures] == [None, None, False]
    assert "RuntimeError: no torch here" in figures[2].detail
    assert machine.figure_value(figures, machine.SGEMM) is None
    assert machine.figure_value(figures, machine.READ_ALL_THREADS) == figures[1].value
