"""The Arena through its API, as gradio_client sees it (real SmolLM2 on llama.cpp, a few tokens each): a blind
match, one vote by its owner that reveals the origin, the leaderboard, the export as preference pairs, and the
judge beside ROUGE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client.exceptions import AppError

from tests.ui.conftest import issue_token

MODEL = "smollm2-135m-instruct"
TEXT = "The new library is bright, quiet and full of good books."


def match(client, token, first="zero_shot", second="few_shot", task="sentiment"):
    return client.predict(task, TEXT, first, MODEL, second, MODEL, token, api_name="/arena_match")


def test_a_blind_match_a_vote_the_reveal_the_leaderboard_and_the_export(client):
    token = issue_token(client)
    answer_a, answer_b, match_id, note = match(client, token)
    assert answer_a.strip() and answer_b.strip() and match_id and "vote" in note.lower()
    assert MODEL not in match_id and "shot" not in match_id  # the id says nothing of the origin

    with pytest.raises(AppError, match="cannot be voted on"):
        client.predict(match_id, "a", issue_token(client), api_name="/arena_vote")  # someone else
    reveal, spent, board = client.predict(match_id, "a", token, api_name="/arena_vote")
    assert spent == "" and "A =" in reveal and "B =" in reveal and MODEL in reveal
    assert ("zero-shot" in reveal.split("B =")[0]) != ("zero-shot" in reveal.split("B =")[1])  # one each side
    assert "Your votes so far: 1." in reveal
    with pytest.raises(AppError, match="cannot be voted on"):
        client.predict(match_id, "b", token, api_name="/arena_vote")  # one vote per match

    board = client.predict(api_name="/arena_leaderboard")
    assert board["headers"][:3] == ["strategy", "model", "rating"]
    rows = {row[0]: row for row in board["data"]}
    assert {"zero-shot", "few-shot"} <= set(rows) and all(row[3] >= 1 for row in rows.values())

    message, path = client.predict(token, api_name="/arena_export")
    pairs = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    assert "Preference pairs: 1" in message and len(pairs) == 1
    assert set(pairs[0]) == {"prompt", "chosen", "rejected"} and TEXT in pairs[0]["prompt"]
    assert pairs[0]["chosen"] == answer_a.strip()
    with pytest.raises(AppError, match="nothing to export"):
        client.predict(issue_token(client), api_name="/arena_export")


def test_refused_matches_and_votes(client):
    token = issue_token(client)
    with pytest.raises(AppError, match="same strategy on the same model"):
        match(client, token, "zero_shot", "zero_shot")
    with pytest.raises(AppError, match="cannot be voted on"):
        client.predict("forged-id", "a", token, api_name="/arena_vote")
    with pytest.raises(AppError, match="Vote a, b or tie"):
        client.predict("forged-id", "maybe", token, api_name="/arena_vote")


def test_the_judge_scores_beside_rouge_with_the_agreement(client):
    rubric = client.predict("summary-faithfulness", api_name="/arena_rubric")
    assert "{{ output }}" in rubric and "{{ reference }}" in rubric
    # Translation: short inputs; 16 new tokens for the answer and the judge keep the real model's work small.
    rubric = client.predict("translation-adequacy", api_name="/arena_rubric")
    status, summary, rows = client.predict("translation", MODEL, ["zero_shot"], 1, MODEL, "translation-adequacy",
                                           rubric, 16, issue_token(client), api_name="/arena_judge")
    assert "agree" in status and "Spearman" in status
    assert summary["headers"] == ["strategy", "examples", "ROUGE-L (%)", "judge", "unjudged"]
    assert len(rows["data"]) == 1 and rows["headers"][3] == "judge"
    score = rows["data"][0][3]
    assert score is None or 1 <= score <= 5  # a tiny judge may give no readable score; then it is unjudged
    with pytest.raises(AppError):
        client.predict("translation", MODEL, ["zero_shot"], 1, MODEL, "translation-adequacy",
                       "{{ ''.__class__.__mro__ }}", 16, issue_token(client), api_name="/arena_judge")
