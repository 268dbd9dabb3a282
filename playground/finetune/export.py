"""Take a fine-tuned result away: zip an adapter, or merge it into its base model and zip that.

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

import dataclasses
import json
import os
import threading
import zipfile
from pathlib import Path

from playground.errors import PlaygroundError, TrainingError
from playground.finetune.config import CLASSIFIER, LORA, FinetuneConfig
from playground.finetune.saving import atomic_directory, save_error

INFO_FILE = "playground.json"


def zip_directory(source_dir: Path, zip_path: Path) -> Path:
    """Zip every file of ``source_dir`` under a top folder named like it (weights stored, text deflated); atomic."""
    source_dir, zip_path = Path(source_dir), Path(zip_path)
    if not source_dir.is_dir():
        raise PlaygroundError(f"There is no folder {source_dir} to zip.")
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
        raise PlaygroundError(f"{folder} has no {INFO_FILE}: it was not written by a fine-tuning run of the "
                              f"playground.") from None
    except (OSError, ValueError) as exc:
        raise PlaygroundError(f"Cannot read {path}: {exc}.") from None


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
    from playground.backends.transformers_engine import plain_copy

    return plain_copy(model)


def merge_adapter(adapter_dir: Path, output_dir: Path, data_dir: Path, *, resolver=None, catalog=None) -> Path:
    """Merge the adapter into its base and save the merged model (safetensors + tokenizer) in ``output_dir``."""
    from playground.finetune.finetuned import apply_adapter
    from playground.finetune.methods import load_base_model, load_tokenizer, locate_model
    from playground.finetune.train import _default_resolver

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    info = read_result_info(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise PlaygroundError(f"{adapter_dir} holds a full model, not an adapter: there is nothing to merge.")
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
    """Merge the adapter into its base and zip the merged model (the folder is kept beside the zip)."""
    zip_path = Path(zip_path)
    folder = zip_path.with_name(zip_path.stem)
    merge_adapter(adapter_dir, folder, data_dir, resolver=resolver, catalog=catalog)
    return zip_directory(folder, zip_path)
