"""The Prompt search tab through its API, as gradio_client sees it (real SmolLM2 on llama.cpp; tiny searches)."""

from __future__ import annotations

import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.prompting.ape import DEFAULT_CRITIQUE_PROMPT, DEFAULT_PARAPHRASE_PROMPT, DEFAULT_PROPOSAL_PROMPT
from playground.ui.tabs.prompt_search import CONTROLS

MODEL = "smollm2-135m-instruct"


def form(**overrides) -> list:
    """The search's controls in the tab's order, then the identity token (``owner``)."""
    values = dict(task="sentiment", baseline="sentiment-question", model_id=MODEL, candidates=2, rounds=1, keep=1,
                  dev_size=3, test_size=2, seed=0, proposal_prompt=DEFAULT_PROPOSAL_PROMPT,
                  paraphrase_prompt=DEFAULT_PARAPHRASE_PROMPT, critique_prompt=DEFAULT_CRITIQUE_PROMPT, owner="")
    values.update(overrides)
    assert set(values) == set(CONTROLS) | {"owner"}
    return [values[name] for name in CONTROLS] + [values["owner"]]


def test_a_search_lists_its_candidates_and_tests_the_winner_against_the_baseline(client):
    status, chart, tested, table, winner = client.predict(*form(), api_name="/prompt_search")
    assert status.startswith("Done:") and "test examples the search never saw" in status
    rows = table["data"]
    assert 1 <= len(rows) <= 2 and table["headers"][:3] == ["#", "Round", "Origin"]
    assert all(row[1] == 1 and row[2] == "proposed" for row in rows)
    assert all(0 <= row[5] <= 100 for row in rows)
    assert [row[0] for row in tested["data"]] == ["hand-written baseline", "search winner"]
    assert all(row[1] == 2 for row in tested["data"])
    assert "Input: {{ input }}" in winner and rows[0][4] in winner
    points = chart["value"]["data"] if isinstance(chart, dict) and "value" in chart else chart
    assert points
    # The winner goes into this session's library of edited templates.
    used = client.predict(api_name="/prompt_search_use")
    assert "sentiment-question" in used and "Prompt Lab" in used


def test_use_before_any_search_and_bad_settings_are_clear_errors(app_url):
    fresh = Client(app_url, verbose=False)
    with pytest.raises(AppError, match="Run a search first"):
        fresh.predict(api_name="/prompt_search_use")
    with pytest.raises(AppError, match="the development split may take at most 11"):
        fresh.predict(*form(task="summarization", baseline="", dev_size=20), api_name="/prompt_search")
    with pytest.raises(AppError, match="line 1"):
        fresh.predict(*form(proposal_prompt="{% for demo in demos %}"), api_name="/prompt_search")
    with pytest.raises(AppError, match="not a zero-shot template of the task"):
        fresh.predict(*form(baseline="arithmetic-qa"), api_name="/prompt_search")


def test_cancel_stops_a_search_between_generations(app_url):
    client = Client(app_url, verbose=False)
    job = client.submit(*form(candidates=6, rounds=2, dev_size=10, test_size=10), api_name="/prompt_search")
    time.sleep(2.0)
    client.predict(api_name="/prompt_search_cancel")
    status = job.result(timeout=120)[0]
    assert status.startswith(("Cancelled", "No candidate was scored")), status
