"""Strategies end to end on real engines: the packaged SmolLM2 through llama.cpp, a tiny Llama through transformers.

Small models answer badly; these tests check the machinery (prompt as the model receives it, token counts,
answers extracted or None, votes, evaluation with cancel), not the quality of the answers.
"""

from __future__ import annotations

import threading

import pytest

from playground.backends.base import GenerationParams
from playground.errors import ContextOverflowError
from playground.prompting.data import load_bundled
from playground.prompting.evaluation import evaluate
from playground.prompting.strategies import PromptSetup, StrategyConfig, build_prompt, run_strategy
from playground.bench.prompt_lab import time_self_consistency, time_sentiment_evaluation

SENTIMENT = load_bundled("sentiment")
ARITHMETIC = load_bundled("arithmetic")


def _setup(library, template_id: str, strategy: str, **config) -> PromptSetup:
    return PromptSetup.from_template(library.get(template_id), StrategyConfig(strategy=strategy, **config))


@pytest.mark.parametrize("strategy, config", [
    ("zero_shot", {}),
    ("few_shot", {"k": 3}),
    ("few_shot", {"k": 2, "selection": "random", "selection_seed": 4}),
])
def test_sentiment_strategies_on_llama_cpp(smollm2, library, strategy, config):
    setup = _setup(library, "sentiment-classify", strategy, **config)
    example = SENTIMENT.examples[0]
    params = GenerationParams(max_new_tokens=8, temperature=0, seed=0)
    run = run_strategy(smollm2, setup, example.input, SENTIMENT.demos, params)
    prompt = run.prompt
    assert prompt.text.startswith("<|im_start|>system\n") and prompt.text.endswith("<|im_start|>assistant\n")
    assert f"<|im_start|>user\n{prompt.rendered}<|im_end|>" in prompt.text
    assert prompt.token_count == smollm2.count_tokens(prompt.text) == run.paths[0].result.prompt_tokens
    assert prompt.context_window == smollm2.context_window == 8192
    assert len(prompt.demos) == config.get("k", 0)
    assert run.output.strip() and 1 <= run.completion_tokens <= 8
    assert run.answer in (None, "positive", "negative", "neutral")


def test_similar_demonstrations_with_the_real_embedder(smollm2, library, minilm):
    setup = _setup(library, "sentiment-classify", "few_shot", k=2, selection="similar")
    run = run_strategy(smollm2, setup, "The waitress forgot what I had ordered.", SENTIMENT.demos,
                       GenerationParams(max_new_tokens=6, temperature=0), embedder=minilm)
    assert len(run.prompt.demos) == 2
    assert all(d.input in run.prompt.rendered for d in run.prompt.demos)


@pytest.mark.parametrize("strategy, k", [("zero_shot_cot", 0), ("few_shot_cot", 2)])
def test_chain_of_thought_on_llama_cpp(smollm2, library, strategy, k):
    setup = _setup(library, "arithmetic-qa", strategy, k=k)
    run = run_strategy(smollm2, setup, ARITHMETIC.examples[0].input, ARITHMETIC.demos,
                       GenerationParams(max_new_tokens=24, temperature=0))
    assert "Let's think step by step." in run.prompt.rendered
    if k:
        assert ARITHMETIC.demos[0].rationale in run.prompt.rendered
    assert run.output and (run.answer is None or run.answer.lstrip("-").replace(".", "").isdigit())


def test_self_consistency_n3_on_llama_cpp(smollm2, library):
    setup = _setup(library, "arithmetic-qa", "self_consistency", k=2, samples=3)
    params = GenerationParams(max_new_tokens=32, temperature=0.8, seed=1)
    run = run_strategy(smollm2, setup, ARITHMETIC.examples[1].input, ARITHMETIC.demos, params)
    assert len(run.paths) == 3 and run.vote is not None and run.vote.total == 3
    assert sum(run.vote.histogram.values()) + run.vote.unparsed == 3
    assert run.answer == run.vote.winner
    assert run.completion_tokens == sum(p.result.completion_tokens for p in run.paths)
    assert all(p.result.prompt_tokens == run.prompt.token_count for p in run.paths)
    assert smollm2.last_sample_prompt_evaluated <= run.prompt.token_count  # once, not three times


def test_assistant_side_trigger_on_llama_cpp(smollm2, library):
    setup = _setup(library, "sentiment-question", "zero_shot_cot", trigger_position="assistant")
    built = build_prompt(smollm2, setup, SENTIMENT.examples[1].input)
    assert built.text.endswith("<|im_start|>assistant\nLet's think step by step.")


def test_evaluation_on_llama_cpp_with_progress_and_cancel(smollm2, library):
    setup = _setup(library, "sentiment-classify", "few_shot", k=3)
    params = GenerationParams(max_new_tokens=6, temperature=0)
    seen = []
    report = evaluate(smollm2, [setup], SENTIMENT, params, limit=3, progress=lambda update: seen.append(update.fraction))
    assert len(report.results) == 3 and not report.cancelled and seen[-1] == 1.0
    assert 0.0 <= report.scores[0].metrics["accuracy"] <= 1.0
    assert all(r.prompt.startswith("<|im_start|>") for r in report.results)

    cancel = threading.Event()
    report = evaluate(smollm2, [setup], SENTIMENT, params, limit=5, cancel=cancel,
                      progress=lambda update: cancel.set())  # cancel after the first example
    assert report.cancelled and len(report.results) == 1


def test_timing_functions_run(smollm2):
    timing = time_self_consistency(smollm2, samples=2, rounds=1,
                                   params=GenerationParams(max_new_tokens=4, temperature=0.7, seed=0))
    assert timing.samples == 2 and timing.single_s > 0 and timing.parallel_s > 0 and timing.ratio > 0
    report = time_sentiment_evaluation(smollm2, limit=2)
    assert len(report.results) == 2 and report.elapsed_s > 0


# ---------------------------------------------------------------- transformers, tiny random Llama


@pytest.fixture(scope="module")
def tiny_llama(tiny_provider):
    return tiny_provider.get("tiny-llama")


def test_strategies_on_a_tiny_transformers_model(tiny_llama):
    params = GenerationParams(max_new_tokens=4, temperature=0)
    zero = run_strategy(tiny_llama, PromptSetup("sentiment", "{{ text }}"), "Hello world", (), params)
    assert zero.prompt.text == "<s>user: Hello world</s>\n<s>assistant:"
    assert zero.prompt.token_count == tiny_llama.count_tokens(zero.prompt.text)
    assert zero.answer in (None, "positive", "negative", "neutral")

    sc = PromptSetup("arithmetic", "{{ question }}", StrategyConfig(strategy="self_consistency", k=0, samples=3))
    run = run_strategy(tiny_llama, sc, "Two and two?", (), GenerationParams(max_new_tokens=4, temperature=1.0,
                                                                            seed=2))
    assert len(run.paths) == 3 and run.vote.total == 3
    assert all(p.result.engine == "transformers" for p in run.paths)


def test_prompt_over_the_tiny_context_window(tiny_llama):
    setup = PromptSetup("sentiment", "{{ text }}")
    with pytest.raises(ContextOverflowError) as info:
        build_prompt(tiny_llama, setup, "The quick brown fox jumps over the lazy dog. " * 12,
                     params=GenerationParams(max_new_tokens=8))
    assert info.value.context_window == 128 and info.value.prompt_tokens > 120


def test_the_llama_cpp_code_reproduces_the_apps_greedy_answer(smollm2, library, catalog):
    """"Show the code" gives a script whose greedy answer is the app's, on any CPU: it evaluates the prompt in
    the app's blocks, so both compute the same numbers."""
    import subprocess
    import sys

    from playground.prompting.snippet import code_snippet

    setup = _setup(library, "sentiment-classify", "few_shot", k=2)
    params = GenerationParams(max_new_tokens=24, temperature=0.0, seed=0)
    smollm2.generate(smollm2.format_chat([{"role": "user", "content": "Something else first."}]), params)
    run = run_strategy(smollm2, setup, "The soup was cold and the waiter was rude.", SENTIMENT.demos, params)
    code = code_snippet(run.prompt, params, spec=catalog.get(smollm2.model_id), threads=smollm2.threads)
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    count_line, _, answer = printed.stdout.partition("\n")
    assert count_line == f"{run.prompt.token_count} prompt tokens"
    assert answer.rstrip("\n") == run.paths[0].text
