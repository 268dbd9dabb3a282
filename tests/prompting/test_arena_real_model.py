"""The arena and the judge on the packaged SmolLM2 through llama.cpp, a few tokens each: a blind match whose
vote reveals both sides, and a judged translation whose score (if the tiny judge gives one) is on the scale."""

from __future__ import annotations

import random

from playground.prompting.arena import Arena, Contender
from playground.prompting.judge import get_rubric, judge_evaluation, load_rubrics
from playground.prompting.lab import EvaluationRequest, LabRequest, PromptLab

MODEL = "smollm2-135m-instruct"


class OneModel:
    """ModelChoices over the session's loaded SmolLM2."""

    def __init__(self, engine):
        self._engine = engine

    def engine(self, model_id, engine="auto"):
        assert model_id == MODEL
        return self._engine

    def label(self, model_id):
        return model_id

    def code_source(self, model_id, engine):
        return {}


def test_a_match_and_a_vote_on_smollm2(smollm2, library, tmp_path):
    arena = Arena(PromptLab(library, max_chars=2_000), tmp_path, catalog_ids=[MODEL], rng=random.Random(3),
                  max_new_tokens=6)
    updates = list(arena.match("alice", "sentiment", "The soup was cold and the waiter rude.",
                               Contender("zero_shot", MODEL), Contender("few_shot", MODEL), OneModel(smollm2)))
    final = updates[-1]
    assert final.match_id and final.text_a.strip() and final.text_b.strip()
    reveal = arena.vote("alice", final.match_id, "b")
    assert {reveal.a.strategy, reveal.b.strategy} == {"zero_shot", "few_shot"}
    assert arena.leaderboard()[0].votes == 1


def test_a_judged_translation_on_smollm2(smollm2, library):
    lab = PromptLab(library, max_chars=2_000)
    rubric = get_rubric(load_rubrics(), "translation-adequacy")
    template = library.for_task("translation", "zero_shot")[0]
    request = LabRequest(task="translation", template_id=template.id, model_id=MODEL, text="-",
                         template_text=template.template)
    judged = judge_evaluation(lab, request, EvaluationRequest(strategies=("zero_shot",), limit=1), OneModel(smollm2),
                              MODEL, rubric.template, max_new_tokens=12, answer_tokens=12)
    (row,) = judged.rows
    assert row.output and "rougeL" in row.rouge
    assert row.score is None or 1 <= row.score <= 5
