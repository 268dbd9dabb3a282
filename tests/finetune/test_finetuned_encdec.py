"""Encoder-decoder models in the Prompt Lab: FLAN-T5 listed only where its weights are, and a finished FLAN-T5-style
LoRA run (the session's tiny T5, two real steps) answering text to text through the engine's sequence-to-sequence
path."""

from __future__ import annotations

import pytest

from playground.backends.base import GenerationParams
from playground.backends.transformers_engine import Seq2SeqTransformersEngine
from playground.errors import EngineUnavailableError
from playground.finetune.config import FinetuneConfig
from playground.finetune.finetuned import finetuned_id
from playground.finetune.runs import SUCCEEDED
from playground.finetune.train import run_job
from playground.prompting.snippet import code_snippet
from playground.prompting.strategies import PromptSetup, StrategyConfig, build_prompt
from playground.prompting.templates import TemplateLibrary
from playground.services import Services
from tests.finetune.conftest import RecordingControl
from tests.helpers import fake_hardware, offline_settings

ENTRY = "playground.finetune.train:run_job"
DIALOGUE = "A: Can we meet at six?\nB: Yes, at the cafe."


@pytest.fixture(scope="module")
def services(tmp_path_factory, catalog, flan_models_dir):
    """An app's services whose models dir holds FLAN-T5 small (the tiny T5), and nothing from the Hub cache."""
    services = Services.create(offline_settings(tmp_path_factory.mktemp("encdec-data"), flan_models_dir),
                               fake_hardware(), catalog)
    services.engines.resolver.hub_cache_dir = tmp_path_factory.mktemp("empty-hub")
    yield services
    services.close()


@pytest.fixture(scope="module")
def t5_run(services, ft_models, dialogue_file) -> str:
    """A LoRA run of the tiny T5, trained for real (two steps) and marked succeeded, owned by alice."""
    config = FinetuneConfig.from_dict({
        "model": str(ft_models["t5"]), "data": str(dialogue_file), "input_column": "dialogue",
        "target_column": "summary", "max_steps": 2, "learning_rate": 5e-2, "max_length": 128, "sample_count": 0,
        "validation_fraction": 0})
    run_id = services.runs.create("alice", config.to_dict(), ENTRY)
    run_job(services.runs.path(run_id), RecordingControl())
    services.runs.set_status(run_id, SUCCEEDED, force=True)
    return run_id


def test_flan_t5_is_listed_only_where_its_weights_are(services, tmp_path_factory, catalog):
    ids = [model_id for _, model_id in services.models_for().choices()]
    decoders = [spec.id for spec in catalog.by_family("decoder")]
    assert ids == decoders + ["flan-t5-small"]  # after the decoders; flan-t5-base is not here
    label = dict((model_id, label) for label, model_id in services.models_for().choices())["flan-t5-small"]
    assert label == "FLAN-T5 small · 77M"  # on this machine: no "Hub" mark

    bare = Services.create(offline_settings(tmp_path_factory.mktemp("bare-data")), fake_hardware(), catalog)
    try:
        bare.engines.resolver.hub_cache_dir = tmp_path_factory.mktemp("empty-hub-2")
        assert [model_id for _, model_id in bare.models_for().choices()] == decoders  # the default UI is unchanged
    finally:
        bare.close()


def test_flan_t5_code_is_the_transformers_script_even_when_llama_cpp_is_asked(services):
    source = services.models_for().code_source("flan-t5-small", "llama.cpp")
    assert source["engine"] == "transformers" and "encoder-decoder" in source["note"]


def test_a_finished_t5_run_is_listed_and_answers_text_to_text(services, t5_run):
    model_id = finetuned_id(t5_run)
    models = services.models_for("alice")
    assert model_id in [m for _, m in models.choices()] and model_id not in [m for _, m in models.gguf_choices()]
    assert model_id not in [m for _, m in services.models_for("bob").choices()]

    with pytest.raises(EngineUnavailableError, match="encoder-decoder .*llama.cpp here runs decoders only"):
        services.engine(model_id, "llama.cpp", owner="alice")
    engine = services.engine(model_id, "auto", owner="alice")
    assert isinstance(engine, Seq2SeqTransformersEngine) and engine.model_id == model_id
    assert services.engine(model_id, "transformers", owner="alice") is engine  # cached
    assert not engine.has_chat_template and engine.context_window == 512

    template = TemplateLibrary.load().get("t2t-dialogue-summary")
    built = build_prompt(engine, PromptSetup.from_template(template, StrategyConfig()), DIALOGUE)
    assert built.encoder_decoder and built.text.startswith("Summarize the following conversation.")
    result = engine.generate(built.tokens, GenerationParams(max_new_tokens=6, temperature=0))
    assert result.completion_tokens >= 1 and result.model_id == model_id

    source = models.code_source(model_id, "llama.cpp")
    assert source["engine"] == "transformers" and "encoder-decoder" in source["note"]
    code = code_snippet(built, GenerationParams(max_new_tokens=6, temperature=0), **source)
    assert "AutoModelForSeq2SeqLM" in code and "PeftModel" in code
    compile(code, "snippet.py", "exec")
