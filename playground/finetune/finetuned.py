"""Finished fine-tuning runs as models that answer prompts: which runs qualify, and loading one.

A run that trained a decoder (LoRA, QLoRA or a full fine-tune) can be picked
in the Prompt Lab under the model id ``run:<run id>``, next to the catalog
models, by the person who owns the run and nobody else. Loading rebuilds the
base exactly as training found it (catalog, packaged GGUF converted once,
local folder), applies the adapter with peft and merges it (``merge_and_unload``:
:func:`~playground.finetune.methods.load_trained`, the loader "merge and
download" uses too), so an answer costs what the base model's answer costs. A QLoRA adapter is merged into full-precision
weights: the adapter was trained against the 4-bit weights, and merging
into unquantised ones is what peft's merge does (the same as "merge and
download"). A full fine-tune's folder loads as it is.

An encoder-decoder run (LoRA or a full fine-tune of FLAN-T5) answers too, text
to text: it loads as a sequence-to-sequence model and generates through the
transformers engine's encoder-decoder path (no chat template; llama.cpp runs
decoders only). Classifier runs (a label head) have no place in a
text-generation engine here; they are listed with the reason instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from playground.errors import EngineUnavailableError, PlaygroundError
from playground.finetune.config import AUTO_TEMPLATE, FinetuneConfig
from playground.finetune.data import template_for
from playground.finetune.methods import LORA, TABLE, get_method, load_trained
from playground.finetune.result import ResultInfo, RunResult
from playground.finetune.runs import SUCCEEDED, RunNotFoundError, RunRecord, RunStore
from playground.finetune.weights import DECODER, ENCODER_DECODER

GENERATING_FAMILIES = (DECODER, ENCODER_DECODER)  # the families whose runs write text

FINETUNED_PREFIX = "run:"


def finetuned_id(run_id: str) -> str:
    return FINETUNED_PREFIX + run_id


def is_finetuned_id(model_id: str) -> bool:
    return isinstance(model_id, str) and model_id.startswith(FINETUNED_PREFIX)


@dataclass(frozen=True)
class FinetunedModel:
    """One finished run's result, as a model that can generate."""

    run_id: str
    base_model: str  # catalog id or folder the run trained
    base_name: str
    method: str
    result_dir: Path  # the run's adapter/ (or model/ for a full fine-tune)
    data: str
    template: str
    task: str  # the training template's task (summarization, classification, any): what to ask it
    family: str = DECODER  # decoder or encoder-decoder (text to text)

    @property
    def model_id(self) -> str:
        return finetuned_id(self.run_id)

    @property
    def is_adapter(self) -> bool:
        return get_method(self.method).adapter

    @property
    def is_encoder_decoder(self) -> bool:
        return self.family == ENCODER_DECODER

    @property
    def label(self) -> str:
        """How the model lists next to the catalog's: what was trained, how, on what, and when."""
        return f"★ {self.base_name} + {self.method.upper()} on {self.data} · run {self.run_id}"

    def facts_rows(self) -> list[tuple[str, str]]:
        """What was trained, as (fact, value) rows beside a model's other facts."""
        return [("fine-tuned run", self.run_id), ("base model", self.base_name), ("method", self.method.upper()),
                ("trained on", self.data)]


def usable_result(record: RunRecord) -> FinetunedModel:
    """The run's result as a generating model; PlaygroundError saying why when it is not one."""
    if record.status != SUCCEEDED:
        raise EngineUnavailableError(f"Run {record.id} is {record.status}; only a finished (succeeded) run can "
                                     f"answer prompts.")
    result = RunResult(record.path)
    if not result.has_info():
        raise EngineUnavailableError(f"Run {record.id} has no saved adapter or model to load.")
    info = result.info()
    method = TABLE.get(info.method)
    if method is not None and method.label_head:
        raise EngineUnavailableError(f"Run {record.id} trained a classifier head: it predicts labels and does not "
                                     f"generate text. Its accuracy is in the Fine-tune tab.")
    if info.family not in GENERATING_FAMILIES:
        raise EngineUnavailableError(f"Run {record.id} trained an {info.family or None} model; the Prompt Lab "
                                     f"generates with decoder and encoder-decoder models only.")
    return FinetunedModel(record.id, info.base_model, info.base_name, info.method, result.weights_dir, info.data,
                          info.template, _task_of(info), info.family)


def _task_of(info: ResultInfo) -> str:
    try:
        config = FinetuneConfig(data=info.data or "dialogues", template=info.template or AUTO_TEMPLATE, method=LORA)
        return template_for(config).task
    except PlaygroundError:  # a template file edited since: the run still loads, only the hint is lost
        return ""


def finetuned_models(runs: RunStore, owner: str) -> list[FinetunedModel]:
    """The owner's finished runs that can generate, newest first (others are left out)."""
    if not owner:
        return []
    found = []
    for record in runs.list_runs(owner):
        if record.status != SUCCEEDED:
            continue
        try:
            found.append(usable_result(record))
        except PlaygroundError:
            continue
    return found


def finetuned_model(runs: RunStore, model_id: str, owner: str) -> FinetunedModel:
    """The owner's run behind ``run:<id>``; someone else's run reads as no run at all."""
    if not is_finetuned_id(model_id):
        raise RunNotFoundError(f"{model_id!r} does not name a fine-tuning run (run:<id>).")
    run_id = model_id[len(FINETUNED_PREFIX):]
    if not owner:
        raise RunNotFoundError(f"There is no run {run_id!r}.")
    return usable_result(runs.get(run_id, owner))


def load_for_generation(model: FinetunedModel, data_dir: Path, resolver, catalog=None, device: str = "cpu",
                        dtype_name: str = "float32"):
    """(model, tokenizer) ready to generate: the base with the adapter merged in, or the full fine-tune (a causal
    LM, or a sequence-to-sequence model for an encoder-decoder run)."""
    loaded, tokenizer = load_trained(model.result_dir, base_model=model.base_model, method=model.method,
                                     family=model.family, data_dir=data_dir, resolver=resolver, catalog=catalog,
                                     dtype_name=dtype_name, name=f"run {model.run_id}")
    return loaded.to(device).eval(), tokenizer
