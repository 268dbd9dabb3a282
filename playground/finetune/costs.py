"""What a fine-tuning run will cost, before it starts: parameters, adapter size, memory and time.

Most of this is arithmetic on a few numbers (parameters, hidden size, layers,
vocabulary, batch and sequence length), kept free of models so it can be
unit-tested and shown in the UI instantly:

- trainable parameters and their share (LoRA adds ``r * (in + out)`` per
  adapted linear layer);
- the adapter's size on disk (fp32 safetensors);
- memory for weights, gradients, AdamW's two moments and activations, for
  the chosen method next to full fine-tuning;
- the duration, from one measured training step (:func:`time_training_step`)
  times the number of steps.

The memory model is deliberately simple (the figures are estimates, shown as
such): weights at their storage width (fp32, bf16, or NF4 ~4.13 bits with
double quantisation, embeddings kept wide), gradients and AdamW states in fp32
for trainable parameters only, activations ``~17 values per hidden unit per
token per layer`` (a quarter of that per layer with gradient checkpointing)
plus the logits and their gradient.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from playground.errors import InsufficientMemoryError

GIB = 2 ** 30
FP32_BYTES = 4
NF4_BYTES_PER_PARAM = 4.127 / 8  # 4-bit NF4 + double-quantised block scales (blocks of 64, then 256)
GRADIENT_BYTES_PER_PARAM = 4  # fp32 gradients of trainable parameters
ADAMW_BYTES_PER_PARAM = 8  # two fp32 moments per trainable parameter
ACTIVATION_VALUES_PER_HIDDEN = 17  # per token per layer, no checkpointing (Korthikanti et al.: 34 bytes at 16-bit)
CHECKPOINTED_VALUES_PER_HIDDEN = 4  # per token per layer with gradient checkpointing (inputs kept, rest recomputed)
LOGIT_COPIES = 2  # logits and their gradient, fp32


@dataclass(frozen=True)
class ModelShape:
    """The few numbers of a model the estimates need."""

    parameters: int
    hidden_size: int
    layers: int  # transformer blocks (encoder + decoder for seq2seq)
    output_size: int  # vocabulary (LM head) or number of labels (classifier)
    embedding_parameters: int = 0  # kept wide under 4-bit quantisation
    # The transformers config and each linear weight's (module name, (out, in)) from the safetensors headers, for
    # the estimates that size a method by its layers (IA3, prompt and prefix tuning); empty when not known.
    model_config: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    linear_shapes: tuple[tuple[str, tuple[int, ...]], ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], parameters: int, output_size: int | None = None) -> "ModelShape":
        """From a transformers config (a dict) and a parameter count."""
        hidden = _first(config, "hidden_size", "d_model", "n_embd", "dim") or 0
        layers = (_first(config, "num_hidden_layers", "n_layer", "num_layers") or 0) + \
            (config.get("num_decoder_layers") or 0 if config.get("is_encoder_decoder") else 0)
        vocab = _first(config, "vocab_size") or 0
        return cls(parameters, int(hidden), int(layers), int(output_size or vocab), int(vocab * hidden))


def _first(config: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and value > 0:
            return value
    text = config.get("text_config")  # multimodal configs nest the language model's
    if isinstance(text, Mapping):
        return _first(text, *names)
    return None


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training run needs, by kind."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def as_dict(self) -> dict[str, float]:
        """GiB per kind and in total, rounded for display."""
        return {"weights_gib": gib(self.weights), "gradients_gib": gib(self.gradients),
                "optimizer_gib": gib(self.optimizer), "activations_gib": gib(self.activations),
                "total_gib": gib(self.total)}

    def describe(self) -> str:
        return (f"{gib(self.total):.2f} GiB (weights {gib(self.weights):.2f}, gradients {gib(self.gradients):.2f}, "
                f"optimizer {gib(self.optimizer):.2f}, activations {gib(self.activations):.2f})")


def gib(n: float) -> float:
    return round(n / GIB, 3)


# ------------------------------------------------------------------------------ parameters and adapters


def lora_parameter_count(module_shapes: Iterable[tuple[int, int]], r: int) -> int:
    """Parameters LoRA adds: ``r * (in + out)`` for each adapted linear layer of shape (in, out)."""
    return sum(r * (fan_in + fan_out) for fan_in, fan_out in module_shapes)


def trainable_share(trainable: int, total: int) -> float:
    """trainable / total, 0 to 1 (``total`` includes the adapter's own parameters, as peft counts them)."""
    return trainable / total if total else 0.0


def approx_lora_parameters(shape: ModelShape, r: int, modules_per_layer: int) -> int:
    """LoRA parameters without the model at hand: square ``hidden x hidden`` targets in every layer."""
    return lora_parameter_count([(shape.hidden_size, shape.hidden_size)] * (modules_per_layer * shape.layers), r)


def ia3_parameter_count(linear_shapes: Iterable[tuple[str, tuple[int, ...]]], targets: Iterable[str],
                        feedforward: Iterable[str]) -> int:
    """Parameters IA3 adds: one scale per output of each targeted linear layer, per input of a feedforward one.

    A module is targeted when its name ends with a target (``k_proj`` matches ``model.layers.0.self_attn.k_proj``),
    as peft matches names given as a list.
    """
    targets, feedforward = tuple(targets), tuple(feedforward)

    def matches(name: str, suffixes: tuple[str, ...]) -> bool:
        return any(name == s or name.endswith("." + s) for s in suffixes)

    total = 0
    for name, (fan_out, fan_in) in linear_shapes:
        if matches(name, targets):
            total += fan_in if matches(name, feedforward) else fan_out
    return total


def prompt_parameter_count(virtual_tokens: int, token_dim: int, submodules: int = 1, layers: int = 0) -> int:
    """Parameters of prompt tuning (``layers`` 0: one embedding per virtual token, for the encoder and the
    decoder of a seq2seq model: ``submodules`` 2) or prefix tuning (a key and a value per virtual token in each of
    ``layers`` layers, ``token_dim`` wide: ``virtual_tokens * layers * 2 * token_dim``)."""
    if layers:
        return virtual_tokens * layers * 2 * token_dim
    return virtual_tokens * submodules * token_dim


# ------------------------------------------------------------------------------ memory


def activation_bytes(shape: ModelShape, batch_size: int, seq_len: int, value_bytes: int = FP32_BYTES,
                     checkpointing: bool = False) -> int:
    """Activations kept for the backward pass, plus the logits and their gradient."""
    per_hidden = CHECKPOINTED_VALUES_PER_HIDDEN if checkpointing else ACTIVATION_VALUES_PER_HIDDEN
    tokens = batch_size * seq_len
    blocks = tokens * shape.layers * shape.hidden_size * per_hidden * value_bytes
    logits = tokens * shape.output_size * FP32_BYTES * LOGIT_COPIES
    return int(blocks + logits)


def memory_estimate(shape: ModelShape, trainable: int, batch_size: int, seq_len: int,
                    weight_bytes: int = FP32_BYTES, checkpointing: bool = False, *, full: bool = False,
                    quantized: bool = False) -> MemoryEstimate:
    """Memory of one training run of ``trainable`` parameters (the method's table entry says the rest).

    ``full``: every weight trains (``trainable`` is then all of them) and keeps fp32 master weights;
    ``quantized``: the frozen weights are stored in NF4, embeddings at ``weight_bytes``. ``weight_bytes``
    is the compute width: the frozen weights' storage (4 fp32, 2 bf16) and the activations'.
    """
    if full:
        trainable = shape.parameters
        weights = shape.parameters * FP32_BYTES  # master weights stay fp32 under mixed precision
    elif quantized:
        quantised = max(shape.parameters - shape.embedding_parameters, 0)
        weights = int(quantised * NF4_BYTES_PER_PARAM + shape.embedding_parameters * weight_bytes
                      + trainable * FP32_BYTES)
    else:
        weights = shape.parameters * weight_bytes + trainable * FP32_BYTES
    value_bytes = min(weight_bytes, FP32_BYTES)  # activations at the compute width (bf16 autocast: 2)
    return MemoryEstimate(weights=int(weights), gradients=trainable * GRADIENT_BYTES_PER_PARAM,
                          optimizer=trainable * ADAMW_BYTES_PER_PARAM,
                          activations=activation_bytes(shape, batch_size, seq_len, value_bytes, checkpointing))


def check_fits(estimate: MemoryEstimate, budget_bytes: int, method: str, model_name: str, where: str,
               lora_estimate: MemoryEstimate | None = None) -> None:
    """Raise InsufficientMemoryError, with the estimate and what to change, when it does not fit.

    ``lora_estimate`` is given for a method that trains every weight: what an adapter would need instead.
    """
    if estimate.total <= budget_bytes:
        return
    advice = []
    if lora_estimate is not None:
        advice.append(f"use method lora or qlora (about {gib(lora_estimate.total):.2f} GiB)")
    advice += ["lower batch_size or max_length", "turn on gradient_checkpointing"]
    raise InsufficientMemoryError(
        f"{method} fine-tuning of {model_name} needs about {estimate.describe()}, but {where} has "
        f"{gib(budget_bytes):.2f} GiB available. To fit: {'; '.join(advice)}.")


def machine_memory_budget(hardware) -> tuple[int, str]:
    """(bytes, where) training may use: the GPU's memory with CUDA, otherwise the free RAM."""
    if hardware.cuda:
        return int(hardware.cuda_memory_gb * GIB), f"the GPU ({hardware.cuda_name})"
    return int(hardware.free_ram_gb * GIB), "this machine's free RAM"


# ------------------------------------------------------------------------------ time


def estimate_duration(step_seconds: float, total_steps: int) -> float:
    """Seconds for ``total_steps`` optimizer steps of ``step_seconds`` each."""
    return max(step_seconds, 0.0) * max(total_steps, 0)


def time_training_step(model, batch: Mapping[str, Any], grad_accum: int = 1) -> float:
    """Seconds of one real optimizer step's forward and backward passes on ``batch``.

    The gradients are thrown away (no optimizer step), so the model is unchanged. The
    first call of a fresh model includes one-off warm-up; call twice for a steadier figure.
    """
    import torch

    device = next(model.parameters()).device
    inputs = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}
    was_training = model.training
    model.train()
    start = time.perf_counter()
    try:
        with torch.enable_grad():
            loss = model(**inputs).loss
            loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return (time.perf_counter() - start) * max(grad_accum, 1)


@dataclass(frozen=True)
class RunEstimate:
    """Seconds each section of a whole run will take (progress.RUN_SECTIONS), from paces measured on this machine
    by the pre-flight: its own load of the model, one real training step, and one short real answer on the
    engine the run answers with. Measured paces follow the CPU kind by construction (AVX2, AVX-512, AMX),
    where constants would not."""

    load_s: float
    base_scoring_s: float
    training_s: float
    tuned_scoring_s: float
    save_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.load_s + self.base_scoring_s + self.training_s + self.tuned_scoring_s + self.save_s

    def as_dict(self) -> dict[str, float]:
        return {"load": round(self.load_s, 2), "base_scoring": round(self.base_scoring_s, 2),
                "training": round(self.training_s, 2), "tuned_scoring": round(self.tuned_scoring_s, 2),
                "save": round(self.save_s, 2), "total": round(self.total_s, 2)}

    def describe(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in self.as_dict().items())


def estimate_run(*, load_s: float, step_s: float, step_tokens: float, planned_step_tokens: float, total_steps: int,
                 eval_batches: int, test_batches: int, answers: int, answer_s: float,
                 forward_share: float = 1 / 3) -> RunEstimate:
    """A whole run's sections from measured paces (pure arithmetic, unit-tested).

    ``step_s``: one measured optimizer step on a batch of ``step_tokens`` real tokens, scaled to the run's
    mean ``planned_step_tokens`` (a step's cost is about linear in its tokens at these lengths);
    ``eval_batches``: validation batches over the whole run, each a forward pass (``forward_share`` of a
    step, the run clock's convention); ``test_batches``: the test loss, measured before and after;
    ``answers``: examples answered before and after, ``answer_s`` each (measured on the run's engine).
    """
    scale = planned_step_tokens / step_tokens if step_tokens > 0 else 1.0
    step = max(step_s, 0.0) * scale
    forward = step * forward_share
    scoring = test_batches * forward + answers * max(answer_s, 0.0)
    return RunEstimate(load_s=max(load_s, 0.0), base_scoring_s=scoring,
                       training_s=max(total_steps, 0) * step + eval_batches * forward, tuned_scoring_s=scoring)


@dataclass(frozen=True)
class CostReport:
    """The pre-flight figures of one run, for the UI and the run's metrics."""

    model: str
    method: str
    total_parameters: int
    trainable_parameters: int
    adapter_bytes: int  # 0 when the result is a full model
    memory: MemoryEstimate
    full_memory: MemoryEstimate
    budget_bytes: int
    budget_where: str
    total_steps: int
    step_seconds: float | None = None  # measured; None until timed
    run_estimate: RunEstimate | None = None  # the whole run, section by section (pre-flight with measure=True)

    @property
    def trainable_share(self) -> float:
        return trainable_share(self.trainable_parameters, self.total_parameters)

    @property
    def duration_s(self) -> float | None:
        return None if self.step_seconds is None else estimate_duration(self.step_seconds, self.total_steps)

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.budget_bytes

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "method": self.method, "total_parameters": self.total_parameters,
                "trainable_parameters": self.trainable_parameters,
                "trainable_share": round(self.trainable_share, 6), "adapter_mb": round(self.adapter_bytes / 1e6, 3),
                "memory": self.memory.as_dict(), "full_finetune_memory": self.full_memory.as_dict(),
                "budget_gib": gib(self.budget_bytes), "budget_where": self.budget_where, "fits": self.fits,
                "total_steps": self.total_steps,
                "step_seconds": None if self.step_seconds is None else round(self.step_seconds, 3),
                "estimated_duration_s": None if self.duration_s is None else round(self.duration_s, 1),
                "estimated_run_s": None if self.run_estimate is None else self.run_estimate.as_dict()}
