"""How close llama.cpp decode and the fine-tune trainer come to the machine's ceilings (see bench.machine).

Decode roofline: a small model decoding one token reads each of its weights once, so the bytes of
weights it streams per second (weights bytes x tokens/s) cannot exceed the machine's read bandwidth.
The figure is that quotient for each GGUF model the catalog can open offline, against the bandwidth
measured with as many threads as llama.cpp decodes with (the engine runs every bench thread), so a
ratio near 1 means decode is as fast as memory allows (target >= 0.7 for Gemma-3-270M, the other
models informational). The decode speed is the app engine's, timed like the llama.cpp suite's
(the bench's own model reuses that suite's median).

Training MFU on the CPU: the floating-point work a trained token costs times the trainer's tokens/s,
over the sgemm FLOP/s measured in the same run (target >= 0.6). LoRA on a frozen base does the
forward pass (2 FLOPs a weight) and the backward pass to the activations (2 more) through every
linear layer and the output head, but no weight gradients of the base; the adapters themselves cost
6 a weight; attention adds 6 x layers x width x row length (causal, forward and backward). The
issue's "6 x parameters" would count weight gradients that LoRA never computes (1.5x the work), so
it is quoted in the detail, not judged.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from playground.bench.core import BenchOptions, CpuWatch, Figure, Measure, log, median_speed, speeds
from playground.bench.streams import THROUGHPUT_PROMPT, StreamRun, app_run

ROOFLINE_TARGETS = {"gemma-3-270m": ">= 0.7"}  # the issue's target; the other models are informational
TRAINING_MFU = Measure("training MFU on CPU: trainer FLOP/s / sgemm FLOP/s", "x", ">= 0.6")


def roofline_measure(model_id: str) -> Measure:
    return Measure(f"roofline: decode bytes/s / read bandwidth ({model_id})", "x", ROOFLINE_TARGETS.get(model_id, ""))


# --------------------------------------------------------------------------- decode roofline
@dataclass(frozen=True)
class WeightsRead:
    """The bytes of weights one decoded token reads, and what was counted."""

    bytes: int
    counted: str


def weights_read_per_token(tensors: Iterable[tuple[str, int]]) -> WeightsRead:
    """From a GGUF's (tensor name, data bytes): every tensor, except a token embedding that a separate output
    head (``output.weight``) replaces in the last matrix product; the lookup then reads one row a token."""
    sizes = dict(tensors)
    total = sum(sizes.values())
    embedding = sizes.get("token_embd.weight")
    if embedding is not None and "output.weight" in sizes:
        return WeightsRead(total - embedding, "every tensor but the token embedding, which gives one row a token "
                                              "(the separate output head is counted)")
    if embedding is not None:
        return WeightsRead(total, "every tensor: the token embedding is also the output head, read whole every "
                                  "token")
    return WeightsRead(total, "every tensor")


def roofline_ratio(weight_bytes: float, tokens_per_s: float, bandwidth_bytes_per_s: float) -> float | None:
    """Weights bytes x tokens/s over the read bandwidth; None when the bandwidth is not positive."""
    return weight_bytes * tokens_per_s / bandwidth_bytes_per_s if bandwidth_bytes_per_s > 0 else None


def decode_runs(engine, options: BenchOptions) -> list[StreamRun]:
    """The llama.cpp suite's timing of the app engine: a short warm-up, then ``options.rounds`` greedy streams of
    ``options.new_tokens`` tokens after the same plain-text prompt."""
    from playground.backends.base import GenerationParams

    app_run(engine, THROUGHPUT_PROMPT, GenerationParams(max_new_tokens=8, temperature=0.0, repetition_penalty=1.0,
                                                         seed=0))
    params = GenerationParams(max_new_tokens=options.new_tokens, temperature=0.0, repetition_penalty=1.0, seed=0)
    return [app_run(engine, THROUGHPUT_PROMPT, params) for _ in range(options.rounds)]


def measure_decode(provider, model_id: str, options: BenchOptions) -> tuple[float, str]:
    """The app engine's median decode speed of ``model_id`` (loaded for this, then let go) and how it was timed."""
    from playground.backends.selection import LLAMA_CPP

    log(f"roofline: loading {model_id} in the app's llama.cpp engine, then {options.rounds} streams of "
        f"{options.new_tokens} tokens")
    engine = provider.get(model_id, LLAMA_CPP)
    try:
        watch = CpuWatch()
        runs = decode_runs(engine, options)
    finally:
        provider.cache.evict(("engine", LLAMA_CPP, model_id))  # the provider's key: its memory goes now
    return median_speed(runs), (f"app engine, median of {speeds(runs)}, {engine.threads} threads, greedy after the "
                                f"llama.cpp suite's prompt{watch.note()}")


def gguf_tensor_sizes(path: Path) -> list[tuple[str, int]]:
    """(name, data bytes) of each tensor of a GGUF file (reading a large vocabulary's header takes seconds)."""
    from playground.models.gguf_info import open_gguf

    return [(tensor.name, int(tensor.n_bytes)) for tensor in open_gguf(path).tensors]


def roofline_figure(model_id: str, weights: WeightsRead, tokens_per_s: float, speed_source: str,
                    bandwidth_gb_s: float | None, bandwidth_source: str, cache_bytes: int | None) -> Figure:
    """The decode roofline figure of one model from its measured numbers (the detail says where each came from)."""
    measure = roofline_measure(model_id)
    if bandwidth_gb_s is None:
        return measure.not_measured("the read bandwidth was not measured")
    if tokens_per_s <= 0:
        return measure.not_measured(f"no decode speed ({speed_source})")
    streamed = weights.bytes * tokens_per_s
    ratio = roofline_ratio(weights.bytes, tokens_per_s, bandwidth_gb_s * 1e9)
    in_cache = ""
    if cache_bytes and weights.bytes < cache_bytes:
        in_cache = (f"; the weights fit in the {cache_bytes / 2**20:.0f} MiB last-level cache, so decode may read "
                    f"part of them from it (a ratio above 1 is possible)")
    return measure.measured(ratio, f"{weights.bytes / 1e6:.1f} MB of weights a token ({weights.counted}; KV "
                                   f"cache left out) x {tokens_per_s:.1f} tok/s ({speed_source}) = "
                                   f"{streamed / 1e9:.2f} GB/s, over {bandwidth_gb_s:.2f} GB/s ({bandwidth_source})"
                                   f"{in_cache}")


def bench_roofline(provider, options: BenchOptions, bandwidth_gb_s: float | None, threads: int,
                   known_speeds: dict[str, float], cache_bytes: int | None) -> list[Figure]:
    """The decode roofline of every catalog decoder with a GGUF, for those whose GGUF is on this machine.

    ``bandwidth_gb_s`` is the read bandwidth on ``threads`` threads (the engine's); ``known_speeds`` holds the
    app engine's decode speed of models another suite already timed in this run (they are not timed again).
    """
    figures: list[Figure] = []
    bandwidth_source = f"read bandwidth on {threads} thread{'s' if threads != 1 else ''}, as llama.cpp decodes"
    for spec in provider.catalog.with_gguf():
        if spec.family != "decoder":
            continue
        measure = roofline_measure(spec.id)
        if not provider.resolver.is_available_offline(spec, "gguf"):
            figures.append(measure.skipped(f"skipped: no GGUF of {spec.id} on this machine"))
            continue
        try:
            log(f"roofline: reading the tensor sizes of {spec.id}")
            weights = weights_read_per_token(gguf_tensor_sizes(provider.resolve(spec.id, "gguf").path))
            if spec.id in known_speeds:
                speed, source = known_speeds[spec.id], "the llama.cpp decode, app engine figure"
            else:
                speed, source = measure_decode(provider, spec.id, options)
            figures.append(roofline_figure(spec.id, weights, speed, source, bandwidth_gb_s, bandwidth_source,
                                           cache_bytes))
        except Exception as exc:
            figures.append(measure.failed(exc))
    return figures


# --------------------------------------------------------------------------- training MFU
@dataclass(frozen=True)
class ModelCounts:
    """What a trained token's arithmetic depends on, counted on the model itself."""

    parameters: int  # every parameter once (a tied output head is the embedding)
    matmul_weights: int  # weights of the linear layers and the output head: each multiplies every token
    lora_weights: int  # r x (in + out) for each adapted linear layer
    layers: int
    attention_width: int  # query heads x head size


def count_model(folder: Path, targets: Sequence[str], lora_r: int) -> ModelCounts:
    """Count a transformers causal LM's weights from its ``config.json``, built on torch's meta device (no memory,
    no weights read); ``targets`` are the LoRA target module names (the last part of a module's name)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = getattr(config, "text_config", None) or config
    model.tie_weights()
    parameters = sum(p.numel() for p in model.parameters())
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers, their weight stored (in, out)

    matmul = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            matmul += module.weight.numel()
            if name.rsplit(".", 1)[-1] in targets:
                lora += lora_r * sum(module.weight.shape)
    heads = int(text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    return ModelCounts(int(parameters), int(matmul), int(lora), int(text.num_hidden_layers), heads * head_dim)


def training_flops_per_token(counts: ModelCounts, row_tokens: float) -> float:
    """FLOPs one trained token of a LoRA run costs: 4 per frozen matmul weight (forward, backward to the
    activations), 6 per adapter weight, and causal attention over rows of ``row_tokens`` tokens (forward
    ``2 x width x row_tokens`` per layer, the backward twice that)."""
    return 4.0 * counts.matmul_weights + 6.0 * counts.lora_weights + \
        6.0 * counts.layers * counts.attention_width * row_tokens


def full_training_flops_per_token(counts: ModelCounts, row_tokens: float) -> float:
    """The issue's "6 x parameters plus attention": as if every parameter received a gradient."""
    return 6.0 * counts.parameters + 6.0 * counts.layers * counts.attention_width * row_tokens


def mean_row_tokens(runs: Sequence, rows_per_step: int) -> float:
    """Real (non-padding) tokens a training row carries, over the timed steps of ``runs`` (``TrainRun``)."""
    rows = sum(r.steps for r in runs) * rows_per_step
    return sum(r.tokens for r in runs) / rows if rows else 0.0


def training_mfu_figure(counts: ModelCounts, runs: Sequence, rows_per_step: int, sgemm_gflops: float | None,
                        sgemm_source: str = "") -> Figure:
    """Trainer FLOP/s over sgemm FLOP/s, from the app trainer's timed runs (``TrainRun``) of the fine-tune figure."""
    if sgemm_gflops is None or sgemm_gflops <= 0:
        return TRAINING_MFU.not_measured("the sgemm FLOP/s was not measured")
    if not runs:
        return TRAINING_MFU.not_measured("the fine-tune figure timed no run of the app's trainer")
    speed = statistics.median(r.tokens_per_s for r in runs)
    row = mean_row_tokens(runs, rows_per_step)
    per_token = training_flops_per_token(counts, row)
    achieved = per_token * speed
    ratio = achieved / (sgemm_gflops * 1e9)
    as_issue = full_training_flops_per_token(counts, row) * speed / (sgemm_gflops * 1e9)
    return TRAINING_MFU.measured(ratio, (
        f"{speed:.1f} trained tokens/s (the app's trainer, median of the fine-tune figure's runs) x "
        f"{per_token / 1e6:.4g} MFLOP a token = {achieved / 1e9:.3g} GFLOP/s, over sgemm {sgemm_gflops:.1f} GFLOP/s"
        f"{f' ({sgemm_source})' if sgemm_source else ''}; a token costs 4 x {_millions(counts.matmul_weights)} "
        f"weights of the linear layers and output head (forward 2, backward to the activations 2: the frozen "
        f"base computes no weight gradients; the embedding lookup multiplies nothing) + 6 x "
        f"{_millions(counts.lora_weights)} LoRA weights + causal attention 6 x {counts.layers} layers x "
        f"{counts.attention_width} wide x {row:.0f} real tokens a row; padding counts as lost time; the issue's "
        f"6 x all {_millions(counts.parameters)} parameters would give {as_issue:.3f}"))


def _millions(count: int) -> str:
    return f"{count / 1e6:.4g} M"
