"""Architectures: warm latency of the whole Architectures tab on the default offline models (target: under 2 s)."""

from __future__ import annotations

import statistics
import time

from playground.bench.core import BenchOptions, Figure, Measure

ARCHITECTURES_WARM = Measure("Architectures tab, warm", "s", "< 2 s")

ARCHITECTURE_TEXTS = (
    "The capital of France is Paris, a city famous for its museums.",
    "My grandmother bakes bread every Sunday morning before church.",
    "The train to Lisbon was late because of the storm last night.",
    "Students learn faster when they explain ideas to each other.",
    "A small robot cleaned the kitchen floor while we were asleep.",
)


def bench_architectures(settings, hardware, catalog, options: BenchOptions) -> Figure:
    """Warm latency of the whole Architectures tab on the default offline models (one per family found)."""
    from playground.architectures.lab import ArchitectureLab
    from playground.backends.provider import EngineProvider

    provider = EngineProvider(settings, hardware, catalog)
    lab = ArchitectureLab(provider)
    try:
        models = lab.default_models()
        lab.run_all(ARCHITECTURE_TEXTS[0], models)  # loads (and converts) the models once
        times = []
        for text in ARCHITECTURE_TEXTS[1: 3 if options.quick else None]:  # new text: attention is extracted again
            started = time.perf_counter()
            comparison = lab.run_all(text, models)
            times.append(time.perf_counter() - started)
            if comparison.errors:
                raise RuntimeError(f"the tab failed for {comparison.errors}")
        return ARCHITECTURES_WARM.measured(
            statistics.median(times),
            f"models {', '.join(models)}; median of " + ", ".join(f"{t:.2f}" for t in times)
            + " s; a new text each run (facts, tokens, objective, attention, native task)")
    finally:
        lab.clear()
        provider.cache.clear()
