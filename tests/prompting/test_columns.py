"""Side-by-side columns: choice of template, streaming, per-column failures, cancel."""

from __future__ import annotations

import pytest

from playground.backends.base import CancelFlag, GenerationParams
from playground.errors import InvalidParameterError, ModelUnavailableError
from playground.prompting.columns import (
    CANCELLED,
    DONE,
    FAILED,
    MAX_COLUMNS,
    RUNNING,
    Column,
    choose_template,
    run_columns,
)
from playground.prompting.data import load_bundled
from playground.prompting.strategies import PromptSetup, StrategyConfig
from tests.prompting.fakes import BatchingEngine, ScriptedEngine

PARAMS = GenerationParams(max_new_tokens=64, temperature=0.0, seed=0)


def _column(library, strategy: str, model_id: str = "scripted", template_id: str = "sentiment-question",
            **config) -> Column:
    template = choose_template(library, "sentiment", strategy, library.get(template_id))
    setup = PromptSetup.from_template(template, StrategyConfig(strategy=strategy, **config))
    params = GenerationParams(max_new_tokens=64, temperature=0.7 if strategy == "self_consistency" else 0.0,
                              seed=0)
    return Column(setup, model_id, params, template.name)


def test_choose_template_keeps_a_suitable_choice_and_replaces_an_unsuitable_one(library):
    preferred = library.get("sentiment-question")
    assert choose_template(library, "sentiment", "zero_shot", preferred) is preferred
    for strategy in ("few_shot_cot", "self_consistency"):
        chosen = choose_template(library, "sentiment", strategy, preferred)
        assert chosen.suits(strategy) and chosen.task == "sentiment"
    other_task = library.for_task("arithmetic")[0]
    assert choose_template(library, "sentiment", "zero_shot", other_task).task == "sentiment"


def test_choose_template_refuses_a_strategy_the_task_cannot_use(library):
    with pytest.raises(InvalidParameterError, match="suits the strategy"):
        choose_template(library, "summarization", "self_consistency", None)


def test_columns_run_in_turn_and_each_reports_its_own_run(library):
    engine = ScriptedEngine("The feeling is positive.")
    data = load_bundled("sentiment")
    columns = [_column(library, "zero_shot"), _column(library, "few_shot", k=2),
               _column(library, "self_consistency", samples=3)]
    states = list(run_columns(columns, "I love this little café.", data.demos, lambda model_id: engine))
    final = states[-1]
    assert [s.status for s in final] == [DONE, DONE, DONE]
    assert all(s.run.answer == "positive" for s in final)
    assert final[2].run.vote is not None and final[2].run.vote.total == 3
    assert final[1].run.prompt.demos and not final[0].run.prompt.demos
    # while column 1 runs, column 2 is still waiting: the columns ran one after another
    assert any(s[0].status == DONE and s[1].status != DONE for s in states)


def test_a_single_path_column_streams_its_growing_text(library, monkeypatch):
    monkeypatch.setattr("playground.prompting.columns.STREAM_INTERVAL_S", 0.0)
    engine = ScriptedEngine("positive " * 20)
    column = _column(library, "zero_shot")
    texts = [states[0].text for states in run_columns([column], "Nice day.", (), lambda _: engine)]
    growing = [t for t in texts if t]
    assert len(set(growing)) > 3 and growing[-1].startswith("positive")


def test_a_failing_column_does_not_stop_the_others(library):
    engine = ScriptedEngine("negative")

    def get_engine(model_id):
        if model_id == "missing":
            raise ModelUnavailableError("missing is not here; download it first.")
        return engine

    broken = PromptSetup("sentiment", "{% for x in %}", StrategyConfig())
    columns = [_column(library, "zero_shot", model_id="missing"), Column(broken, "scripted", PARAMS),
               _column(library, "zero_shot")]
    final = list(run_columns(columns, "The parcel never came.", (), get_engine))[-1]
    assert [s.status for s in final] == [FAILED, FAILED, DONE]
    assert "download it first" in final[0].error
    assert "line 1" in final[1].error
    assert final[2].run.answer == "negative"


def test_cancel_stops_the_running_column_and_skips_the_rest(library):
    cancel = CancelFlag()

    def reply(prompt, params):
        cancel.cancel()  # Stop pressed while the first column generates
        return "positive " * 40

    engine = ScriptedEngine(reply)
    columns = [_column(library, "zero_shot"), _column(library, "few_shot", k=1)]
    final = list(run_columns(columns, "Great!", load_bundled("sentiment").demos, lambda _: engine,
                             cancel=cancel))[-1]
    assert [s.status for s in final] == [CANCELLED, CANCELLED]
    assert final[1].run is None


def test_column_count_is_checked(library):
    with pytest.raises(InvalidParameterError, match="at least one"):
        list(run_columns([], "x", (), lambda _: None))
    too_many = [_column(library, "zero_shot")] * (MAX_COLUMNS + 1)
    with pytest.raises(InvalidParameterError, match=f"at most {MAX_COLUMNS}"):
        list(run_columns(too_many, "x", (), lambda _: None))


def test_columns_on_a_model_with_a_decode_loop_run_at_once_and_other_models_in_turn(library):
    batching = BatchingEngine("The feeling is positive.")
    other = ScriptedEngine("negative")
    columns = [_column(library, "zero_shot"), _column(library, "zero_shot", model_id="other"),
               _column(library, "few_shot", k=2)]
    engines = {"scripted": batching, "other": other}
    states = list(run_columns(columns, "I love this little café.", load_bundled("sentiment").demos,
                              lambda model_id: engines[model_id]))
    final = states[-1]
    assert [s.status for s in final] == [DONE, DONE, DONE]
    assert [s.run.answer for s in final] == ["positive", "negative", "positive"]
    assert batching.most == 2  # columns 1 and 3 (one model) decoded together
    # the other model's column waited until the batched ones were done
    assert all(s[1].status == "waiting" for s in states if s[0].status == RUNNING)
