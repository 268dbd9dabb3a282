"""sample_n: several completions of one prompt, the prompt processed once (self-consistency's engine call)."""

from __future__ import annotations

import threading

import pytest

from playground.backends.base import EngineBase, GenerationParams, check_sample_count, sample_seeds
from playground.backends.llama_cpp_engine import PROMPT_BLOCK, reusable_prefix, shared_prefix
from playground.errors import InvalidParameterError
from tests.helpers import SMOLLM2


class SeedEcho(EngineBase):
    """Answers with the seed it was given, one character per token."""

    name = "echo"

    def __init__(self):
        super().__init__("echo-model")
        self.seeds: list[int | None] = []

    @property
    def context_window(self) -> int:
        return 256

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def _token_pieces(self, prompt_ids, params):
        self.seeds.append(params.seed)
        yield from f"seed {params.seed}"[: params.max_new_tokens]


def test_shared_version_samples_one_after_the_other_with_consecutive_seeds():
    engine = SeedEcho()
    results = engine.sample_n("prompt", GenerationParams(max_new_tokens=20, temperature=0.7, seed=40), 3)
    assert [r.text for r in results] == ["seed 40", "seed 41", "seed 42"]
    assert all(r.prompt_tokens == 6 and r.finish_reason == "stop" for r in results)
    unseeded = engine.sample_n("prompt", GenerationParams(max_new_tokens=20, temperature=0.7), 2)
    first, second = (int(r.text.split()[1]) for r in unseeded)
    assert second == first + 1


def test_greedy_gives_one_answer_n_times():
    engine = SeedEcho()
    results = engine.sample_n("prompt", GenerationParams(max_new_tokens=20, temperature=0, seed=1), 4)
    assert len(results) == 4 and len({r.text for r in results}) == 1 and len(engine.seeds) == 1


def test_cancel_returns_what_was_made():
    cancel = threading.Event()
    cancel.set()
    assert SeedEcho().sample_n("prompt", GenerationParams(temperature=0.7, seed=1), 3, cancel=cancel) == []


def test_sample_count_is_checked():
    assert check_sample_count(3.0) == 3
    for bad in (0, 33, 2.5, True, "3"):
        with pytest.raises(InvalidParameterError, match="number of samples"):
            check_sample_count(bad)
    assert sample_seeds(GenerationParams(seed=2**31 - 1), 2) == [2**31 - 1, 0]


# ---------------------------------------------------------------- llama.cpp: parallel sequences


@pytest.fixture(scope="module")
def chat_prompt(llama_engine):
    return llama_engine.format_chat([{"role": "user", "content": "Give me a name for a pet goldfish."}])


def test_llama_cpp_decodes_the_samples_together(llama_engine, chat_prompt):
    params = GenerationParams(max_new_tokens=12, temperature=1.0, seed=3)
    results = llama_engine.sample_n(chat_prompt, params, 3)
    assert len(results) == 3
    assert len({r.text for r in results}) > 1  # different seeds, different paths
    prompt_tokens = llama_engine.count_tokens(chat_prompt)
    for r in results:
        assert r.prompt_tokens == prompt_tokens and 1 <= r.completion_tokens <= 12
        assert r.finish_reason in ("stop", "length") and r.engine == "llama.cpp" and r.model_id == SMOLLM2
        assert 0 < r.time_to_first_token_s <= r.total_s
    # The prompt was evaluated once for all three; the same prompt again reuses its whole cached blocks
    # and evaluates the rest from a block boundary, as a fresh evaluation would.
    assert 1 <= llama_engine.last_sample_prompt_evaluated <= prompt_tokens
    llama_engine.sample_n(chat_prompt, params, 3)
    assert llama_engine.last_sample_prompt_evaluated == prompt_tokens - reusable_prefix(prompt_tokens, prompt_tokens)
    # A seed gives the same samples again, whatever was cached.
    assert [r.text for r in llama_engine.sample_n(chat_prompt, params, 3)] == [r.text for r in results]
    # The main context is untouched: a normal generation still works and matches greedy decoding.
    greedy = GenerationParams(max_new_tokens=8, temperature=0)
    assert llama_engine.generate(chat_prompt, greedy).text == llama_engine.generate(chat_prompt, greedy).text


def test_llama_cpp_samples_honour_stop_sequences_and_cancel(llama_engine, chat_prompt):
    results = llama_engine.sample_n(chat_prompt, GenerationParams(max_new_tokens=16, temperature=1.0, seed=1,
                                                                  stop=(" ",)), 3)
    assert all(" " not in r.text and r.finish_reason in ("stop", "length") for r in results)
    cancel = threading.Event()
    cancel.set()
    cancelled = llama_engine.sample_n(chat_prompt, GenerationParams(max_new_tokens=16, temperature=1.0, seed=1), 2,
                                      cancel=cancel)
    assert [r.finish_reason for r in cancelled] == ["cancelled", "cancelled"]
    assert not llama_engine.lock.locked()


def test_llama_cpp_prefix_reuse_between_generations(llama_engine, chat_prompt):
    """The main context's KV cache is kept between requests (those too long for the shared decode loop): the
    same prompt again evaluates only its last, partial block."""
    import copy

    import llama_cpp

    llama_engine = copy.copy(llama_engine)
    llama_engine.streams = 0  # no decode loop: every request decodes in the Llama's own context
    greedy = GenerationParams(max_new_tokens=4, temperature=0)
    other = llama_engine.format_chat([{"role": "user", "content": "Something else."}])
    llama_engine.generate(other, greedy)
    ctx = llama_engine.llm.ctx
    llama_cpp.llama_perf_context_reset(ctx)
    llama_engine.generate(chat_prompt, greedy)
    first = llama_cpp.llama_perf_context(ctx).n_p_eval
    llama_cpp.llama_perf_context_reset(ctx)
    llama_engine.generate(chat_prompt, GenerationParams(max_new_tokens=4, temperature=0.8, seed=9))
    again = llama_cpp.llama_perf_context(ctx).n_p_eval
    prompt_tokens = llama_engine.count_tokens(chat_prompt)
    # the chat template's start is shared with the other prompt: its whole blocks came from the cache
    shared = shared_prefix(llama_engine.tokenize(other), llama_engine.tokenize(chat_prompt))
    assert first == prompt_tokens - reusable_prefix(shared, prompt_tokens) < prompt_tokens
    assert again == prompt_tokens - reusable_prefix(prompt_tokens, prompt_tokens) and 1 <= again <= PROMPT_BLOCK


# ---------------------------------------------------------------- transformers: num_return_sequences


def test_transformers_samples_in_one_batch(tiny_provider):
    engine = tiny_provider.get("tiny-llama")
    prompt = engine.format_chat([{"role": "user", "content": "Hello world"}])
    params = GenerationParams(max_new_tokens=6, temperature=1.0, seed=5)
    results = engine.sample_n(prompt, params, 3)
    assert len(results) == 3 and all(r.engine == "transformers" for r in results)
    assert all(1 <= r.completion_tokens <= 6 and r.prompt_tokens == engine.count_tokens(prompt) for r in results)
    assert [r.text for r in engine.sample_n(prompt, params, 3)] == [r.text for r in results]  # seeded
    greedy = engine.sample_n(prompt, GenerationParams(max_new_tokens=4, temperature=0), 2)
    assert greedy[0].text == greedy[1].text
    cancel = threading.Event()
    cancel.set()
    stopped = engine.sample_n(prompt, params, 2, cancel=cancel)
    assert all(r.finish_reason in ("cancelled", "stop") and r.completion_tokens <= 1 for r in stopped)
