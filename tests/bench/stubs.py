"""Stand-ins for the bench's slow suites, so ``run_benchmarks`` and the command line run in seconds.

The machine ceilings run for real on tiny sizes; the fine-tune suite returns timed runs written here
over a model folder that holds only a ``config.json`` (the training MFU counts weights on torch's meta
device, so no weights are needed); the llama.cpp suite reports a fixed speed and the roofline reads
fixed tensor sizes. ``noisy=True`` makes the suites chatter the way the real libraries do (prints,
C-level writes on descriptor 1, a child process, tqdm bars, warnings) and load the packaged SmolLM2
GGUF in the app's llama.cpp engine, for the output hygiene test (:mod:`tests.bench.noisy_bench`).
"""

from __future__ import annotations

from pathlib import Path

from playground.bench import finetune, llama_decode, machine, roofline
from playground.bench.core import BenchOptions, Figure
from playground.bench.finetune import FinetuneMeasurement, TrainRun, finetune_config
from playground.bench.streams import app_run

LLAMA_SPEED = 50.0  # tok/s the stubbed llama.cpp suite reports for the bench's model
STUB_SPEED = 40.0  # tok/s of every other model's stubbed decode
TENSORS = [("token_embd.weight", 30_000_000), ("blk.0.attn_q.weight", 70_000_000)]  # 100 MB, tied head
TRAIN_RUNS = (TrainRun(steps=4, tokens=1600, seconds=8.0, padding_share=0.05),  # 200 tok/s, 100 tokens a row
              TrainRun(steps=4, tokens=1600, seconds=10.0, padding_share=0.05))  # 160 tok/s
NOISE = ("stray print from a suite", "C printf on descriptor 1", "raw write on descriptor 1",
         "a child process on stdout")


TINY_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256, "hidden_size": 32,
              "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "tie_word_embeddings": True}


def write_model_config(folder: Path) -> Path:
    """A tiny Llama's config.json (2 layers, 32 wide, 4 heads): all the training MFU reads of a model. Written
    as plain JSON, so that the command-line test imports no library before the bench does."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA), encoding="utf-8")
    return folder


def make_noise() -> None:
    """What libraries print while the bench measures: every way onto stdout, a progress bar, a warning."""
    import ctypes
    import os
    import subprocess
    import sys
    import warnings

    from tqdm import tqdm

    print(NOISE[0])
    libc = ctypes.CDLL(None)
    libc.printf(f"{NOISE[1]}\n".encode())  # stays in C's stdout buffer until something flushes it
    os.write(1, f"{NOISE[2]}\n".encode())
    subprocess.run([sys.executable, "-c", f"print({NOISE[3]!r})"], check=True)
    for _ in tqdm(range(3), desc="a tqdm bar"):
        pass
    for _ in tqdm(range(3), desc="a tqdm bar on stdout", file=sys.stdout):
        pass
    warnings.warn("a library Warning: something is deprecated", UserWarning, stacklevel=1)


def load_smollm2(options: BenchOptions) -> float:
    """Load the packaged SmolLM2 GGUF in the app's llama.cpp engine and stream a few tokens; their speed."""
    import tempfile

    from playground.backends.base import GenerationParams
    from playground.backends.provider import EngineProvider
    from playground.hardware import detect
    from playground.models.catalog import Catalog
    from tests.helpers import offline_settings

    settings = offline_settings(Path(tempfile.mkdtemp(prefix="noisy-bench-")))
    provider = EngineProvider(settings, detect(1), Catalog.load())
    try:
        engine = provider.get(options.model, "llama.cpp")
        run = app_run(engine, "The lighthouse", GenerationParams(max_new_tokens=6, temperature=0.0,
                                                                         seed=0))
        return run.tokens_per_s or LLAMA_SPEED
    finally:
        provider.cache.clear()


def stubbed_suites(model_folder: Path, noisy: bool = False) -> list[tuple[object, str, object]]:
    """(module, attribute, stand-in) for every suite ``run_benchmarks`` calls; apply them with ``setattr``."""
    from playground.bench import architectures, dpo, finetuned_llama, gguf_export, prompt_lab, prompt_search, startup
    from playground.bench import transformers_engine

    real_machine = machine.bench_machine

    def tiny_machine(threads, options):
        return real_machine(threads, options, array_bytes=1 << 20, sgemm_size=64, rounds=2)

    def llama(provider, options):
        speed = load_smollm2(options) if noisy else LLAMA_SPEED
        return [Figure("llama.cpp decode, app engine", speed, "tok/s")], LLAMA_SPEED

    def measure_decode(provider, model_id, options):
        return STUB_SPEED, "stubbed decode"

    def trained(settings, hardware, catalog, options, scratch, config=None):
        if noisy:
            make_noise()
        config = config or finetune_config(options)
        figure = finetune.APP_OVER_PLAIN.measured(1.0, "stubbed")
        return FinetuneMeasurement(figure, TRAIN_RUNS, config, model_folder, ("q_proj", "v_proj"))

    def nothing(*args, **kwargs):
        return []

    def searched(provider, options):
        if noisy:
            make_noise()
        return [prompt_search.SEARCH_TIME.measured(1.0, "stubbed")]

    def peft_methods(*args, **kwargs):
        return [measure.measured(1.0, "stubbed") for measure in finetune.PEFT_FIGURES.values()]

    def preference_run(*args, **kwargs):
        if noisy:
            make_noise()
        return [dpo.DPO_WALL.measured(1.0, "stubbed"), dpo.DPO_GAIN.measured(25.0, "stubbed")]

    return [
        (startup, "bench_startup", lambda scratch: Figure("app start-up to ready", 1.0, "s", "< 10 s", True)),
        (machine, "bench_machine", tiny_machine),
        (llama_decode, "bench_llama_cpp", llama),
        (prompt_lab, "bench_prompt_lab", nothing),
        (prompt_search, "bench_prompt_search", searched),
        (roofline, "gguf_tensor_sizes", lambda path: TENSORS),
        (roofline, "measure_decode", measure_decode),
        (transformers_engine, "bench_transformers", nothing),
        (finetuned_llama, "bench_finetuned_llama", nothing),
        (finetune, "measure_finetune", trained),
        (finetune, "bench_peft_methods", peft_methods),  # each a training run of its own
        (dpo, "bench_dpo", preference_run),  # the DPO preset: a real preference run
        (architectures, "bench_architectures", nothing),
        (gguf_export, "bench_gguf_export", nothing),
    ]
