"""``python -m playground bench``: the options, the driver that runs every suite, the table and the JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playground.bench.core import DEFAULT_MODEL, BenchOptions, CpuWatch, Figure, Measure, log
from playground.bench.load import DEFAULT_LOADS, MAX_PEOPLE, SERVERS, LoadSpecError, parse_loads
from playground.bench.quiet import suites_write_to_the_log


# --------------------------------------------------------------------------- machine
def machine_summary(hardware, threads: int, options: BenchOptions) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for package in ("llama-cpp-python", "torch", "transformers", "gradio"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "summary": hardware.summary,
        **dataclasses.asdict(hardware),
        "cpu": cpu,
        "threads_used": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "model": options.model,
        "quick": options.quick,
        "others_cpu_share_at_start": _others_cpu_share(),
    }


def _others_cpu_share(seconds: float = 1.0) -> float | None:
    """The share of the CPU other programs use right now, sampled over ``seconds``.

    (The load average is no guide here: on some virtual machines it stays high while the cores idle.)
    """
    watch = CpuWatch()
    time.sleep(seconds)
    share = watch.others_share()
    return None if share is None else round(share, 3)


# --------------------------------------------------------------------------- driver
def _settings_for(options: BenchOptions, data_dir: Path):
    from playground.config import Settings

    settings = Settings.load()
    changes: dict[str, Any] = {"data_dir": data_dir}
    if options.threads:
        changes["threads"] = options.threads
    return dataclasses.replace(settings, **changes)


def _guarded(fallback: Measure, measure: Callable[[], Figure | list[Figure]]) -> list[Figure]:
    """The suite's figures, or ``fallback`` failed with the error that stopped it."""
    try:
        figures = measure()
    except Exception as exc:  # e.g. torch or transformers missing
        return [fallback.failed(exc)]
    return figures if isinstance(figures, list) else [figures]


def run_benchmarks(options: BenchOptions, machine: dict | None = None) -> list[Figure]:
    """Measure every figure in this process; ``machine`` (if given) receives the hardware summary."""
    from playground.backends.provider import EngineProvider
    from playground.bench.architectures import ARCHITECTURES_WARM, bench_architectures
    from playground.bench.dpo import DPO_GAIN, DPO_WALL, bench_dpo
    from playground.bench.finetune import APP_OVER_PLAIN, PEFT_FIGURES, bench_peft_methods, measure_finetune, \
        not_a_decoder
    from playground.bench.finetuned_llama import RUN_OVER_BASE, bench_finetuned_llama
    from playground.bench.gguf_export import MERGE_Q4_K_M, bench_gguf_export
    from playground.bench.llama_decode import APP_OVER_DIRECT, bench_llama_cpp
    from playground.bench.machine import (
        READ_ALL_THREADS,
        SGEMM,
        bench_machine,
        figure_detail,
        figure_value,
        last_level_cache_bytes,
    )
    from playground.bench.prompt_lab import bench_prompt_lab
    from playground.bench.prompt_search import bench_prompt_search
    from playground.bench.roofline import TRAINING_MFU, bench_roofline, count_model, training_mfu_figure
    from playground.bench.startup import STARTUP, bench_startup
    from playground.bench.transformers_engine import SECOND_LOAD, bench_transformers
    from playground.hardware import detect
    from playground.models.catalog import Catalog

    catalog = Catalog.load()
    spec = catalog.get(options.model)  # an unknown id stops here with the list of known ones
    if options.data_dir is not None:
        Path(options.data_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="playground-bench-", dir=options.data_dir))
    figures: list[Figure] = []
    try:
        settings = _settings_for(options, scratch / "app-data")
        hardware = detect(settings.threads)
        if machine is not None:
            machine.update(machine_summary(hardware, hardware.cpu_threads, options))
        log(hardware.summary)

        if options.skip_startup:
            figures.append(STARTUP.skipped("skipped (--skip-startup)"))
        else:
            figures += _guarded(STARTUP, lambda: bench_startup(scratch))

        ceilings = bench_machine(hardware.cpu_threads, options)  # each of its figures reports its own failure
        figures += ceilings
        bandwidth = figure_value(ceilings, READ_ALL_THREADS)
        sgemm = figure_value(ceilings, SGEMM)

        llama_speed: float | None = None
        provider = EngineProvider(settings, hardware, catalog)
        if spec.has_gguf:
            try:
                llama_figures, llama_speed = bench_llama_cpp(provider, options)
                figures += llama_figures
            except Exception as exc:
                figures.append(APP_OVER_DIRECT.failed(exc))
            figures += bench_prompt_lab(provider, options)  # reports its own failures
            figures += bench_prompt_search(provider, options)  # reports its own failures
            provider.cache.clear()
        else:
            figures.append(APP_OVER_DIRECT.skipped(f"skipped: {options.model} has no GGUF source"))
        known = {options.model: llama_speed} if llama_speed else {}
        figures += bench_roofline(provider, options, bandwidth, hardware.cpu_threads, known,
                                  last_level_cache_bytes())  # reports its own failures, model by model
        provider.cache.clear()

        figures += _guarded(SECOND_LOAD, lambda: bench_transformers(settings, hardware, catalog, options, scratch,
                                                                    llama_speed))
        figures += _guarded(RUN_OVER_BASE, lambda: bench_finetuned_llama(settings, hardware, catalog, options, scratch))
        if options.skip_finetune:
            figures.append(APP_OVER_PLAIN.skipped("skipped (--skip-finetune)"))
            figures.append(TRAINING_MFU.skipped("skipped: it needs the fine-tune figure's runs (--skip-finetune)"))
        else:
            try:
                trained = measure_finetune(settings, hardware, catalog, options, scratch)
            except Exception as exc:  # e.g. torch or transformers missing
                figures += [APP_OVER_PLAIN.failed(exc), TRAINING_MFU.not_measured("the fine-tune figure failed")]
            else:
                if trained is None:
                    figures += [not_a_decoder(options.model),
                                TRAINING_MFU.skipped(f"skipped: {options.model} is not a decoder")]
                else:
                    figures.append(trained.figure)
                    figures += _guarded(TRAINING_MFU, lambda: training_mfu_figure(
                        count_model(trained.model_folder, trained.targets, trained.config.lora_r), trained.app_runs,
                        trained.rows_per_step, sgemm, figure_detail(ceilings, SGEMM).split(";")[0]))
        if options.skip_finetune:
            figures += [m.skipped("skipped (--skip-finetune)") for m in PEFT_FIGURES.values()]
        else:  # tokens/s of each PEFT method over LoRA's, on the same rows
            figures += _guarded(next(iter(PEFT_FIGURES.values())),
                                lambda: bench_peft_methods(settings, hardware, catalog, options, scratch))
        if options.skip_dpo:
            figures += [DPO_WALL.skipped("skipped (--skip-dpo)"), DPO_GAIN.skipped("skipped (--skip-dpo)")]
        else:
            figures += _guarded(DPO_WALL, lambda: bench_dpo(settings, hardware, catalog, options, scratch))
        figures += _guarded(ARCHITECTURES_WARM, lambda: bench_architectures(settings, hardware, catalog, options))
        figures += _guarded(MERGE_Q4_K_M, lambda: bench_gguf_export(settings, catalog, options, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return figures


def run_prompt_search(options: BenchOptions, machine: dict | None = None) -> list[Figure]:
    """The prompt-search figures alone (``--ape``): one APE search on llama.cpp, and its winner against the baseline."""
    from playground.backends.provider import EngineProvider
    from playground.bench.prompt_search import bench_prompt_search
    from playground.hardware import detect
    from playground.models.catalog import Catalog

    catalog = Catalog.load()
    catalog.get(options.model)  # an unknown id stops here with the list of known ones
    if options.data_dir is not None:
        Path(options.data_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="playground-bench-ape-", dir=options.data_dir))
    try:
        settings = _settings_for(options, scratch / "app-data")
        hardware = detect(settings.threads)
        if machine is not None:
            machine.update(machine_summary(hardware, hardware.cpu_threads, options))
        log(hardware.summary)
        provider = EngineProvider(settings, hardware, catalog)
        try:
            return bench_prompt_search(provider, options)
        finally:
            provider.cache.clear()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_load(options: BenchOptions, machine: dict | None = None) -> list[Figure]:
    """The load run alone (``--load``): N people at once against a running app, for each N of ``options.load``."""
    from playground.bench.load import LOAD_SETUP, bench_load
    from playground.hardware import detect
    from playground.models.catalog import Catalog
    from playground.models.sources import SourceResolver

    spec = Catalog.load().get(options.model)  # an unknown id stops here with the list of known ones
    if not spec.has_gguf:
        from playground.errors import ModelUnavailableError

        raise ModelUnavailableError(f"{options.model} has no GGUF source; the load run chats on the Quantized CPU "
                                    f"tab, which needs one.")
    if options.data_dir is not None:
        Path(options.data_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="playground-bench-load-", dir=options.data_dir))
    try:
        settings = _settings_for(options, scratch / "app-data")
        # The app runs offline; the same file is what a server is started on and what counts tokens if need be.
        gguf = SourceResolver(settings.models_dir, offline=True).resolve(spec, "gguf").gguf_file
        hardware = detect(settings.threads)
        if machine is not None:
            machine.update(machine_summary(hardware, hardware.cpu_threads, options))
            machine["load"] = {"people": list(options.load), "server": options.load_server}
        log(hardware.summary)
        return _guarded(LOAD_SETUP, lambda: bench_load(options.load, options.model, scratch / "load",
                                                       options.threads, options.load_server, gguf))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_alone(options: BenchOptions, machine: dict | None = None) -> list[Figure]:
    """A suite that runs alone (``--cpu-demo``, ``--trainer-variants``, ``--dpo-only``) in its own scratch folder."""
    from playground.hardware import detect
    from playground.models.catalog import Catalog

    if options.cpu_demo:
        from playground.bench.cpu_demo import DEMO_WALL as fallback
        from playground.bench.cpu_demo import bench_cpu_demo as suite
    elif options.dpo_only:
        from playground.bench.dpo import DPO_WALL as fallback
        from playground.bench.dpo import bench_dpo as suite
    else:
        from playground.bench.trainer_variants import PACKED as fallback
        from playground.bench.trainer_variants import bench_trainer_variants as suite
    catalog = Catalog.load()
    if options.data_dir is not None:
        Path(options.data_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="playground-bench-alone-", dir=options.data_dir))
    try:
        settings = _settings_for(options, scratch / "app-data")
        hardware = detect(settings.threads)
        if machine is not None:
            machine.update(machine_summary(hardware, hardware.cpu_threads, options))
        log(hardware.summary)
        return _guarded(fallback, lambda: suite(settings, hardware, catalog, options, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------- output
def _value_text(figure: Figure) -> str:
    if figure.value is None:
        return "-"
    value = figure.value
    if isinstance(value, int) and not isinstance(value, bool):  # a count
        return f"{value} {figure.unit}"
    digits = 3 if abs(value) < 1 else 2 if abs(value) < 100 else 1
    return f"{value:.{digits}f} {figure.unit}"


def _result_text(figure: Figure) -> str:
    if figure.passed is None:
        return "info" if figure.value is not None else "skipped"
    return "pass" if figure.passed else "FAIL"


def format_table(figures: list[Figure], machine: dict | None = None) -> str:
    header = ("figure", "value", "target", "result")
    rows = [(f.name, _value_text(f), f.target or "-", _result_text(f)) for f in figures]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells) -> str:
        return "  ".join([cells[0].ljust(widths[0]), cells[1].rjust(widths[1]),
                          cells[2].ljust(widths[2]), cells[3]]).rstrip()

    out = []
    if machine:
        out.append(f"machine: {machine.get('summary', '')}; {machine.get('cpu', '')}")
        packages = machine.get("packages") or {}
        out.append("versions: " + ", ".join(f"{k} {v}" for k, v in packages.items() if v))
        share = machine.get("others_cpu_share_at_start")
        if share is not None:
            out.append(f"CPU used by other programs at start: {share:.0%}" + (
                " (they compete with the benchmark: speed figures will be noisy)" if share >= 0.15 else ""))
        out.append("")
    out.append(line(header))
    out.append(line(["-" * w for w in widths]))
    out += [line(r) for r in rows]
    out.append("")
    out.append("details:")
    out += [f"  {f.name}: {f.detail}" for f in figures if f.detail]
    return "\n".join(out)


def format_json(figures: list[Figure], machine: dict) -> str:
    return json.dumps({"machine": machine, "figures": [f.to_dict() for f in figures]}, indent=2)


# --------------------------------------------------------------------------- command line
def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m playground bench",
        description="Measure the playground's speed figures on this machine and compare them with their targets. "
                    "With --load, only the load figure is measured (its own run: the other suites are left out).",
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    parser.add_argument("--quick", action="store_true",
                        help="Fewer rounds and tokens for a rough answer (the one-off GGUF conversion still runs).")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Folder in which the scratch folder is made (default: the system temp folder); "
                             "everything written there is removed at the end.")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for llama.cpp and torch (default 0: one per physical core).")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"Catalog id to measure (default {DEFAULT_MODEL}).")
    parser.add_argument("--skip-startup", action="store_true", help="Do not measure the app's start-up time.")
    parser.add_argument("--skip-finetune", action="store_true",
                        help="Do not compare the app's fine-tuning trainer with a plain peft + Trainer script "
                             "(the slowest figure: a few minutes on two cores).")
    parser.add_argument("--ape", action="store_true",
                        help="Run ONLY the prompt-search figures: one APE search (8 candidates x 2 rounds on 20 "
                             "sentiment development examples) on llama.cpp, its wall time, and its winner against "
                             "the hand-written baseline on the test split.")
    parser.add_argument("--skip-dpo", action="store_true",
                        help="Do not run the DPO CPU preset (examples/finetune/dpo-cpu-demo.yaml: its wall time and "
                             "held-out reward accuracy gain; a few minutes on two cores).")
    parser.add_argument("--dpo-only", action="store_true",
                        help="Run ONLY the DPO CPU preset's figures (its own run: the other suites are left out).")
    parser.add_argument("--load", nargs="?", const=",".join(map(str, DEFAULT_LOADS)), default=None, metavar="N[,N...]",
                        help="Run ONLY the load figure: start the app (workshop mode, offline) and, for each N, N "
                             "people at once get an identity and stream one short Quantized CPU chat through "
                             "gradio_client; errors, p50/p90 time to first and last token, aggregate tokens/s "
                             f"(default {','.join(map(str, DEFAULT_LOADS))}; e.g. --load 32; at most {MAX_PEOPLE} "
                             "at once).")
    parser.add_argument("--load-server", choices=SERVERS, default=None,
                        help="With the load run (implies --load): first start this OpenAI-compatible server on the "
                             "model's GGUF (llama.cpp: python -m playground.backends.llama_server, llama-cpp-python's "
                             "server, which needs pip install sse-starlette starlette-context pydantic-settings) and "
                             "point the app at it with "
                             "PLAYGROUND_OPENAI_BASE_URL, PLAYGROUND_OPENAI_API_KEY and PLAYGROUND_OPENAI_MODELS.")
    parser.add_argument("--cpu-demo", action="store_true",
                        help="Run ONLY the CPU demo preset (examples/finetune/cpu-demo.yaml) end to end through the "
                             "app's trainer, after its pre-flight estimate: the whole run's time, each phase's "
                             "(load, base scoring, training, tuned scoring, save), the ROUGE-L gain and the "
                             "estimate against the real run (a few minutes on two cores).")
    parser.add_argument("--trainer-variants", action="store_true",
                        help="Run ONLY the trainer variants: padding-free packed batches, and bf16 autocast where "
                             "the CPU has native bf16, each against the app's padded fp32 batches (same model, "
                             "rows and LoRA settings as the fine-tune figure).")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when every figure meets its target, 1 when one misses or was not measured, 2 on bad input."""
    args = build_arg_parser().parse_args(argv)
    if args.threads < 0:
        print("--threads must be 0 or more.", file=sys.stderr)
        return 2
    loads: tuple[int, ...] = ()
    if args.load is not None or args.load_server is not None:
        try:
            loads = parse_loads(args.load)
        except LoadSpecError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    options = BenchOptions(json=args.json, quick=args.quick, data_dir=args.data_dir, threads=args.threads,
                           model=args.model, skip_startup=args.skip_startup, skip_finetune=args.skip_finetune,
                           load=loads, load_server=args.load_server, cpu_demo=args.cpu_demo,
                           trainer_variants=args.trainer_variants, skip_dpo=args.skip_dpo,
                           dpo_only=args.dpo_only)
    from playground.errors import PlaygroundError

    machine: dict[str, Any] = {}
    with suites_write_to_the_log():  # stdout carries the table or the JSON, nothing else
        try:
            if options.load:
                figures = run_load(options, machine)
            elif options.cpu_demo or options.trainer_variants or options.dpo_only:
                figures = run_alone(options, machine)
            elif args.ape:
                figures = run_prompt_search(options, machine)
            else:
                figures = run_benchmarks(options, machine)
        except PlaygroundError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: the processes the bench started were stopped", file=sys.stderr)
            return 130
    print(format_json(figures, machine) if options.json else format_table(figures, machine))
    return 1 if any(f.passed is False for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
