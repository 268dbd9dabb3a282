"""``python -m playground export RUN_DIR --gguf TYPE | --adapter-gguf``: a LoRA run's llama.cpp files.

An operator's tool, run by someone with a shell on the machine: ``RUN_DIR`` is a run's folder (the app's
``PLAYGROUND_DATA_DIR/runs/<id>``, or a ``finetune --output`` folder). The run's base is found the way the
app finds it: through the catalog, with the settings' models folder and offline switch
(:class:`~playground.models.sources.SourceResolver`). The file is built once into the run's ``downloads/``
(:mod:`~playground.finetune.gguf_export`), exactly what the Fine-tune tab hands out, and its absolute path is
printed as the one line on stdout. The data dir's budget is not consulted (the run may live anywhere).

Exit status: 0 done; 2 a bad type or argument, a missing run, a run with no adapter (a full fine-tune) or
whose base has no GGUF; 1 any other problem (its message is printed, never a traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from playground.errors import InvalidParameterError, PlaygroundError, SettingsError

PROG = "python -m playground export"


def build_parser() -> argparse.ArgumentParser:
    from playground.models.quantize import QUANT_TYPE_NAMES

    parser = argparse.ArgumentParser(
        prog=PROG, description="A LoRA run as llama.cpp files: its adapter GGUF, or the adapter merged into the "
                               "base's GGUF and quantized. Prints the file's path.")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run's folder (holding adapter/)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--gguf", metavar="TYPE",
                      help=f"merge into the base and quantize to TYPE: {', '.join(QUANT_TYPE_NAMES)}")
    what.add_argument("--adapter-gguf", action="store_true",
                      help="the adapter as a llama.cpp LoRA adapter GGUF (llama-cli -m BASE.gguf --lora FILE)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for the quantizer (default: PLAYGROUND_THREADS, else every core)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from playground.finetune.gguf_export import GGUFExportError, adapter_gguf_export, base_gguf_of, quantized_export
    from playground.finetune.result import RunResult
    from playground.finetune.runs import RunNotFoundError

    try:
        from playground.config import Settings
        from playground.models.catalog import Catalog
        from playground.models.quantize import quant_type
        from playground.models.sources import SourceResolver

        type_name = quant_type(args.gguf).name if args.gguf is not None else None
        if args.threads is not None and args.threads < 0:
            raise InvalidParameterError("--threads must be 0 or more.")
        run_dir = args.run_dir
        if not run_dir.is_dir():
            raise RunNotFoundError(f"There is no run folder {run_dir}.")
        weights = RunResult(run_dir).weights_dir
        if weights is not None and not RunResult(run_dir).has_info():
            raise RunNotFoundError(f"{run_dir} is not a run of the playground: its {weights.name}/ has no "
                                   f"playground.json.")
        settings = Settings.load()
        base = base_gguf_of(run_dir, Catalog.load(), SourceResolver(settings.models_dir, settings.offline))
    except (InvalidParameterError, SettingsError, RunNotFoundError, GGUFExportError) as exc:
        return _fail(exc, 2)
    except PlaygroundError as exc:  # e.g. the base's GGUF is not on this machine and the app is offline
        return _fail(exc, 1)
    threads = settings.threads if args.threads is None else args.threads
    try:
        if type_name is None:
            output = adapter_gguf_export(run_dir, base)
        else:
            output = quantized_export(run_dir, base, type_name, threads=threads or 0)
    except GGUFExportError as exc:
        return _fail(exc, 2)
    except PlaygroundError as exc:  # e.g. an adapter llama.cpp cannot express (DoRA), a full disk
        return _fail(exc, 1)
    print(output.resolve(), flush=True)
    return 0


def _fail(exc: Exception, code: int) -> int:
    print(f"playground export: {exc}", file=sys.stderr)
    return code
