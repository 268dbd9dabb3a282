"""The CPU demo preset end to end (``python -m playground bench --cpu-demo``, its own run): where the time goes.

``examples/finetune/cpu-demo.yaml`` runs through the app's trainer exactly as ``python -m playground finetune``
runs it, after the pre-flight estimate the Fine-tune tab's Estimate button gives for it. The figures: the whole
run's wall time (target: 10 minutes, issue 18's aim for a 2-core AVX2 laptop), the seconds of each section of
the run (load, base scoring, training, tuned scoring, save, from the run's own ``metrics.phase_seconds``), the
ROUGE-L gain on the held-out examples (target: the +19.5 points measured before the speed work), and the
pre-flight estimate against the real run (target: within 25 %).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from playground.bench.core import BenchOptions, CpuWatch, Figure, Measure, log

DEMO_WALL = Measure("CPU demo: whole run", "s", "< 600 s")
DEMO_GAIN = Measure("CPU demo: ROUGE-L gain", "points", ">= 19.5")
ESTIMATE_ERROR = Measure("CPU demo: pre-flight estimate / real run - 1", "x", "<= 0.25")
SECTION_NAMES = {"load": "loading", "base_scoring": "base scoring", "training": "training",
                 "tuned_scoring": "tuned scoring", "save": "saving"}


def section_measure(section: str) -> Measure:
    return Measure(f"CPU demo: {SECTION_NAMES.get(section, section)}", "s")


def demo_figures(metrics, estimate_s: float | None, estimate_detail: str, preflight_s: float,
                 cpu_note: str = "") -> list[Figure]:
    """The figures of one finished CPU-demo run (``metrics``: its RunMetrics) and the estimate made before it."""
    phases = dict(metrics.phase_seconds)
    engines = ", ".join(f"{side}: {engine.label}" for side in ("base", "tuned")
                        if (engine := metrics.engine_of(side)) is not None)
    figures = [DEMO_WALL.measured(metrics.duration_s, (
        f"{metrics.steps} steps at {metrics.tokens_per_s or 0:.0f} training tokens/s; answers on {engines or '-'}; "
        f"the pre-flight estimate before it took {preflight_s:.1f} s (not counted){cpu_note}"))]
    figures += [section_measure(name).measured(seconds, f"{seconds / metrics.duration_s:.0%} of the run"
                                               if metrics.duration_s else "")
                for name, seconds in phases.items()]
    if metrics.rouge_before and metrics.rouge_after:
        before, after = metrics.rouge_before["rougeL"], metrics.rouge_after["rougeL"]
        losses = f"test loss {metrics.test_loss_before} -> {metrics.test_loss_after}"
        figures.append(DEMO_GAIN.measured(round(100 * (after - before), 2),
                                          f"ROUGE-L {before:.3f} -> {after:.3f} on {metrics.sample_count} held-out "
                                          f"examples; {losses}"))
    else:
        figures.append(DEMO_GAIN.not_measured("the run answered no test examples"))
    if estimate_s is None or not metrics.duration_s:
        figures.append(ESTIMATE_ERROR.not_measured(f"no estimate ({estimate_detail})"))
    else:
        ratio = estimate_s / metrics.duration_s
        figures.append(ESTIMATE_ERROR.measured(round(abs(ratio - 1.0), 4), (
            f"estimate {estimate_s:.0f} s, real {metrics.duration_s:.0f} s, estimate / real {ratio:.2f}; "
            f"{estimate_detail}")))
    return figures


def bench_cpu_demo(settings, hardware, catalog, options: BenchOptions, scratch: Path, config=None) -> list[Figure]:
    """Estimate, then run, the CPU demo preset (``config`` overrides it, for a test on a tiny model)."""
    import torch

    from playground.finetune.config import CPU_DEMO_PRESET, FinetuneConfig
    from playground.finetune.preflight import preflight
    from playground.finetune.train import train
    from playground.models.sources import SourceResolver

    config = config or FinetuneConfig.from_yaml(CPU_DEMO_PRESET)
    torch.set_num_threads(hardware.cpu_threads)
    resolver = SourceResolver(settings.models_dir, settings.offline)
    data_dir = settings.data_dir
    log(f"CPU demo: the pre-flight estimate of {config.model} {config.method}, {config.max_steps} steps")
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        report = preflight(config, data_dir, resolver=resolver, catalog=catalog)
    preflight_s = time.perf_counter() - started
    estimate = report.run_estimate
    log(f"CPU demo: the run ({config.max_steps} steps, {config.sample_count} answers before and after)")
    watch = CpuWatch()
    with contextlib.redirect_stdout(sys.stderr):
        outcome = train(config, scratch / "cpu-demo-run", None, data_dir, resolver=resolver, catalog=catalog)
    if outcome.metrics is None:
        raise RuntimeError("the CPU demo run did not finish")
    return demo_figures(outcome.metrics, None if estimate is None else estimate.total_s,
                        "none" if estimate is None else estimate.describe(), preflight_s, watch.note())
