"""A fine-tuned run on llama.cpp: converting its adapter, and its decode speed against its base and transformers.

The run is made here, not trained: a random peft LoRA adapter (r=8 on q, k, v, o, as the catalog trains;
:func:`~playground.bench.gguf_export.write_random_lora`), which costs what a trained one costs to apply.
It is converted to a llama.cpp adapter GGUF (the GGUF export suite times that), and the app serves the
run the way it serves ``run:<id>``: the loaded base with the adapter view (``with_adapter``).
Base and run decode in alternating rounds on the same engine, prompt and threads (target: the run at
0.9x its base or better), and the same run merged on transformers fp32 decodes once more (target: llama.cpp
4x faster or better).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from playground.bench.core import BenchOptions, CpuWatch, Figure, Measure, alternate, log, median_speed, per_round
from playground.bench.gguf_export import write_random_lora
from playground.bench.streams import THROUGHPUT_PROMPT, app_run, speed_detail
from playground.bench.transformers_engine import TRANSFORMERS_RUN_CAP_S

RUN_OVER_BASE = Measure("fine-tuned run / its base, llama.cpp decode", "x", ">= 0.9")
RUN_LLAMA_OVER_TRANSFORMERS = Measure("fine-tuned run, llama.cpp / transformers fp32 decode", "x", ">= 4")


def bench_finetuned_llama(settings, hardware, catalog, options: BenchOptions, scratch: Path) -> list[Figure]:
    from peft import PeftModel

    from playground.backends.base import GenerationParams
    from playground.backends.provider import EngineProvider
    from playground.backends.transformers_engine import TransformersEngine
    from playground.finetune.gguf_adapter import convert_adapter

    spec = catalog.get(options.model)
    if not spec.has_gguf:
        reason = f"skipped: {options.model} has no GGUF source"
        return [RUN_OVER_BASE.skipped(reason), RUN_LLAMA_OVER_TRANSFORMERS.skipped(reason)]
    data_dir = scratch / "transformers-data"  # the transformers suite's converted copy, when it ran first
    data_dir.mkdir(parents=True, exist_ok=True)
    provider = EngineProvider(dataclasses.replace(settings, data_dir=data_dir), hardware, catalog)
    figures: list[Figure] = []
    try:
        log("fine-tuned run: a random LoRA adapter, on llama.cpp (adapter GGUF) and on transformers (merged)")
        base_gguf = provider.resolve(options.model, "gguf").path
        adapter_dir = write_random_lora(base_gguf, scratch / "bench-run" / "adapter", rank=8, alpha=16.0,
                                        targets=tuple(spec.lora_targets), b_std=0.05, base_model=spec.id)
        adapter_gguf = convert_adapter(adapter_dir, base_gguf, scratch / "bench-run" / "gguf" / "adapter.gguf")
        torch_engine = provider.get(options.model, "transformers")
        merged = PeftModel.from_pretrained(torch_engine.model, adapter_dir).merge_and_unload().eval()
        run_on_torch = TransformersEngine("run:bench", merged, torch_engine.tokenizer, torch_engine.device)

        base = provider.get(options.model, "llama.cpp")
        run = base.with_adapter("run:bench", adapter_gguf)
        n = options.new_tokens
        params = GenerationParams(max_new_tokens=n, temperature=0.0, repetition_penalty=1.0, seed=0)
        warm = dataclasses.replace(params, max_new_tokens=8)
        log(f"fine-tuned run: warming up, then {options.rounds} alternating rounds of {n} tokens, base and run")
        app_run(base, THROUGHPUT_PROMPT, warm)
        app_run(run, THROUGHPUT_PROMPT, warm)
        watch = CpuWatch()
        run_runs, base_runs = alternate(options.rounds, lambda _: app_run(run, THROUGHPUT_PROMPT, params),
                                        lambda _: app_run(base, THROUGHPUT_PROMPT, params))
        run_speed, base_speed = median_speed(run_runs), median_speed(base_runs)
        different = sum(a.text != b.text for a, b in zip(run_runs, base_runs))
        figures.append(RUN_OVER_BASE.measured(
            run_speed / base_speed if base_speed > 0 else None,
            f"run {speed_detail(run_runs)} over base {speed_detail(base_runs)}; per round "
            f"{per_round(run_runs, base_runs)}; {hardware.cpu_threads} threads, greedy; the run's text differs "
            f"from the base's in {different} of {len(run_runs)} rounds{watch.note()}"))

        log("fine-tuned run: the same run merged, on transformers fp32")
        app_run(run_on_torch, THROUGHPUT_PROMPT, warm)
        watch = CpuWatch()
        torch_runs = [app_run(run_on_torch, THROUGHPUT_PROMPT, params, TRANSFORMERS_RUN_CAP_S)
                      for _ in range(options.transformers_runs)]
        torch_speed = median_speed(torch_runs)
        figures.append(RUN_LLAMA_OVER_TRANSFORMERS.measured(
            run_speed / torch_speed if torch_speed > 0 else None,
            f"llama.cpp + adapter {run_speed:.1f} tok/s over transformers + merged adapter "
            f"{torch_speed:.1f} tok/s ({speed_detail(torch_runs)}); same prompt and threads{watch.note()}"))
    except Exception as exc:
        missing = [m for m in (RUN_OVER_BASE, RUN_LLAMA_OVER_TRANSFORMERS)
                   if m.name not in {f.name for f in figures}]
        figures += [missing[0].failed(exc), *(m.not_measured("an earlier step failed") for m in missing[1:])]
    finally:
        provider.cache.clear()
    return figures
