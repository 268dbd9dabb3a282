"""The reasoning tasks beyond arithmetic (dates, last letters, coin flips, commonsense multiple choice):
their bundled data (answers recomputed from the inputs), templates, uploads and a scripted evaluation."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter

import pytest

from playground.backends.base import GenerationParams
from playground.errors import DataFileError
from playground.prompting.data import ColumnMapping, load_bundled, parse_labelled_file
from playground.prompting.evaluation import evaluate
from playground.prompting.extraction import CHOICE_LETTERS
from playground.prompting.lab import PromptLab
from playground.prompting.strategies import PromptSetup, StrategyConfig, build_prompt, suggested_params
from playground.prompting.tasks import DATA_DIR, STRATEGIES, get_task
from playground.prompting.templates import TemplateLibrary
from tests.prompting.fakes import ScriptedEngine

REASONING_TASKS = ("dates", "last_letters", "coin_flips", "commonsense")
MONTHS = ("January February March April May June July August September October November December").split()


def _rows(task: str) -> list[dict]:
    path = DATA_DIR / get_task(task).data_file
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("task", REASONING_TASKS)
def test_each_set_has_forty_examples_and_separate_demonstrations_with_rationales(task):
    spec = get_task(task)
    rows = _rows(task)
    tests = [r for r in rows if r["split"] == "test"]
    demos = [r for r in rows if r["split"] == "demo"]
    assert len(tests) >= 40 and len(demos) >= 6
    assert all(r["split"] in ("demo", "test") for r in rows)
    assert all(r.get("rationale", "").strip() for r in demos), "few-shot CoT needs a worked rationale per demo"
    assert all({spec.input_field, spec.target_field, "split"} <= set(r) <= {spec.input_field, spec.target_field,
                                                                             "split", "rationale"} for r in rows)
    inputs = [r[spec.input_field] for r in rows]
    assert len(set(inputs)) == len(inputs), "no input twice, so no demonstration is also an evaluation example"
    assert not {r[spec.input_field] for r in demos} & {r[spec.input_field] for r in tests}
    data = load_bundled(task)
    assert len(data.examples) == len(tests) and len(data.demos) == len(demos)


# ---------------------------------------------------------------- dates: recomputed with datetime


def _date_in(text: str) -> dt.date:
    """The one date a question names (written "3 March 2027", "March 3, 2027" or "2027-03-03")."""
    found = [dt.date(int(y), MONTHS.index(m) + 1, int(d))
             for d, m, y in re.findall(rf"\b(\d{{1,2}}) ({'|'.join(MONTHS)}) (\d{{4}})\b", text)]
    found += [dt.date(int(y), MONTHS.index(m) + 1, int(d))
              for m, d, y in re.findall(rf"\b({'|'.join(MONTHS)}) (\d{{1,2}}), (\d{{4}})\b", text)]
    found += [dt.date.fromisoformat(iso) for iso in re.findall(r"\b\d{4}-\d{2}-\d{2}\b", text)]
    assert len(found) == 1, text
    return found[0]


# (pattern on the question, days from the named date); n is the pattern's number, times 7 for weeks
_OFFSETS = [
    (r"What is the date (\d+) (days?|weeks?) after", lambda n: n),
    (r"What will the date be in (\d+) (days?|weeks?)", lambda n: n),
    (r"What was the date (\d+) (days?|weeks?) ago", lambda n: -n),
    (r"(\d+)-(day) .* ends on", lambda n: -(n - 1)),
    (r"countdown of (\d+) (days) ends", lambda n: -n),
    (r"(\d+) (days?|weeks?) later", lambda n: n),
    (r"(\d+) (days?|weeks?) earlier|brought forward by (\d+) (weeks?)", lambda n: -n),
    (r"(\d+) (days?) before", lambda n: -n),
    (r"delayed by (\d+) (days?)", lambda n: n),
    (r"(?:lasts|runs for) (\d+) (days)|course of (\d+) (days)", lambda n: n - 1),
    (r"(?:for|stays) (\d+) (days|nights)", lambda n: n),
    (r"is the baby (\d+) (days) old", lambda n: n),
    (r"every (\d+) (days)\. When is its second", lambda n: 2 * n),
    (r"^Yesterday was .* tomorrow\?$", 2), (r"^Yesterday was .* today\?$", 1),
    (r"^Tomorrow is .* yesterday\?$", -2), (r"^Tomorrow is .* today\?$", -1),
    (r"^The day before yesterday was .* today\?$", 2), (r"^The day after tomorrow is .* today\?$", -2),
    (r"^Today is .* yesterday\?$", -1),
]


def _offset(question: str) -> int:
    for pattern, days in _OFFSETS:
        match = re.search(pattern, question)
        if match:
            if isinstance(days, int):
                return days
            number, unit = [g for g in match.groups() if g][:2]
            return days(int(number) * (7 if unit.startswith("week") else 1))
    raise AssertionError(f"no rule recomputes: {question}")


def test_date_answers_recomputed_from_the_questions():
    for row in _rows("dates"):
        expected = _date_in(row["question"]) + dt.timedelta(days=_offset(row["question"]))
        assert row["answer"] == expected.isoformat(), row["question"]


def test_date_rationales_count_right_and_end_on_the_answer():
    equation = re.compile(rf"(\d{{1,2}} (?:{'|'.join(MONTHS)}) \d{{4}}) ([+-]) (\d+) days? = "
                          rf"(\d{{1,2}} (?:{'|'.join(MONTHS)}) \d{{4}})")

    def parse(text):
        day, month, year = text.split()
        return dt.date(int(year), MONTHS.index(month) + 1, int(day))

    for row in _rows("dates"):
        steps = equation.findall(row["rationale"])
        assert steps, row["rationale"]
        for start, sign, days, end in steps:
            delta = dt.timedelta(days=int(days) * (1 if sign == "+" else -1))
            assert parse(start) + delta == parse(end), row["rationale"]
        assert parse(steps[0][0]) == _date_in(row["question"])
        assert parse(steps[-1][3]).isoformat() == row["answer"]
        for a, b, c in re.findall(r"(\d+) x (\d+) = (\d+)", row["rationale"]):
            assert int(a) * int(b) == int(c), row["rationale"]
    answers = [dt.date.fromisoformat(r["answer"]) for r in _rows("dates")]
    assert any(a.month != _date_in(r["question"]).month for a, r in zip(answers, _rows("dates"))), \
        "some answers cross a month end"
    assert any(a.year != _date_in(r["question"]).year for a, r in zip(answers, _rows("dates")))
    assert dt.date(2028, 2, 29) in answers or any("2028" in r["question"] and "February" in r["question"]
                                                  for r in _rows("dates"))


# ---------------------------------------------------------------- last letters and coins: recomputed


def test_last_letter_answers_recomputed_from_the_words():
    for row in _rows("last_letters"):
        words = row["words"].split()
        assert 2 <= len(words) <= 4 and all(w.isalpha() for w in words), row
        assert row["answer"] == "".join(w[-1] for w in words).lower()
        for word in words:
            assert f'The last letter of "{word}" is "{word[-1]}".' in row["rationale"]
        assert row["rationale"].endswith(f'"{row["answer"]}".')


def test_coin_answers_recomputed_from_the_flips():
    rows = _rows("coin_flips")
    for row in rows:
        question = row["question"]
        assert question.startswith("A coin is heads up. ") and question.endswith(" Is the coin still heads up?")
        steps = re.findall(r"[A-Z][a-z]+ (flips the coin|turns the coin over|does not flip the coin|"
                           r"leaves the coin as it is)\.", question)
        assert 2 <= len(steps) <= 5 and len(steps) == question.count(".") - 1, question
        flips = sum(step in ("flips the coin", "turns the coin over") for step in steps)
        assert row["answer"] == ("yes" if flips % 2 == 0 else "no"), question
        ends = "heads" if flips % 2 == 0 else "tails"
        assert f"It ends {ends} up" in row["rationale"]
    tests = Counter(r["answer"] for r in rows if r["split"] == "test")
    assert tests["yes"] == tests["no"]


# ---------------------------------------------------------------- commonsense multiple choice


def test_commonsense_questions_have_five_choices_and_balanced_letters():
    rows = _rows("commonsense")
    for row in rows:
        lines = row["question"].splitlines()
        assert lines[0].endswith("?") and len(lines) == 6, row["question"]
        assert [line[:3] for line in lines[1:]] == [f"{letter}) " for letter in CHOICE_LETTERS]
        options = [line[3:] for line in lines[1:]]
        assert all(o.strip() for o in options) and len(set(options)) == 5
        assert row["answer"] in CHOICE_LETTERS
        if row["split"] == "demo":
            right = options[CHOICE_LETTERS.index(row["answer"])]
            assert row["rationale"].endswith(f"That is choice {row['answer']}, {right}."), row["rationale"]
    tests = Counter(r["answer"] for r in rows if r["split"] == "test")
    assert set(tests) == set(CHOICE_LETTERS) and max(tests.values()) - min(tests.values()) <= 1
    questions = [r["question"].splitlines()[0] for r in rows]
    assert len(set(questions)) == len(questions)


# ---------------------------------------------------------------- uploads with the new answer kinds


def _targets(text: bytes, task: str) -> list[str]:
    return [e.target for e in parse_labelled_file(text, ColumnMapping("q", "a"), task, "upload.csv")]


def test_uploads_check_dates_words_and_letters():
    assert _targets(b"q,a\nIn 2 days?,3 March 2027\nIn 3 days?,2027-03-04\n", "dates") == ["2027-03-03", "2027-03-04"]
    with pytest.raises(DataFileError, match="Line 2.*not a date"):
        _targets(b"q,a\nWhen?,soon\n", "dates")
    assert _targets(b"q,a\nsun moon,NN\n", "last_letters") == ["nn"]
    with pytest.raises(DataFileError, match="not one word"):
        _targets(b"q,a\nsun moon,n n\n", "last_letters")
    assert _targets(b"q,a\nWhich?,(b)\n", "commonsense") == ["B"]
    with pytest.raises(DataFileError, match="choice letters A, B, C, D, E"):
        _targets(b"q,a\nWhich?,F\n", "commonsense")


# ---------------------------------------------------------------- templates and the lab


@pytest.fixture(scope="module")
def library():
    return TemplateLibrary.load()


@pytest.mark.parametrize("task", REASONING_TASKS)
def test_every_strategy_has_a_template_that_renders_in_the_sandbox(task, library):
    spec = get_task(task)
    assert spec.supports_reasoning and PromptLab.strategies_for(task) == STRATEGIES
    data = load_bundled(task)
    engine = ScriptedEngine()
    templates = library.for_task(task)
    assert len(templates) >= 3 and all(t.answer == spec.answer_kind for t in templates)
    for strategy in STRATEGIES:
        suited = library.for_task(task, strategy)
        assert suited, (task, strategy)
        for template in suited:
            setup = PromptSetup.from_template(template, StrategyConfig(strategy=strategy, k=3))
            built = build_prompt(engine, setup, data.examples[-1].input, data.demos, params=GenerationParams())
            assert data.examples[-1].input in built.rendered
            if setup.strategy.needs_rationales:
                assert all(d.rationale in built.rendered for d in built.demos)


def test_suggested_lengths_suit_the_new_answers():
    direct = StrategyConfig(strategy="zero_shot")
    assert suggested_params("commonsense", direct).max_new_tokens == 8
    assert suggested_params("dates", direct).max_new_tokens == 24
    assert suggested_params("last_letters", StrategyConfig(strategy="zero_shot_cot")).max_new_tokens == 128


# ---------------------------------------------------------------- a scripted evaluation


def _reasoning_engine(task: str) -> ScriptedEngine:
    """Answers right (in another spelling than the data's) when the prompt shows worked rationales; else a
    plausible wrong answer. Stands in for a model that chain-of-thought helps."""
    data = load_bundled(task)
    by_input = {e.input: e.target for e in data.examples}
    spec = get_task(task)

    def reply(prompt: str, params) -> str:
        asked = next(text for text in by_input if text in prompt.rsplit(data.demos[0].input, 1)[-1])
        target = by_input[asked]
        worked = data.demos[0].rationale in prompt
        if spec.answer_kind == "date":
            day = dt.date.fromisoformat(target)
            return (f"Counting on, the answer is {day.day} {MONTHS[day.month - 1]} {day.year}." if worked
                    else f"{(day + dt.timedelta(days=1)).isoformat()}")
        if spec.answer_kind == "word":
            return f'Joining them gives "{target.upper()}". The answer is "{target}".' if worked else target[:-1] + "x"
        if spec.answer_kind == "choice":
            wrong = CHOICE_LETTERS[(CHOICE_LETTERS.index(target) + 1) % 5]
            return f"That fits best. The answer is ({target.lower()})." if worked else f"{wrong}) something"
        return f"So the answer is {target}." if worked else ("no" if target == "yes" else "yes")

    return ScriptedEngine(reply)


@pytest.mark.parametrize("task", REASONING_TASKS)
def test_evaluation_scores_zero_shot_against_few_shot_cot(task, library):
    engine = _reasoning_engine(task)
    template = library.for_task(task, "few_shot_cot")[0]
    setups = [PromptSetup.from_template(template, StrategyConfig(strategy="zero_shot"), name="zero-shot"),
              PromptSetup.from_template(template, StrategyConfig(strategy="few_shot_cot", k=2), name="few-shot CoT")]
    report = evaluate(engine, setups, load_bundled(task), GenerationParams(max_new_tokens=200, temperature=0),
                      limit=5)
    metric = get_task(task).metric
    assert report.score("zero-shot").metrics == {metric: 0.0}
    assert report.score("few-shot CoT").metrics == {metric: 1.0}
    assert report.score("few-shot CoT").unanswered == 0
    assert all(r["correct"] for r in report.rows() if r["strategy"] == "few-shot CoT")


def test_self_consistency_votes_over_dates_written_differently(library):
    data = load_bundled("dates")
    target = dt.date.fromisoformat(data.examples[0].target)
    spellings = iter([f"The answer is {target.isoformat()}.", f"So it is {MONTHS[target.month - 1]} {target.day}, "
                      f"{target.year}.", "The answer is 1999-01-01.", f"The answer is {target.day} "
                      f"{MONTHS[target.month - 1]} {target.year}.", "I am not sure."])
    engine = ScriptedEngine(lambda prompt, params: next(spellings))
    setup = PromptSetup.from_template(library.get("dates-qa"), StrategyConfig(strategy="self_consistency", samples=5,
                                                                             k=0))
    report = evaluate(engine, [setup], data, GenerationParams(max_new_tokens=60, temperature=0.7, seed=0), limit=1)
    row = report.rows()[0]
    assert row["answer"] == target.isoformat() and row["correct"] is True
    assert row["votes"] == f"{target.isoformat()}: 3, 1999-01-01: 1"
