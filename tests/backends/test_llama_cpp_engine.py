"""The llama.cpp engine on the packaged SmolLM2 GGUF (real model, CPU)."""

from __future__ import annotations

import copy
import shutil
import threading

import pytest

from playground.backends.base import Engine, GenerationParams
from playground.backends.llama_cpp_engine import PROMPT_BLOCK, LlamaCppEngine, reusable_prefix, shared_prefix
from playground.errors import ContextOverflowError, EngineUnavailableError, InvalidGGUFError, InvalidPromptError
from playground.models.sources import ResolvedWeights

GREEDY = GenerationParams(max_new_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def prompt(llama_engine):
    return llama_engine.format_chat([{"role": "user", "content": "Name three colours."}])


def test_engine_shape(llama_engine):
    assert isinstance(llama_engine, LlamaCppEngine)
    assert isinstance(llama_engine, Engine)
    assert llama_engine.name == "llama.cpp"
    assert llama_engine.model_id == "smollm2-135m-instruct"
    assert llama_engine.context_window == 8192
    assert llama_engine.has_chat_template
    assert llama_engine.facts.file_type == "Q4_1"
    assert 0 < llama_engine.weights_bytes < llama_engine.memory_bytes()


def test_chat_template_from_the_gguf(llama_engine, prompt):
    assert prompt.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nName three colours.<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_tokenize_treats_special_tokens_as_one_token(llama_engine, prompt):
    ids = llama_engine.tokenize(prompt)
    assert ids.count(ids[0]) >= 3  # <|im_start|> opens the prompt and each turn
    assert llama_engine.count_tokens(prompt) == len(ids)
    assert llama_engine.count_tokens("hello") <= 3


def test_greedy_generation(llama_engine, prompt):
    result = llama_engine.generate(prompt, GREEDY)
    assert result.text.strip()
    assert 1 <= result.completion_tokens <= GREEDY.max_new_tokens
    assert result.prompt_tokens == llama_engine.count_tokens(prompt)
    assert result.tokens_per_s > 0
    assert result.finish_reason in ("stop", "length")
    assert (result.engine, result.model_id) == ("llama.cpp", "smollm2-135m-instruct")
    # greedy is deterministic
    assert llama_engine.generate(prompt, GREEDY).text == result.text


def test_streaming_pieces_join_to_the_result(llama_engine, prompt):
    generation = llama_engine.stream(prompt, GREEDY)
    pieces = list(generation)
    assert len(pieces) >= 3
    assert "".join(pieces) == generation.result.text


def test_same_seed_same_text(llama_engine, prompt):
    sampled = GenerationParams(max_new_tokens=12, temperature=1.0, top_p=0.95, top_k=50, seed=1234)
    first = llama_engine.generate(prompt, sampled).text
    # another request in between must not change what the seed gives
    llama_engine.generate(llama_engine.format_chat([{"role": "user", "content": "Hi!"}]),
                          GenerationParams(max_new_tokens=4, temperature=0.8, seed=7))
    second = llama_engine.generate(prompt, sampled).text
    assert first and first == second


@pytest.mark.parametrize("shared, prompt_tokens, keep", [
    (0, 10, 0), (10, 10, 0), (15, 200, 0), (16, 16, 0), (17, 17, 16), (16, 17, 16), (50, 40, 32),
    (40, 300, 32), (500, 500, 496), (5, 0, 0), (-3, 10, 0),
])
def test_reusable_prefix_keeps_whole_blocks_and_never_the_last_token(shared, prompt_tokens, keep):
    assert PROMPT_BLOCK == 16
    assert reusable_prefix(shared, prompt_tokens) == keep


def test_shared_prefix_counts_leading_tokens_in_common():
    assert shared_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert shared_prefix([], [1]) == 0
    assert shared_prefix([1, 2], [1, 2, 3]) == 2


def _prompt_decodes(engine, context, monkeypatch, prompt_text: str, params: GenerationParams
                    ) -> list[tuple[int, int]]:
    """(first position, token count) of every llama_decode call on ``context`` that evaluated part of the prompt."""
    calls = []
    decode = context.decode

    def recording(batch):
        calls.append((int(batch.batch.pos[0]), int(batch.batch.n_tokens)))
        return decode(batch)

    monkeypatch.setattr(context, "decode", recording)
    engine.generate(prompt_text, params)
    monkeypatch.setattr(context, "decode", decode)
    prompt_tokens = engine.count_tokens(prompt_text)
    return [(pos, n) for pos, n in calls if pos < prompt_tokens]


@pytest.mark.parametrize("where", ["decode loop", "main context"])
def test_a_repeated_prompt_is_evaluated_in_the_blocks_of_a_fresh_evaluation(llama_engine, monkeypatch, where):
    """The cause of greedy answers that changed between two identical requests on AVX2 CPUs: the second
    request evaluated the last prompt token alone, a batch shape the first never used. Now a request only
    ever evaluates the blocks a fresh evaluation would, so the logits are the same on every CPU: in the
    shared decode loop, and in the main context that a request too long for the loop decodes in."""
    engine = copy.copy(llama_engine)  # a view on the same model
    if where == "main context":
        engine.streams = 0  # no loop: every request decodes in the Llama's own context
        context = engine.llm._ctx
        engine.llm.reset()
    else:
        context = engine._decode_loop()._ctx
    text = f"Summarise ({where}): " + " ".join(f"On day {i} the team shipped feature number {i}." for i in range(12))
    prompt_text = engine.format_chat([{"role": "user", "content": text}])
    prompt_tokens = engine.count_tokens(prompt_text)
    assert prompt_tokens > 2 * PROMPT_BLOCK
    greedy = GenerationParams(max_new_tokens=6, temperature=0)
    fresh = _prompt_decodes(engine, context, monkeypatch, prompt_text, greedy)
    # A fresh prompt starts at 0, or (in the loop) after the blocks of the chat template's start that it
    # copied from another sequence; either way at a block boundary, and it reads the rest.
    assert fresh[0][0] % PROMPT_BLOCK == 0 and sum(n for _, n in fresh) == prompt_tokens - fresh[0][0]
    assert fresh[0][0] == 0 or where == "decode loop"
    assert all(pos % PROMPT_BLOCK == 0 and n <= PROMPT_BLOCK for pos, n in fresh)
    again = _prompt_decodes(engine, context, monkeypatch, prompt_text, greedy)
    assert again == fresh[-len(again):] and again[-1] == fresh[-1]  # the tail of the same blocks
    assert sum(n for _, n in again) < prompt_tokens  # whole blocks came from the cache
    # A longer conversation that starts with this prompt reuses its blocks, again from a boundary.
    longer = prompt_text + "Sure.<|im_end|>\n<|im_start|>user\nAnd in one word?<|im_end|>\n<|im_start|>assistant\n"
    follow = _prompt_decodes(engine, context, monkeypatch, longer, greedy)
    assert follow[0][0] % PROMPT_BLOCK == 0 and follow[0][0] >= PROMPT_BLOCK
    assert engine.generate(prompt_text, greedy).text == engine.generate(prompt_text, greedy).text


def test_numbers_from_widgets_work(llama_engine, prompt):
    # Gradio number boxes and sliders give floats such as 7.0; llama.cpp's C calls need ints.
    as_floats = GenerationParams(max_new_tokens=6.0, temperature=0.8, top_k=20.0, seed=7.0)
    as_ints = GenerationParams(max_new_tokens=6, temperature=0.8, top_k=20, seed=7)
    assert llama_engine.generate(prompt, as_floats).text == llama_engine.generate(prompt, as_ints).text


def test_stop_sequence_ends_generation(llama_engine, prompt):
    full = llama_engine.generate(prompt, GenerationParams(max_new_tokens=16, temperature=0))
    words = full.text.split()
    assert len(words) >= 3, full.text
    stop = words[2]
    stopped = llama_engine.generate(prompt, GenerationParams(max_new_tokens=16, temperature=0, stop=(stop,)))
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.text
    assert stopped.text == full.text[: full.text.find(stop)]
    assert stopped.completion_tokens < full.completion_tokens


def test_next_token_probabilities(llama_engine, prompt):
    top = llama_engine.next_token_probabilities(prompt, k=5)
    assert len(top) == 5
    probs = [t.probability for t in top]
    assert probs == sorted(probs, reverse=True)
    assert all(0 < p <= 1 for p in probs)
    assert sum(probs) <= 1 + 1e-6
    assert len({t.token_id for t in top}) == 5
    # the most likely token is what greedy decoding starts with
    first = llama_engine.generate(prompt, GenerationParams(max_new_tokens=1, temperature=0,
                                                           repetition_penalty=1.0))
    assert first.text == top[0].token


def test_context_overflow_then_a_normal_request_works(llama_engine, prompt):
    long_prompt = "word " * 9000
    n = llama_engine.count_tokens(long_prompt)
    assert n > llama_engine.context_window
    with pytest.raises(ContextOverflowError) as info:
        llama_engine.generate(long_prompt, GenerationParams(max_new_tokens=8))
    assert str(n) in str(info.value) and "8192" in str(info.value)
    with pytest.raises(ContextOverflowError):
        llama_engine.next_token_probabilities(long_prompt)
    assert not llama_engine.lock.locked()
    assert llama_engine.generate(prompt, GenerationParams(max_new_tokens=8, temperature=0)).text.strip()


def test_prompt_that_fits_only_without_the_new_tokens(llama_engine):
    prompt = "word " * 8000
    n = llama_engine.count_tokens(prompt)
    assert n < 8192
    with pytest.raises(ContextOverflowError) as info:
        llama_engine.generate(prompt, GenerationParams(max_new_tokens=8192 - n + 1))
    assert info.value.prompt_tokens == n


@pytest.mark.parametrize("empty", ["", "  \n "])
def test_empty_prompt_is_refused(llama_engine, empty):
    with pytest.raises(InvalidPromptError):
        llama_engine.generate(empty, GREEDY)
    with pytest.raises(InvalidPromptError):
        llama_engine.next_token_probabilities(empty)


def test_cancel_mid_stream(llama_engine, prompt):
    generation = llama_engine.stream(prompt, GenerationParams(max_new_tokens=24, temperature=0))
    pieces = []
    for piece in generation:
        pieces.append(piece)
        generation.cancel()
    assert generation.result.finish_reason == "cancelled"
    assert generation.result.completion_tokens <= 3
    assert not llama_engine.lock.locked()


def test_two_threads_share_one_engine(llama_engine):
    prompt = llama_engine.format_chat([{"role": "user", "content": "Say hello."}])
    params = GenerationParams(max_new_tokens=8, temperature=0)
    expected = llama_engine.generate(prompt, params).text
    results: dict[int, str] = {}

    def work(i):
        results[i] = llama_engine.generate(prompt, params).text

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {0: expected, 1: expected}


def test_load_refuses_a_corrupted_file(tmp_path, llama_engine):
    source = llama_engine.facts.path
    broken = tmp_path / "broken.gguf"
    with source.open("rb") as handle:
        broken.write_bytes(handle.read(source.stat().st_size // 2))
    weights = ResolvedWeights("smollm2-135m-instruct", "gguf", broken, "local", f"local file {broken}")
    with pytest.raises(InvalidGGUFError):
        LlamaCppEngine.load("smollm2-135m-instruct", weights, threads=1)


def test_load_with_small_context_and_close(tmp_path, llama_engine):
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(llama_engine.facts.path, copy)
    weights = ResolvedWeights("smollm2-135m-instruct", "gguf", copy, "local", f"local file {copy}")
    engine = LlamaCppEngine.load("smollm2-135m-instruct", weights, threads=1, n_ctx=256, token_limit=16)
    try:
        assert engine.context_window == 256
        with pytest.raises(ContextOverflowError):
            engine.generate("word " * 250, GenerationParams(max_new_tokens=16))
        assert engine.generate("The sky is", GenerationParams(max_new_tokens=4, temperature=0)).completion_tokens >= 1
    finally:
        engine.close()
    with pytest.raises(EngineUnavailableError, match="unloaded"):  # a closed engine says so, never crashes
        engine.generate("The sky is", GenerationParams(max_new_tokens=4, temperature=0))
    engine.close()  # closing twice is harmless
