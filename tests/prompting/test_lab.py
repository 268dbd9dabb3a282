"""The Prompt Lab's controller with fake engines: preview, run, compare and evaluate from one request."""

from __future__ import annotations

import contextlib
import threading

import pytest

from playground.backends.base import GenerationParams
from playground.errors import InvalidParameterError, TemplateError
from playground.prompting.columns import DONE, FAILED
from playground.prompting.data import ColumnMapping
from playground.prompting.lab import OFF, UPLOAD, EvaluationRequest, LabRequest, PromptLab, request_from_controls
from playground.prompting.strategies import StrategyConfig
from playground.prompting.templates import TemplateLibrary
from tests.prompting.fakes import ScriptedEngine

LIBRARY = TemplateLibrary.load()
GREEDY = GenerationParams(max_new_tokens=8, temperature=0.0, seed=0)


class FakeModels:
    """ModelChoices over scripted engines; a model id that starts with 'broken' cannot load."""

    def __init__(self, reply="positive"):
        self.engines = {}
        self.reply = reply
        self.asked = []

    def engine(self, model_id, engine):
        self.asked.append((model_id, engine))
        if model_id.startswith("broken"):
            raise InvalidParameterError(f"{model_id} cannot load")
        return self.engines.setdefault(model_id, ScriptedEngine(self.reply))

    def label(self, model_id):
        return f"label of {model_id}"

    def code_source(self, model_id, engine):
        return dict(engine=engine, model_ref=f"path/to/{model_id}")


@pytest.fixture
def lab():
    return PromptLab(LIBRARY, max_chars=2_000, token_limit=256)


def request(**overrides) -> LabRequest:
    template_id = overrides.pop("template_id", "sentiment-question")
    values = dict(task="sentiment", template_id=template_id, model_id="m", text="The soup was lovely.",
                  params=GREEDY, template_text=LIBRARY.get(template_id).template)
    values.update(overrides)
    return LabRequest(**values)


def test_preview_shows_the_prompt_its_settings_and_the_code(lab):
    models = FakeModels()
    shown = lab.preview(request(strategy=StrategyConfig(strategy="few_shot", k=2)), models, "llama.cpp")
    assert "The soup was lovely." in shown.prompt.text and len(shown.prompt.demos) == 2
    assert shown.prompt.token_count == len(shown.prompt.ids) > 0
    assert "path/to/m" in shown.code and "Llama(" in shown.code
    assert models.asked == [("m", "auto")]


def test_a_run_streams_from_loading_to_the_finished_run(lab):
    updates = list(lab.run(request(), FakeModels("positive, clearly")))
    assert updates[0].loading
    texts = [u.text for u in updates[1:-1]]
    assert texts == sorted(texts, key=len) and texts[0] == "p"  # the output grows piece by piece
    assert updates[-1].run.answer == "positive" and updates[-1].run.output == "positive"


def test_self_consistency_says_how_many_paths_are_sampled(lab):
    sc = StrategyConfig(strategy="self_consistency", k=0, samples=3)
    updates = list(lab.run(request(strategy=sc, params=GenerationParams(max_new_tokens=8, temperature=0.7, seed=1),
                                   ), FakeModels()))
    assert any(u.sampling == 3 for u in updates)
    assert updates[-1].run.vote.total == 3


def test_the_prompt_is_rendered_and_tokenised_once_and_before_the_slot():
    events = []

    @contextlib.contextmanager
    def slot(cancel=None):
        events.append("slot")
        yield True

    lab = PromptLab(LIBRARY, slot=slot)
    models = FakeModels()
    engine = models.engine("m", "auto")
    tokenize, format_chat = engine.tokenize, engine.format_chat
    engine.tokenize = lambda text: events.append("tokenize") or tokenize(text)
    engine.format_chat = lambda messages: events.append("render") or format_chat(messages)
    list(lab.run(request(), models))
    assert events == ["render", "tokenize", "slot"]


def test_the_edited_template_runs_only_where_it_suits_the_strategy(lab):
    edited = request(template_id="sentiment-review", template_text="EDITED {{ text }}")  # zero- and few-shot only
    setup, template = lab.setup(edited)
    assert setup.template == "EDITED {{ text }}" and template.id == "sentiment-review"
    cot, other = lab.setup(edited, "zero_shot_cot")  # a library template that suits takes over
    assert cot.template == other.template != "EDITED {{ text }}" and other.suits("zero_shot_cot")
    with pytest.raises(InvalidParameterError, match="is for the task 'sentiment'"):
        lab.setup(request(task="arithmetic"))


def test_compare_places_columns_and_gives_other_strategies_their_own_settings(lab):
    choices = [("zero_shot", "m"), (OFF, "m"), ("self_consistency", "m2"), ("zero_shot", "broken-model")]
    placed = lab.columns(request(), choices)
    assert [slot for slot, _ in placed] == [0, 2, 3]
    assert placed[0][1].params.temperature == 0.0  # the request's own strategy keeps its settings
    assert placed[1][1].params.temperature == 0.7  # self-consistency gets sampling
    states = list(lab.compare(request(), choices, FakeModels()))[-1]
    assert states[1] is None and states[0].status == DONE and states[2].status == DONE
    assert states[3].status == FAILED and "cannot load" in states[3].error
    with pytest.raises(InvalidParameterError, match="at least one column"):
        lab.columns(request(), [(OFF, "m")] * 4)
    with pytest.raises(InvalidParameterError, match="at most 4"):
        lab.columns(request(), [("zero_shot", "m")] * 5)


def test_evaluate_scores_the_chosen_strategies_in_order(lab):
    seen = []
    report = lab.evaluate(request(), EvaluationRequest(strategies=("few_shot", "zero_shot"), limit=3), FakeModels(),
                          progress=seen.append)
    assert [s.strategy for s in report.scores] == ["zero-shot", "few-shot (k=3, fixed)"]  # the page's order
    assert report.planned == 6 and seen[0].done == 1 and seen[0].planned == 6 and seen[-1].finished
    with pytest.raises(InvalidParameterError, match="1 to 200 examples"):
        lab.evaluate(request(), EvaluationRequest(strategies=("zero_shot",), limit=0), FakeModels())
    with pytest.raises(InvalidParameterError, match="at least one strategy"):
        lab.evaluate(request(), EvaluationRequest(strategies=()), FakeModels())
    with pytest.raises(InvalidParameterError, match="Upload a JSONL or CSV file first"):
        lab.evaluate(request(), EvaluationRequest(strategies=("zero_shot",), source=UPLOAD), FakeModels())


def test_evaluate_an_upload_with_its_column_mapping(lab, tmp_path):
    upload = tmp_path / "mine.csv"
    upload.write_text("sentence,feeling\nGreat food.,positive\nCold soup.,negative\n")
    evaluation = EvaluationRequest(strategies=("zero_shot",), source=UPLOAD, upload=upload,
                                   mapping=ColumnMapping("sentence", "feeling"), limit=5)
    report = lab.evaluate(request(), evaluation, FakeModels())
    assert report.source == "mine.csv" and len(report.results) == 2
    assert lab.upload_columns(upload) == ["sentence", "feeling"]


@pytest.mark.parametrize("field, value, name", [("text", "x" * 2_001, "input"), ("system", "s" * 2_001, "system message"),
                                                ("strategy", StrategyConfig(cot_trigger="t" * 501),
                                                 "chain-of-thought trigger")])
def test_overlong_text_is_refused_before_any_work(lab, field, value, name):
    models = FakeModels()
    with pytest.raises(InvalidParameterError, match=f"The {name} has"):
        lab.preview(request(**{field: value}), models, "llama.cpp")
    with pytest.raises(InvalidParameterError, match=f"The {name} has"):
        next(lab.run(request(**{field: value}), models))
    assert models.asked == []


def test_a_cancelled_run_ends_marked_cancelled(lab):
    cancel = threading.Event()
    cancel.set()
    updates = list(lab.run(request(), FakeModels("positive and on and on"), cancel))
    assert updates[-1].run.cancelled


def test_the_controls_offer_what_suits_the_task(lab):
    assert "self_consistency" in lab.strategies_for("arithmetic")
    assert lab.strategies_for("summarization") == ("zero_shot", "few_shot")
    assert all(t.suits("few_shot_cot") for t in lab.templates_for("arithmetic", "few_shot_cot"))
    assert lab.suggested("sentiment", "self_consistency").temperature == 0.7
    assert lab.suggested("summarization", "zero_shot").max_new_tokens == 80
    assert lab.template_text("sentiment-question", {"sentiment-question": {"template": "T", "system": "S"}}) == \
        ("T", "S")
    with pytest.raises(TemplateError, match="line 1"):
        lab.check_template("sentiment-question", "{% for %}")
    assert lab.example("sentiment") in [e.input for e in lab.bundled["sentiment"].examples]


def test_a_request_from_the_controls_takes_widget_numbers():
    controls = dict(task="sentiment", template_id="sentiment-question", template_text="{{ text }}", system="",
                    strategy="few_shot", k=2.0, selection="random", selection_seed=3.0, cot_trigger="Think.",
                    trigger_position="user", samples=5.0, model_id="m", engine="llama.cpp", text="Hi")
    made = request_from_controls(controls, GREEDY)
    assert made.strategy == StrategyConfig(strategy="few_shot", k=2, selection="random", selection_seed=3,
                                           cot_trigger="Think.", samples=5)
    assert (made.engine, made.params, made.template_text) == ("llama.cpp", GREEDY, "{{ text }}")


@pytest.mark.parametrize("overrides, expected", [
    (dict(template_text="{% for x in %}"), "line 1"),
    (dict(text="   "), "empty"),
    (dict(strategy=StrategyConfig(strategy="few_shot", k=99)), "only"),
    (dict(strategy=StrategyConfig(strategy="self_consistency"), template_id="sentiment-classify"), "needs sampling"),
    (dict(model_id="broken"), "cannot load"),
])
def test_check_run_raises_what_a_run_would_without_generating(lab, overrides, expected):
    models = FakeModels()
    if "template_id" in overrides:
        overrides["template_text"] = LIBRARY.get(overrides["template_id"]).template
    with pytest.raises((InvalidParameterError, TemplateError), match=expected):
        lab.check_run(request(**overrides), models)
    assert all(not engine.prompts for engine in models.engines.values())  # nothing was generated
    lab.check_run(request(), models)


def test_check_compare_and_check_evaluation(lab):
    with pytest.raises(InvalidParameterError, match="at least one column"):
        lab.check_compare(request(), [(OFF, "m")] * 4)
    with pytest.raises(InvalidParameterError, match="empty"):
        lab.check_compare(request(text=""), [("zero_shot", "m")])
    lab.check_compare(request(), [("zero_shot", "broken")])  # a column's own problem shows in that column
    models = FakeModels()
    with pytest.raises(InvalidParameterError, match="1 to 200 examples"):
        lab.check_evaluation(request(), EvaluationRequest(strategies=("zero_shot",), limit=0), models)
    with pytest.raises(InvalidParameterError, match="at least one strategy"):
        lab.check_evaluation(request(), EvaluationRequest(strategies=()), models)
    with pytest.raises(TemplateError):
        lab.check_evaluation(request(template_text="{{ nope }}"), EvaluationRequest(strategies=("zero_shot",)),
                             models)
    lab.check_evaluation(request(), EvaluationRequest(strategies=("zero_shot", "self_consistency")), models)
    assert all(not engine.prompts for engine in models.engines.values())
