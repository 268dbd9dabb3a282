"""transformers: the engine's first load of the GGUF model, its second load, and llama.cpp's speed over it.

The first load dequantises the GGUF file and writes a safetensors copy into a fresh data dir; the
second loads that copy through a new provider and cache, so it really loads again (target: under
5 s). Then the engine decodes the throughput prompt greedily and llama.cpp's speed is set over its
speed on the same model and settings (informational).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from playground.bench.core import BenchOptions, CpuWatch, Figure, Measure, log, median_speed
from playground.bench.streams import THROUGHPUT_PROMPT, app_run, speed_detail

TRANSFORMERS_RUN_CAP_S = 30.0  # fp32 transformers on two cores: about 10 s

FIRST_LOAD = Measure("transformers first load (GGUF conversion)", "s")
SECOND_LOAD = Measure("transformers second load (cached copy)", "s", "< 5 s")
LLAMA_OVER_TRANSFORMERS = Measure("llama.cpp / transformers speed", "x")


def bench_transformers(settings, hardware, catalog, options: BenchOptions, scratch: Path,
                       llama_speed: float | None) -> list[Figure]:
    """First and second transformers load, then the speed ratio."""
    from playground.backends.base import GenerationParams
    from playground.backends.provider import EngineProvider

    figures: list[Figure] = []
    data_dir = scratch / "transformers-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    tf_settings = dataclasses.replace(settings, data_dir=data_dir)
    n = options.new_tokens

    t0 = time.perf_counter()
    import torch  # noqa: F401  (already imported by hardware.detect in most runs)
    import transformers  # noqa: F401

    import_s = time.perf_counter() - t0

    # ---- first load, converting the GGUF into a fresh data dir
    first_provider = EngineProvider(tf_settings, hardware, catalog)
    try:
        log("transformers first load: dequantising the GGUF file (tens of seconds on a CPU)")
        started = time.perf_counter()
        first_provider.get(options.model, "transformers")
        first_s = time.perf_counter() - started
        converted = any((data_dir / "converted").glob("*/config.json"))
        figures.append(FIRST_LOAD.measured(first_s, f"fresh data dir; safetensors copy written: "
                                                    f"{'yes' if converted else 'NO'}; importing torch+transformers "
                                                    f"before it took {import_s:.1f} s"))
    except Exception as exc:
        return [FIRST_LOAD.failed(exc), SECOND_LOAD.not_measured("the first load failed")]
    finally:
        first_provider.cache.clear()

    # ---- second load from the safetensors copy, through a new provider and cache
    provider = EngineProvider(tf_settings, hardware, catalog)
    try:
        try:
            log("transformers second load: from the cached safetensors copy")
            started = time.perf_counter()
            engine = provider.get(options.model, "transformers")
            second_s = time.perf_counter() - started
            figures.append(SECOND_LOAD.measured(second_s, "new EngineProvider and ModelCache, same data dir"))
        except Exception as exc:
            return [*figures, SECOND_LOAD.failed(exc)]

        # ---- llama.cpp speed over transformers CPU speed
        try:
            runs_wanted = options.transformers_runs
            log(f"transformers decode: one warm-up, then {runs_wanted} run(s) of {n} tokens")
            params = GenerationParams(max_new_tokens=n, temperature=0.0, repetition_penalty=1.0, seed=0)
            app_run(engine, THROUGHPUT_PROMPT, dataclasses.replace(params, max_new_tokens=8))
            watch = CpuWatch()
            runs = [app_run(engine, THROUGHPUT_PROMPT, params, TRANSFORMERS_RUN_CAP_S) for _ in range(runs_wanted)]
            cpu_note = watch.note()
            tf_speed = median_speed(runs)
            decode = Measure(f"transformers decode ({engine.device.device}, {engine.device.dtype_name})", "tok/s")
            figures.append(decode.measured(tf_speed, f"{speed_detail(runs)}; {hardware.cpu_threads} torch threads"
                                                     f"{cpu_note}"))
            if llama_speed is None:
                figures.append(LLAMA_OVER_TRANSFORMERS.not_measured("the llama.cpp speed is missing"))
            else:
                figures.append(LLAMA_OVER_TRANSFORMERS.measured(
                    llama_speed / tf_speed if tf_speed > 0 else None,
                    f"app llama.cpp {llama_speed:.1f} tok/s over transformers {tf_speed:.1f} tok/s, same prompt, "
                    f"greedy, {n} tokens"))
        except Exception as exc:
            figures.append(LLAMA_OVER_TRANSFORMERS.failed(exc))
    finally:
        provider.cache.clear()
    return figures
