"""Finished runs as models: which runs can answer prompts, whose they are, and that the loaded model is the tuned one."""

from __future__ import annotations

import json

import pytest

from playground.backends.base import GenerationParams
from playground.errors import EngineUnavailableError
from playground.finetune.config import FinetuneConfig
from playground.finetune.finetuned import finetuned_id, finetuned_model, finetuned_models, is_finetuned_id
from playground.finetune.runs import FAILED, RUNNING, SUCCEEDED, RunNotFoundError
from playground.finetune.train import run_job
from playground.services import Services
from tests.finetune.conftest import RecordingControl
from tests.helpers import fake_hardware, offline_settings

ENTRY = "playground.finetune.train:run_job"


@pytest.fixture(scope="module")
def services(tmp_path_factory, catalog):
    services = Services.create(offline_settings(tmp_path_factory.mktemp("finetuned-data")), fake_hardware(),
                               catalog)
    yield services
    services.close()


@pytest.fixture(scope="module")
def finished_run(services, ft_models, dialogue_file) -> str:
    """A LoRA run of the tiny decoder, trained for real and marked succeeded, owned by alice."""
    config = FinetuneConfig.from_dict({
        "model": str(ft_models["llama"]), "data": str(dialogue_file), "input_column": "dialogue",
        "target_column": "summary", "max_steps": 3, "learning_rate": 5e-2, "max_length": 128, "sample_count": 0,
        "validation_fraction": 0})
    run_id = services.runs.create("alice", config.to_dict(), ENTRY)
    run_job(services.runs.path(run_id), RecordingControl())
    services.runs.set_status(run_id, SUCCEEDED, force=True)
    return run_id


def _fake_result(services, owner: str, status: str, info: dict) -> str:
    run_id = services.runs.create(owner, {"model": "x"}, ENTRY)
    adapter = services.runs.path(run_id) / "adapter"
    adapter.mkdir()
    (adapter / "playground.json").write_text(json.dumps(info))
    services.runs.set_status(run_id, status, force=True)
    return run_id


def test_model_ids_name_runs():
    assert finetuned_id("20261122-101010-000001-abcdef") == "run:20261122-101010-000001-abcdef"
    assert is_finetuned_id("run:x") and not is_finetuned_id("smollm2-135m-instruct") and not is_finetuned_id(None)


def test_only_the_owners_finished_generating_runs_are_listed(services, finished_run):
    classifier = _fake_result(services, "alice", SUCCEEDED, {"method": "classifier", "family": "encoder"})
    seq2seq = _fake_result(services, "alice", SUCCEEDED, {"method": "lora", "family": "encoder-decoder"})
    failed = _fake_result(services, "alice", FAILED, {"method": "lora", "family": "decoder"})
    bundled = _fake_result(services, "alice", SUCCEEDED, {"method": "qlora", "family": "decoder", "data": "dialogues",
                                                          "template": "auto", "base_name": "SmolLM2-135M"})
    listed = finetuned_models(services.runs, "alice")
    assert [m.run_id for m in listed] == [bundled, seq2seq, finished_run]  # newest first
    assert listed[1].is_encoder_decoder and not listed[2].is_encoder_decoder  # text to text (FLAN-T5 runs)
    model = listed[2]
    assert model.method == "lora" and model.is_adapter and model.task == "any"  # a file's rows: the plain template
    assert model.base_name == "tiny-llama" and finished_run in model.label and "LORA" in model.label
    assert listed[0].task == "summarization"  # the bundled dialogues' own template
    assert finetuned_models(services.runs, "bob") == [] and finetuned_models(services.runs, "") == []

    with pytest.raises(EngineUnavailableError, match="classifier head"):
        finetuned_model(services.runs, finetuned_id(classifier), "alice")
    encoder = _fake_result(services, "alice", SUCCEEDED, {"method": "lora", "family": "encoder"})
    with pytest.raises(EngineUnavailableError, match="decoder and encoder-decoder models only"):
        finetuned_model(services.runs, finetuned_id(encoder), "alice")
    with pytest.raises(EngineUnavailableError, match="is failed; only a finished"):
        finetuned_model(services.runs, finetuned_id(failed), "alice")


def test_someone_elses_run_reads_as_no_run(services, finished_run):
    for owner in ("bob", ""):
        with pytest.raises(RunNotFoundError, match="There is no run"):
            services.engine(finetuned_id(finished_run), owner=owner)
    with pytest.raises(RunNotFoundError):
        services.engine("run:not-a-run", owner="alice")


def test_a_running_run_cannot_answer_yet(services):
    running = _fake_result(services, "alice", RUNNING, {"method": "lora", "family": "decoder"})
    with pytest.raises(EngineUnavailableError, match="is running; only a finished"):
        services.engine(finetuned_id(running), owner="alice")


def test_the_engine_generates_with_the_adapter_merged(services, finished_run, ft_models):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with pytest.raises(EngineUnavailableError, match="cannot answer on llama.cpp: its base .* has no GGUF"):
        services.engine(finetuned_id(finished_run), "llama.cpp", owner="alice")
    engine = services.engine(finetuned_id(finished_run), "auto", owner="alice")
    assert engine.name == "transformers" and engine.model_id == finetuned_id(finished_run)
    assert services.engine(finetuned_id(finished_run), "transformers", owner="alice") is engine  # cached

    adapter = services.runs.path(finished_run) / "adapter"
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ft_models["llama"]), adapter).eval()
    base = AutoModelForCausalLM.from_pretrained(ft_models["llama"]).eval()
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        served = engine.model(input_ids=ids).logits
        assert torch.allclose(served, adapted(input_ids=ids).logits, atol=1e-5)
        assert not torch.allclose(served, base(input_ids=ids).logits, atol=1e-5)
    result = engine.generate("A: Is the bus late?\nB: It comes in ten minutes.",
                             GenerationParams(max_new_tokens=4, temperature=0.0))
    assert result.completion_tokens >= 1 and result.model_id == finetuned_id(finished_run)


def test_the_prompt_lab_can_ask_in_the_words_the_run_trained_on():
    from jinja2.sandbox import SandboxedEnvironment

    from playground.finetune.templates import load_templates
    from playground.prompting.templates import TemplateLibrary

    lab = TemplateLibrary.load().get("dialogue-finetune-wording")
    trained = load_templates().get("summarize-dialogue")
    dialogue = "#Person1#: Tea?\n#Person2#: Yes, please."
    asked = SandboxedEnvironment().from_string(lab.template).render(dialogue=dialogue, demos=[])
    assert asked == trained.render(dialogue, "They have tea.")[0]
