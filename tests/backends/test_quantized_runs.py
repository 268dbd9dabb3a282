"""A person's fine-tuned runs in the Quantized CPU tab's logic: listed, described, chatted with and compared
on llama.cpp (the tiny GGUF base with the run's adapter GGUF), and "show the code" for a run on llama.cpp."""

from __future__ import annotations

import subprocess
import sys

import pytest

from playground.backends.base import GenerationParams
from playground.backends.chat import ChatRequest, QuantizedChat, build_messages, precision_labels
from playground.errors import EngineUnavailableError
from playground.finetune.finetuned import finetuned_id
from playground.finetune.gguf_adapter import adapter_gguf_path, read_adapter_facts
from playground.finetune.runs import RunNotFoundError
from playground.prompting.snippet import code_snippet
from playground.prompting.strategies import PromptSetup, run_strategy
from playground.services import Services
from tests.gguf_models import TINY_GGUF
from tests.helpers import fake_hardware

pytestmark = pytest.mark.slow

GREEDY = GenerationParams(max_new_tokens=10, temperature=0.0, seed=0, repetition_penalty=1.0)


def direct(services: Services, model_id: str, engine: str, owner: str, message: str) -> str:
    """The greedy answer of Services' own engine for a one-message chat."""
    loaded = services.engine(model_id, engine, owner)
    return loaded.generate(loaded.format_chat(build_messages([], message)), GREEDY).text


def test_the_list_is_the_catalogs_gguf_models_then_ones_own_runs_that_llama_cpp_can_serve(gguf_room):
    services, runs = gguf_room
    alice = [model_id for _, model_id in services.models_for("alice").gguf_choices()]
    # Newest first; the DoRA run has no place in a llama.cpp adapter, so it stays in the Prompt Lab.
    assert alice == [TINY_GGUF, finetuned_id(runs["rslora"]), finetuned_id(runs["alice"])]
    assert [m for _, m in services.models_for("bob").gguf_choices()] == [TINY_GGUF, finetuned_id(runs["bob"])]
    assert [m for _, m in services.models_for("").gguf_choices()] == [TINY_GGUF]
    labels = dict((m, label) for label, m in services.models_for("alice").gguf_choices())
    assert labels[finetuned_id(runs["alice"])].startswith("★ ") and runs["alice"] in labels[finetuned_id(runs["alice"])]
    # The Prompt Lab still lists every run of the owner (the DoRA one answers there through transformers).
    assert finetuned_id(runs["dora"]) in [m for _, m in services.models_for("alice").choices()]


def test_auto_sends_a_run_llama_cpp_cannot_carry_to_transformers_and_llama_cpp_says_why(gguf_room):
    services, runs = gguf_room
    dora = finetuned_id(runs["dora"])
    assert services.engine(dora, "auto", "alice").name == "transformers"
    with pytest.raises(EngineUnavailableError, match="DoRA.*Choose auto or transformers"):
        services.engine(dora, "llama.cpp", "alice")
    with pytest.raises(EngineUnavailableError, match="DoRA"):
        services.models_for("alice").quantized_facts(dora)
    assert not adapter_gguf_path(services.runs.path(runs["dora"])).exists()


def test_a_runs_facts_are_its_adapter_then_its_base_gguf(gguf_room):
    services, runs = gguf_room
    chat = QuantizedChat()
    rows = chat.facts(finetuned_id(runs["alice"]), services.models_for("alice"))
    facts = dict(rows)
    adapter = adapter_gguf_path(services.runs.path(runs["alice"]))
    assert rows[0] == ("fine-tuned run", runs["alice"])
    assert facts["base model"] == TINY_GGUF and facts["method"] == "LORA" and facts["trained on"] == "dialogues"
    assert facts["adapter file"] == f"{runs['alice']}-adapter.gguf"
    assert facts["adapter file size"] == f"{adapter.stat().st_size / 1e6:.2f} MB"
    assert facts["adapter rank"] == "4" and facts["adapter alpha"] == "8"
    assert facts["adapted weights"] == "10 (20 tensors)"  # two layers, five weights each, A and B
    # Then the base GGUF's own facts, named as the base.
    assert facts["base GGUF"] and facts["architecture"] == "llama" and facts["quantisation"] == "ALL_F32"
    assert "name" not in facts
    catalog_rows = dict(chat.facts(TINY_GGUF, services.models_for("alice")))
    assert "adapter rank" not in catalog_rows and "name" in catalog_rows

    rslora = dict(chat.facts(finetuned_id(runs["rslora"]), services.models_for("alice")))
    assert rslora["adapter rank"] == "2 / 8" and rslora["adapter alpha"] == "4"


def test_adapter_facts_are_read_from_the_file(gguf_room):
    services, runs = gguf_room
    services.engine(finetuned_id(runs["bob"]), "llama.cpp", "bob")
    facts = read_adapter_facts(adapter_gguf_path(services.runs.path(runs["bob"])))
    assert (facts.architecture, facts.alpha, facts.ranks, facts.weights, facts.tensors) == ("llama", 8.0, (4,), 10, 20)
    assert facts.name.startswith("★ ") and runs["bob"] in facts.name


def test_someone_elses_run_reads_as_no_run(gguf_room):
    services, runs = gguf_room
    bobs = services.models_for("bob")
    chat = QuantizedChat()
    with pytest.raises(RunNotFoundError, match="no run"):
        chat.facts(finetuned_id(runs["alice"]), bobs)
    with pytest.raises(RunNotFoundError, match="no run"):
        next(chat.reply(ChatRequest(finetuned_id(runs["alice"]), "Hello", params=GREEDY), bobs))
    with pytest.raises(RunNotFoundError, match="no run"):
        list(chat.compare(ChatRequest(finetuned_id(runs["alice"]), "Hello", params=GREEDY), bobs))


def test_chatting_with_a_run_is_the_run_on_llama_cpp(gguf_room):
    services, runs = gguf_room
    run = finetuned_id(runs["alice"])
    updates = list(QuantizedChat().reply(ChatRequest(run, "The quick brown fox", params=GREEDY),
                                         services.models_for("alice")))
    result = updates[-1].result
    assert result.engine == "llama.cpp" and result.model_id == run
    expected = direct(services, run, "llama.cpp", "alice", "The quick brown fox")
    assert result.text == expected == updates[-1].history[-1]["content"]
    assert expected != direct(services, TINY_GGUF, "llama.cpp", "", "The quick brown fox")  # the adapter acts


def test_the_comparison_of_a_run_is_its_adapter_in_full_precision_and_on_the_quantised_base(gguf_room):
    services, runs = gguf_room
    run, message = finetuned_id(runs["alice"]), "Paris is the capital of"
    steps = list(QuantizedChat().compare(ChatRequest(run, message, params=GREEDY), services.models_for("alice")))
    last = steps[-1]
    assert last.full.status == "done" and last.quantised.status == "done"
    assert last.full.result.engine == "transformers" and last.full.result.model_id == run
    assert last.quantised.result.engine == "llama.cpp" and last.quantised.result.model_id == run
    assert last.full.text == direct(services, run, "transformers", "alice", message)
    assert last.quantised.text == direct(services, run, "llama.cpp", "alice", message)
    assert last.full.precision == "fp32 (dequantised from GGUF) + LORA merged"
    assert last.quantised.precision == "ALL_F32 + LORA adapter"
    base_bytes = services.engines.get(TINY_GGUF, "llama.cpp").weights_bytes
    adapter_bytes = adapter_gguf_path(services.runs.path(runs["alice"])).stat().st_size
    assert last.quantised.weights_bytes == base_bytes + adapter_bytes


def test_precision_labels_of_a_catalog_model_and_a_run(gguf_room):
    services, runs = gguf_room
    models = services.models_for("alice")
    assert precision_labels(models.quantized_facts(TINY_GGUF), fake_hardware(cuda=True)) == ("bf16", "ALL_F32")
    assert precision_labels(models.quantized_facts(finetuned_id(runs["alice"])), fake_hardware()) == \
        ("fp32 (dequantised from GGUF) + LORA merged", "ALL_F32 + LORA adapter")


def test_the_code_for_a_run_on_llama_cpp_loads_the_adapter_gguf_and_gives_the_apps_greedy_answer(gguf_room):
    services, runs = gguf_room
    run = finetuned_id(runs["alice"])
    source = services.models_for("alice").code_source(run, "llama.cpp")
    assert source["engine"] == "llama.cpp" and source["lora_path"] == f"{runs['alice']}-adapter.gguf"
    assert source["spec"].id == TINY_GGUF and "adapter" not in source

    engine = services.engine(run, "llama.cpp", "alice")
    setup = PromptSetup("sentiment", "{{ text }}")
    answered = run_strategy(engine, setup, "The soup was cold.", (), GREEDY)
    code = code_snippet(answered.prompt, GREEDY, engine="llama.cpp", threads=engine.threads,
                        model_ref=str(services.engines.resolve(TINY_GGUF, "gguf").path),
                        lora_path=str(adapter_gguf_path(services.runs.path(runs["alice"]))))
    assert "lora_path=ADAPTER_PATH" in code and 'Download adapter (GGUF)' in code
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    count_line, _, answer = printed.stdout.partition("\n")
    assert count_line == f"{answered.prompt.token_count} prompt tokens"
    # The random tiny model writes broken UTF-8 at times: the app shows U+FFFD, llama-cpp-python drops the bytes.
    assert answer.rstrip("\n") == answered.paths[0].text.replace("\ufffd", "").rstrip("\n")


def test_the_code_for_a_run_llama_cpp_cannot_carry_is_the_peft_one_saying_why(gguf_room):
    services, runs = gguf_room
    source = services.models_for("alice").code_source(finetuned_id(runs["dora"]), "llama.cpp")
    assert source["engine"] == "transformers" and source["adapter"] == "adapter"
    assert "DoRA" in source["note"]
    transformers = services.models_for("alice").code_source(finetuned_id(runs["alice"]), "transformers")
    assert transformers["engine"] == "transformers" and transformers["note"] == ""
