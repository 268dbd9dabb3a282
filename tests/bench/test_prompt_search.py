"""The prompt-search bench figures on a scripted engine (tests never assert times; they check the figures)."""

from __future__ import annotations

from playground.bench.core import BenchOptions
from playground.bench.prompt_search import SEARCH_TIME, WINNER_GAIN, bench_prompt_search
from tests.prompting.test_ape import oracle
from tests.prompting.fakes import ScriptedEngine


class Provider:
    def __init__(self, engine):
        self.engine = engine

    def get(self, model_id, engine):
        return self.engine


def test_the_search_figures_report_time_and_the_winner_against_the_baseline():
    time_figure, gain = bench_prompt_search(Provider(ScriptedEngine(oracle)), BenchOptions(quick=True))
    assert time_figure.name.startswith("Prompt search: APE 4 candidates x 2 rounds on 10 dev")
    assert time_figure.value > 0 and time_figure.passed is None and "generations" in time_figure.detail
    assert gain.name == WINNER_GAIN.name and gain.value > 0 and "hand-written sentiment-question" in gain.detail


def test_a_failing_engine_fails_both_figures():
    class Broken:
        def get(self, model_id, engine):
            raise RuntimeError("no model")

    figures = bench_prompt_search(Broken(), BenchOptions())
    assert [f.name for f in figures] == [SEARCH_TIME.name, WINNER_GAIN.name]
    assert all(f.passed is False and "no model" in f.detail for f in figures)
