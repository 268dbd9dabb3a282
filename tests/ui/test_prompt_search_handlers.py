"""The Prompt search tab's handlers called directly, over the controller with a scripted engine: no live app."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from playground.config import Settings
from playground.prompting.ape import DEFAULT_CRITIQUE_PROMPT, DEFAULT_PARAPHRASE_PROMPT, DEFAULT_PROPOSAL_PROMPT, \
    PromptSearch, SearchProgress
from playground.prompting.templates import TemplateLibrary
from playground.services import Services
from playground.ui.i18n import Texts
from playground.ui.tabs.prompt_search import CONTROLS, PromptSearchHandlers, progress_text
from tests.prompting.fakes import ScriptedEngine
from tests.prompting.test_ape import oracle

REQUEST = SimpleNamespace(headers={"accept-language": "pt-BR"}, session_hash="session-ape",
                          client=SimpleNamespace(host="127.0.0.1"))


class Models:
    def engine(self, model_id, engine):
        return ScriptedEngine(oracle)


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    return Services.create(Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path_factory.mktemp("ape-handlers")),
                                              "PLAYGROUND_OFFLINE": "1"}))


@pytest.fixture
def handlers(services, monkeypatch):
    monkeypatch.setattr(services, "models_for", lambda owner="": Models())
    return PromptSearchHandlers(services, PromptSearch(TemplateLibrary.load()))


def values(**overrides) -> list:
    controls = dict(task="sentiment", baseline="sentiment-question", model_id="m", candidates=3.0, rounds=2.0,
                    keep=2.0, dev_size=4.0, test_size=3.0, seed=0.0, proposal_prompt=DEFAULT_PROPOSAL_PROMPT,
                    paraphrase_prompt=DEFAULT_PARAPHRASE_PROMPT, critique_prompt=DEFAULT_CRITIQUE_PROMPT)
    controls.update(overrides)
    return [controls[name] for name in CONTROLS] + [""]


def test_a_search_gives_translated_tables_and_a_winner_to_save(handlers):
    steps = []
    status, chart, tested, table, winner_text, winner = handlers.run(
        REQUEST, *values(), progress=lambda fraction, desc="": steps.append(desc))
    assert status.startswith("Pronto:") and "referência escrita à mão" in status
    assert list(table.columns)[:3] == ["Nº", "Rodada", "Origem"] and set(table["Origem"]) <= \
        {"proposta", "paráfrase", "crítica"}
    assert list(tested.iloc[:, 0]) == ["referência escrita à mão", "vencedora da busca"]
    assert set(chart["series"]) == {"melhor até aqui", "melhor da rodada"} and chart["score"].max() == 100.0
    assert "Input: {{ input }}" in winner_text and winner["template_id"] == "sentiment-question"
    assert any("avaliando a candidata" in step for step in steps)
    saved, line = handlers.use_winner(winner, {"other": {"template": "x", "system": ""}}, REQUEST)
    assert saved["sentiment-question"]["template"] == winner_text and "other" in saved
    assert "sentiment-question" in line and "Classificação de sentimento" in line


def test_nothing_to_use_and_bad_settings_are_messages(handlers):
    with pytest.raises(gr.Error, match="Faça uma busca primeiro"):
        handlers.use_winner({}, {}, REQUEST)
    with pytest.raises(gr.Error, match="at most 59"):
        handlers.check(REQUEST, *values(dev_size=60.0))
    with pytest.raises(gr.Error, match="whole numbers"):
        handlers.check(REQUEST, *values(seed="x"))


def test_the_progress_line_counts_candidates_examples_and_time_left():
    line = progress_text(SearchProgress("score", 1, 2, 3, 8, 5, 20, 40, 336, 20.0), Texts("en"))
    assert line.startswith("Round 1 of 2 · scoring candidate 3 of 8: example 5 of 20 · 40 of 336 generations")
    assert "about 148 s left" in line
