"""Evaluation over labelled sets: metrics, the per-example table, progress and cancel (scripted engine)."""

from __future__ import annotations

import threading

import pytest

from playground.backends.base import GenerationParams
from playground.errors import InvalidParameterError, TemplateError
from playground.prompting.data import Example, LabelledSet, load_bundled
from playground.prompting.evaluation import evaluate, rouge_scores, score_results
from playground.prompting.strategies import PromptSetup, StrategyConfig
from playground.prompting.tasks import get_task
from tests.prompting.fakes import BatchingEngine, ScriptedEngine

GREEDY = GenerationParams(max_new_tokens=40, temperature=0)
SENTIMENT = get_task("sentiment")
DATA = LabelledSet(SENTIMENT, examples=(
    Example("Lovely tea.", "positive"), Example("Cold soup.", "negative"), Example("Opens at 9.", "neutral"),
    Example("Broken cup.", "negative")), demos=(Example("Great!", "positive", "Happy."),), source="test")


def answer_by_keyword(prompt: str, params) -> str:
    last = prompt.rsplit("Sentence:", 1)[-1]
    if "Lovely" in last:
        return "Positive."
    if "soup" in last:
        return "The answer is negative"
    if "Opens" in last:
        return "I cannot say."
    return "positive"


def test_rouge_scores():
    perfect = rouge_scores("Anna asks Ben to buy milk.", "Anna asks Ben to buy milk.")
    assert perfect == {"rouge1": pytest.approx(1.0), "rouge2": pytest.approx(1.0), "rougeL": pytest.approx(1.0)}
    partial = rouge_scores("Anna wants milk.", "Anna asks Ben to buy milk.")
    assert 0 < partial["rouge1"] < 1 and partial["rouge2"] == 0.0 and 0 < partial["rougeL"] < 1
    assert rouge_scores(None, "Anna asks Ben.") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert rouge_scores("bought", "buying")["rouge1"] == 0.0 and rouge_scores("buys", "buying")["rouge1"] == 1.0


def test_accuracy_and_the_per_example_table():
    engine = ScriptedEngine(answer_by_keyword)
    template = "Sentence: {{ text }}\nSentiment:"
    setups = [PromptSetup("sentiment", template, name="plain"),
              PromptSetup("sentiment", "{% for d in demos %}Sentence: {{ d.text }} {{ d.label }}\n{% endfor %}"
                          + template, StrategyConfig(strategy="few_shot", k=1), name="one demo")]
    steps = []
    report = evaluate(engine, setups, DATA, GREEDY, progress=steps.append)
    assert not report.cancelled and report.planned == 8 and len(report.results) == 8
    plain = report.score("plain")
    assert plain.metrics == {"accuracy": pytest.approx(0.5)}  # 2 right, 1 unanswered (counted wrong), 1 wrong
    assert plain.unanswered == 1 and plain.examples == 4
    row = report.rows()[2]
    assert row["input"] == "Opens at 9." and row["answer"] is None and row["correct"] is False
    assert row["prompt"].endswith("Sentence: Opens at 9.\nSentiment:<|end|><|assistant|>")
    assert row["output"] == "I cannot say."
    assert [r["strategy"] for r in report.summary_rows()] == ["plain", "one demo"]
    assert [step.fraction for step in steps] == pytest.approx([i / 8 for i in range(1, 9)] + [1.0])
    first, last = steps[0], steps[-1]
    assert (first.strategy, first.strategy_done, first.examples, first.done, first.planned, first.correct) == (
        "plain", 1, 4, 1, 8, True)
    assert first.tokens == len(report.results[0].output) and first.eta_s is not None  # one token per character
    assert steps[4].strategy == "one demo" and steps[4].strategy_done == 1 and steps[4].done == 5
    assert last.finished and not last.cancelled and last.eta_s is None
    assert last.tokens == sum(r.completion_tokens for r in report.results)


def test_cancel_between_examples_returns_the_finished_part():
    cancel = threading.Event()

    def reply(prompt, params):
        if prompt.count("Sentence") and len(engine.prompts) == 2:
            cancel.set()  # cancelled while the second example runs; the third never starts
        return "positive"

    engine = ScriptedEngine(reply)
    report = evaluate(engine, [PromptSetup("sentiment", "Sentence: {{ text }}")], DATA, GREEDY, cancel=cancel)
    assert report.cancelled
    assert len(engine.prompts) == 2 and len(report.results) <= 2
    already = threading.Event()
    already.set()
    stopped = evaluate(engine, [PromptSetup("sentiment", "Sentence: {{ text }}")], DATA, GREEDY, cancel=already)
    assert stopped.cancelled and stopped.results == () and stopped.scores == ()


def test_exact_match_for_numbers_with_a_limit():
    data = load_bundled("arithmetic")
    answers = {e.input: e.target for e in data.examples}
    engine = ScriptedEngine(lambda prompt, params: "The answer is " + next(
        a for q, a in answers.items() if q in prompt) + ".")
    report = evaluate(engine, [PromptSetup("arithmetic", "Q: {{ question }}\nA:")], data, GREEDY, limit=3)
    assert report.score("zero-shot").metrics == {"exact_match": 1.0} and len(report.results) == 3


def test_rouge_for_summaries_and_self_consistency_votes():
    data = load_bundled("summarization").limited(2)
    engine = ScriptedEngine(lambda prompt, params: "Summary: " + next(
        e.target for e in data.examples if e.input in prompt))
    report = evaluate(engine, [PromptSetup("summarization", "{{ dialogue }}\nSummary:")], data,
                      GenerationParams(max_new_tokens=300, temperature=0))
    metrics = report.scores[0].metrics
    assert set(metrics) == {"rouge1", "rouge2", "rougeL"} and metrics["rouge1"] == pytest.approx(1.0)
    assert report.results[0].correct is None and report.rows()[0]["rougeL"] == pytest.approx(1.0)

    voting = ScriptedEngine(lambda prompt, params: ["positive", "negative", "positive"][params.seed % 3])
    sc = PromptSetup("sentiment", "{{ text }}", StrategyConfig(strategy="self_consistency", k=0, samples=3))
    report = evaluate(voting, [sc], DATA.limited(1), GenerationParams(max_new_tokens=10, temperature=0.8, seed=0))
    assert report.results[0].votes == {"positive": 2, "negative": 1}
    assert report.rows()[0]["votes"] == "positive: 2, negative: 1" and report.results[0].correct


def test_problems_are_raised_before_generating():
    engine = ScriptedEngine()
    with pytest.raises(TemplateError, match="not defined"):
        evaluate(engine, [PromptSetup("sentiment", "{{ nope }}")], DATA, GREEDY)
    with pytest.raises(InvalidParameterError, match="for the task 'arithmetic'"):
        evaluate(engine, [PromptSetup("arithmetic", "{{ question }}")], DATA, GREEDY)
    with pytest.raises(InvalidParameterError, match="at least one strategy"):
        evaluate(engine, [], DATA, GREEDY)
    with pytest.raises(InvalidParameterError, match="same name"):
        evaluate(engine, [PromptSetup("sentiment", "{{ text }}")] * 2, DATA, GREEDY)
    with pytest.raises(InvalidParameterError, match="one per strategy"):
        evaluate(engine, [PromptSetup("sentiment", "{{ text }}")], DATA, [GREEDY, GREEDY])
    assert engine.prompts == []


def test_score_results_of_nothing():
    assert score_results("x", "label", []).metrics == {"accuracy": 0.0}


def test_an_engine_with_a_decode_loop_gets_several_examples_at_once_with_the_same_report():
    setups = [PromptSetup("sentiment", "Sentence: {{ text }}\nSentiment:")]
    steps = []
    batched = evaluate(BatchingEngine(answer_by_keyword), setups, DATA, GREEDY,
                       progress=lambda step: steps.append(step.fraction))
    in_turn = evaluate(ScriptedEngine(answer_by_keyword), setups, DATA, GREEDY)
    assert [(r.index, r.answer, r.correct) for r in batched.results] == \
           [(r.index, r.answer, r.correct) for r in in_turn.results]
    assert batched.scores[0].metrics == in_turn.scores[0].metrics
    assert steps == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_a_batched_evaluation_stops_its_examples_in_flight_on_cancel_and_raises_a_failure():
    cancel = threading.Event()
    engine = BatchingEngine(lambda prompt, params: (cancel.set(), "positive")[1])
    report = evaluate(engine, [PromptSetup("sentiment", "Sentence: {{ text }}")], DATA, GREEDY, cancel=cancel)
    assert report.cancelled and len(report.results) <= 4
    assert engine.most >= 2

    def fails(prompt, params):
        if "Cold soup" in prompt:
            raise InvalidParameterError("this example is broken")
        return "positive"

    with pytest.raises(InvalidParameterError, match="broken"):
        evaluate(BatchingEngine(fails), [PromptSetup("sentiment", "Sentence: {{ text }}")], DATA, GREEDY)
