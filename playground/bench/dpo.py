"""The DPO CPU preset (``examples/finetune/dpo-cpu-demo.yaml``): its wall time and what it does to held-out pairs.

The preset runs exactly as ``python -m playground finetune examples/finetune/dpo-cpu-demo.yaml`` runs it
(the app's training entry, :func:`~playground.finetune.train.train`): reading the pairs, loading SmolLM2,
scoring the base on the held-out pairs and answering, training DPO, scoring and answering again, saving.
The one-off conversion of the packaged GGUF to safetensors is done (and timed) first, as the app does once
per data dir, so the wall time is that of a run on a machine that has run the app before.

Targets: the run within 5 minutes on the machine's threads (two cores is the design's laptop), and the
held-out reward accuracy (the share of pairs whose chosen answer the model gives the higher log-probability;
:mod:`~playground.finetune.preference`) at least 20 points above the base's.
"""

from __future__ import annotations

import time
from pathlib import Path

from playground.bench.core import BenchOptions, CpuWatch, Figure, Measure, log

DPO_PRESET = Path(__file__).resolve().parents[2] / "examples" / "finetune" / "dpo-cpu-demo.yaml"
DPO_WALL = Measure("DPO CPU preset wall time", "s", "<= 300 s")
DPO_GAIN = Measure("DPO CPU preset held-out reward accuracy gain", "points", ">= 20")


def bench_dpo(settings, hardware, catalog, options: BenchOptions, scratch: Path) -> list[Figure]:
    import torch

    from playground.finetune.config import FinetuneConfig
    from playground.finetune.train import train
    from playground.finetune.weights import locate_model
    from playground.models.sources import SourceResolver

    torch.set_num_threads(hardware.cpu_threads)
    config = FinetuneConfig.from_yaml(DPO_PRESET, catalog=catalog)
    resolver = SourceResolver(settings.models_dir, settings.offline)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    locate_model(config, resolver, data_dir, catalog)  # the one-off GGUF -> safetensors conversion
    converted_s = time.perf_counter() - started
    log(f"DPO preset: {config.max_steps} steps of {config.batch_size} pairs on {config.model} "
        f"({hardware.cpu_threads} threads)")
    watch = CpuWatch()
    started = time.perf_counter()
    outcome = train(config, scratch / "dpo-run", None, data_dir, resolver=resolver, catalog=catalog)
    wall = time.perf_counter() - started
    others = watch.others_share()
    figures = outcome.metrics.preference if outcome.metrics else None
    if not figures:
        return [DPO_WALL.measured(wall, "the run gave no preference figures"), DPO_GAIN.not_measured("no figures")]
    busy = f"; other programs used {others:.0%} of the CPU meanwhile" if others is not None else ""
    common = (f"{config.max_steps} steps x {config.batch_size} pairs, {hardware.cpu_threads} threads, "
              f"{figures['pairs']} held-out pairs{busy}")
    gain = round(100 * (figures["accuracy_after"] - figures["accuracy_before"]), 2)
    return [
        DPO_WALL.measured(wall, f"{common}; training {outcome.metrics.train_duration_s:.0f} s of it; the GGUF's "
                                f"one-off conversion before it took {converted_s:.0f} s"),
        DPO_GAIN.measured(gain, f"reward accuracy {100 * figures['accuracy_before']:.1f}% (base) -> "
                                f"{100 * figures['accuracy_after']:.1f}% (tuned); margin "
                                f"{figures['margin_before']:+.2f} -> {figures['margin_after']:+.2f}; implicit "
                                f"reward accuracy {100 * figures['reward_accuracy']:.1f}%; {common}"),
    ]
