"""Trainer variants, each measured alone against the app's padded batches (``python -m playground bench
--trainer-variants``, its own run).

The same LoRA model (the fine-tune figure's config: the bench's model, the bundled dialogues, batch 4) runs
forward and backward on the same training batches in turn:

- ``padded``: what the app's trainer does (dynamic padding, ``DataCollatorForSeq2Seq``), the baseline;
- ``packed``: padding-free, the batch as one row with restarting position ids
  (:func:`playground.finetune.encoding.packing_collator`, ``use_cache=False``), the loss identical;
- ``logits on label positions``: the padded batch with ``logits_to_keep`` on the target tokens only
  (:class:`playground.finetune.encoding.LabelPositionsOnly`): the output head skips the prompt, the loss identical;
- ``bf16 autocast``: the padded batch under ``torch.autocast("cpu", torch.bfloat16)``, only where the CPU has
  native bf16 (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo); its loss is reported beside fp32's.

Each figure is the variant's real tokens/s over the padded baseline's, the rounds alternating so that a
machine's changing load falls on both alike. The optimizer step is left out (LoRA's is tiny), so the
figures say what each change does to the forward and backward passes, which are nearly all of a step.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from playground.bench.core import BenchOptions, CpuWatch, Figure, Measure, log

PACKED = Measure("trainer variant: packed / padded batches", "x")
LABEL_POSITIONS = Measure("trainer variant: logits on label positions / on all", "x")
BF16 = Measure("trainer variant: bf16 autocast / fp32", "x")
VARIANT_BATCHES = 6  # timed batches per variant and round


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX), from /proc/cpuinfo's flags."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _time_batches(model, batches, autocast: bool = False) -> tuple[float, float]:
    """(seconds, mean loss) of forward and backward over ``batches`` (gradients dropped after each)."""
    import contextlib

    import torch

    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    losses = []
    start = time.perf_counter()
    for batch in batches:
        with context:
            loss = model(**batch).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return time.perf_counter() - start, statistics.fmean(losses)


def bench_trainer_variants(settings, hardware, catalog, options: BenchOptions, scratch: Path,
                           config=None, timed_batches: int = VARIANT_BATCHES) -> list[Figure]:
    """The variants' figures on the fine-tune figure's config (``config`` overrides it, for a test)."""
    import torch

    from playground.bench.finetune import finetune_config
    from playground.finetune.data import load_splits
    from playground.finetune.encoding import IGNORE_INDEX, LabelPositionsOnly, encode_splits, packing_collator
    from playground.finetune.methods import build_trainable
    from playground.finetune.weights import locate_model
    from playground.models.sources import SourceResolver

    config = config or finetune_config(options)
    torch.set_num_threads(hardware.cpu_threads)
    resolver = SourceResolver(settings.models_dir, settings.offline)
    log(f"trainer variants: locating {config.model} (converts the GGUF once if no copy exists yet)")
    source = locate_model(config, resolver, scratch / "transformers-data", catalog)
    splits = load_splits(config)
    trainable = build_trainable(config, source, "cpu", "float32", splits.labels)
    model = trainable.model
    model.train()
    model.config.use_cache = False  # as the Trainer's model trains: no cache (packing needs none)
    features = list(encode_splits(config, splits, trainable)["train"].features)
    size = config.batch_size
    chunks = [features[i:i + size] for i in range(0, len(features), size)][:timed_batches + 1]
    from transformers import DataCollatorForSeq2Seq

    # The padded baseline: dynamic padding alone (data_collator adds the label positions where the model takes them).
    padded_collate = DataCollatorForSeq2Seq(trainable.tokenizer, label_pad_token_id=IGNORE_INDEX, padding=True)
    packed_collate = packing_collator()
    padded = [padded_collate([dict(f) for f in chunk]) for chunk in chunks]
    packed = [packed_collate([{k: v for k, v in f.items() if k != "attention_mask"} for f in chunk])
              for chunk in chunks]
    for batch in packed:
        batch["use_cache"] = False
    label_positions = [LabelPositionsOnly(padded_collate)([dict(f) for f in chunk]) for chunk in chunks]
    real = sum(int(b["attention_mask"].sum()) for b in padded[1:])
    total = sum(int(b["input_ids"].numel()) for b in padded[1:])
    native_bf16 = cpu_has_native_bf16()
    variants = {"padded": (padded, False), "packed": (packed, False), "labels": (label_positions, False)}
    if native_bf16:
        variants["bf16"] = (padded, True)
    for name, (batches, autocast) in variants.items():  # warm-up: one batch each (kernels, allocator)
        _time_batches(model, batches[:1], autocast)
    rounds = options.rounds
    times: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, float] = {}
    watch = CpuWatch()
    for i in range(rounds):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for name in order:
            batches, autocast = variants[name]
            log(f"trainer variants: round {i + 1}, {name}")
            seconds, loss = _time_batches(model, batches[1:], autocast)
            times[name].append(seconds)
            losses[name] = loss
    note = watch.note()
    padded_s = statistics.median(times["padded"])
    common = (f"{len(padded) - 1} batches of {size} ({real} real tokens, padding {1 - real / total:.1%} of the "
              f"padded batches), forward + backward, LoRA r={config.lora_r} on {config.model}, "
              f"{hardware.cpu_threads} threads, {rounds} alternating rounds; padded {real / padded_s:.1f} tok/s "
              f"(runs {', '.join(f'{real / t:.1f}' for t in times['padded'])}){note}")
    packed_s = statistics.median(times["packed"])
    figures = [PACKED.measured(padded_s / packed_s, (
        f"packed {real / packed_s:.1f} tok/s (runs {', '.join(f'{real / t:.1f}' for t in times['packed'])}); "
        f"mean loss packed {losses['packed']:.5f}, padded {losses['padded']:.5f}; {common}"))]
    labels_s = statistics.median(times["labels"])
    figures.append(LABEL_POSITIONS.measured(padded_s / labels_s, (
        f"{real / labels_s:.1f} tok/s (runs {', '.join(f'{real / t:.1f}' for t in times['labels'])}); "
        f"mean loss {losses['labels']:.5f}, all positions {losses['padded']:.5f}; {common}")))
    if native_bf16:
        bf16_s = statistics.median(times["bf16"])
        figures.append(BF16.measured(padded_s / bf16_s, (
            f"bf16 autocast {real / bf16_s:.1f} tok/s (runs {', '.join(f'{real / t:.1f}' for t in times['bf16'])}); "
            f"mean loss bf16 {losses['bf16']:.5f}, fp32 {losses['padded']:.5f}; {common}")))
    else:
        figures.append(BF16.skipped("skipped: this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag)"))
    return figures
