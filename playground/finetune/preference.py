"""Preference tuning (method ``dpo``): TRL's DPOTrainer on (prompt, chosen, rejected) pairs, and its figures.

The run follows the same path as every other run (:mod:`~playground.finetune.train`): the same stage and
step events in ``progress.jsonl``, the same cancel between steps, evaluation batches and generated tokens,
the same pre-flight (config check, memory estimate) and the same result record
(:class:`~playground.finetune.result.RunResult`: ``adapter/``, ``samples.jsonl``, ``metrics.json``). What
differs is the data (preference pairs, :func:`~playground.finetune.data.check_preference_records`) and the
trainer: TRL's ``DPOTrainer`` gets the base model and a LoRA config built from the run's LoRA knobs, so its
reference model is the base with the adapter disabled (TRL's ``use_adapter(model, None)``), never a second
copy of the weights. ``dpo_beta`` is DPO's beta.

Figures on the held-out pairs (the data's test split), all from summed log-probabilities of the answer
tokens, ``log p(answer | prompt)``:

- **reward accuracy before / after**: the share of pairs where the model gives the chosen answer a higher
  log-probability than the rejected one, for the base ("before") and the tuned model ("after"): one
  statistic, measured twice, so the two are comparable. (DPO's implicit reward, below, is zero for every
  answer before training: every pair would be a tie.)
- **margin before / after**: the mean of ``beta * (log p(chosen) - log p(rejected))`` under the base and
  under the tuned model;
- **implicit reward accuracy and margin** (after training only): DPO's reward ``r(y) = beta * (log p_tuned(y)
  - log p_base(y))``; the share of pairs with ``r(chosen) > r(rejected)`` (TRL's ``rewards/accuracies``) and
  the mean ``r(chosen) - r(rejected)``, which equals margin after minus margin before.

A tie counts as wrong everywhere (as TRL counts it). The base and tuned models also answer the first
``sample_count`` held-out prompts (greedy, on transformers), side by side in ``samples.jsonl`` with the
chosen answer as the reference (ROUGE against it) and each pair's margins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from playground.errors import TrainingError
from playground.finetune import progress as phases
from playground.finetune.data import PromptPair, Record, rejected_of
from playground.finetune.encoding import causal_completion_ids, causal_prompt_ids, has_chat_template
from playground.finetune.weights import DECODER

# A DPO step is a forward and backward pass over the chosen and rejected answers, plus a forward pass of the
# reference (the base, adapter disabled) over both: about 4/3 of a plain training step over the same sequences.
REFERENCE_PASS_FACTOR = 4 / 3
PREFERENCE_KEYS = ("pairs", "beta", "accuracy_before", "accuracy_after", "margin_before", "margin_after",
                   "reward_accuracy", "reward_margin")


# ------------------------------------------------------------------------------ the figures


def completion_logprobs(logits, input_ids, completion_mask):
    """Summed log-probability of each row's completion tokens: ``logits[:, t]`` predicts ``input_ids[:, t + 1]``,
    counted where ``completion_mask[:, t + 1]`` is 1. Tensors (batch, length[, vocab]); a (batch,) tensor."""
    import torch

    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logps = log_probs.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (token_logps * completion_mask[:, 1:].to(token_logps.dtype)).sum(dim=-1)


@dataclass(frozen=True)
class PairScores:
    """One model's summed log-probabilities of the chosen and the rejected answer of each pair."""

    chosen: tuple[float, ...]
    rejected: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.chosen) != len(self.rejected):
            raise ValueError("chosen and rejected scores differ in number")

    @property
    def differences(self) -> tuple[float, ...]:
        """log p(chosen) - log p(rejected), per pair."""
        return tuple(c - r for c, r in zip(self.chosen, self.rejected))


@dataclass(frozen=True)
class PreferenceMetrics:
    """The held-out figures of a preference run (see the module's docstring); accuracies are shares (0-1)."""

    pairs: int
    beta: float
    accuracy_before: float
    accuracy_after: float
    margin_before: float
    margin_after: float
    reward_accuracy: float
    reward_margin: float

    @property
    def accuracy_points(self) -> float:
        """How many points (percent) the reward accuracy rose."""
        return round(100 * (self.accuracy_after - self.accuracy_before), 2)

    def to_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in PREFERENCE_KEYS}


def _share(values: Sequence[float]) -> float:
    return round(sum(v > 0 for v in values) / len(values), 4) if values else 0.0


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def preference_metrics(base: PairScores, tuned: PairScores, beta: float) -> PreferenceMetrics:
    """Reward accuracy and margin of the base ("before") and the tuned model ("after"), and DPO's implicit
    reward after training, from the two models' log-probabilities of the same pairs."""
    if len(base.chosen) != len(tuned.chosen):
        raise ValueError("the base and the tuned model scored different pairs")
    before = [beta * d for d in base.differences]
    after = [beta * d for d in tuned.differences]
    reward = [a - b for a, b in zip(after, before)]  # r(chosen) - r(rejected), r = beta * (log p_tuned - log p_base)
    return PreferenceMetrics(pairs=len(before), beta=beta, accuracy_before=_share(before),
                             accuracy_after=_share(after), margin_before=_mean(before), margin_after=_mean(after),
                             reward_accuracy=_share(reward), reward_margin=_mean(reward))


# ------------------------------------------------------------------------------ pairs for TRL and for scoring


def trl_rows(records: Sequence[Record], tokenizer) -> list[dict[str, Any]]:
    """The records as TRL's preference rows: conversational (user prompt, assistant answers) when the tokenizer
    has a chat template, as the project's generation reads prompts; else plain text (prompt ending in a newline)."""
    if has_chat_template(tokenizer):
        return [{"prompt": [{"role": "user", "content": r.input}],
                 "chosen": [{"role": "assistant", "content": r.target}],
                 "rejected": [{"role": "assistant", "content": rejected_of(r)}]} for r in records]
    return [{"prompt": r.input + "\n", "chosen": r.target, "rejected": rejected_of(r)} for r in records]


def tokenized_pairs(records: Sequence[Record], tokenizer, max_length: int) -> list[dict[str, list[int]]]:
    """prompt/chosen/rejected token ids of each pair, as the project's encoding makes them (the prompt cut from
    the left so the answers fit, the answers ending with the end-of-turn token)."""
    rows = []
    for record in records:
        chosen = causal_completion_ids(tokenizer, record.input, record.target)
        rejected = causal_completion_ids(tokenizer, record.input, rejected_of(record))
        room = max(1, max_length - max(len(chosen), len(rejected)))
        rows.append({"prompt_ids": causal_prompt_ids(tokenizer, record.input)[-room:], "chosen_ids": chosen,
                     "rejected_ids": rejected})
    return rows


def score_pairs(model, tokenizer, pairs: Sequence[dict[str, list[int]]], batch_size: int, max_length: int,
                on_batch: Callable[[int], None] | None = None) -> PairScores:
    """Summed log-probabilities of each pair's chosen and rejected answer under ``model`` (eval mode, no grad);
    ``on_batch(finished)`` is called with the batches done so far, before every batch and once at the end (a
    cancel raises there)."""
    import torch
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = DataCollatorForPreference(pad_token_id=pad_id, max_length=max_length)
    device = next(model.parameters()).device
    chosen: list[float] = []
    rejected: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for index, start in enumerate(range(0, len(pairs), batch_size)):
                if on_batch is not None:
                    on_batch(index)
                batch = collate(list(pairs[start:start + batch_size]))
                ids = batch["input_ids"].to(device)
                logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits
                logps = completion_logprobs(logits, ids, batch["completion_mask"].to(device)).tolist()
                half = len(logps) // 2  # the collator puts the chosen rows first, then the rejected ones
                chosen += logps[:half]
                rejected += logps[half:]
            if on_batch is not None:
                on_batch(-(-len(pairs) // batch_size))
    finally:
        model.train(was_training)
    return PairScores(tuple(chosen), tuple(rejected))


# ------------------------------------------------------------------------------ the run


def execute_preference(run):
    """The preference run of ``run`` (train.py's run of one config, which calls this): see the module's
    docstring; returns its TrainOutcome. What it shares with the other runs (events, cancel, answers, the
    progress callback) it takes from ``run``, so this module never imports the training entry."""
    import torch
    from accelerate import PartialState

    from playground.atomic import save_error
    from playground.finetune.costs import FP32_BYTES
    from playground.finetune.data import load_splits
    from playground.finetune.gguf_samples import BASE, TRANSFORMERS, TUNED, GgufPlan, SampleEngine
    from playground.finetune.hub_data import hub_source_for
    from playground.finetune.methods import (
        PEFT_TASK_TYPES,
        TrainableModel,
        check_memory,
        cost_report,
        get_method,
        load_base_model,
    )
    from playground.finetune.result import RunMetrics, RunResult
    from playground.finetune.runs import scratch_dir
    from playground.finetune.weights import default_resolver, load_tokenizer, locate_model

    config = run.config
    method = get_method(config.method)
    state = PartialState()
    run.main_process = state.is_main_process
    cuda = state.device.type == "cuda"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    dtype_name = "bfloat16" if bf16 else "float32"

    run.stage("loading", f"Checking the config and reading the preference pairs ({config.data}).")
    config.check(run.catalog)
    run._prepare_run_dir()
    splits = load_splits(config, hub=hub_source_for(run.data_dir, run.resolver))
    run.check_stop()
    resolver = run.resolver or default_resolver()
    run.stage("loading", f"Loading {config.model} for {config.method} ({'CUDA ' + dtype_name if cuda else 'CPU fp32'}).")
    source = locate_model(config, resolver, run.data_dir, run.catalog)
    if source.family != DECODER:
        raise TrainingError(f"method {config.method!r} tunes a decoder; {source.name} is an {source.family} model.")
    run.sample_engine = TRANSFORMERS
    run.plan = GgufPlan(reason=f"method {config.method} answers on transformers")
    run._transformers_engine = SampleEngine(TRANSFORMERS, "bf16" if bf16 else "fp32")
    budget, where = run._memory_budget()
    estimate, full_estimate = check_memory(config, source, budget, where, 2 if bf16 else FP32_BYTES)
    run.check_stop()

    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(source)
    base = load_base_model(source, method.name, "cuda" if cuda else "cpu", dtype_name)
    targets = tuple(config.target_modules or source.lora_targets)
    lora = method.peft_config(config, targets, PEFT_TASK_TYPES[DECODER])
    try:
        run.scratch_dir = scratch_dir(run.run_dir, "trainer")
    except OSError as exc:
        raise save_error("the trainer's scratch folder", run.run_dir, exc) from None
    callback = run.progress_callback()
    trainer = _dpo_trainer(config, base, tokenizer, lora, splits, [callback, *run.callbacks], cuda, bf16,
                           run.scratch_dir)
    trainable_count, total = trainer.model.get_nb_trainable_parameters()
    attached = getattr(trainer.model.peft_config["default"], "target_modules", None) or ()
    trainable = TrainableModel(trainer.model, tokenizer, source, method.name, int(trainable_count), int(total),
                               target_modules=tuple(sorted(attached)))
    test_records = list(splits.test)
    held_out = tokenized_pairs(test_records, tokenizer, config.max_length)
    test_pairs = [PromptPair(r.input, r.target, r) for r in test_records]
    run.stage("loading", f"{trainable.describe()}. Data: {len(splits.train)} train, {len(splits.validation)} "
                         f"validation, {len(test_records)} held-out preference pairs; DPO beta {config.dpo_beta}.")
    run.check_stop()

    total_steps = config.planned_steps(len(splits.train))
    answers = min(config.sample_count, len(test_pairs))
    score_batches = phases.batches(len(held_out), config.batch_size)
    validation_batches = phases.batches(len(splits.validation), config.batch_size)
    clock = run.clock
    clock.plan(phases.BASELINE_LOSS, score_batches)
    clock.plan(phases.BASELINE, answers)
    clock.plan(phases.TRAINING, total_steps)
    clock.plan(phases.VALIDATION, validation_batches * phases.validation_passes(
        total_steps, config.eval_every, bool(validation_batches)))
    clock.plan(phases.TUNED_LOSS, score_batches)
    clock.plan(phases.TUNED, answers)
    clock.plan(phases.QUANTIZED, 0)
    clock.plan(phases.SAVING, 1)

    def counted(phase: str) -> Callable[[int], None]:
        def on_batch(finished: int) -> None:
            run.check_stop()
            run.progress(phase, finished, throttle_s=1.0)
        return on_batch

    run.begin(phases.BASELINE_LOSS, f"Scoring the base model: log-probabilities of {len(held_out)} held-out "
                                    f"pairs, answers to {answers}.")
    with trainer.model.disable_adapter():  # the base itself, as DPO's reference
        base_scores = score_pairs(trainer.model, tokenizer, held_out, config.batch_size, config.max_length,
                                  counted(phases.BASELINE_LOSS))
    base_outputs = run._answers(BASE, "baseline", "Base model", trainable, test_pairs)

    run.begin(phases.TRAINING, f"Training DPO for {total_steps} steps.")
    run.eval_phase = phases.VALIDATION
    train_output = trainer.train()
    run.step = trainer.state.global_step
    if callback.cancelled:
        run.cancelled()
    validation = clock.phases.get(phases.VALIDATION)
    if validation is not None:
        validation.total = validation.done

    run.begin(phases.TUNED_LOSS, f"Scoring the fine-tuned model: log-probabilities of {len(held_out)} held-out "
                                 f"pairs, answers to {answers}.")
    tuned_scores = score_pairs(trainer.model, tokenizer, held_out, config.batch_size, config.max_length,
                               counted(phases.TUNED_LOSS))
    tuned_outputs = run._answers(TUNED, "evaluating", "Fine-tuned model", trainable, test_pairs)
    figures = preference_metrics(base_scores, tuned_scores, config.dpo_beta)

    run.begin(phases.SAVING, f"Writing the {method.saves}, samples and metrics.")
    samples = run.sample_rows(trainable, test_pairs, base_outputs, tuned_outputs)
    for row, pair, before, after in zip(samples, test_pairs, base_scores.differences, tuned_scores.differences):
        row.update(rejected=rejected_of(pair.record), base_margin=round(config.dpo_beta * before, 4),
                   tuned_margin=round(config.dpo_beta * after, 4))
    costs = cost_report(config, trainable=trainable.trainable_parameters, total=trainable.total_parameters,
                        memory=estimate, full_memory=full_estimate, budget=(budget, where),
                        total_steps=trainer.state.max_steps, step_seconds=callback.mean_step_seconds)
    runtime = float(train_output.metrics.get("train_runtime") or 0.0)
    rouge = _rouge(samples)
    metrics = RunMetrics(
        model=config.model, method=config.method, family=DECODER,
        trainable_parameters=trainable.trainable_parameters, total_parameters=trainable.total_parameters,
        trainable_share=round(trainable.trainable_share, 6), steps=run.step,
        epochs=round(float(train_output.metrics.get("epoch", 0.0) or 0.0), 3), train_losses=tuple(callback.losses),
        eval_loss=callback.last_eval[1], tokens_per_s=round(callback.tokens_seen / runtime, 1) if runtime else None,
        tokens_seen=callback.tokens_seen,
        data={"source": splits.source, "train": {"examples": len(splits.train)},
              "validation": {"examples": len(splits.validation)}, "test": {"examples": len(test_records)}},
        train_duration_s=round(runtime, 2), duration_s=round(time.perf_counter() - run.started, 2),
        costs=costs.as_dict(), output_dir=method.saves, sample_count=len(samples), sample_engine=TRANSFORMERS,
        engines={k: v.to_json() for k, v in run.engines.items()}, quantized_unavailable=run.plan.reason,
        rouge_before=rouge and rouge[0], rouge_after=rouge and rouge[1],
        rougeL_improvement=rouge and round(rouge[1]["rougeL"] - rouge[0]["rougeL"], 4),
        preference=figures.to_json())
    run.check_stop()
    if run.main_process:
        RunResult(run.run_dir).save(trainable, config, samples, metrics)
    run.written = []
    run.emit({"event": "done", "metrics": metrics.to_json()})
    return run.finished(metrics)


def _rouge(samples: Sequence[dict]) -> tuple[dict, dict] | None:
    """Mean ROUGE of the base and the tuned answers against the chosen ones (None without samples)."""
    if not samples:
        return None
    from playground.prompting.evaluation import ROUGE_TYPES

    return tuple({name: round(sum(s[f"{side}_{name}"] for s in samples) / len(samples), 4) for name in ROUGE_TYPES}
                 for side in ("base", "tuned"))  # type: ignore[return-value]


def _dpo_trainer(config, base, tokenizer, lora, splits, callbacks: Sequence, cuda: bool, bf16: bool, output_dir):
    """TRL's DPOTrainer over the base and the LoRA config (so the reference is the base, adapter disabled)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    has_validation = bool(splits.validation) and bool(config.eval_every)
    args = DPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate, max_steps=config.max_steps or -1, num_train_epochs=config.epochs,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch_fused",
        logging_strategy="steps", logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        eval_strategy="steps" if has_validation else "no", eval_steps=config.eval_every if has_validation else None,
        seed=config.seed, data_seed=config.seed, bf16=bf16, use_cpu=not cuda, dataloader_pin_memory=cuda,
        include_num_input_tokens_seen="non_padding",
        beta=config.dpo_beta, max_length=config.max_length, dataset_num_proc=None,
        **({"gradient_checkpointing": True} if config.gradient_checkpointing else {}))
    try:
        trainer = DPOTrainer(
            model=base, args=args, processing_class=tokenizer, peft_config=lora, callbacks=list(callbacks),
            train_dataset=Dataset.from_list(trl_rows(splits.train, tokenizer)),
            eval_dataset=Dataset.from_list(trl_rows(splits.validation, tokenizer)) if has_validation else None)
    except ValueError as exc:  # targets that match no layer, an lm_head target
        raise TrainingError(f"TRL's DPOTrainer refused the run: {str(exc).splitlines()[0][:300]}") from None
    trainer.remove_callback(PrinterCallback)  # progress goes out as events, not as printed dicts
    return trainer
