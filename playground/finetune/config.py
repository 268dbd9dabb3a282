"""The settings of one fine-tuning run: ``FinetuneConfig``, read from YAML presets or widgets.

Every field carries a help text (the Fine-tune tab shows it as the widget's
``info``) and its bounds, so a bad learning rate, a zero rank or an unknown
key is refused with a clear message before any model is loaded. Presets live
in ``examples/finetune/*.yaml``; each run saves its resolved config beside its
outputs (``to_yaml``), and ``from_yaml`` reads it back unchanged.

Two levels of checking:

- constructing the dataclass checks types, ranges and choices (pure values);
- :meth:`FinetuneConfig.check` (called by ``from_dict``/``from_yaml`` and by the
  trainer) also checks that the model exists (catalog id or local folder), that
  the method suits its family, and that the data source and template exist.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from playground.errors import DataFileError, FinetuneConfigError, UnknownModelError
from playground.finetune.data_ids import BUNDLED_DATA, DATA_SUFFIXES, HUB_PREFIX, data_label
from playground.finetune.gguf_samples import AUTO, LLAMA_CPP, SAMPLE_ENGINES, llama_cpp_problem
from playground.finetune.hub_data import check_hub_dataset_id
from playground.finetune.methods import DPO, LORA, METHODS, PROMPT_INITS, family_problem, get_method, methods_help
from playground.finetune.templates import load_templates
from playground.finetune.weights import family_from_config

AUTO_TEMPLATE = "auto"
# transformers' learning-rate schedules offered to a run (get_scheduler's names).
LR_SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")
# The CPU demo preset: the Fine-tune tab starts from it, so the page and the CLI demo are one run.
CPU_DEMO_PRESET = Path(__file__).resolve().parents[2] / "examples" / "finetune" / "cpu-demo.yaml"


def _field(default: Any, help: str, **bounds: Any):
    """A dataclass field with its help text and bounds (minimum, maximum, above, below, choices)."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata={"help": help, **bounds})
    return field(default=default, metadata={"help": help, **bounds})


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run. Defaults are safe and fast on a 2-core CPU (LoRA on SmolLM2, 30 steps)."""

    # --- what to train -------------------------------------------------------------------
    model: str = _field("smollm2-135m-instruct",
                        "Catalog id (smollm2-135m-instruct, flan-t5-base, all-minilm-l6-v2, ...) or a local folder "
                        "with config.json and safetensors weights.")
    method: str = _field(LORA, methods_help(), choices=METHODS)  # one entry each in methods.TABLE
    # --- data ----------------------------------------------------------------------------
    data: str = _field("dialogues",
                       "Bundled data set (dialogues, sentiment; preferences for dpo), a path to a JSONL or CSV file (CLI presets only; "
                       "the page takes uploads), or hub:owner/name for a Hugging Face dataset (a Hub repo id, never "
                       "a path).")
    input_column: str = _field("", "Column holding the input text (empty: the bundled data set's own column).")
    target_column: str = _field("", "Column holding the expected output or label (empty: the bundled data "
                                    "set's own column).")
    template: str = _field(AUTO_TEMPLATE,
                           "Prompt template that turns a row into prompt and completion (examples/finetune/"
                           "templates.yaml); auto: the data set's own template.")
    max_length: int = _field(384, "Longest tokenised example; longer ones are cut and counted as truncated.",
                             minimum=16, maximum=8192)
    validation_fraction: float = _field(0.1, "Share of the training rows held out for the validation loss "
                                             "(0: none).", minimum=0.0, maximum=0.5)
    test_fraction: float = _field(0.1, "Share of the rows kept for testing when the data has no 'split' column.",
                                  above=0.0, maximum=0.5)
    test_limit: int = _field(50, "At most this many test examples are scored before and after (0: all).",
                             minimum=0, maximum=100_000)
    # --- LoRA ----------------------------------------------------------------------------
    lora_r: int = _field(8, "LoRA rank: the inner size of each adapter (more = more capacity, more weights).",
                         minimum=1, maximum=1024)
    lora_alpha: float = _field(16.0, "LoRA alpha: the adapter's output is scaled by alpha / r.",
                               above=0.0, maximum=4096.0)
    lora_dropout: float = _field(0.05, "Dropout on the adapter's input during training (0 to below 1).",
                                 minimum=0.0, below=1.0)
    target_modules: tuple[str, ...] = _field((), "Layers that get adapters, e.g. q_proj, v_proj (empty: the "
                                                 "catalog's choice for the model's architecture).")
    # --- IA3, prompt and prefix tuning (the methods' own knobs) -----------------------------
    ia3_target_modules: tuple[str, ...] = _field((), "IA3: layers whose activations get a learned scale, e.g. "
                                                     "k_proj, v_proj, down_proj (empty: peft's choice for the "
                                                     "model's architecture).")
    ia3_feedforward_modules: tuple[str, ...] = _field((), "IA3: which of its layers are feedforward ones, scaled "
                                                          "at their input instead of their output, e.g. down_proj "
                                                          "(empty: peft's choice for the architecture).")
    num_virtual_tokens: int = _field(20, "Prompt and prefix tuning: learned virtual tokens put before every input "
                                         "(more = more capacity; prefix tuning learns a key and a value per token "
                                         "in every layer).", minimum=1, maximum=512)
    prompt_tuning_init: str = _field("random", "Prompt tuning: how the virtual tokens start. random: random "
                                               "vectors; sample_vocab: embeddings of random vocabulary tokens; text: "
                                               "the embeddings of prompt_tuning_init_text's tokens (repeated or cut "
                                               "to num_virtual_tokens).", choices=PROMPT_INITS)
    prompt_tuning_init_text: str = _field("", "Prompt tuning: the text the virtual tokens start from when "
                                              "prompt_tuning_init is text, e.g. 'Summarise the dialogue in one "
                                              "sentence:'.")
    # --- preference tuning (method dpo) --------------------------------------------------
    dpo_beta: float = _field(0.1, "DPO's beta: how far the tuned model may move from the base (the reference). "
                                  "Small (0.05-0.1) lets it move further from the base; large (0.5-1) keeps it "
                                  "close. The rewards are beta x (log p tuned - log p base) of an answer.",
                             above=0.0, maximum=10.0)
    # --- optimisation --------------------------------------------------------------------
    learning_rate: float = _field(2e-4, "Peak learning rate of AdamW (LoRA likes 1e-4 to 1e-3; full fine-tuning "
                                        "1e-5 to 5e-5).", above=0.0, maximum=1.0)
    lr_scheduler_type: str = _field("linear", "How the learning rate moves over the run. linear: from the peak "
                                              "down to 0; cosine: down to 0 along a half cosine; constant: the peak "
                                              "throughout (no warmup); constant_with_warmup: up during the warmup, "
                                              "then the peak.", choices=LR_SCHEDULES)
    warmup_ratio: float = _field(0.0, "Share of the steps over which the learning rate climbs from 0 to its peak "
                                      "before the schedule (0: no warmup; or set warmup_steps, not both).",
                                 minimum=0.0, below=1.0)
    warmup_steps: int = _field(0, "Optimizer steps over which the learning rate climbs from 0 to its peak (0: "
                                  "warmup_ratio decides; not both).", minimum=0, maximum=100_000)
    max_steps: int = _field(30, "Optimizer steps to train (0: train for 'epochs' instead).",
                            minimum=0, maximum=100_000)
    epochs: float = _field(1.0, "Passes over the training data; used when max_steps is 0.",
                           above=0.0, maximum=100.0)
    batch_size: int = _field(2, "Examples per forward pass.", minimum=1, maximum=1024)
    grad_accum: int = _field(1, "Forward passes summed into one optimizer step (effective batch = batch_size x "
                                "grad_accum).", minimum=1, maximum=1024)
    eval_every: int = _field(0, "Steps between validation-loss measurements (0: none during training).",
                             minimum=0, maximum=100_000)
    gradient_checkpointing: bool = _field(False, "Recompute activations in the backward pass: less memory, "
                                                 "about a third slower.")
    group_by_length: bool = _field(True, "Batch examples of similar length together, so batches carry less "
                                         "padding and train faster; the per-step training loss gets a little "
                                         "noisier (the validation loss is unaffected).")
    seed: int = _field(42, "Random seed for the data split, adapter initialisation and shuffling.",
                       minimum=0, maximum=2**32 - 1)
    # --- before / after comparison -------------------------------------------------------
    sample_count: int = _field(4, "Test examples generated with the base model and again with the fine-tuned "
                                  "one (0: none).", minimum=0, maximum=1000)
    max_new_tokens: int = _field(64, "Longest generated answer in the before/after comparison.",
                                 minimum=1, maximum=2048)
    sample_engine: str = _field(AUTO, "What generates the before/after answers. transformers: the model that "
                                      "trains (fp32 on a CPU); a LoRA or QLoRA run of a catalog decoder with a "
                                      "GGUF also answers on that GGUF with its adapter, a third column showing "
                                      "what quantisation costs. llama.cpp: the base's quantised GGUF, alone and "
                                      "with the run's adapter (several times faster on a CPU; LoRA and QLoRA of "
                                      "a catalog decoder with a GGUF only). auto: llama.cpp on a CPU where it "
                                      "can, else transformers.", choices=SAMPLE_ENGINES)
    forgetting_examples: int = _field(0, "Catastrophic forgetting check of a decoder run: the base and the "
                                         "fine-tuned model answer this many examples of each of the Prompt Lab's "
                                         "other bundled tasks (sentiment, arithmetic, translation; greedy, a few "
                                         "tokens each), scored as the Prompt Lab scores them, so the run shows "
                                         "what it lost elsewhere next to its gain (0: off).",
                                      minimum=0, maximum=32)

    # ------------------------------------------------------------------ checks on values
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _convert(f, getattr(self, f.name)))
        if not self.model.strip():
            raise FinetuneConfigError("model is empty: give a catalog id or a local model folder.")
        if not self.data.strip():
            raise FinetuneConfigError("data is empty: give a bundled data set name, a file path or hub:owner/name.")
        if self.data.startswith(HUB_PREFIX):
            # Only an owner/name repo id: a path, an address or a builder name would reach the server's files.
            try:
                dataset_id = check_hub_dataset_id(self.data[len(HUB_PREFIX):])
            except DataFileError as exc:
                raise FinetuneConfigError(str(exc)) from None
            object.__setattr__(self, "data", HUB_PREFIX + dataset_id)
        if self.warmup_ratio and self.warmup_steps:
            raise FinetuneConfigError(f"warmup_ratio={self.warmup_ratio:g} and warmup_steps={self.warmup_steps} are "
                                      f"both set: choose one way to give the warmup (set the other to 0).")
        if self.lr_scheduler_type == "constant" and self.warmup:
            raise FinetuneConfigError("lr_scheduler_type constant has no warmup: choose constant_with_warmup, or set "
                                      "warmup_ratio and warmup_steps to 0.")
        problem = get_method(self.method).problem(self)
        if problem:
            raise FinetuneConfigError(problem)

    @property
    def warmup(self) -> float | int:
        """The warmup as transformers' ``warmup_steps`` takes it: steps, or a share of the steps below 1."""
        return self.warmup_steps or self.warmup_ratio

    # ------------------------------------------------------------------ help for widgets and docs
    @classmethod
    def help(cls, name: str) -> str:
        """The help text of a field (the widget's ``info``)."""
        return _fields_by_name()[name].metadata["help"]

    @classmethod
    def bounds(cls, name: str) -> dict[str, Any]:
        """The bounds of a field: any of minimum, maximum, above, below, choices."""
        return {k: v for k, v in _fields_by_name()[name].metadata.items() if k != "help"}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, values: Mapping[str, Any], catalog=None, check: bool = True) -> "FinetuneConfig":
        """A config from a mapping; unknown keys are errors. ``check`` also verifies model, data and template."""
        if not isinstance(values, Mapping):
            raise FinetuneConfigError(f"A fine-tuning config must be a mapping of keys to values, not "
                                      f"{type(values).__name__}.")
        known = cls.field_names()
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise FinetuneConfigError(f"Unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}. "
                                      f"Allowed keys: {', '.join(known)}.")
        config = cls(**dict(values))
        if check:
            config.check(catalog)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, catalog=None, check: bool = True) -> "FinetuneConfig":
        """A config from a YAML file (a preset or a run's saved config.yaml)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise FinetuneConfigError(f"Cannot read the config {path}: {exc.strerror or exc}.") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise FinetuneConfigError(f"{path.name} is not valid YAML{where}: "
                                      f"{getattr(exc, 'problem', None) or exc}.") from None
        if data is None:
            data = {}
        try:
            return cls.from_dict(data, catalog=catalog, check=check)
        except FinetuneConfigError as exc:
            raise FinetuneConfigError(f"{path.name}: {exc}") from None

    @classmethod
    def cpu_demo(cls) -> "FinetuneConfig":
        """The CPU demo preset (examples/finetune/cpu-demo.yaml): the Fine-tune tab's starting values."""
        return cls.from_yaml(CPU_DEMO_PRESET, check=False)

    def replace(self, **changes: Any) -> "FinetuneConfig":
        """A copy with some fields changed (checked again, as values)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), in field order; ``from_dict(to_dict())`` gives the same config."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def planned_steps(self, train_examples: int) -> int:
        """Optimizer steps of the run: ``max_steps``, else ``epochs`` over ``train_examples``."""
        if self.max_steps:
            return self.max_steps
        per_epoch = math.ceil(train_examples / (self.batch_size * self.grad_accum))
        return max(1, math.ceil(per_epoch * self.epochs))

    # ------------------------------------------------------------------ checks that look at the world
    def check(self, catalog=None) -> "FinetuneConfig":
        """Verify the model (and that the method suits its family), the data source and the template.

        Raises FinetuneConfigError naming what is wrong and what would work; returns self.
        """
        method = get_method(self.method)
        problem = family_problem(method, self.model, model_family(self.model, catalog))
        if problem:
            raise FinetuneConfigError(problem)
        if method.preference and self.sample_engine == LLAMA_CPP:
            raise FinetuneConfigError(f"method {method.name!r} answers its before/after samples on transformers; "
                                      f"set sample_engine to auto or transformers.")
        if self.data in BUNDLED_DATA:
            bundled = BUNDLED_DATA[self.data]
            if bool(method.preference) != bundled.preference:
                raise FinetuneConfigError(preference_data_problem(method.name, self.data))
            if method.label_head and not bundled.labels:
                raise FinetuneConfigError(f"The bundled data set {self.data!r} has no labels to classify; use "
                                          f"'sentiment' or a file with a label column.")
        elif self.data.startswith(HUB_PREFIX):
            self._require_columns()
        else:
            path = Path(self.data).expanduser()
            if not path.is_file():
                raise FinetuneConfigError(
                    f"data {data_label(self.data)!r} is neither a bundled data set ({', '.join(BUNDLED_DATA)}) "
                    f"nor an existing file. Give a path to a JSONL or CSV file, or hub:owner/name.")
            if path.suffix.lower() not in DATA_SUFFIXES:
                raise FinetuneConfigError(f"data file {path.name} must be JSONL or CSV "
                                          f"({', '.join(DATA_SUFFIXES)}).")
            self._require_columns()
        if self.template != AUTO_TEMPLATE:
            load_templates().get(self.template)  # raises TemplateError naming the choices
        if self.sample_engine == LLAMA_CPP:
            problem = llama_cpp_problem(self.method, self.model, model_family(self.model, catalog),
                                        catalog or _default_catalog())
            if problem:
                raise FinetuneConfigError(f"sample_engine is llama.cpp, but {problem}. Choose auto or "
                                          f"transformers.")
        return self

    def _require_columns(self) -> None:
        if get_method(self.method).preference:  # preference pairs have fixed fields: prompt, chosen, rejected
            return
        missing = [name for name in ("input_column", "target_column") if not getattr(self, name).strip()]
        if missing:
            raise FinetuneConfigError(f"data {data_label(self.data)!r} is not a bundled data set, so name its "
                                      f"columns: set {' and '.join(missing)}.")


def preference_data_problem(method: str, data: str) -> str:
    """Why the bundled data set ``data`` does not suit ``method`` (preference pairs vs prompt/completion)."""
    pairs = [name for name, bundled in BUNDLED_DATA.items() if bundled.preference]
    if get_method(method).preference:
        return (f"method {method!r} trains on preference pairs (prompt, chosen, rejected); the bundled data set "
                f"{data!r} has none. Use {', '.join(pairs)} or upload a JSONL file with those fields.")
    return (f"the bundled data set {data!r} holds preference pairs (prompt, chosen, rejected) for method "
            f"{DPO!r}; method {method!r} needs prompt/completion data.")


def _default_catalog():
    from playground.models.catalog import Catalog

    return Catalog.load()


def model_family(model: str, catalog=None) -> str:
    """"decoder", "encoder-decoder" or "encoder" for a catalog id or a local model folder."""
    looks_local = "/" in model or "\\" in model or model.startswith(".")
    if not looks_local:
        from playground.models.catalog import Catalog

        catalog = catalog or Catalog.load()
        try:
            return catalog.get(model).family
        except UnknownModelError as exc:
            if not Path(model).is_dir():
                raise FinetuneConfigError(f"{exc} Or give a local model folder.") from None
    folder = Path(model).expanduser()
    if not (folder / "config.json").is_file():
        raise FinetuneConfigError(f"model {model!r} is not a catalog id and not a folder with config.json. "
                                  f"Give a catalog id or a folder of a transformers model (safetensors).")
    return family_from_config(folder / "config.json")


# ---------------------------------------------------------------------- conversion of one value


def _fields_by_name() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(FinetuneConfig)}


def _describe_bounds(meta: Mapping[str, Any]) -> str:
    parts = []
    if "minimum" in meta:
        parts.append(f">= {meta['minimum']}")
    if "above" in meta:
        parts.append(f"> {meta['above']}")
    if "maximum" in meta:
        parts.append(f"<= {meta['maximum']}")
    if "below" in meta:
        parts.append(f"< {meta['below']}")
    return " and ".join(parts)


def _convert(f: dataclasses.Field, value: Any) -> Any:
    """``value`` as the field's type, checked against its bounds; raises FinetuneConfigError."""
    kind = str(f.type)
    name = f.name
    meta = f.metadata
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise FinetuneConfigError(f"{name}={value!r} must be true or false.")
    if kind == "tuple[str, ...]":
        if value is None or value == "":
            return ()
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise FinetuneConfigError(f"{name} must be a list of module names, e.g. [q_proj, v_proj].")
        return tuple(i.strip() for i in items if i.strip())
    if kind == "str":
        if value is None:
            value = ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise FinetuneConfigError(f"{name} must be text, not {type(value).__name__}.")
        text = str(value).strip()
        if "choices" in meta and text not in meta["choices"]:
            raise FinetuneConfigError(f"{name}={text!r} is not one of: {', '.join(meta['choices'])}.")
        return text
    # numbers: ints stay ints; YAML reads 1e-3 as text, so numeric text is accepted too
    if isinstance(value, bool):
        raise FinetuneConfigError(f"{name}={value!r} must be a number.")
    try:
        number = float(value) if kind == "float" else _as_int(value)
    except (TypeError, ValueError):
        raise FinetuneConfigError(f"{name}={value!r} is not a valid {'number' if kind == 'float' else 'whole number'}.") \
            from None
    if kind == "float" and not math.isfinite(number):
        raise FinetuneConfigError(f"{name}={value!r} must be a finite number.")
    bad = ("minimum" in meta and number < meta["minimum"]) or ("maximum" in meta and number > meta["maximum"]) or \
          ("above" in meta and number <= meta["above"]) or ("below" in meta and number >= meta["below"])
    if bad:
        raise FinetuneConfigError(f"{name}={value!r} is out of range: it must be {_describe_bounds(meta)}. "
                                  f"({meta['help']})")
    return number


def _as_int(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not whole")
        return int(value)
    text = str(value).strip()
    number = float(text)
    if not number.is_integer():
        raise ValueError("not whole")
    return int(number)
