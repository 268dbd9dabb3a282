"""The arena with fake engines: blind matches, one vote per match by its owner, the vote store's caps, the
Bradley-Terry leaderboard and the preference-pair export."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from playground.prompting.arena import (
    Arena,
    ArenaError,
    Contender,
    PendingMatches,
    VoteStore,
    bradley_terry,
    preference_pairs,
    standings,
)
from playground.prompting.lab import PromptLab
from playground.prompting.templates import TemplateLibrary
from tests.prompting.fakes import ScriptedEngine

LIBRARY = TemplateLibrary.load()


class ModelsByName:
    """ModelChoices whose model answers with its own name (so a test knows where an answer came from)."""

    def __init__(self):
        self.engines = {}

    def engine(self, model_id, engine="auto"):
        return self.engines.setdefault(model_id, ScriptedEngine(f"answer from {model_id}"))

    def label(self, model_id):
        return model_id

    def code_source(self, model_id, engine):
        return {}


@pytest.fixture
def arena(tmp_path):
    lab = PromptLab(LIBRARY, max_chars=2_000, token_limit=64)
    return Arena(lab, tmp_path, catalog_ids=["m1", "m2", "m3"], rng=random.Random(0))


def play(arena, owner="alice", first=Contender("zero_shot", "m1"), second=Contender("zero_shot", "m2"),
         text="Ana: Lunch at noon? Ben: Sure, see you there."):
    updates = list(arena.match(owner, "summarization", text, first, second, ModelsByName()))
    assert updates[-1].match_id and all(not u.match_id for u in updates[:-1])
    return updates[-1]


def test_a_match_hides_the_origin_and_the_vote_reveals_it(arena):
    seen, ids = set(), set()
    for _ in range(12):  # the sides are shuffled: each model shows up as A some of the time
        final = play(arena)
        assert {final.text_a, final.text_b} == {"answer from m1", "answer from m2"}
        # The id names nothing: random URL-safe text (where "m1" can turn up by chance), new for every match of
        # the same two contenders, never their strategy or model spelled out.
        assert re.fullmatch(r"[A-Za-z0-9_-]{24}", final.match_id) and final.match_id not in ids
        assert "zero_shot" not in final.match_id
        ids.add(final.match_id)
        reveal = arena.vote("alice", final.match_id, "a")
        assert final.text_a == f"answer from {reveal.a.model_id}"
        assert reveal.winner == reveal.a
        seen.add(reveal.a.model_id)
    assert seen == {"m1", "m2"}
    assert arena.vote_count("alice") == 12


def test_one_vote_per_match_and_only_by_its_owner(arena):
    final = play(arena)
    with pytest.raises(ArenaError, match="cannot be voted on"):
        arena.vote("mallory", final.match_id, "a")  # another person's match
    with pytest.raises(ArenaError, match="Vote a, b or tie"):
        arena.vote("alice", final.match_id, "both")
    arena.vote("alice", final.match_id, "tie")
    with pytest.raises(ArenaError, match="cannot be voted on"):
        arena.vote("alice", final.match_id, "a")  # used
    with pytest.raises(ArenaError, match="cannot be voted on"):
        arena.vote("alice", "made-up-id", "a")  # forged
    with pytest.raises(ArenaError, match="cannot be voted on"):
        arena.vote("", final.match_id, "a")


def test_refused_match_ups(arena):
    with pytest.raises(ArenaError, match="same strategy on the same model"):
        play(arena, second=Contender("zero_shot", "m1"))
    with pytest.raises(ArenaError, match="catalog's models only"):
        play(arena, second=Contender("zero_shot", "run:abc"))
    with pytest.raises(ArenaError, match="offers the strategies"):
        play(arena, second=Contender("zero_shot_cot", "m2"))  # summaries have no answer to reason towards
    with pytest.raises(ArenaError, match="identity"):
        play(arena, owner="")


def test_pending_matches_are_bounded_per_person_and_expire():
    clock = [0.0]
    pending = PendingMatches(per_owner=2, total=3, ttl_s=10, clock=lambda: clock[0])
    from playground.prompting.arena import PendingMatch

    def make(match_id, owner):
        return PendingMatch(match_id, owner, "summarization", "in", "p", (Contender("zero_shot", "a"),
                            Contender("few_shot", "a")), ("x", "y"), clock[0])

    for i in range(3):
        pending.add(make(f"a{i}", "alice"))
    with pytest.raises(ArenaError):
        pending.take("a0", "alice")  # the oldest of alice's was forgotten
    assert pending.take("a2", "alice").match_id == "a2"
    pending.add(make("b0", "bob"))
    pending.add(make("c0", "carol"))
    pending.add(make("d0", "dave"))  # the server's total: the oldest goes
    assert len(pending) == 3
    clock[0] = 11
    with pytest.raises(ArenaError):
        pending.take("d0", "dave")  # expired


def test_the_vote_store_is_capped_per_person_and_clips_texts(arena, tmp_path):
    store = VoteStore(tmp_path / "votes", max_votes=2)
    record = {"vote": "a", "a": {"strategy": "zero_shot", "model": "m1", "answer": "x"},
              "b": {"strategy": "few_shot", "model": "m1", "answer": "y"}, "prompt": "p"}
    store.add("alice", record)
    store.add("alice", record)
    with pytest.raises(ArenaError, match="2 votes"):
        store.add("alice", record)
    store.add("bob", record)
    assert store.count("alice") == 2 and len(store.all_votes()) == 3
    assert not any("alice" in p.name for p in (tmp_path / "votes").iterdir())  # hashed names
    (tmp_path / "votes" / "junk.jsonl").write_text("not json\n{\"vote\": \"nope\"}\n")
    assert len(store.all_votes()) == 3  # unreadable lines are left out

    long_text = "word " * 5_000
    final = play(arena, text=long_text[:1_900])
    arena.vote("alice", final.match_id, "b")
    stored = arena.store.votes("alice")[-1]
    assert len(stored["input"]) <= 8_000 and len(stored["a"]["answer"]) <= 4_000


def test_a_full_store_keeps_the_match_for_another_try(tmp_path):
    lab = PromptLab(LIBRARY, max_chars=2_000, token_limit=64)
    arena = Arena(lab, tmp_path, max_votes=1, rng=random.Random(1))
    arena.vote("alice", play(arena).match_id, "a")
    final = play(arena)
    with pytest.raises(ArenaError, match="the most one person may keep"):
        arena.vote("alice", final.match_id, "a")
    assert arena.pending.take(final.match_id, "alice")  # still there


def test_bradley_terry_orders_by_wins_and_treats_ties_as_half_wins():
    wins = np.array([[0, 8, 9], [2, 0, 6], [1, 4, 0]], dtype=float)
    strength = bradley_terry(wins)
    assert strength[0] > strength[1] > strength[2]
    assert np.isclose(np.exp(np.log(strength).mean()), 1.0)
    # Two evenly matched contenders: equal strength; all ties: equal too.
    assert np.allclose(bradley_terry(np.array([[0, 5], [5, 0]])), [1, 1])
    # One side never lost: still finite (the prior), and far ahead.
    lopsided = bradley_terry(np.array([[0, 10], [0, 0]]))
    assert np.all(np.isfinite(lopsided)) and lopsided[0] / lopsided[1] > 20
    # Someone who met nobody keeps strength 1.
    assert bradley_terry(np.array([[0, 3, 0], [1, 0, 0], [0, 0, 0]]))[2] == 1.0


def test_standings_count_votes_wins_losses_and_ties():
    def vote(a, b, outcome):
        return {"vote": outcome, "a": {"strategy": "zero_shot", "model": a}, "b": {"strategy": "zero_shot", "model": b}}

    votes = [vote("big", "small", "a")] * 6 + [vote("small", "big", "a")] * 2 + [vote("big", "small", "tie")] * 2
    rows = standings(votes)
    assert [r.model for r in rows] == ["big", "small"]
    big, small = rows
    assert (big.votes, big.wins, big.losses, big.ties) == (10, 6, 2, 2)
    assert (small.votes, small.wins, small.losses, small.ties) == (10, 2, 6, 2)
    assert big.rating > 1000 > small.rating
    assert np.isclose((big.rating + small.rating) / 2, 1000)
    assert standings([]) == []


def test_the_export_is_preference_pairs_without_ties(arena, tmp_path):
    with pytest.raises(ArenaError, match="nothing to export"):
        arena.export("alice")
    for outcome in ("a", "b", "tie"):
        arena.vote("alice", play(arena).match_id, outcome)
    path, count = arena.export("alice")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert count == len(lines) == 2
    for line in lines:
        assert set(line) == {"prompt", "chosen", "rejected"}
        assert "Lunch at noon?" in line["prompt"]  # the task's instruction with the input
        assert line["chosen"] != line["rejected"]
    votes = arena.store.votes("alice")
    first = votes[0]
    assert lines[0]["chosen"] == first["a"]["answer"] and lines[0]["rejected"] == first["b"]["answer"]
    assert preference_pairs([dict(first, vote="tie")]) == []


def test_the_leaderboard_covers_everyone(arena):
    arena.vote("alice", play(arena).match_id, "a")
    arena.vote("bob", play(arena, owner="bob", second=Contender("few_shot", "m3")).match_id, "b")
    board = arena.leaderboard()
    assert sum(row.votes for row in board) == 4
    assert {row.model for row in board} == {"m1", "m2", "m3"}


def test_an_empty_input_is_refused_before_anything_generates(arena):
    models = ModelsByName()
    with pytest.raises(Exception, match="input is empty"):
        list(arena.match("alice", "summarization", "   ", Contender("zero_shot", "m1"), Contender("zero_shot", "m2"),
                         models))
    assert not models.engines
