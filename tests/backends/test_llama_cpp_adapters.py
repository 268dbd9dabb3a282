"""Fine-tuned runs on llama.cpp: a peft LoRA adapter as a llama.cpp adapter GGUF over one loaded base.

The tiny fixture Llama is written as an F32 GGUF (what llama.cpp's converter would write), so llama.cpp
and transformers hold the same weights and their answers must agree closely; runs are made with
peft adapters whose B matrices are far from zero, so a run clearly differs from its base.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from playground.backends.base import GenerationParams
from playground.backends.llama_cpp_engine import LlamaCppEngine
from playground.backends.transformers_engine import TransformersEngine
from playground.errors import EngineUnavailableError
from playground.finetune.finetuned import finetuned_id
from playground.finetune.gguf_adapter import AdapterConversionError, adapter_gguf_path, convert_adapter
from tests.gguf_models import TINY_GGUF, write_wider_llama_gguf

pytestmark = pytest.mark.slow

TINY = TINY_GGUF
PROMPTS = ["The quick brown fox", "A language model predicts", "Paris is the capital of", "Hello world, this",
           "Small models run fast on", "Lisbon is the capital"]
GREEDY = GenerationParams(max_new_tokens=12, temperature=0.0, seed=0, repetition_penalty=1.0)


def distribution(engine, prompt: str) -> np.ndarray:
    """The full next-token distribution, indexed by token id."""
    vocab = 300
    probs = np.zeros(vocab + 8)
    for entry in engine.next_token_probabilities(prompt, k=vocab + 8):
        probs[entry.token_id] = entry.probability
    return probs[:vocab] / probs[:vocab].sum()


def kl(p: np.ndarray, q: np.ndarray) -> float:
    p, q = np.clip(p, 1e-12, 1), np.clip(q, 1e-12, 1)
    return float(np.sum(p * np.log(p / q)))


def test_auto_picks_llama_cpp_on_a_cpu_and_converts_the_adapter_once(gguf_room):
    services, runs = gguf_room
    run_id = runs["alice"]
    engine = services.engine(finetuned_id(run_id), "auto", "alice")
    assert isinstance(engine, LlamaCppEngine) and engine.model_id == finetuned_id(run_id)
    adapter = adapter_gguf_path(services.runs.path(run_id))
    assert engine.adapter_path == adapter and adapter.is_file()
    stamp = adapter.stat().st_mtime_ns
    again = services.engine(finetuned_id(run_id), "llama.cpp", "alice")
    assert again.adapter_path == adapter and adapter.stat().st_mtime_ns == stamp  # not converted twice
    assert again.llm is services.engines.get(TINY, "llama.cpp").llm  # one base in memory for every run
    assert isinstance(services.engine(finetuned_id(run_id), "transformers", "alice"), TransformersEngine)


def test_the_adapter_file_is_what_llama_cpp_expects(gguf_room):
    from gguf import GGUFReader

    services, runs = gguf_room
    services.engine(finetuned_id(runs["alice"]), "llama.cpp", "alice")
    reader = GGUFReader(adapter_gguf_path(services.runs.path(runs["alice"])))
    value = lambda key: reader.fields[key].contents()  # noqa: E731
    assert value("general.type") == "adapter" and value("adapter.type") == "lora"
    assert value("general.architecture") == "llama" and value("adapter.lora.alpha") == 8.0
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b", "blk.1.ffn_down.weight.lora_b"} <= names
    assert len(names) == 2 * 2 * 5  # two layers, five adapted weights, A and B each


def test_llama_cpp_with_the_adapter_is_the_same_model_as_transformers_with_peft(gguf_room):
    services, runs = gguf_room
    for key in ("alice", "rslora"):  # plain scaling, and rsLoRA with a per-module rank folded into B
        model_id = finetuned_id(runs[key])
        on_llama = services.engine(model_id, "llama.cpp", "alice")
        on_torch = services.engine(model_id, "transformers", "alice")
        base = services.engines.get(TINY, "llama.cpp")
        agree, same_kl, base_kl = 0, [], []
        for prompt in PROMPTS:
            tuned_llama, tuned_torch = distribution(on_llama, prompt), distribution(on_torch, prompt)
            untuned = distribution(base, prompt)
            agree += int(tuned_llama.argmax() == tuned_torch.argmax())
            same_kl.append(kl(tuned_torch, tuned_llama))
            base_kl.append(kl(tuned_torch, untuned))
        assert agree == len(PROMPTS), key
        assert max(same_kl) < 1e-3, (key, same_kl)
        assert min(base_kl) > 1e-3 and min(base_kl) > 1000 * max(same_kl), (key, base_kl)


def test_two_owners_at_once_each_get_their_own_model(gguf_room):
    services, runs = gguf_room
    alice = services.engine(finetuned_id(runs["alice"]), "llama.cpp", "alice")
    bob = services.engine(finetuned_id(runs["bob"]), "llama.cpp", "bob")
    base = services.engines.get(TINY, "llama.cpp")
    alone = {name: engine.generate(PROMPTS[0], GREEDY).text for name, engine in
             (("alice", alice), ("bob", bob), ("base", base))}
    assert len(set(alone.values())) == 3, alone  # three different models

    answers: dict[str, list[str]] = {"alice": [], "bob": [], "base": []}
    def ask(name, engine):
        for _ in range(4):
            answers[name].append(engine.generate(PROMPTS[0], GREEDY).text)
    threads = [threading.Thread(target=ask, args=item) for item in (("alice", alice), ("bob", bob), ("base", base))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, texts in answers.items():
        assert texts == [alone[name]] * 4, name
    # Self-consistency's parallel sequences carry the adapter too, and switch back for the base.
    sampled = alice.sample_n(PROMPTS[1], GenerationParams(max_new_tokens=6, temperature=0.8, seed=5), 3)
    assert [r.model_id for r in sampled] == [finetuned_id(runs["alice"])] * 3
    again = alice.sample_n(PROMPTS[1], GenerationParams(max_new_tokens=6, temperature=0.8, seed=5), 3)
    base.sample_n(PROMPTS[1], GenerationParams(max_new_tokens=6, temperature=0.8, seed=5), 3)
    assert [r.text for r in again] == [r.text for r in sampled]


def test_someone_elses_run_and_unconvertible_adapters_are_refused(gguf_room):
    services, runs = gguf_room
    with pytest.raises(Exception, match="no run"):
        services.engine(finetuned_id(runs["alice"]), "llama.cpp", "bob")
    with pytest.raises(EngineUnavailableError, match="DoRA"):
        services.engine(finetuned_id(runs["dora"]), "llama.cpp", "alice")
    assert not adapter_gguf_path(services.runs.path(runs["dora"])).exists()  # nothing half-written


def test_conversion_refuses_an_adapter_made_for_another_model(gguf_room, tmp_path, tiny_tokenizer):
    services, runs = gguf_room
    gguf = write_wider_llama_gguf(tmp_path, tiny_tokenizer)
    adapter_dir = services.runs.path(runs["alice"]) / "adapter"
    with pytest.raises(AdapterConversionError, match="another model"):
        convert_adapter(adapter_dir, gguf, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
