"""Finished fine-tuning runs as models that answer prompts: which runs qualify, and loading one.

A run that trained a decoder (LoRA, QLoRA or a full fine-tune) can be picked
in the Prompt Lab under the model id ``run:<run id>``, next to the catalog
models, by the person who owns the run and nobody else. Loading rebuilds the
base exactly as training found it (:func:`~playground.finetune.methods.locate_model`:
catalog, packaged GGUF converted once, local folder), applies the adapter
with peft and merges it (``merge_and_unload``), so an answer costs what the
base model's answer costs. A QLoRA adapter is merged into full-precision
weights: the adapter was trained against the 4-bit weights, and merging
into unquantised ones is what peft's merge does (the same as "merge and
download"). A full fine-tune's folder loads as it is.

Classifier runs (a label head) and encoder-decoder runs have no place in a
text-generation engine here; they are listed with the reason instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from playground.errors import EngineUnavailableError, PlaygroundError, TrainingError, redact_server_paths
from playground.finetune.config import AUTO_TEMPLATE, CLASSIFIER, FULL, LORA, FinetuneConfig
from playground.finetune.data import template_for
from playground.finetune.export import INFO_FILE, read_result_info
from playground.finetune.methods import DECODER, load_base_model, load_tokenizer, locate_model
from playground.finetune.runs import SUCCEEDED, RunNotFoundError, RunRecord, RunStore
from playground.finetune.train import ADAPTER_DIR, MODEL_DIR

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

    @property
    def model_id(self) -> str:
        return finetuned_id(self.run_id)

    @property
    def is_adapter(self) -> bool:
        return self.method != FULL

    @property
    def label(self) -> str:
        """How the model lists next to the catalog's: what was trained, how, on what, and when."""
        return f"★ {self.base_name} + {self.method.upper()} on {self.data} · run {self.run_id}"


def _result_dir(run_dir: Path) -> Path | None:
    for name in (ADAPTER_DIR, MODEL_DIR):
        folder = run_dir / name
        if (folder / INFO_FILE).is_file():
            return folder
    return None


def usable_result(record: RunRecord) -> FinetunedModel:
    """The run's result as a generating model; PlaygroundError saying why when it is not one."""
    if record.status != SUCCEEDED:
        raise EngineUnavailableError(f"Run {record.id} is {record.status}; only a finished (succeeded) run can "
                                     f"answer prompts.")
    folder = _result_dir(record.path)
    if folder is None:
        raise EngineUnavailableError(f"Run {record.id} has no saved adapter or model to load.")
    info = read_result_info(folder)
    if info.get("method") == CLASSIFIER:
        raise EngineUnavailableError(f"Run {record.id} trained a classifier head: it predicts labels and does not "
                                     f"generate text. Its accuracy is in the Fine-tune tab.")
    if info.get("family") != DECODER:
        raise EngineUnavailableError(f"Run {record.id} trained an {info.get('family')} model; the Prompt Lab "
                                     f"generates with decoder models only.")
    return FinetunedModel(record.id, str(info.get("base_model", "")), str(info.get("base_name", "")),
                          str(info.get("method", "")), folder, str(info.get("data", "")),
                          str(info.get("template", "")), _task_of(info))


def _task_of(info: dict) -> str:
    try:
        config = FinetuneConfig(data=str(info.get("data") or "dialogues"),
                                template=str(info.get("template") or AUTO_TEMPLATE), method=LORA)
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
    """(model, tokenizer) ready to generate: the base with the adapter merged in, or the full fine-tune."""

    if not model.is_adapter:
        return _load_full(model, device, dtype_name)
    source = locate_model(FinetuneConfig(model=model.base_model, method=LORA), resolver, Path(data_dir), catalog)
    base = load_base_model(source, LORA, device="cpu", dtype_name=dtype_name)
    merged = apply_adapter(base, model.result_dir, source.name)
    # The run saved its tokenizer (with the chat template it trained with) beside the adapter.
    has_tokenizer = any(model.result_dir.glob("tokenizer*"))
    tokenizer = load_tokenizer(dataclasses.replace(source, folder=model.result_dir) if has_tokenizer else source)
    return merged.to(device).eval(), tokenizer


def apply_adapter(base, adapter_dir: Path, base_name: str):
    """``base`` with the peft adapter in ``adapter_dir`` merged into its weights."""
    try:
        from peft import PeftModel

        return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    except Exception as exc:
        raise TrainingError(f"Could not apply the adapter {adapter_dir.parent.name}/{adapter_dir.name} to "
                            f"{base_name}: {type(exc).__name__}: {redact_server_paths(str(exc))[:300]}") from None


def _load_full(model: FinetunedModel, device: str, dtype_name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(model.result_dir, dtype=dtype_name, use_safetensors=True,
                                                      trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(model.result_dir)
    except Exception as exc:
        raise TrainingError(f"Could not load the fine-tuned model of run {model.run_id}: "
                            f"{type(exc).__name__}: {redact_server_paths(str(exc))[:300]}") from None
    return loaded.to(device).eval(), tokenizer
