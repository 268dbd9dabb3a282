"""GGUF exports: how long a LoRA run takes to become llama.cpp files, on the bench's model's GGUF.

Nothing is trained: :func:`write_random_lora` writes a peft LoRA adapter with random factors shaped for
the base GGUF (rank 16 on the attention projections of every layer, like the CPU preset), in a run folder
of the scratch dir. Two informational figures: converting it to a llama.cpp adapter GGUF, and merging it
into the base and quantising the result to Q4_K_M (the Fine-tune tab's default merged download).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from playground.bench.core import BenchOptions, Figure, Measure, log

ADAPTER_CONVERSION = Measure("GGUF export: adapter to llama.cpp adapter", "s")
MERGE_Q4_K_M = Measure("GGUF export: merge + quantize to Q4_K_M", "s")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def write_random_lora(base_gguf: Path, adapter_dir: Path, *, rank: int = 16, alpha: float = 32.0,
                      targets: tuple[str, ...] = ATTENTION, seed: int = 0, b_std: float = 0.05,
                      base_model: str = "") -> Path:
    """A peft LoRA adapter folder for the Llama-style ``base_gguf`` with random A and B (B far from zero).

    Shapes come from the base's tensors (through the gguf package's name tables), so no transformers
    model is loaded. ``playground.json`` names ``base_model`` the way a run's adapter does.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import save_file

    from playground.finetune.gguf_adapter import BaseLayout

    layout = BaseLayout.read(Path(base_gguf))  # remembered: the conversion that follows reads it no more
    blocks = layout.blocks
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == layout.architecture)
    names = gguf.get_tensor_name_map(arch, blocks)
    shapes = layout.tensors  # ggml order: [in, out]
    rng = np.random.default_rng(seed)
    tensors = {}
    for block in range(blocks):
        for target in targets:
            kind = "mlp" if target in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            module = f"model.layers.{block}.{kind}.{target}"
            in_features, out_features = shapes[names.get_name(module + ".weight", try_suffixes=(".weight",))][:2]
            prefix = f"base_model.model.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.normal(
                0.0, in_features ** -0.5, (rank, in_features)).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.normal(
                0.0, b_std, (out_features, rank)).astype(np.float32)
    adapter_dir = Path(adapter_dir)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(adapter_dir / "adapter_model.safetensors"))
    (adapter_dir / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": list(targets), "bias": "none",
        "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model}), encoding="utf-8")
    (adapter_dir / "playground.json").write_text(json.dumps({
        "base_model": base_model, "base_name": base_model, "family": "decoder", "method": "lora",
        "target_modules": list(targets), "lora_r": rank, "lora_alpha": alpha}), encoding="utf-8")
    return adapter_dir


def bench_gguf_export(settings, catalog, options: BenchOptions, scratch: Path) -> list[Figure]:
    """Convert a random LoRA of the bench's model to an adapter GGUF, then merge and quantize it to Q4_K_M."""
    from playground.finetune.gguf_adapter import forget_base_layouts, run_adapter_gguf
    from playground.finetune.gguf_export import quantized_export
    from playground.models.sources import SourceResolver

    spec = catalog.get(options.model)
    if not spec.has_gguf:
        reason = f"skipped: {options.model} has no GGUF source"
        return [ADAPTER_CONVERSION.skipped(reason), MERGE_Q4_K_M.skipped(reason)]
    base = SourceResolver(settings.models_dir, settings.offline).resolve(spec, "gguf").path
    run_dir = Path(scratch) / "gguf-export" / "bench-run"
    adapter_dir = write_random_lora(base, run_dir / "adapter", base_model=spec.id)
    log(f"GGUF export: converting a random rank-16 LoRA of {spec.id}")
    forget_base_layouts()  # time a run's first conversion, header read included, not a warm cache
    started = time.perf_counter()
    run_adapter_gguf(run_dir, adapter_dir, base, name="bench")
    converted = time.perf_counter() - started
    log("GGUF export: merging into the base and quantizing to Q4_K_M")
    started = time.perf_counter()
    output = quantized_export(run_dir, base, "Q4_K_M", threads=settings.threads)
    merged = time.perf_counter() - started
    size = f"{base.name} ({base.stat().st_size / 1e6:.0f} MB) -> {output.stat().st_size / 1e6:.0f} MB Q4_K_M"
    return [ADAPTER_CONVERSION.measured(converted, f"rank 16 on {', '.join(ATTENTION)} of every layer"),
            MERGE_Q4_K_M.measured(merged, f"dequantize, add the update, write F32, quantize: {size}")]
