"""Automatic prompt engineering with a scripted engine: proposals, scoring, variations, splits, progress, cancel."""

from __future__ import annotations

import threading

import pytest

from playground.backends.base import GenerationParams
from playground.config import Settings
from playground.errors import InvalidParameterError, TemplateError
from playground.prompting.ape import (
    CRITIQUE,
    PARAPHRASE,
    PROPOSED,
    ApeConfig,
    ApeLimits,
    PromptSearch,
    SearchRequest,
    clean_instruction,
    dedupe_key,
    instruction_template,
    search_instructions,
    split_examples,
)
from playground.prompting.data import load_bundled
from playground.prompting.lab import LabRequest, PromptLab
from playground.prompting.templates import TemplateLibrary, parse_template
from tests.prompting.fakes import ScriptedEngine

LIBRARY = TemplateLibrary.load()
SENTIMENT = load_bundled("sentiment")
LABELS = {e.input: e.target for e in SENTIMENT.examples + SENTIMENT.demos}
BASELINE = LIBRARY.get("sentiment-question")
PROPOSALS = ["Say whether the sentence is positive or negative.", "Write the sentiment.",
             "Tell how the writer feels about it.", "Label the text.", "Repeat the sentence."]


def _input_of(prompt: str) -> str:
    """The input of a scoring prompt (its last "Input:" line)."""
    return prompt.rsplit("Input: ", 1)[1].split("\nOutput:", 1)[0].strip()


def oracle(prompt: str, params: GenerationParams) -> str:
    """A model that writes instructions by seed, and answers right only when the instruction mentions feelings."""
    if "The instruction was:" in prompt:
        return f"Instruction: {PROPOSALS[(params.seed or 0) % len(PROPOSALS)]}\nMore"  # within 64 tokens
    if "Generate a variation" in prompt:
        return '"Kindly ' + prompt.split("Instruction: ", 1)[1].split("<|end|>", 1)[0][:40] + '"'
    if "Improved instruction:" in prompt:
        return "It does not ask about feelings.\nImproved instruction: Say how the writer feels, in one word."
    if prompt.startswith("<|user|>") and "Input: " in prompt:  # a candidate's layout
        return LABELS.get(_input_of(prompt), "positive") if "feel" in prompt.split("Input:")[0] else "positive"
    if "How does the writer feel" in prompt:  # the baseline
        return "positive"
    raise AssertionError(f"unexpected prompt: {prompt[:200]}")


def config(**overrides) -> ApeConfig:
    values = dict(task="sentiment", candidates=4, rounds=2, keep=2, dev_size=6, test_size=5, demos_shown=3)
    values.update(overrides)
    return ApeConfig(**values)


def test_splits_are_seeded_disjoint_and_leave_the_rest_to_test():
    dev, test = split_examples(SENTIMENT, 20, 0, seed=3)
    assert len(dev) == 20 and len(test) == len(SENTIMENT.examples) - 20
    assert not {e.input for e in dev} & {e.input for e in test}
    assert split_examples(SENTIMENT, 20, 0, seed=3) == (dev, test)
    assert split_examples(SENTIMENT, 20, 0, seed=4)[0] != dev
    assert len(split_examples(SENTIMENT, 20, 10, seed=3)[1]) == 10
    with pytest.raises(InvalidParameterError, match="at most 59"):
        split_examples(SENTIMENT, 60, 0, seed=0)
    with pytest.raises(InvalidParameterError, match="test size of at most 40"):
        split_examples(SENTIMENT, 20, 41, seed=0)


def test_a_reply_becomes_one_clean_instruction_that_renders_in_the_sandbox():
    assert clean_instruction('The instruction was: "Classify the review."\nOutput: positive') == \
        "Classify the review."
    assert clean_instruction("Too vague.\nImproved instruction: Name the feeling.") == "Name the feeling."
    assert clean_instruction("Say {{ input.__class__ }} {% for x in y %}") == "Say input.__class__ for x in y"
    assert clean_instruction("\n\n") == ""
    assert len(clean_instruction("word " * 500)) <= 401
    assert dedupe_key("Classify  the REVIEW!") == dedupe_key("classify the review")
    source = instruction_template("sentiment", "Name the {{ feeling }}.")
    rendered = parse_template(source).render({"input": "I love it.", "labels": ["positive", "negative"],
                                              "demos": [{"input": "Bad.", "target": "negative"}]})
    assert rendered.startswith("Name the   feeling  .\nAnswer with one of: positive, negative.")
    assert rendered.endswith("Input: Bad.\nOutput: negative\n\nInput: I love it.\nOutput:")
    assert "Answer with one of" not in instruction_template("arithmetic", "Solve it.")


def test_the_search_proposes_scores_varies_and_beats_the_baseline_on_the_test_split():
    engine = ScriptedEngine(oracle)
    steps = []
    result = search_instructions(engine, config(), SENTIMENT, BASELINE, progress=steps.append)
    first = [c for c in result.candidates if c.round == 1]
    assert [c.origin for c in first] == [PROPOSED] * 4
    assert [c.text for c in first] == PROPOSALS[:4]  # seeds 0..3 of the scripted proposals
    feelings = next(c for c in first if "feel" in c.text)
    assert feelings.dev_score == 1.0 and all(c.dev_score == pytest.approx(
        sum(1 for e in split_examples(SENTIMENT, 6, 5, 0)[0] if e.target == "positive") / 6)
        for c in first if c is not feelings)
    second = [c for c in result.candidates if c.round == 2]
    assert {c.origin for c in second} == {PARAPHRASE, CRITIQUE}
    ranked_first = sorted(first, key=lambda c: (-c.dev_score, c.id))
    assert {c.parent for c in second} <= {c.id for c in ranked_first[:2]}  # the top-k are varied
    critique = next(c for c in second if c.origin == CRITIQUE)
    assert critique.text == "Say how the writer feels, in one word." and "feelings" in critique.note
    assert next(c for c in second if c.origin == PARAPHRASE).text.startswith("Kindly ")
    assert result.winner is feelings or result.winner.dev_score == 1.0
    assert result.winner_test.metrics["accuracy"] == 1.0 and result.winner_test.examples == 5
    assert result.baseline_test.examples == 5 and result.baseline == "sentiment-question"
    assert result.best_per_round[0][1] == 1.0 and len(result.best_per_round) == 2
    assert result.winner.text in result.winner_template and not result.cancelled
    # Progress: counts only go up, name the candidate and example, and end exactly at the plan.
    assert [s.done for s in steps] == sorted(s.done for s in steps)
    assert steps[-1].finished and steps[-1].done == steps[-1].planned == result.generations
    # The scripted variations repeat once each parent had one of each kind: those two are not scored.
    assert result.duplicates == 2 and len(result.candidates) == 6
    assert result.generations == 2 * 4 + 6 * 6 + 2 * 5
    scoring = [s for s in steps if s.stage == "score"]
    assert {(s.candidate, s.candidates) for s in scoring if s.round == 1} == {(i, 4) for i in range(1, 5)}
    assert max(s.example for s in scoring) == 6 and {s.examples for s in scoring} == {6}
    assert result.rows()[0]["dev_score"] == 1.0 and {r["series"] for r in result.chart_rows()} == \
        {"best so far", "best of the round"}
    assert [r["prompt"] for r in result.test_rows()] == ["baseline", "winner"]


def test_the_search_never_shows_a_test_example_before_the_test():
    engine = ScriptedEngine(oracle)
    result = search_instructions(engine, config(), SENTIMENT, BASELINE)
    _, test = split_examples(SENTIMENT, 6, 5, 0)
    searching = engine.prompts[:-2 * len(test)]
    assert len(engine.prompts) == result.generations
    assert not any(e.input in prompt for e in test for prompt in searching)
    assert all(any(e.input in prompt for e in test) for prompt in engine.prompts[-2 * len(test):])


def test_repeated_and_empty_instructions_are_dropped_and_the_plan_shrinks():
    replies = iter(["Label it.", "label  it!", "", "Label the feeling."])

    def reply(prompt, params):
        if "The instruction was:" in prompt:
            return next(replies)
        return oracle(prompt, params)

    steps = []
    result = search_instructions(ScriptedEngine(reply), config(rounds=1), SENTIMENT, BASELINE, progress=steps.append)
    assert [c.text for c in result.candidates] == ["Label it.", "Label the feeling."]
    assert result.duplicates == 2
    assert steps[-1].done == steps[-1].planned == 4 + 2 * 6 + 2 * 5


def test_cancel_stops_between_generations_and_keeps_what_was_scored():
    cancel = threading.Event()
    seen = []

    def heard(step):
        seen.append(step)
        if step.stage == "score" and step.candidate == 2 and step.example == 3:
            cancel.set()

    engine = ScriptedEngine(oracle)
    result = search_instructions(engine, config(), SENTIMENT, BASELINE, progress=heard, cancel=cancel)
    assert result.cancelled and seen[-1].finished and seen[-1].cancelled
    assert result.baseline_test is None and result.winner_test is None
    assert [c.dev_score is not None for c in result.candidates] == [True, False, False, False]
    assert result.winner.id == 1 and all(c.round == 1 for c in result.candidates)
    assert len(engine.prompts) <= 4 + 6 + 3 + 4  # no generation started long after the cancel


def test_settings_are_capped_and_checked_before_the_first_generation():
    engine = ScriptedEngine(oracle)
    workshop = ApeLimits.from_settings(Settings(mode="workshop"))
    assert workshop.max_candidates == 8 and workshop.max_rounds == 2 and workshop.max_dev == 20
    with pytest.raises(InvalidParameterError, match="candidates=9 is out of range: choose 1 to 8"):
        search_instructions(engine, config(candidates=9), SENTIMENT, BASELINE, limits=workshop)
    with pytest.raises(InvalidParameterError, match="keep=17 is out of range: choose 1 to 16"):
        search_instructions(engine, config(keep=17), SENTIMENT, BASELINE)
    with pytest.raises(InvalidParameterError, match="limit is 4,000"):
        search_instructions(engine, config(critique_prompt="x" * 4001), SENTIMENT, BASELINE)
    with pytest.raises(TemplateError, match="line 2"):
        search_instructions(engine, config(proposal_prompt="ok\n{% for demo in demos %}"), SENTIMENT, BASELINE)
    with pytest.raises(TemplateError, match="never uses 'demos'"):
        search_instructions(engine, config(proposal_prompt="Write an instruction."), SENTIMENT, BASELINE)
    with pytest.raises(TemplateError, match="failure"):
        search_instructions(engine, config(critique_prompt="{{ failure.input }}"), SENTIMENT, BASELINE)
    with pytest.raises(InvalidParameterError, match="Unknown prompt-search settings"):
        ApeConfig.from_dict({"candidates": 3, "generations": 2})
    assert engine.prompts == []  # nothing was generated
    assert ApeConfig.from_dict({"candidates": 3.0}).candidates == 3


def test_the_winner_goes_into_the_library_and_runs_in_the_prompt_lab():
    class Models:
        def engine(self, model_id, engine):
            return ScriptedEngine(oracle)

    search = PromptSearch(LIBRARY)
    assert [t.id for t in search.baselines("sentiment")][0] == "sentiment-question"
    with pytest.raises(InvalidParameterError, match="not a zero-shot template"):
        search.check(SearchRequest(config(baseline="arithmetic-qa"), "m"), Models())
    result = search.search(SearchRequest(config(rounds=1), "m"), Models())
    template_id, entry = search.saved_entry(result)
    assert template_id == "sentiment-question" and entry["template"] == result.winner_template
    lab = PromptLab(LIBRARY)
    text, system = lab.template_text(template_id, {template_id: entry})
    request = LabRequest(task="sentiment", template_id=template_id, model_id="m", text="I love this park.",
                         template_text=text, system=system, params=GenerationParams(max_new_tokens=8, temperature=0))
    run = next(u.run for u in lab.run(request, Models()) if u.run is not None)
    assert result.winner.text in run.prompt.rendered and run.answer == "positive"
