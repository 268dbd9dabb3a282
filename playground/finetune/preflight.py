"""Before a run starts: what the data looks like to the model, and what the run will cost.

- :func:`data_report` formats and tokenises the training split with the run's
  template and tokenizer: split sizes, a few formatted examples, token lengths
  for a histogram and how many examples ``max_length`` will cut. A tokenizer
  only, no model.
- :func:`preflight` reads the data, resolves the model and estimates memory for
  the method and for full fine-tuning. When the estimate fits, it also loads the
  model to count the trainable parameters exactly and times one real training
  step on a batch.

Both run in the app's process (the Fine-tune tab's Inspect and Estimate, the
CLI's ``--estimate``) and raise the same clear errors as the trainer.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground.finetune.config import FinetuneConfig
from playground.finetune.costs import (
    FP32_BYTES,
    CostReport,
    estimate_run,
    machine_memory_budget,
    time_training_step,
)
from playground.finetune.data import format_pairs, load_splits, template_for
from playground.finetune.encoding import data_collator, encode_pairs, encode_splits
from playground.finetune.hub_data import hub_source_for
from playground.finetune.methods import build_trainable, cost_report, estimate_memory, estimate_trainable, get_method
from playground.finetune.weights import default_resolver, load_tokenizer, locate_model

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


def data_report(config: FinetuneConfig, resolver, data_dir: Path, catalog=None, count: int = 3) -> DataReport:
    """Split sizes, formatted examples and token lengths of the training split, as the run will see them."""
    config.check(catalog)
    splits = load_splits(config, hub=hub_source_for(data_dir, resolver))
    source = locate_model(config, resolver, data_dir, catalog)
    template = template_for(config)
    pairs = format_pairs(splits.train, template)
    tokenizer = load_tokenizer(source)
    encoded = encode_pairs(pairs, tokenizer, source.family, config.max_length, config.batch_size,
                           {label: i for i, label in enumerate(splits.labels)} if splits.labels else None)
    examples = tuple({"line": p.record.line, "prompt": p.prompt, "completion": p.completion} for p in pairs[:count])
    return DataReport(counts=splits.counts(), source=splits.source, template=template.id, examples=examples,
                      lengths=tuple(encoded.stats.lengths), truncated=encoded.stats.truncated,
                      max_length=config.max_length, labels=splits.labels)


def preflight(config: FinetuneConfig, data_dir: Path, *, resolver=None, catalog=None,
              memory_budget_bytes: int | None = None, measure: bool = True) -> CostReport:
    """The cost report of a run before it starts.

    Reads the data, resolves the model and estimates memory for the method and for full
    fine-tuning. When the estimate fits, it also loads the model to count the trainable
    parameters exactly and (``measure``) times one real training step on a batch.
    """
    import torch

    started = time.perf_counter()
    config.check(catalog)
    splits = load_splits(config, hub=hub_source_for(data_dir, resolver))
    located = time.perf_counter()
    source = locate_model(config, resolver or default_resolver(), Path(data_dir), catalog)
    # A first conversion of a GGUF (once per model) is not what the run will pay: it finds the cached copy.
    started += time.perf_counter() - located
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    if memory_budget_bytes is not None:
        budget = int(memory_budget_bytes), "the memory budget given"
    else:
        from playground.hardware import detect

        budget = machine_memory_budget(detect())
    estimate, full = estimate_memory(config, source, 2 if bf16 else FP32_BYTES, len(splits.labels))
    trainable_count, total = estimate_trainable(config, source)
    step_seconds = None
    run_estimate = None
    if estimate.total <= budget[0]:
        trainable = build_trainable(config, source, "cuda" if cuda else "cpu",
                                    "bfloat16" if bf16 else "float32", splits.labels)
        trainable_count, total = trainable.trainable_parameters, trainable.total_parameters
        if measure:
            encoded = encode_splits(config, splits, trainable)
            load_s = time.perf_counter() - started  # what the run's own loading section does, up to here
            # A preference method's step reads chosen and rejected answers (timed as twice the prompt+chosen
            # sequences) and runs its reference over them once more (preference.REFERENCE_PASS_FACTOR).
            preference = get_method(config.method).preference
            count = config.batch_size * (2 if preference else 1)
            features = [dict(f) for f in encoded["train"].features[:config.batch_size]]
            batch = data_collator(trainable)((features * 2)[:count])
            if cuda and not trainable.quantized:
                trainable.model.to("cuda")
            time_training_step(trainable.model, batch)  # warm-up: the first step pays one-off costs
            step_seconds = time_training_step(trainable.model, batch, config.grad_accum)
            if preference:
                from playground.finetune.preference import REFERENCE_PASS_FACTOR

                step_seconds *= REFERENCE_PASS_FACTOR
            run_estimate = _run_estimate(config, source, trainable, encoded, batch, load_s, step_seconds, cuda,
                                         catalog, resolver)
    report = cost_report(config, trainable=trainable_count, total=total, memory=estimate, full_memory=full,
                         budget=budget, total_steps=config.planned_steps(len(splits.train)), step_seconds=step_seconds)
    return dataclasses.replace(report, run_estimate=run_estimate)


def _run_estimate(config: FinetuneConfig, source, trainable, encoded, batch, load_s: float, step_seconds: float,
                  cuda: bool, catalog, resolver):
    """The whole run's sections (costs.estimate_run) from the load, the step just timed and one real answer."""
    from playground.finetune.progress import batches, validation_passes

    train = encoded["train"]
    steps = config.planned_steps(len(train.features))
    real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch["input_ids"].numel())
    lengths = [len(f["input_ids"]) for f in train.features]
    mean_length = sum(lengths) / len(lengths) if lengths else 0.0
    validation_batches = batches(len(encoded["validation"].features), config.batch_size)
    passes = validation_passes(steps, config.eval_every, bool(validation_batches))
    answers = min(config.sample_count, len(encoded["test"].pairs))
    answer_s, engine_load_s = _answer_seconds(config, source, trainable, encoded["test"].pairs[:answers], cuda,
                                              catalog, resolver) if answers else (0.0, 0.0)
    estimate = estimate_run(load_s=load_s, step_s=step_seconds, step_tokens=real,
                            planned_step_tokens=mean_length * config.batch_size, total_steps=steps,
                            eval_batches=passes * validation_batches,
                            test_batches=batches(len(encoded["test"].features), config.batch_size),
                            answers=answers, answer_s=answer_s)
    return dataclasses.replace(estimate, base_scoring_s=estimate.base_scoring_s + engine_load_s,
                               tuned_scoring_s=estimate.tuned_scoring_s + engine_load_s)


def _answer_seconds(config: FinetuneConfig, source, trainable, pairs, cuda: bool, catalog,
                    resolver) -> tuple[float, float]:
    """(seconds per answer, seconds to load the engine) measured on the engine the run answers with: one
    answer of ``max_new_tokens`` on llama.cpp (the base GGUF), or one batch on transformers."""
    import torch

    from playground.finetune.encoding import causal_prompt_ids
    from playground.finetune.gguf_samples import LLAMA_CPP, GgufAnswers, gguf_plan, sample_engine_for
    from playground.finetune.train import generate
    from playground.models.catalog import Catalog

    from playground.finetune.weights import ENCODER

    if source.family == ENCODER:  # a classifier's labels come from one forward pass: part of the test loss's pace
        return 0.0, 0.0
    plan = gguf_plan(config, source.family, catalog or Catalog.load(), resolver or default_resolver())
    if sample_engine_for(config.sample_engine, cuda, plan) == LLAMA_CPP:
        started = time.perf_counter()
        with GgufAnswers(config.model, plan, max(1, torch.get_num_threads()),
                         n_ctx=config.max_length + config.max_new_tokens) as answers:
            loaded = time.perf_counter()
            ids = causal_prompt_ids(trainable.tokenizer, pairs[0].prompt)[-config.max_length:]
            answers.answer(pairs[0].prompt, ids, config.max_new_tokens)
            return time.perf_counter() - loaded, loaded - started
    chosen = [p.prompt for p in pairs[:config.batch_size]]
    started = time.perf_counter()
    generate(trainable.model, trainable.tokenizer, source.family, chosen, config.max_new_tokens, config.max_length)
    return (time.perf_counter() - started) / len(chosen), 0.0
