"""GGUF files as transformers models: dequantised once, kept as a safetensors copy in the data dir.

transformers can load a GGUF file (``from_pretrained(folder, gguf_file=...)``),
dequantised to fp32, but that takes tens of seconds on a CPU and the model it
gives refuses ``save_pretrained``. :func:`load_gguf_as_transformers` converts
once and caches the result under ``data_dir/converted/``; :func:`plain_copy`
rebuilds a GGUF-loaded model into a plain one that saves and reloads like any
other. The transformers engine, the Architectures tab and fine-tuning all load
GGUF-only models through here.
"""

from __future__ import annotations

from pathlib import Path

from playground.atomic import atomic_directory
from playground.errors import InvalidGGUFError, SaveError
from playground.models.gguf_info import read_gguf_facts
from playground.models.sources import ResolvedWeights


def converted_dir(data_dir: Path, weights: ResolvedWeights) -> Path:
    """Where the safetensors copy of a GGUF file lives; the name changes when the file does."""
    stat = weights.path.stat()
    return Path(data_dir) / "converted" / f"{weights.model_id}-{weights.path.stem}-{stat.st_size}"


def plain_copy(model):
    """The same weights in a model built from a copy of its config (GGUF marker dropped), which ``save_pretrained``
    accepts and whose saved copy any ``from_pretrained`` + Trainer script loads as plain weights.

    A GGUF-loaded model refuses ``save_pretrained``. Building on the meta device and assigning the
    loaded tensors skips a pointless random initialisation.
    """
    import copy

    import torch

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):  # the weights are dequantised: saved, they must reload as plain
        del config.quantization_config
    with torch.device("meta"):
        plain = type(model)(config)
    plain.load_state_dict(model.state_dict(), assign=True)
    for name, buffer in model.named_buffers():  # non-persistent buffers (rotary tables) are not in the state dict
        owner, _, attribute = name.rpartition(".")
        plain.get_submodule(owner)._buffers[attribute] = buffer
    plain.tie_weights()
    return plain


def load_gguf_as_transformers(weights: ResolvedWeights, data_dir: Path, progress=None):
    """(model, tokenizer, from_cache) for a GGUF file, converting once and caching safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_dir(data_dir, weights)
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        if progress:
            progress(0.5, "Loading the converted safetensors copy")
        model = AutoModelForCausalLM.from_pretrained(target, dtype="float32", use_safetensors=True)
        return model, AutoTokenizer.from_pretrained(target), True

    read_gguf_facts(weights.path)  # refuse a damaged file with a clear message
    if progress:
        progress(0.1, "Dequantising the GGUF file (first time only; this takes a while on a CPU)")
    folder, name = str(weights.path.parent), weights.path.name
    try:
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as exc:
        raise InvalidGGUFError(
            f"transformers could not load {name}: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    if progress:
        progress(0.8, "Saving a safetensors copy for fast loads next time")
    model = plain_copy(gguf_model)
    del gguf_model
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(target, f"the safetensors copy of {weights.path.name}") as partial:
            model.save_pretrained(partial, safe_serialization=True)
            tokenizer.save_pretrained(partial)
    except (OSError, SaveError):
        pass  # the model is loaded and usable; only the cache could not be written
    model.eval()
    return model, tokenizer, False
