"""The machine's own ceilings, measured in the bench's run: memory read bandwidth and float32 matrix-multiply speed.

The other suites measure the app against plain library calls; these say how close both come to what
the CPU itself can do. Decode of a small model on llama.cpp reads every weight once per token, so its
ceiling is the read bandwidth (:mod:`~playground.bench.roofline`); training is matrix multiplies, so its
ceiling is the float32 GEMM speed of torch on the same threads. Each measure takes its sizes and
rounds as arguments, so the tests run them tiny; the best round counts (a ceiling is what the machine
reaches, not what it usually gives while other programs run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from playground.bench.core import BenchOptions, CpuWatch, Figure, Measure, log

READ_ONE_THREAD = Measure("read bandwidth, one thread", "GB/s")
READ_ALL_THREADS = Measure("read bandwidth, bench threads", "GB/s")
SGEMM = Measure("sgemm float32 (torch.mm), bench threads", "GFLOP/s")

MIN_ARRAY_BYTES = 256 * 2**20
MAX_ARRAY_BYTES = 2**30  # the bandwidth array never takes more than this, nor more than a quarter of free RAM
SGEMM_SIZE = 2048  # 17 GFLOP a multiply: long enough to time, about 0.1-0.2 s on two cores
MACHINE_ROUNDS = 5


def last_level_cache_bytes(sysfs: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """The size of the largest cache level CPU 0 reports (Linux sysfs); None where it is not reported."""
    best: tuple[int, int] | None = None
    try:
        for index in sysfs.glob("index*"):
            level = int((index / "level").read_text().strip())
            text = (index / "size").read_text().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            size = int(text.rstrip("KMG")) * scale
            if best is None or (level, size) > best:
                best = (level, size)
    except (OSError, ValueError):
        return None
    return best[1] if best else None


def bandwidth_array_bytes(cache_bytes: int | None, free_bytes: int | None) -> int:
    """How large the array is: twice the last-level cache (so a pass cannot be served from it), at least
    256 MiB, at most 1 GiB and a quarter of the free memory."""
    size = max(MIN_ARRAY_BYTES, 2 * (cache_bytes or 0))
    ceiling = MAX_ARRAY_BYTES if free_bytes is None else min(MAX_ARRAY_BYTES, max(free_bytes // 4, 2**20))
    return min(size, ceiling)


def _best_seconds(rounds: int, run: Callable[[], object]) -> float:
    """The shortest of ``rounds`` timed calls, after one untimed call (pages mapped, threads started)."""
    run()
    best = float("inf")
    for _ in range(max(1, rounds)):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def read_bandwidth(array_bytes: int, rounds: int, threads: int) -> tuple[float, float]:
    """Bytes per second of reading a float32 array of ``array_bytes``, split among ``threads`` threads.

    Each thread takes the maximum of its contiguous share: numpy's SIMD max outruns memory several times
    over (a sum does not, on one core: its adds become the limit), and numpy lets go of the GIL while
    reducing, so the threads read at once. Returns (bytes per second of the best round, bytes read).
    """
    import numpy as np

    threads = max(1, threads)
    values = np.ones(max(threads, array_bytes // 4), dtype=np.float32)  # written once: every page is mapped
    parts = np.array_split(values, threads)
    if threads == 1:
        seconds = _best_seconds(rounds, lambda: np.max(values))
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            seconds = _best_seconds(rounds, lambda: list(pool.map(np.max, parts)))
    return values.nbytes / seconds, float(values.nbytes)


def sgemm_flops(size: int, rounds: int, threads: int) -> float:
    """Float32 FLOP/s of ``torch.mm`` on two ``size`` x ``size`` matrices with ``threads`` torch threads
    (2 * size**3 operations a multiply), best of ``rounds``; torch's thread count is put back afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=generator)
        b = torch.randn(size, size, generator=generator)
        out = torch.empty(size, size)
        seconds = _best_seconds(rounds, lambda: torch.mm(a, b, out=out))
    finally:
        torch.set_num_threads(before)
    return 2.0 * size**3 / seconds


def _free_memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing: the 1 GiB ceiling alone
        return None


def bench_machine(threads: int, options: BenchOptions, array_bytes: int | None = None,
                  sgemm_size: int = SGEMM_SIZE, rounds: int | None = None) -> list[Figure]:
    """The three ceilings: read bandwidth on one thread and on the bench's ``threads``, and sgemm FLOP/s.

    ``array_bytes`` (default: from the last-level cache, see :func:`bandwidth_array_bytes`), ``sgemm_size``
    and ``rounds`` are there for the tests; each figure fails alone if its measure raises.
    """
    rounds = rounds or (3 if options.quick else MACHINE_ROUNDS)
    cache = last_level_cache_bytes()
    size = array_bytes or bandwidth_array_bytes(cache, _free_memory_bytes())
    cache_text = f"last-level cache {cache / 2**20:.0f} MiB" if cache else "last-level cache size not reported"
    figures: list[Figure] = []
    log(f"machine: read bandwidth over {size / 2**20:.0f} MiB, then sgemm {sgemm_size}x{sgemm_size}, "
        f"best of {rounds}")
    for measure, count in ((READ_ONE_THREAD, 1), (READ_ALL_THREADS, threads)):
        try:
            watch = CpuWatch()
            rate, read = read_bandwidth(size, rounds, count)
            figures.append(measure.measured(
                rate / 1e9, f"best of {rounds} passes over a {read / 2**20:.0f} MiB float32 array (numpy max, "
                            f"{count} thread{'s' if count != 1 else ''}); {cache_text}{watch.note()}"))
        except Exception as exc:
            figures.append(measure.failed(exc))
    try:
        watch = CpuWatch()
        flops = sgemm_flops(sgemm_size, rounds, threads)
        figures.append(SGEMM.measured(flops / 1e9, f"best of {rounds} torch.mm of {sgemm_size}x{sgemm_size} float32 "
                                                   f"(2n^3 FLOPs each), {threads} torch threads{watch.note()}"))
    except Exception as exc:
        figures.append(SGEMM.failed(exc))
    return figures


def figure_value(figures: list[Figure], measure: Measure) -> float | None:
    """The value of ``measure``'s figure among ``figures`` (None when absent or not measured)."""
    return next((f.value for f in figures if f.name == measure.name and f.value is not None), None)


def figure_detail(figures: list[Figure], measure: Measure) -> str:
    return next((f.detail for f in figures if f.name == measure.name), "")
