"""Take a fine-tuned result away: zip an adapter, or merge it into its base model and zip that.

- :func:`result_archive` / :func:`merged_archive`: what the app's download buttons
  hand out. Each archive is built once per run and kept in the run's
  ``downloads/`` folder (``<run id>-adapter.zip``, ``<run id>-merged.zip``), so
  the next click reuses it; a lock on ``downloads/.lock`` makes two clicks at
  the same moment build it once, and the merged model's folder is removed once
  it is zipped (only the zip stays). Before building, ``make_room(bytes)`` (the
  data dir's budget) may free space or refuse with a message.
- :func:`zip_directory` / :func:`zip_adapter`: the adapter folder (safetensors,
  tokenizer, ``playground.json``) as one ``.zip``.
- :func:`merge_adapter`: loads the base model named in the adapter's
  ``playground.json`` through the same source order as training (catalog,
  packaged GGUF converted once, local folder), in full precision (a QLoRA
  adapter is merged into the unquantised weights), applies the adapter with
  peft's ``merge_and_unload`` and saves a plain transformers model as
  safetensors. A model that transformers loaded from GGUF refuses
  ``save_pretrained``; :func:`saveable_model` rebuilds it from its config and
  loads the state dict first.

Every archive and folder is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import threading
import zipfile
from pathlib import Path
from typing import Callable

from playground.errors import PlaygroundError, TrainingError
from playground.finetune.config import CLASSIFIER, LORA, FinetuneConfig
from playground.finetune.runs import DOWNLOAD_LOCK, DOWNLOADS_DIR, RunNotFoundError
from playground.finetune.saving import atomic_directory, exclusive_lock, save_error

INFO_FILE = "playground.json"
MERGED = "merged"
FP32_BYTES = 4


def zip_directory(source_dir: Path, zip_path: Path) -> Path:
    """Zip every file of ``source_dir`` under a top folder named like it (weights stored, text deflated); atomic."""
    source_dir, zip_path = Path(source_dir), Path(zip_path)
    if not source_dir.is_dir():
        raise PlaygroundError(f"There is no folder {source_dir.name} to zip.")
    partial = zip_path.with_name(f".{zip_path.name}.partial-{os.getpid()}-{threading.get_ident()}")
    try:
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(source_dir.rglob("*")):
                if path.is_file():
                    # Weights barely compress and deflating hundreds of MB takes minutes on a small CPU.
                    kind = zipfile.ZIP_STORED if path.suffix in (".safetensors", ".gguf") else zipfile.ZIP_DEFLATED
                    archive.write(path, Path(source_dir.name) / path.relative_to(source_dir), compress_type=kind)
        os.replace(partial, zip_path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise save_error(f"the archive {zip_path.name}", zip_path.parent, exc) from None
    return zip_path


def read_result_info(folder: Path) -> dict:
    """The ``playground.json`` of an adapter or model folder written by a run."""
    path = Path(folder) / INFO_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlaygroundError(f"{Path(folder).name} has no {INFO_FILE}: it was not written by a fine-tuning run "
                              f"of the playground.") from None
    except (OSError, ValueError) as exc:
        raise PlaygroundError(f"Cannot read {path.name}: {getattr(exc, 'strerror', None) or exc}.") from None


def zip_adapter(adapter_dir: Path, zip_path: Path | None = None) -> Path:
    """The adapter folder as a zip (default: ``adapter.zip`` beside it)."""
    adapter_dir = Path(adapter_dir)
    read_result_info(adapter_dir)  # refuse a folder that is not a run's result
    return zip_directory(adapter_dir, zip_path or adapter_dir.with_name(adapter_dir.name + ".zip"))


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
    from playground.finetune.finetuned import apply_adapter
    from playground.finetune.methods import load_base_model, load_tokenizer, locate_model
    from playground.finetune.train import _default_resolver

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    info = read_result_info(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise PlaygroundError(f"{Path(adapter_dir).name} holds a full model, not an adapter: there is nothing to merge.")
    method = CLASSIFIER if info.get("method") == CLASSIFIER else LORA
    base_config = FinetuneConfig(model=info["base_model"], method=method)
    source = locate_model(base_config, resolver or _default_resolver(), Path(data_dir), catalog)
    base = load_base_model(source, method, labels=tuple(info.get("labels") or ()))
    merged = saveable_model(apply_adapter(base, adapter_dir, source.name))
    # The run saved the tokenizer beside the adapter; older folders fall back to the base's.
    has_tokenizer = any(adapter_dir.glob("tokenizer*"))
    tokenizer = load_tokenizer(dataclasses.replace(source, folder=adapter_dir) if has_tokenizer else source)
    with atomic_directory(output_dir, "the merged model") as partial:
        try:
            merged.save_pretrained(partial, safe_serialization=True)
            tokenizer.save_pretrained(partial)
        except OSError:
            raise
        except Exception as exc:
            raise TrainingError(f"Could not save the merged model: {type(exc).__name__}: {str(exc)[:300]}") \
                from None
        (partial / INFO_FILE).write_text(json.dumps({**info, "merged": True}, indent=2) + "\n", encoding="utf-8")
    return output_dir


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


def archive_path(run_dir: Path, kind: str) -> Path:
    """Where a run keeps its archive of ``kind`` (``adapter``, ``model`` or ``merged``)."""
    run_dir = Path(run_dir)
    return run_dir / DOWNLOADS_DIR / f"{run_dir.name}-{kind}.zip"


def saved_result(run_dir: Path) -> Path | None:
    """The run's saved weights: its ``adapter/`` folder, else its ``model/`` folder (full fine-tune), else None."""
    from playground.finetune.train import ADAPTER_DIR, MODEL_DIR

    return next((Path(run_dir) / name for name in (ADAPTER_DIR, MODEL_DIR) if (Path(run_dir) / name).is_dir()),
                None)


def result_archive(run_dir: Path, *, make_room: Callable[[int], None] | None = None) -> Path:
    """The run's adapter (or full model) as a zip, built on the first call and reused afterwards."""
    _check_run(run_dir)
    folder = saved_result(run_dir)
    if folder is None:
        raise PlaygroundError("This run saved no weights.")
    zip_path = archive_path(run_dir, folder.name)
    return _build_once(Path(run_dir), zip_path, lambda: zip_directory(folder, zip_path),
                       lambda: folder_bytes(folder), make_room)


def merged_archive(run_dir: Path, data_dir: Path, *, resolver=None, catalog=None,
                   make_room: Callable[[int], None] | None = None) -> Path:
    """The run's adapter merged into its base, as a zip, built on the first call and reused afterwards.

    While it is built the merged folder and the zip both exist (twice the model's size), then the
    folder goes.
    """
    from playground.finetune.train import ADAPTER_DIR

    run_dir = _check_run(run_dir)
    adapter_dir = run_dir / ADAPTER_DIR
    if not adapter_dir.is_dir():
        raise PlaygroundError("This run has no adapter to merge.")
    zip_path = archive_path(run_dir, MERGED)
    return _build_once(
        run_dir, zip_path,
        lambda: merge_and_zip(adapter_dir, zip_path, data_dir, resolver=resolver, catalog=catalog),
        lambda: 2 * _merged_bytes(run_dir, adapter_dir), make_room)


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


def _merged_bytes(run_dir: Path, adapter_dir: Path) -> int:
    """About how big the merged model is: its parameters in fp32 (from the run's metrics), else a guess."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        return int(metrics["total_parameters"]) * FP32_BYTES
    except (OSError, ValueError, KeyError, TypeError):
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
