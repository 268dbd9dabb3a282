"""Take a fine-tuned result away: zip an adapter, or merge it into its base model and zip that.

- :func:`result_archive` / :func:`merged_archive`: what the app's download buttons
  hand out. Each archive is built once per run and kept in the run's
  ``downloads/`` folder (``<run id>-adapter.zip``, ``<run id>-merged.zip``:
  :meth:`RunResult.archive_path`), so the next click reuses it; a lock on
  ``downloads/.lock`` makes two clicks at the same moment build it once, and the
  merged model's folder is removed once it is zipped (only the zip stays). Before
  building, ``make_room(bytes)`` (the data dir's budget) may free space or refuse
  with a message.
- :func:`zip_directory`: a result folder (safetensors, tokenizer, ``playground.json``) as one ``.zip``.
- :func:`merge_adapter`: loads the base named in the adapter's ``playground.json``
  and merges the adapter into it (:func:`~playground.finetune.methods.load_trained`,
  the same loader the Prompt Lab uses: full precision, so a QLoRA adapter is merged
  into the unquantised weights), and saves a plain transformers model as
  safetensors. A model that transformers loaded from GGUF refuses
  ``save_pretrained``; :func:`saveable_model` rebuilds it from its config and
  loads the state dict first.

Every archive and folder is written atomically (:mod:`playground.atomic`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import threading
import zipfile
from pathlib import Path
from typing import Callable

from playground.atomic import atomic_directory, atomic_file, save_error
from playground.errors import PlaygroundError, TrainingError
from playground.finetune.methods import TABLE, load_trained
from playground.finetune.result import DOWNLOAD_LOCK, RunResult, read_info
from playground.finetune.runs import RunNotFoundError, exclusive_lock
from playground.finetune.weights import default_resolver

MERGED = "merged"
FP32_BYTES = 4


def zip_directory(source_dir: Path, zip_path: Path) -> Path:
    """Zip every file of ``source_dir`` under a top folder named like it (weights stored, text deflated); atomic."""
    source_dir, zip_path = Path(source_dir), Path(zip_path)
    if not source_dir.is_dir():
        raise PlaygroundError(f"There is no folder {source_dir.name} to zip.")
    what = f"the archive {zip_path.name}"
    try:
        zip_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise save_error(what, zip_path.parent, exc) from None
    with atomic_file(zip_path, what) as partial:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(source_dir.rglob("*")):
                if path.is_file():
                    # Weights barely compress and deflating hundreds of MB takes minutes on a small CPU.
                    kind = zipfile.ZIP_STORED if path.suffix in (".safetensors", ".gguf") else zipfile.ZIP_DEFLATED
                    archive.write(path, Path(source_dir.name) / path.relative_to(source_dir), compress_type=kind)
    return zip_path


def saveable_model(model):
    """``model`` itself, or (when transformers loaded it from GGUF) a plain copy that save_pretrained accepts."""
    quantizer = getattr(model, "hf_quantizer", None)
    config_quant = getattr(model.config, "quantization_config", None)
    gguf = "gguf" in type(quantizer).__name__.lower() or (
        isinstance(config_quant, dict) and str(config_quant.get("quant_method", "")).lower() == "gguf")
    if not gguf:
        return model
    from playground.models.conversion import plain_copy

    return plain_copy(model)


def merge_adapter(adapter_dir: Path, output_dir: Path, data_dir: Path, *, resolver=None, catalog=None) -> Path:
    """Merge the adapter into its base and save the merged model (safetensors + tokenizer) in ``output_dir``."""
    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    info = read_info(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise PlaygroundError(f"{Path(adapter_dir).name} holds a full model, not an adapter: there is nothing to merge.")
    problem = merge_problem(info.method)
    if problem:
        raise PlaygroundError(problem)
    model, tokenizer = load_trained(adapter_dir, base_model=info.base_model, method=info.method, family=info.family,
                                    labels=info.labels, data_dir=data_dir, resolver=resolver or default_resolver(),
                                    catalog=catalog)
    merged = saveable_model(model)
    with atomic_directory(output_dir, "the merged model") as partial:
        try:
            merged.save_pretrained(partial, safe_serialization=True)
            tokenizer.save_pretrained(partial)
        except OSError:
            raise
        except Exception as exc:
            raise TrainingError(f"Could not save the merged model: {type(exc).__name__}: {str(exc)[:300]}") \
                from None
        dataclasses.replace(info, merged=True).write(partial)
    return output_dir


def merge_problem(method: str) -> str:
    """Why a run of ``method`` cannot be merged into its base ("" when it can): prompt and prefix tuning learn
    inputs (virtual tokens), not changes to the weights."""
    entry = TABLE.get(method)
    if entry is None or entry.mergeable:
        return ""
    return (f"A {entry.adapter_kind} adapter cannot be merged into its base: it learns virtual tokens that go before "
            f"every input, not changes to the weights. Download the adapter and load it over the base with peft "
            f"(PeftModel.from_pretrained).")


def merge_and_zip(adapter_dir: Path, zip_path: Path, data_dir: Path, *, resolver=None, catalog=None) -> Path:
    """Merge the adapter into its base and zip the merged model; the merged folder (named like the zip,
    which is also the archive's top folder) is assembled in a hidden folder beside the zip and removed
    once zipped, so only the zip stays."""
    zip_path = Path(zip_path)
    work = zip_path.with_name(f".merge-{os.getpid()}-{threading.get_ident()}")
    try:
        folder = merge_adapter(adapter_dir, work / zip_path.stem, data_dir, resolver=resolver, catalog=catalog)
        return zip_directory(folder, zip_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------ a run's downloads, built once


def result_archive(run_dir: Path, *, make_room: Callable[[int], None] | None = None) -> Path:
    """The run's adapter (or full model) as a zip, built on the first call and reused afterwards."""
    result = RunResult(_check_run(run_dir))
    folder = result.weights_dir
    if folder is None:
        raise PlaygroundError("This run saved no weights.")
    zip_path = result.archive_path(folder.name)
    return _build_once(result.run_dir, zip_path, lambda: zip_directory(folder, zip_path),
                       lambda: folder_bytes(folder), make_room)


def merged_archive(run_dir: Path, data_dir: Path, *, resolver=None, catalog=None,
                   make_room: Callable[[int], None] | None = None) -> Path:
    """The run's adapter merged into its base, as a zip, built on the first call and reused afterwards.

    While it is built the merged folder and the zip both exist (twice the model's size), then the
    folder goes.
    """
    result = RunResult(_check_run(run_dir))
    adapter_dir = result.adapter_dir
    if adapter_dir is None:
        raise PlaygroundError("This run has no adapter to merge.")
    zip_path = result.archive_path(MERGED)
    return _build_once(
        result.run_dir, zip_path,
        lambda: merge_and_zip(adapter_dir, zip_path, data_dir, resolver=resolver, catalog=catalog),
        lambda: 2 * _merged_bytes(result, adapter_dir), make_room)


def _check_run(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunNotFoundError(f"There is no run {run_dir.name!r}.")
    return run_dir


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (what zipping it stored costs at most, give or take headers)."""
    total = 0
    for path in Path(folder).rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def _merged_bytes(result: RunResult, adapter_dir: Path) -> int:
    """About how big the merged model is: its parameters in fp32 (from the run's metrics), else a guess."""
    metrics = result.metrics()
    if metrics is not None and metrics.total_parameters:
        return int(metrics.total_parameters) * FP32_BYTES
    return folder_bytes(adapter_dir)


def _build_once(run_dir: Path, zip_path: Path, build: Callable[[], object], needed: Callable[[], int],
                make_room: Callable[[int], None] | None) -> Path:
    """``zip_path`` if it exists, else built by ``build`` under the run's download lock (one builder at a time)."""
    if zip_path.is_file():
        return zip_path
    downloads = zip_path.parent
    missing = RunNotFoundError(f"There is no run {run_dir.name!r}.")
    with contextlib.ExitStack() as stack:
        try:
            downloads.mkdir(exist_ok=True)
            stack.enter_context(exclusive_lock(downloads / DOWNLOAD_LOCK))
        except FileNotFoundError:  # the run was removed meanwhile
            raise missing from None
        except OSError as exc:
            raise save_error("the downloads folder", downloads, exc) from None
        if not run_dir.is_dir():  # removed while this call waited for the lock
            raise missing
        if zip_path.is_file():  # built by the click that held the lock
            return zip_path
        _clear_leftovers(downloads)
        if make_room is not None:
            make_room(needed())
        build()
    return zip_path


def _clear_leftovers(downloads: Path) -> None:
    """Partial archives and merge folders of a builder that died (the caller holds the download lock)."""
    for path in downloads.iterdir():
        if path.name.startswith(".") and path.name != DOWNLOAD_LOCK:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
