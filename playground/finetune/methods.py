"""Fine-tuning methods: a small table, one entry per method, and the code that follows the entry.

A :class:`Method` says what the method trains (the model families it suits),
how the base loads (in 4-bit NF4 for QLoRA, with a label head for the
classifier), how it wraps the base (a peft config; none for full fine-tuning,
where every weight trains), what it saves (an ``adapter/`` folder or a whole
``model/``) and how many parameters the estimate assumes before any weight
loads. Everything else reads the entry, never the method's name: the config's
choices and help, the data's template and labels, the memory estimate, the
trainer, the downloads, the Prompt Lab's fine-tuned models and the workshop
limits. A new peft method (DoRA or rsLoRA: a LoRA config with one flag; IA3,
prompt or prefix tuning: another peft config and its estimate) is one entry.

- ``lora``: peft ``LoraConfig`` (rank, alpha, dropout; targets from the config,
  else the catalog's ``lora_targets``, else peft's default for the architecture);
- ``qlora``: the same on a model loaded in 4-bit NF4 with double quantisation
  (bitsandbytes), prepared with ``prepare_model_for_kbit_training``;
- ``full``: every parameter trains (the trainer refuses it first when the
  memory estimate does not fit);
- ``classifier``: ``AutoModelForSequenceClassification`` on an encoder with the
  data's labels; LoRA on the encoder, the new head trained in full;
- ``dora``, ``rslora``: LoRA's config with ``use_dora`` (a learned magnitude per
  weight column) or ``use_rslora`` (scaling ``alpha / sqrt(r)``); LoRA's knobs;
- ``ia3``: peft ``IA3Config``, a learned scale on the activations of a few layers
  (targets and feedforward layers from the config, else peft's for the architecture);
- ``prompt_tuning``, ``prefix_tuning``: peft ``PromptTuningConfig`` (learned input
  embeddings, started at random, from the vocabulary or from a text) and
  ``PrefixTuningConfig`` (a learned key and value per virtual token in every layer).
  Their virtual tokens are inputs, not weight changes: they cannot be merged into the
  base, so a saved run loads as the base with its peft adapter (unmerged), and "merge
  and download" refuses them.

Each entry names its ``knobs`` (the config fields it reads, which the Fine-tune tab
shows only when the method is chosen) and may refuse a config (``check``).
- ``dpo``: preference tuning of a decoder (TRL's ``DPOTrainer``) on (prompt,
  chosen, rejected) pairs: a LoRA adapter from the run's LoRA knobs, the base
  with the adapter disabled as the reference, ``dpo_beta`` as DPO's beta
  (:mod:`~playground.finetune.preference`).

:func:`build_trainable` turns the base into what the Trainer trains and reports
the trainable parameters and their share, as peft counts them;
:func:`load_trained` loads what a finished run saved (the base with its adapter
merged in, or the full model), for the Prompt Lab and for "merge and download".
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

from playground.errors import (
    FinetuneConfigError,
    QuantizationUnavailableError,
    TrainingError,
    redact_server_paths,
)
from playground.finetune.costs import (
    FP32_BYTES,
    CostReport,
    MemoryEstimate,
    ModelShape,
    approx_lora_parameters,
    check_fits,
    ia3_parameter_count,
    prompt_parameter_count,
    memory_estimate,
)
from playground.finetune.weights import (
    DECODER,
    ENCODER,
    ENCODER_DECODER,
    ModelSource,
    auto_class,
    load_tokenizer,
    locate,
    locate_model,  # noqa: F401  (the bench and scripts locate a base model through this module)
    model_shape,
    plain_config,
)

ADAPTER_DIR = "adapter"  # what an adapter method saves in the run's folder
MODEL_DIR = "model"  # what a method that trains every weight saves
PEFT_TASK_TYPES = {DECODER: "CAUSAL_LM", ENCODER_DECODER: "SEQ_2_SEQ_LM", ENCODER: "SEQ_CLS"}
GENERATIVE = (DECODER, ENCODER_DECODER)


def lora_config(config, targets: tuple[str, ...], task_type: str, source: "ModelSource | None" = None,
                **options: Any):
    """peft's LoraConfig from the run's rank, alpha and dropout (targets empty: peft's default).

    ``options`` go to LoraConfig as they are: a variant's entry is ``functools.partial(lora_config,
    use_dora=True)`` (DoRA) or ``use_rslora=True`` (rank-stabilised scaling). ``source`` (the base) is not needed.
    """
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(targets) or None, task_type=task_type, bias="none", **options)


def lora_parameters(shape: ModelShape, config, modules_per_layer: int) -> int:
    """The estimate of LoRA's trainable parameters before the model loads."""
    return approx_lora_parameters(shape, config.lora_r, modules_per_layer)


def every_parameter(shape: ModelShape, config, modules_per_layer: int) -> int:
    return shape.parameters


def dora_parameters(shape: ModelShape, config, modules_per_layer: int) -> int:
    """LoRA's estimate plus DoRA's magnitude vector (one value per output of every adapted layer)."""
    return lora_parameters(shape, config, modules_per_layer) + shape.hidden_size * modules_per_layer * shape.layers


# --- IA3, prompt and prefix tuning: their peft configs and estimates ------------------------------------------


def ia3_config(config, targets: tuple[str, ...], task_type: str, source: "ModelSource | None" = None):
    """peft's IA3Config from the run's IA3 targets and feedforward layers (each empty: peft's for the architecture;
    LoRA's ``targets`` are not IA3's)."""
    from peft import IA3Config

    return IA3Config(target_modules=list(config.ia3_target_modules) or None,
                     feedforward_modules=list(config.ia3_feedforward_modules) or None, task_type=task_type)


def ia3_parameters(shape: ModelShape, config, modules_per_layer: int) -> int:
    """IA3's scales, from the base's linear layers (safetensors headers) and the targets peft would use."""
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS,
    )

    model_type = str(shape.model_config.get("model_type", ""))
    targets = config.ia3_target_modules or tuple(TARGETS.get(model_type, ()))
    feedforward = config.ia3_feedforward_modules or tuple(FEEDFORWARD.get(model_type, ()))
    return ia3_parameter_count(shape.linear_shapes, targets, feedforward)


PROMPT_INITS = ("random", "sample_vocab", "text")  # peft's PromptTuningInit: RANDOM, SAMPLE_VOCAB, TEXT


def prompt_tuning_config(config, targets: tuple[str, ...], task_type: str, source: "ModelSource | None" = None):
    """peft's PromptTuningConfig: ``num_virtual_tokens`` learned input embeddings, started as the config says (from
    a text: its tokens, read with the base's tokenizer, repeated or cut to the number of virtual tokens)."""
    from peft import PromptTuningConfig, PromptTuningInit

    init = PromptTuningInit[config.prompt_tuning_init.upper()]
    text: dict[str, Any] = {}
    if init == PromptTuningInit.TEXT:
        if source is None:
            raise FinetuneConfigError("Prompt tuning from a text needs the base model's tokenizer.")
        text = dict(prompt_tuning_init_text=config.prompt_tuning_init_text, tokenizer_name_or_path=str(source.folder))
    return PromptTuningConfig(task_type=task_type, num_virtual_tokens=config.num_virtual_tokens,
                              prompt_tuning_init=init, **text)


def prefix_tuning_config(config, targets: tuple[str, ...], task_type: str, source: "ModelSource | None" = None):
    """peft's PrefixTuningConfig: a learned key and value for each of ``num_virtual_tokens`` in every layer."""
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=config.num_virtual_tokens)


def _prepared_prompt_config(method: "Method", shape: ModelShape, config):
    """The method's peft config with the sizes peft reads from the base's config (layers, width, heads; a
    grouped-query model's key/value width for prefix tuning), as peft prepares it when it wraps the model."""
    from peft.utils.other import _prepare_prompt_learning_config

    seq2seq = bool(shape.model_config.get("is_encoder_decoder"))
    task_type = PEFT_TASK_TYPES[ENCODER_DECODER if seq2seq else DECODER]
    peft_config = method.peft_config(config.replace(prompt_tuning_init="random"), (), task_type)
    prepared = _prepare_prompt_learning_config(peft_config, dict(shape.model_config))
    return prepared, 2 if seq2seq else 1  # peft prompts the encoder and the decoder of a seq2seq model


def prompt_parameters(shape: ModelShape, config, modules_per_layer: int) -> int:
    """Prompt tuning: one embedding (the model's width) per virtual token (for encoder and decoder of a seq2seq)."""
    prepared, submodules = _prepared_prompt_config(TABLE[PROMPT_TUNING], shape, config)
    return prompt_parameter_count(config.num_virtual_tokens, prepared.token_dim, submodules)


def prefix_parameters(shape: ModelShape, config, modules_per_layer: int) -> int:
    """Prefix tuning: a key and a value per virtual token in every layer."""
    prepared, _ = _prepared_prompt_config(TABLE[PREFIX_TUNING], shape, config)
    return prompt_parameter_count(config.num_virtual_tokens, prepared.token_dim, layers=prepared.num_layers)


def prompt_tuning_problem(config) -> str:
    if config.prompt_tuning_init == "text" and not config.prompt_tuning_init_text.strip():
        return "prompt_tuning_init is text, but prompt_tuning_init_text is empty: write the text to start from."
    return ""


def prefix_tuning_problem(config) -> str:
    if config.gradient_checkpointing:
        return ("prefix tuning cannot train with gradient checkpointing (peft refuses it: the prefix lives in the "
                "attention cache); turn gradient_checkpointing off.")
    return ""


LORA_KNOBS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules")


@dataclass(frozen=True)
class Method:
    """One way to fine-tune: what it suits, how it loads and wraps the base, what it saves."""

    name: str
    help: str  # one clause: the config's help text for ``method`` joins them
    families: tuple[str, ...] = GENERATIVE  # the model families it trains
    # The peft config the base is wrapped with, from (config, target modules, peft task type); None: no adapter,
    # every weight trains.
    peft_config: Callable[[Any, tuple[str, ...], str], Any] | None = lora_config
    adapter_kind: str = "LoRA"  # how messages name the adapter
    quantized: bool = False  # the frozen base loads in 4-bit NF4 (bitsandbytes)
    label_head: bool = False  # a classification head over the data's labels (the target column holds the label)
    # llama.cpp can apply the saved adapter to the base's GGUF (a plain LoRA: gguf_adapter converts it), so the
    # run's answers can also come from the quantised base on llama.cpp. DoRA's magnitudes, a full fine-tune's
    # weights and a label head have no place in a llama.cpp LoRA adapter.
    gguf_adapter: bool = True
    # Trainable parameters before the model loads, from (shape, config, target modules per layer).
    estimate_trainable: Callable[[ModelShape, Any, int], int] = field(default=lora_parameters, repr=False)
    # The config fields the method reads (the Fine-tune tab shows their widgets only when it is chosen).
    knobs: tuple[str, ...] = LORA_KNOBS
    # peft can merge the adapter into the base's weights (not prompt or prefix tuning: their tokens are inputs).
    mergeable: bool = True
    # Why a config cannot train with this method ("" when it can), from the config's values alone.
    check: Callable[[Any], str] | None = field(default=None, repr=False)

    def problem(self, config) -> str:
        """Why ``config`` cannot train with this method; "" when it can."""
        return self.check(config) if self.check is not None else ""
    # A preference method trains on (prompt, chosen, rejected) pairs through a TRL trainer (its name here, e.g.
    # "dpo"; :mod:`~playground.finetune.preference`) instead of on prompt/completion pairs; "" for the others.
    preference: str = ""

    @property
    def adapter(self) -> bool:
        """Whether the result is an adapter over a frozen base (else the whole model trains and is saved)."""
        return self.peft_config is not None

    @property
    def saves(self) -> str:
        """The folder the result goes to in the run's directory."""
        return ADAPTER_DIR if self.adapter else MODEL_DIR

    def suits(self, family: str) -> bool:
        return family in self.families


LORA, QLORA, FULL, CLASSIFIER = "lora", "qlora", "full", "classifier"
DORA, RSLORA, IA3, PROMPT_TUNING, PREFIX_TUNING = "dora", "rslora", "ia3", "prompt_tuning", "prefix_tuning"
DPO = "dpo"
TABLE: Mapping[str, Method] = MappingProxyType({m.name: m for m in (
    Method(LORA, "small adapter matrices on a frozen model"),
    Method(QLORA, "the same on a 4-bit (NF4) model", quantized=True),
    Method(FULL, "every weight (needs about 4x the model's size for gradients and optimizer)", peft_config=None,
           estimate_trainable=every_parameter, gguf_adapter=False, knobs=()),
    Method(CLASSIFIER, "a label head on an encoder", families=(ENCODER,), label_head=True, gguf_adapter=False),
    Method(DORA, "LoRA with a learned magnitude per weight column (DoRA; slower steps, merges like LoRA)",
           peft_config=functools.partial(lora_config, use_dora=True), adapter_kind="DoRA", gguf_adapter=False,
           estimate_trainable=dora_parameters),
    Method(RSLORA, "LoRA scaled by alpha / sqrt(r) instead of alpha / r (rank-stabilised, for high ranks)",
           peft_config=functools.partial(lora_config, use_rslora=True), adapter_kind="rsLoRA"),
    Method(IA3, "a learned scale on the activations of a few layers (IA3; far fewer weights than LoRA)",
           peft_config=ia3_config, adapter_kind="IA3", gguf_adapter=False, estimate_trainable=ia3_parameters,
           knobs=("ia3_target_modules", "ia3_feedforward_modules")),
    Method(PROMPT_TUNING, "learned virtual tokens before every input, the model untouched (cannot be merged)",
           peft_config=prompt_tuning_config, adapter_kind="prompt tuning", gguf_adapter=False, mergeable=False,
           estimate_trainable=prompt_parameters, check=prompt_tuning_problem,
           knobs=("num_virtual_tokens", "prompt_tuning_init", "prompt_tuning_init_text")),
    Method(PREFIX_TUNING, "a learned key and value per virtual token in every layer (cannot be merged)",
           peft_config=prefix_tuning_config, adapter_kind="prefix tuning", gguf_adapter=False, mergeable=False,
           estimate_trainable=prefix_parameters, check=prefix_tuning_problem, knobs=("num_virtual_tokens",)),
    # DPO: TRL's DPOTrainer gets the base and the LoRA config, so its reference model is the base with the adapter
    # disabled (no second copy of the weights).
    Method(DPO, "preference pairs (prompt, chosen, rejected) through TRL's DPO, a LoRA adapter with the frozen "
                "base as reference", families=(DECODER,), preference=DPO,
           knobs=(*LORA_KNOBS, "dpo_beta")),
)})
METHODS = tuple(TABLE)
# Every method's knobs, in table order: the Fine-tune tab shows those of the chosen method.
KNOBS = tuple(dict.fromkeys(k for m in TABLE.values() for k in m.knobs))


def get_method(name: str) -> Method:
    """The table's entry for ``name``; FinetuneConfigError naming the choices otherwise."""
    try:
        return TABLE[name]
    except (KeyError, TypeError):
        raise FinetuneConfigError(f"method={name!r} is not one of: {', '.join(METHODS)}.") from None


def methods_help() -> str:
    """The help text of the config's ``method``: every entry's clause."""
    return "; ".join(f"{m.name}: {m.help}" for m in TABLE.values()) + "."


def family_problem(method: Method, model: str, family: str) -> str | None:
    """Why ``method`` cannot train ``model`` (a ``family`` model), with what would work; None when it can."""
    if method.suits(family):
        return None
    if method.label_head:
        return (f"method {method.name!r} puts a label head on an encoder, but {model} is a {family} model. "
                f"Choose an encoder (e.g. all-minilm-l6-v2) or method {LORA}.")
    if method.preference:
        return (f"method {method.name!r} tunes a decoder on preference pairs, but {model} is an {family} model. "
                f"Choose a decoder (e.g. smollm2-135m-instruct).")
    use = f" Use method {other!r} for {family}s." if (other := suited_to(family)) else ""
    return f"{model} is an {family}: it has no generative head to train with method {method.name!r}.{use}"


def suited_to(family: str) -> str | None:
    """The first method of the table that trains a ``family`` model."""
    return next((m.name for m in TABLE.values() if m.suits(family)), None)


# ------------------------------------------------------------------------------ the model a run trains


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
        return get_method(self.method).adapter

    def base_view(self):
        """A context in which the model answers as its base: the adapter switched off (peft's disable_adapter).
        Prompt and prefix tuning change the answers before any training; LoRA, DoRA and IA3 start as the base."""
        disable = getattr(self.model, "disable_adapter", None) if self.is_adapter else None
        return disable() if disable is not None else contextlib.nullcontext()

    def describe(self) -> str:
        return (f"{self.method}: {self.trainable_parameters:,} of {self.total_parameters:,} parameters train "
                f"({100 * self.trainable_share:.2f}%)")


def estimate_memory(config, source: ModelSource, weight_bytes: int = FP32_BYTES,
                    labels: int = 0) -> tuple[MemoryEstimate, MemoryEstimate]:
    """(estimate for the config's method, estimate for full fine-tuning), before loading any weight."""
    shape = model_shape(source, output_size=labels or None)
    method = get_method(config.method)
    trainable = method.estimate_trainable(shape, config, _targets_per_layer(config, source))
    # A preference method reads each pair twice per step (chosen and rejected answers in one batch).
    sequences = config.batch_size * (2 if method.preference else 1)
    common = dict(batch_size=sequences, seq_len=config.max_length, weight_bytes=weight_bytes,
                  checkpointing=config.gradient_checkpointing)
    chosen = memory_estimate(shape, trainable, full=not method.adapter, quantized=method.quantized, **common)
    full = memory_estimate(shape, shape.parameters, full=True, **common)
    return chosen, full


def estimate_trainable(config, source: ModelSource) -> tuple[int, int]:
    """(trainable, total) parameters of the config's method before the model loads."""
    shape = model_shape(source)
    method = get_method(config.method)
    return method.estimate_trainable(shape, config, _targets_per_layer(config, source)), shape.parameters


def _targets_per_layer(config, source: ModelSource) -> int:
    return len(config.target_modules or source.lora_targets) or 2


def check_memory(config, source: ModelSource, budget_bytes: int, where: str,
                 weight_bytes: int = FP32_BYTES, labels: int = 0) -> tuple[MemoryEstimate, MemoryEstimate]:
    """Refuse (InsufficientMemoryError) a run whose estimate does not fit ``budget_bytes``."""
    chosen, full = estimate_memory(config, source, weight_bytes, labels)
    lighter = None
    if not get_method(config.method).adapter:  # say what LoRA would need instead
        lighter, _ = estimate_memory(config.replace(method=LORA), source, weight_bytes, labels)
    check_fits(chosen, budget_bytes, config.method, source.name, where, lighter)
    return chosen, full


def cost_report(config, *, trainable: int, total: int, memory: MemoryEstimate, full_memory: MemoryEstimate,
                budget: tuple[int, str], total_steps: int, step_seconds: float | None = None) -> CostReport:
    """The cost report of a run of the config's method (the adapter's size on disk when it saves one)."""
    method = get_method(config.method)
    return CostReport(model=config.model, method=config.method, total_parameters=total,
                      trainable_parameters=trainable, adapter_bytes=trainable * FP32_BYTES if method.adapter else 0,
                      memory=memory, full_memory=full_memory, budget_bytes=budget[0], budget_where=budget[1],
                      total_steps=total_steps, step_seconds=step_seconds)


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


def load_base_model(source: ModelSource, method: str, device: str = "cpu", dtype_name: str = "float32",
                    labels: Sequence[str] = (), *, quantize: bool | None = None):
    """The base model for ``method`` (4-bit when it says so, unless ``quantize`` is False; a label head when it
    has one), safetensors only."""
    import torch

    entry = get_method(method)
    quantize = entry.quantized if quantize is None else quantize
    dtype = getattr(torch, dtype_name)
    overrides: dict[str, Any] = {}
    if entry.label_head:
        overrides = dict(num_labels=len(labels), id2label=dict(enumerate(labels)),
                         label2id={label: i for i, label in enumerate(labels)})
    config = plain_config(source.folder, **overrides)
    kwargs: dict[str, Any] = dict(config=config, use_safetensors=True, trust_remote_code=False)
    if quantize:
        kwargs.update(quantization_config=bnb_4bit_config(dtype), dtype=dtype,
                      device_map={"": device if device != "cuda" else torch.cuda.current_device()})
    else:
        kwargs.update(dtype=dtype if entry.adapter else torch.float32)  # every weight trains: fp32 masters
    try:
        return auto_class(source.family).from_pretrained(source.folder, **kwargs)
    except Exception as exc:
        details = redact_server_paths(str(exc).splitlines()[0])[:300] if str(exc).strip() else "no details"
        text = f"{type(exc).__name__}: {details}"
        if quantize:
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


def build_trainable(config, source: ModelSource, device: str = "cpu", dtype_name: str = "float32",
                    labels: Sequence[str] = ()) -> TrainableModel:
    """Load the base and wrap it for the config's method; reports trainable parameters."""
    import torch

    method = get_method(config.method)
    if not method.suits(source.family):
        if method.label_head:
            raise FinetuneConfigError(f"method {method.name!r} needs an encoder; {source.name} is a "
                                      f"{source.family} model.")
        raise FinetuneConfigError(f"{source.name} is an {source.family}; use method "
                                  f"{suited_to(source.family)!r}.")
    if method.label_head and len(labels) < 2:
        raise TrainingError("A classifier needs at least two labels from the training data.")
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(source)
    model = load_base_model(source, method.name, device, dtype_name, labels)
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if not method.adapter:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        total = sum(p.numel() for p in model.parameters())
        return TrainableModel(model, tokenizer, source, method.name, total, total, tuple(labels))

    from peft import get_peft_model, prepare_model_for_kbit_training

    if method.quantized:
        keep_4bit_layers_differentiable(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need a grad path
    targets = tuple(config.target_modules or source.lora_targets)
    try:
        model = get_peft_model(model, method.peft_config(config, targets, PEFT_TASK_TYPES[source.family], source))
    except ValueError as exc:  # targets that match no layer, an architecture peft does not know
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ in
                        ("Linear", "Linear4bit", "Conv1D")})
        raise FinetuneConfigError(f"{method.adapter_kind} could not be attached to {source.name}: "
                                  f"{str(exc).splitlines()[0][:200]} Linear layers it has: "
                                  f"{', '.join(names[:20])}.") from None
    trainable, total = model.get_nb_trainable_parameters()
    peft_config = model.peft_config["default"]
    if getattr(peft_config, "tokenizer_name_or_path", None):  # the saved config names the base, not a server path
        peft_config.tokenizer_name_or_path = source.name
    attached = getattr(peft_config, "target_modules", None) or ()
    return TrainableModel(model, tokenizer, source, method.name, int(trainable), int(total), tuple(labels),
                          quantized=method.quantized, target_modules=tuple(sorted(attached)))


# ------------------------------------------------------------------------------ a saved result, loaded back


def load_trained(folder: Path, *, base_model: str, method: str, family: str, labels: Sequence[str] = (),
                 data_dir: Path, resolver, catalog=None, dtype_name: str = "float32", name: str = ""):
    """(model, tokenizer) of what a run saved in ``folder``, on the CPU: the base with the adapter merged into it
    (a 4-bit run's adapter goes into the full-precision weights, as peft's merge does), or the whole model.
    A method that cannot merge (prompt or prefix tuning) gives the base wrapped in its peft adapter.

    ``base_model`` is the catalog id or folder the run trained; ``name`` says which run in messages.
    """
    folder = Path(folder)
    entry = get_method(method)
    if not entry.adapter:
        return _load_whole(folder, family, dtype_name, name)
    source = locate(base_model, resolver, Path(data_dir), catalog)
    base = load_base_model(source, entry.name, "cpu", dtype_name, labels, quantize=False)
    merged = apply_adapter(base, folder, source.name, merge=entry.mergeable)
    # The run saved the tokenizer (with the chat template it trained with) beside the adapter.
    return merged, load_tokenizer(source.with_tokenizer_of(folder))


def apply_adapter(base, adapter_dir: Path, base_name: str, merge: bool = True):
    """``base`` with the peft adapter in ``adapter_dir`` merged into its weights (``merge`` False: the peft model
    that applies it, for the adapters that cannot merge)."""
    try:
        from peft import PeftModel

        loaded = PeftModel.from_pretrained(base, adapter_dir)
        return loaded.merge_and_unload() if merge else loaded.eval()
    except Exception as exc:
        raise TrainingError(f"Could not apply the adapter {adapter_dir.parent.name}/{adapter_dir.name} to "
                            f"{base_name}: {type(exc).__name__}: {redact_server_paths(str(exc))[:300]}") from None


def _load_whole(folder: Path, family: str, dtype_name: str, name: str):
    from transformers import AutoTokenizer

    try:
        loaded = auto_class(family).from_pretrained(folder, dtype=dtype_name, use_safetensors=True,
                                                    trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:
        raise TrainingError(f"Could not load the fine-tuned model of {name or folder.name}: "
                            f"{type(exc).__name__}: {redact_server_paths(str(exc))[:300]}") from None
    return loaded, tokenizer
