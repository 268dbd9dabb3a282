"""The judge: rubrics load and render in the sandbox, scores and reasons are read from messy outputs, the
agreement with ROUGE is pairwise, and a judged evaluation runs on fake engines."""

from __future__ import annotations

import re
import threading

import pytest

from playground.errors import InvalidParameterError, TemplateError
from playground.prompting.judge import (
    JudgedRow,
    agreement,
    get_rubric,
    judge_evaluation,
    judge_setup,
    load_rubrics,
    parse_judgement,
    spearman,
)
from playground.prompting.lab import EvaluationRequest, LabRequest, PromptLab
from playground.prompting.strategies import build_prompt
from playground.prompting.templates import TemplateLibrary
from tests.prompting.fakes import ScriptedEngine

RUBRICS = load_rubrics()


@pytest.mark.parametrize("text, score, reasons", [
    ("Score: 4\nReasons: faithful and short.", 4, "faithful and short"),
    ("score:5", 5, ""),
    ("**Score:** 3\n**Reasons:** misses who pays.", 3, "misses who pays"),
    ("Rating: 4/5 — accurate.", 4, "accurate"),
    ("Score = 2 out of 5. Explanation: it invents a time.", 2, "it invents a time"),
    ('{"score": 4, "reasons": "clear"}', 4, "clear"),
    ('Here is my verdict: {"Score": "3", "explanation": "ok"} done', 3, "ok"),
    ("I would give it a 2 out of 5 because it is vague.", 2, "because it is vague"),
    ("I'd rate this a 4.", 4, ""),
    ("4\nThe summary is correct.", 4, "The summary is correct"),
    ("4. Good summary", 4, "Good summary"),
    ("The summary is wrong about the day. Score: 1", 1, "The summary is wrong about the day"),
    ("Final score: four", 4, ""),
    ("Score: 8/10", 4, ""),  # another scale, rescaled
    ("Score: 3.6", 4, ""),  # rounded
    ("score (1-5): 2\nreason: too long", 2, "too long"),
    ("Score: <4>\nReasons: fine", 4, "fine"),
    ("  \n\nScore:\t5\n", 5, ""),
    ("Note : 3", 3, ""),  # the French and Portuguese word for a mark
])
def test_scores_and_reasons_are_read_from_messy_outputs(text, score, reasons):
    judged = parse_judgement(text, 1, 5)
    assert judged.score == score, text
    assert reasons in judged.reasons
    assert judged.raw == text


@pytest.mark.parametrize("text", [
    "", "The summary is fine.", "Score: <1-5>\nReasons: <one sentence>",  # the rubric echoed back
    "Score: 7", "Score: 0", "Score: -3", '{"score": 9}', "Score: 12/10", None, "Score: nan",
])
def test_no_score_or_one_off_the_scale_reads_as_none(text):
    assert parse_judgement(text, 1, 5).score is None


def test_reasons_are_bounded():
    judged = parse_judgement("Score: 3\nReasons: " + "very " * 1_000, 1, 5)
    assert judged.score == 3 and len(judged.reasons) <= 1_000


def test_the_bundled_rubrics_load_and_render_with_the_answer_and_reference():
    ids = [r.id for r in RUBRICS]
    assert {"summary-faithfulness", "summary-helpfulness", "translation-adequacy"} <= set(ids)
    rubric = get_rubric(RUBRICS, "summary-faithfulness")
    setup = judge_setup("summarization", rubric.template, "Ana and Ben meet at noon.", "They agree to lunch.")
    built = build_prompt(ScriptedEngine(), setup, "Ana: Lunch? Ben: Noon.")
    assert "Ana: Lunch? Ben: Noon." in built.rendered and "Ana and Ben meet at noon." in built.rendered
    assert "They agree to lunch." in built.rendered
    with pytest.raises(InvalidParameterError):
        get_rubric(RUBRICS, "nope")


def test_an_edited_rubric_renders_in_the_sandbox():
    hostile = "{{ ''.__class__.__mro__ }}"
    with pytest.raises(TemplateError):
        build_prompt(ScriptedEngine(), judge_setup("summarization", hostile, "x", "y"), "in")
    with pytest.raises(TemplateError):
        build_prompt(ScriptedEngine(), judge_setup("summarization", "{% for i in range(999) %}{% for j in "
                                                    "range(999) %}x{% endfor %}{% endfor %}", "x", "y"), "in")
    with pytest.raises(InvalidParameterError, match="characters"):
        judge_setup("summarization", "x" * 9_000, "a", "b")


def test_a_malformed_rubric_file_is_refused(tmp_path):
    path = tmp_path / "rubrics.yaml"
    path.write_text("rubrics:\n  - id: a\n    name: A\n    tasks: [summarization]\n    template: '{{ x'\n")
    with pytest.raises(TemplateError):
        load_rubrics(path)
    path.write_text("rubrics:\n  - id: a\n    name: A\n    tasks: [summarization]\n    template: x\n    extra: 1\n")
    with pytest.raises(TemplateError, match="unknown keys"):
        load_rubrics(path)


def row(strategy, index, rouge, score):
    return JudgedRow(strategy, index, "in", "ref", "out", {"rougeL": rouge}, score, "")


def test_agreement_is_pairwise_ranking_between_strategies_per_example():
    rows = [row("zs", 0, 0.5, 4), row("fs", 0, 0.2, 2),  # agree
            row("zs", 1, 0.1, 5), row("fs", 1, 0.4, 1),  # disagree
            row("zs", 2, 0.3, 3), row("fs", 2, 0.3, 4),  # ROUGE ties
            row("zs", 3, 0.3, None), row("fs", 3, 0.1, 2)]  # not judged
    result = agreement(rows)
    assert (result.pairs, result.agree, result.tied) == (2, 1, 2)
    assert result.rate == 0.5
    assert agreement([row("zs", 0, 0.5, 4)]).rate is None  # one strategy: no pairs


def test_spearman_rank_correlation():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / 3 ** 0.5)  # ties share their average rank
    assert spearman([1, 2], [1, 2]) is None and spearman([3, 3, 3], [1, 2, 3]) is None


class JudgeModels:
    """The answering model copies the dialogue's first line; the judge gives 5 to answers mentioning 'lunch'."""

    def __init__(self):
        self.engines = {
            "answerer": ScriptedEngine(lambda prompt, params: "They talk about lunch." if "few" in prompt.lower()
                                       or "Summary:" in prompt else "Something happened."),
            "judge": ScriptedEngine(lambda prompt, params: "Score: 5\nReasons: mentions lunch."
                                    if "Summary to grade: They talk about lunch" in prompt
                                    else "Score: 2\nReasons: vague."),
        }

    def engine(self, model_id, engine="auto"):
        return self.engines[model_id]

    def label(self, model_id):
        return model_id

    def code_source(self, model_id, engine):
        return {}


def lab_request(task="summarization"):
    library = TemplateLibrary.load()
    template = library.for_task(task, "zero_shot")[0]
    return LabRequest(task=task, template_id=template.id, model_id="answerer", text="-",
                      template_text=template.template)


def test_a_judged_evaluation_scores_every_answer_beside_rouge():
    lab = PromptLab(TemplateLibrary.load(), max_chars=2_000, token_limit=64)
    rubric = get_rubric(RUBRICS, "summary-faithfulness")
    calls = []
    judged = judge_evaluation(lab, lab_request(), EvaluationRequest(strategies=("zero_shot", "few_shot"), limit=3),
                              JudgeModels(), "judge", rubric.template, progress=lambda d, t: calls.append((d, t)))
    assert len(judged.rows) == 6 and calls[-1] == (6, 6)
    assert all(r.score in (2, 5) and r.reasons for r in judged.rows)
    assert all("rougeL" in r.rouge for r in judged.rows)
    summary = judged.summary_rows()
    assert [s["examples"] for s in summary] == [3, 3] and all(s["judge"] is not None for s in summary)
    assert judged.agreement.pairs + judged.agreement.tied == 3  # one pair of strategies per example


def test_the_judge_refuses_exact_tasks_too_many_answers_and_a_broken_rubric_before_generating(monkeypatch):
    import playground.prompting.judge as judge_module

    monkeypatch.setattr(judge_module, "MAX_JUDGED", 3)
    lab = PromptLab(TemplateLibrary.load(), max_chars=2_000, token_limit=64)
    models = JudgeModels()
    with pytest.raises(InvalidParameterError, match="free-text"):
        judge_evaluation(lab, lab_request("sentiment"), EvaluationRequest(strategies=("zero_shot",)), models,
                         "judge", "Score it: {{ output }}")
    with pytest.raises(InvalidParameterError, match="at most"):
        judge_evaluation(lab, lab_request(), EvaluationRequest(strategies=("zero_shot", "few_shot"), limit=2),
                         models, "judge", "Score it: {{ output }}")
    with pytest.raises(TemplateError):
        judge_evaluation(lab, lab_request(), EvaluationRequest(strategies=("zero_shot",), limit=2), models,
                         "judge", "{{ output ")
    assert not models.engines["answerer"].prompts and not models.engines["judge"].prompts


def test_a_cancelled_judgement_keeps_what_it_judged():
    lab = PromptLab(TemplateLibrary.load(), max_chars=2_000, token_limit=64)
    cancel = threading.Event()
    judged = judge_evaluation(lab, lab_request(), EvaluationRequest(strategies=("zero_shot",), limit=3),
                              JudgeModels(), "judge", "Score: {{ output }}",
                              progress=lambda done, total: cancel.set(), cancel=cancel)
    assert judged.cancelled and len(judged.rows) == 1
    assert re.search(r"\d", str(judged.summary_rows()))
