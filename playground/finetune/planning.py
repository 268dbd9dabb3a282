"""Before a run starts: what the data looks like to the model, and what the run will cost.

``data_report`` formats and tokenises the training split with the run's
template and tokenizer: split sizes, a few formatted examples, token lengths
for a histogram and how many examples ``max_length`` will cut. ``preflight``
builds the trainable model as the run would, counts trainable parameters,
estimates memory for the chosen method next to full fine-tuning, and times
one real training step on this machine to estimate the duration. Both run in
the app process (a tokenizer, and for pre-flight one model, for a few seconds)
and raise the same clear errors as the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from playground.finetune.config import FULL, FinetuneConfig
from playground.finetune.costs import FP32_BYTES, CostReport, machine_memory_budget, time_training_step
from playground.finetune.data import DataSplits, format_pairs, load_splits, template_for
from playground.finetune.encoding import encode_pairs

HISTOGRAM_BINS = 12


@dataclass(frozen=True)
class DataReport:
    counts: dict[str, int]  # train / validation / test
    source: str
    template: str
    examples: tuple[dict[str, Any], ...]  # the first formatted training examples (prompt, completion)
    lengths: tuple[int, ...]  # tokens per training example, before cutting
    truncated: int  # training examples longer than max_length
    max_length: int
    labels: tuple[str, ...] = ()

    def histogram(self, bins: int = HISTOGRAM_BINS) -> list[dict[str, Any]]:
        """Rows (bin label, examples) of the token-length histogram, with the cut-off bin marked."""
        if not self.lengths:
            return []
        low, high = min(self.lengths), max(self.lengths)
        width = max(1, -(-(high - low + 1) // bins))
        counts: dict[int, int] = {}
        for length in self.lengths:
            start = low + (length - low) // width * width
            counts[start] = counts.get(start, 0) + 1
        return [{"tokens": f"{start}-{start + width - 1}", "examples": counts[start],
                 "cut": "over max_length" if start + width - 1 > self.max_length else "fits"}
                for start in sorted(counts)]


def _splits_and_source(config: FinetuneConfig, resolver, data_dir: Path, catalog=None):
    from playground.finetune.methods import locate_model

    config.check(catalog)
    splits = load_splits(config)
    source = locate_model(config, resolver, data_dir, catalog)
    return splits, source


def data_report(config: FinetuneConfig, resolver, data_dir: Path, catalog=None, count: int = 3) -> DataReport:
    """Split sizes, formatted examples and token lengths of the training split, as the run will see them."""
    from playground.finetune.methods import load_tokenizer

    splits, source = _splits_and_source(config, resolver, data_dir, catalog)
    template = template_for(config)
    pairs = format_pairs(splits.train, template)
    tokenizer = load_tokenizer(source)
    encoded = encode_pairs(pairs, tokenizer, source.family, config.max_length, config.batch_size,
                           {label: i for i, label in enumerate(splits.labels)} if splits.labels else None)
    examples = tuple({"line": p.record.line, "prompt": p.prompt, "completion": p.completion} for p in pairs[:count])
    return DataReport(counts=splits.counts(), source=splits.source, template=template.id, examples=examples,
                      lengths=tuple(encoded.stats.lengths), truncated=encoded.stats.truncated,
                      max_length=config.max_length, labels=splits.labels)


def _planned_steps(config: FinetuneConfig, splits: DataSplits) -> int:
    if config.max_steps:
        return config.max_steps
    per_epoch = -(-len(splits.train) // (config.batch_size * config.grad_accum))
    return max(1, int(per_epoch * config.epochs))


def preflight(config: FinetuneConfig, resolver, data_dir: Path, catalog=None, hardware=None,
              measure_step: bool = True) -> CostReport:
    """Trainable parameters, adapter size, memory (method vs full) and a duration from one timed step.

    A full fine-tune that does not fit the machine is reported (``fits`` is False), not refused:
    the trainer refuses it with the same estimate when the run starts.
    """
    from playground.finetune.methods import build_trainable, estimate_memory, load_tokenizer

    splits, source = _splits_and_source(config, resolver, data_dir, catalog)
    if hardware is None:
        from playground.hardware import detect

        hardware = detect()
    budget, where = machine_memory_budget(hardware)
    labels = len(splits.labels)
    estimate, full_estimate = estimate_memory(config, source, FP32_BYTES, labels)
    total_steps = _planned_steps(config, splits)
    if config.method == FULL and estimate.total > budget:
        return CostReport(model=config.model, method=config.method, total_parameters=source_parameters(source),
                          trainable_parameters=source_parameters(source), adapter_bytes=0, memory=estimate,
                          full_memory=full_estimate, budget_bytes=budget, budget_where=where,
                          total_steps=total_steps)
    trainable = build_trainable(config, source, "cpu", "float32", splits.labels)
    step_seconds = None
    if measure_step:
        template = template_for(config)
        pairs = format_pairs(splits.train[:config.batch_size], template)
        tokenizer = load_tokenizer(source)
        encoded = encode_pairs(pairs, tokenizer, source.family, config.max_length, config.batch_size,
                               {label: i for i, label in enumerate(splits.labels)} if splits.labels else None)
        batch = _collate(trainable, encoded.features)
        time_training_step(trainable.model, batch, config.grad_accum)  # the first step warms caches up
        step_seconds = time_training_step(trainable.model, batch, config.grad_accum)
    return CostReport(model=config.model, method=config.method, total_parameters=trainable.total_parameters,
                      trainable_parameters=trainable.trainable_parameters,
                      adapter_bytes=0 if config.method == FULL else trainable.trainable_parameters * FP32_BYTES,
                      memory=estimate, full_memory=full_estimate, budget_bytes=budget, budget_where=where,
                      total_steps=total_steps, step_seconds=step_seconds)


def source_parameters(source) -> int:
    from playground.finetune.methods import safetensors_parameter_count

    return safetensors_parameter_count(source.folder)


def _collate(trainable, features: Sequence[dict]):
    from playground.finetune.train import _collator

    return _collator(trainable)([dict(f) for f in features])
