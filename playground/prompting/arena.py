"""A blind arena: two answers to one input from two (strategy, model) choices, a person's vote, a leaderboard.

The steps of one match (each a method of :class:`Arena`, the Arena tab's controller):

1. :meth:`Arena.match` takes the task, the input and two different contenders (a strategy and a catalog
   model each), shuffles which one is shown as A, and generates both answers through the Prompt Lab's own
   side-by-side code (``PromptLab.columns`` and ``run_columns``: the same templates, settings, generation slots
   and shared decode loops, each answer within the arena's token cap). Once both answers are in, the match is kept **on the server** (:class:`PendingMatches`), under an
   id made by ``secrets`` that names nothing; the page gets only the id and the two texts, so nobody can
   learn which side is which before voting, nor forge a match.
2. :meth:`Arena.vote` takes the id, "a", "b" or "tie", and the voter's verified owner id (from the signed
   identity token, never from anything the page says). A match can be voted on once, by the person it was
   made for; the vote is stored (:class:`VoteStore`) and the origin of A and B is revealed.
3. :meth:`Arena.leaderboard` fits a Bradley-Terry model (:func:`bradley_terry`) over every vote on this server
   and lists each contender's rating with its votes, wins, losses and ties.
4. :meth:`Arena.export` writes a person's own votes as preference pairs, one JSON object a line:
   ``{"prompt": ..., "chosen": ..., "rejected": ...}`` (ties are skipped), the format the Fine-tune tab's
   preference tuning (DPO) reads. ``prompt`` is the task's zero-shot instruction with the input (what a tuned
   model would be asked), ``chosen`` and ``rejected`` the two answers.

Only catalog models take part: the leaderboard is shared by the room, and a person's fine-tuned runs are
theirs alone. Budgets: answers and inputs are clipped before they are stored, a person keeps at most
``max_votes`` votes and a few unvoted matches, and every file is written atomically inside the data dir's
budget. The judge (``playground.prompting.judge``) is reached from here too (:meth:`Arena.judge`), so the
tab has one controller. Nothing here imports gradio.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import secrets
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from playground.atomic import atomic_write_jsonl, atomic_write_text
from playground.errors import InvalidParameterError, PlaygroundError
from playground.prompting.columns import CANCELLED, DONE, FAILED, ColumnState, run_columns
from playground.prompting.lab import LabRequest, ModelChoices, PromptLab
from playground.prompting.strategies import PromptSetup, StrategyConfig, check_input, prompt_variables
from playground.prompting.tasks import ZERO_SHOT, get_task
from playground.prompting.templates import parse_template

ARENA_DIR = "arena"  # under the data dir: votes/<owner hash>.jsonl and exports/<owner hash>.jsonl
SIDES = ("a", "b")
VOTES = ("a", "b", "tie")
MAX_VOTES_PER_OWNER = 500
MAX_ANSWER_CHARS = 4_000  # an answer as stored with its vote (and exported)
MAX_INPUT_CHARS = 8_000  # the input and the prompt as stored with a vote
MAX_PENDING_PER_OWNER = 8  # matches made but not voted on yet; the oldest is forgotten first
MAX_PENDING = 5_000  # on the whole server
PENDING_TTL_S = 2 * 3600
MAX_VOTE_FILE_BYTES = 4 * (2 * MAX_ANSWER_CHARS + 2 * MAX_INPUT_CHARS + 1_000) * MAX_VOTES_PER_OWNER
BT_ITERATIONS = 500
BT_PRIOR = 0.1  # a virtual tie between every pair that met: keeps a contender that never won (or lost) finite
ELO_BASE, ELO_SCALE = 1000.0, 400.0  # ratings shown as 1000 + 400 log10(strength), Elo's scale


class ArenaError(InvalidParameterError):
    """A match or vote the arena refuses: an unknown or used match, a bad vote, a full vote store."""


@dataclass(frozen=True)
class Contender:
    """One side's choice: a prompting strategy on a model."""

    strategy: str
    model_id: str

    @property
    def label(self) -> str:
        return f"{self.strategy} · {self.model_id}"

    def as_dict(self) -> dict:
        return {"strategy": self.strategy, "model": self.model_id}


@dataclass(frozen=True)
class PendingMatch:
    """A match the server made and keeps until it is voted on: what A and B really are."""

    match_id: str
    owner: str
    task: str
    input: str
    prompt: str  # the task's zero-shot instruction with the input (the export's prompt)
    contenders: tuple[Contender, Contender]  # (A, B)
    answers: tuple[str, str]
    made: float  # time.monotonic()


@dataclass(frozen=True)
class MatchUpdate:
    """One step of a match: the two answers so far and, once both are in, the match id to vote with."""

    text_a: str = ""
    text_b: str = ""
    done_a: bool = False
    done_b: bool = False
    match_id: str = ""  # set on the last update, when the match can be voted on


@dataclass(frozen=True)
class Reveal:
    """What a vote shows: the vote and who A and B were."""

    match_id: str
    vote: str
    a: Contender
    b: Contender

    @property
    def winner(self) -> Contender | None:
        return {"a": self.a, "b": self.b}.get(self.vote)


@dataclass(frozen=True)
class Standing:
    """One row of the leaderboard."""

    contender: str  # "strategy · model"
    strategy: str
    model: str
    rating: float  # 1000 + 400 log10(Bradley-Terry strength); the room's average is about 1000
    votes: int
    wins: int
    losses: int
    ties: int

    def as_row(self) -> dict:
        return {"strategy": self.strategy, "model": self.model, "rating": round(self.rating, 1),
                "votes": self.votes, "wins": self.wins, "losses": self.losses, "ties": self.ties}


def clip(text: str, limit: int) -> str:
    text = text if isinstance(text, str) else str(text or "")
    return text if len(text) <= limit else text[:limit]


def owner_file(owner: str) -> str:
    """A person's file name: a hash of their owner id (the id itself never becomes a path)."""
    return hashlib.sha256(f"arena:{owner}".encode("utf-8")).hexdigest()[:32] + ".jsonl"


# ------------------------------------------------------------------------------ the matches not voted on yet


class PendingMatches:
    """Matches made and not yet voted on, kept in memory: at most ``per_owner`` a person (oldest forgotten
    first), ``total`` on the server, each for ``ttl_s``. Thread-safe."""

    def __init__(self, per_owner: int = MAX_PENDING_PER_OWNER, total: int = MAX_PENDING,
                 ttl_s: float = PENDING_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_owner, self.total, self.ttl_s, self.clock = per_owner, total, ttl_s, clock
        self._lock = threading.Lock()
        self._matches: dict[str, PendingMatch] = {}  # insertion order: oldest first

    def _expire(self) -> None:
        now = self.clock()
        for match_id in [m for m, match in self._matches.items() if now - match.made > self.ttl_s]:
            del self._matches[match_id]

    def add(self, match: PendingMatch) -> None:
        with self._lock:
            self._expire()
            mine = [m for m, match_ in self._matches.items() if match_.owner == match.owner]
            for match_id in mine[:max(0, len(mine) - self.per_owner + 1)]:
                del self._matches[match_id]
            while len(self._matches) >= self.total:
                del self._matches[next(iter(self._matches))]
            self._matches[match.match_id] = match

    def take(self, match_id: str, owner: str) -> PendingMatch:
        """The match, removed (one vote per match); ArenaError when it is unknown, used, expired or another's."""
        with self._lock:
            self._expire()
            match = self._matches.get(match_id) if isinstance(match_id, str) else None
            if match is None or not owner or match.owner != owner:
                raise ArenaError("This match cannot be voted on: it was voted on already, it expired, or it is not "
                                 "yours. Make a new match.").keyed("arena.error.no_match")
            del self._matches[match_id]
            return match

    def put_back(self, match: PendingMatch) -> None:
        with self._lock:
            self._matches.setdefault(match.match_id, match)

    def __len__(self) -> int:
        with self._lock:
            return len(self._matches)


# ------------------------------------------------------------------------------ the votes on disk


class VoteStore:
    """Each person's votes as JSONL (``root/<owner hash>.jsonl``), rewritten atomically with each vote and capped
    at ``max_votes``; ``all_votes`` reads everyone's for the leaderboard (a file that does not read is left out)."""

    def __init__(self, root: Path, max_votes: int = MAX_VOTES_PER_OWNER,
                 make_room: Callable[[int], object] | None = None) -> None:
        self.root = Path(root)
        self.max_votes = max_votes
        self.make_room = make_room  # the data dir's budget
        self._lock = threading.Lock()

    def path(self, owner: str) -> Path:
        return self.root / owner_file(owner)

    @staticmethod
    def _read(path: Path) -> list[dict]:
        try:
            if path.is_symlink() or path.stat().st_size > MAX_VOTE_FILE_BYTES:
                return []
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return []
        votes = []
        for line in lines:
            try:
                vote = json.loads(line)
            except ValueError:
                continue
            if isinstance(vote, dict) and vote.get("vote") in VOTES and isinstance(vote.get("a"), dict) \
                    and isinstance(vote.get("b"), dict):
                votes.append(vote)
        return votes

    def votes(self, owner: str) -> list[dict]:
        return self._read(self.path(owner)) if owner else []

    def count(self, owner: str) -> int:
        return len(self.votes(owner))

    def add(self, owner: str, record: dict) -> int:
        """Store one vote of ``owner``; returns how many they now have. ArenaError when their store is full."""
        if not owner:
            raise ArenaError("Voting needs this browser's identity; reload the page and try again.").keyed(
                "arena.error.no_owner")
        with self._lock:
            votes = self.votes(owner)
            if len(votes) >= self.max_votes:
                raise ArenaError(f"You have {len(votes)} votes, the most one person may keep here; export them "
                                 f"and ask the host to make room.").keyed("arena.error.full", count=len(votes))
            votes.append(record)
            text = "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in votes)
            if self.make_room is not None:
                self.make_room(len(text.encode("utf-8")))
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path(owner), text, "your arena votes")
            return len(votes)

    def all_votes(self) -> list[dict]:
        if not self.root.is_dir():
            return []
        votes: list[dict] = []
        for path in sorted(self.root.glob("*.jsonl")):
            if path.is_file():
                votes.extend(self._read(path))
        return votes


# ------------------------------------------------------------------------------ the leaderboard


def bradley_terry(wins: np.ndarray, iterations: int = BT_ITERATIONS, prior: float = BT_PRIOR,
                  tolerance: float = 1e-10) -> np.ndarray:
    """Bradley-Terry strengths from a matrix of wins (``wins[i, j]``: how often i beat j; a tie counts half a
    win each way), by the minorise-maximise iteration (Hunter 2004): ``p_i <- W_i / sum_j n_ij / (p_i + p_j)``.

    ``prior`` adds that many virtual ties to every pair that met, so a contender that never won stays above 0
    and one that never lost stays finite. Strengths are scaled to a geometric mean of 1. A contender that met
    nobody keeps strength 1.
    """
    wins = np.asarray(wins, dtype=float)
    n = wins.shape[0]
    if wins.shape != (n, n):
        raise InvalidParameterError("The wins matrix must be square.")
    games = wins + wins.T
    met = games > 0
    w = wins + prior / 2 * met
    games = w + w.T
    strength = np.ones(n)
    total_wins = w.sum(axis=1)
    active = games.sum(axis=1) > 0
    for _ in range(iterations):
        denominator = (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        updated = strength.copy()
        updated[active] = total_wins[active] / denominator[active]
        if active.any():
            updated[active] /= math.exp(np.log(updated[active]).mean())
        if np.max(np.abs(updated - strength)) < tolerance:
            strength = updated
            break
        strength = updated
    return strength


def standings(votes: Iterable[Mapping]) -> list[Standing]:
    """The leaderboard of ``votes`` (stored records): Bradley-Terry ratings, highest first, with the counts."""
    names: dict[tuple[str, str], int] = {}
    pairs = []
    for vote in votes:
        a, b = vote["a"], vote["b"]
        keys = []
        for side in (a, b):
            key = (str(side.get("strategy", "")), str(side.get("model", "")))
            keys.append(names.setdefault(key, len(names)))
        if keys[0] != keys[1]:
            pairs.append((keys[0], keys[1], vote["vote"]))
    n = len(names)
    if not n:
        return []
    wins = np.zeros((n, n))
    counts = np.zeros((n, 4), dtype=int)  # votes, wins, losses, ties
    for i, j, outcome in pairs:
        counts[[i, j], 0] += 1
        if outcome == "tie":
            wins[i, j] += 0.5
            wins[j, i] += 0.5
            counts[[i, j], 3] += 1
        else:
            winner, loser = (i, j) if outcome == "a" else (j, i)
            wins[winner, loser] += 1
            counts[winner, 1] += 1
            counts[loser, 2] += 1
    strength = bradley_terry(wins)
    rows = []
    for (strategy, model), i in names.items():
        if not counts[i, 0]:
            continue
        rows.append(Standing(f"{strategy} · {model}", strategy, model, ELO_BASE + ELO_SCALE * math.log10(strength[i]),
                             *(int(c) for c in counts[i])))
    return sorted(rows, key=lambda s: (-s.rating, -s.votes, s.contender))


def preference_pairs(votes: Iterable[Mapping]) -> list[dict]:
    """``{"prompt", "chosen", "rejected"}`` for each vote that preferred one side (ties are skipped)."""
    pairs = []
    for vote in votes:
        if vote.get("vote") not in ("a", "b"):
            continue
        loser = "b" if vote["vote"] == "a" else "a"
        chosen, rejected = vote[vote["vote"]].get("answer", ""), vote[loser].get("answer", "")
        if chosen and rejected and chosen != rejected:
            pairs.append({"prompt": vote.get("prompt", ""), "chosen": chosen, "rejected": rejected})
    return pairs


# ------------------------------------------------------------------------------ the controller


class Arena:
    """The Arena tab's logic: matches over the Prompt Lab's generation, votes, leaderboard, export and judge."""

    def __init__(self, lab: PromptLab, data_dir: Path, *, catalog_ids: Sequence[str] = (),
                 make_room: Callable[[int], object] | None = None, max_votes: int = MAX_VOTES_PER_OWNER,
                 pending: PendingMatches | None = None, rng: random.Random | None = None,
                 max_new_tokens: int | None = None) -> None:
        self.lab = lab
        self.max_new_tokens = max_new_tokens or lab.token_limit  # new tokens each answer may have at most
        self.root = Path(data_dir) / ARENA_DIR
        self.catalog_ids = tuple(catalog_ids)  # empty: any model id the choices accept
        self.store = VoteStore(self.root / "votes", max_votes, make_room)
        self.make_room = make_room
        self.pending = pending or PendingMatches()
        self._rng = rng or random.SystemRandom()
        self._rng_lock = threading.Lock()

    # -- what the controls offer -------------------------------------------------------------
    def strategies_for(self, task: str) -> tuple[str, ...]:
        return self.lab.strategies_for(task)

    def check_contenders(self, task: str, first: Contender, second: Contender) -> None:
        allowed = self.strategies_for(task)
        for contender in (first, second):
            if contender.strategy not in allowed:
                raise ArenaError(f"The task {task!r} offers the strategies {', '.join(allowed)}, not "
                                 f"{contender.strategy!r}.")
            if not contender.model_id:
                raise ArenaError("Choose a model for both sides.").keyed("arena.error.no_model")
            if self.catalog_ids and contender.model_id not in self.catalog_ids:
                raise ArenaError(f"The arena takes the catalog's models only (its leaderboard is shared by the "
                                 f"room), not {contender.model_id!r}.").keyed("arena.error.catalog_only")
        if first == second:
            raise ArenaError("Both sides are the same strategy on the same model: choose two different ones."
                             ).keyed("arena.error.same")

    def request(self, task: str, text: str, strategy: str, engine: str = "auto") -> LabRequest:
        """The Prompt Lab request behind a match: the task's first template, the settings that suit ``strategy``."""
        template = self.lab.templates_for(task, ZERO_SHOT)[0]
        return LabRequest(task=task, template_id=template.id, model_id="", text=text,
                          params=self.lab.suggested(task, strategy), strategy=StrategyConfig(strategy=strategy),
                          template_text=template.template, system=template.system, engine=engine)

    def instruction(self, task: str, text: str) -> str:
        """The export's prompt: the task's zero-shot template rendered with the input (the user message)."""
        template = self.lab.templates_for(task, ZERO_SHOT)[0]
        setup = PromptSetup.from_template(template, StrategyConfig(strategy=ZERO_SHOT))
        return parse_template(setup.template).render(prompt_variables(setup, text.strip(), ()))

    # -- a match ---------------------------------------------------------------------------
    def match(self, owner: str, task: str, text: str, first: Contender, second: Contender, models: ModelChoices,
              cancel: threading.Event | None = None, engine: str = "auto") -> Iterator[MatchUpdate]:
        """Generate both answers (A and B in a random order); the last update carries the match id."""
        if not owner:
            raise ArenaError("A match needs this browser's identity; reload the page and try again.").keyed(
                "arena.error.no_owner")
        get_task(task)
        self.check_contenders(task, first, second)
        check_input(text)
        with self._rng_lock:
            swap = self._rng.random() < 0.5
        a, b = (second, first) if swap else (first, second)
        request = self.lab.checked(self.request(task, text, a.strategy, engine))
        prompt = self.instruction(task, text)
        columns = [column for _, column in self.lab.columns(request, [(a.strategy, a.model_id),
                                                                      (b.strategy, b.model_id)])]
        if self.max_new_tokens:  # each side's settings suit its strategy, within the arena's token cap
            columns = [replace(c, params=replace(c.params, max_new_tokens=min(c.params.max_new_tokens,
                                                                              self.max_new_tokens)))
                       for c in columns]
        states: list[ColumnState | None] = []
        for states in run_columns(columns, request.text, self.lab.demos(task),
                                  lambda model_id: models.engine(model_id, engine), embedder=self.lab.embedder,
                                  cancel=cancel, slot=self.lab.slot):
            yield self._update(states)
        failed = [s for s in states if s is not None and s.status == FAILED]
        if failed:
            # The error may name a model; no match is kept, so there is nothing left to hide.
            raise ArenaError(f"An answer could not be made, so there is no match to vote on: {failed[0].error}")
        if any(s is None or s.status != DONE or s.run is None for s in states):
            yield self._update(states)  # stopped: no match to vote on
            return
        answers = tuple(clip(s.run.output.strip(), MAX_ANSWER_CHARS) for s in states)
        match = PendingMatch(secrets.token_urlsafe(18), owner, task, clip(text.strip(), MAX_INPUT_CHARS),
                             clip(prompt, MAX_INPUT_CHARS), (a, b), answers, time.monotonic())
        self.pending.add(match)
        yield MatchUpdate(answers[0], answers[1], True, True, match.match_id)

    @staticmethod
    def _update(states: Sequence[ColumnState | None]) -> MatchUpdate:
        texts = [s.text if s is not None else "" for s in states]
        done = [s is not None and s.status in (DONE, CANCELLED, FAILED) for s in states]
        return MatchUpdate(texts[0], texts[1], done[0], done[1])

    def vote(self, owner: str, match_id: str, vote: str) -> Reveal:
        """Record ``owner``'s vote on their match (once) and reveal who A and B were."""
        vote = (vote or "").strip().lower()
        if vote not in VOTES:
            raise ArenaError(f"Vote a, b or tie, not {vote!r}.").keyed("arena.error.bad_vote")
        match = self.pending.take(match_id, owner)
        record = {"match": match.match_id, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "task": match.task, "input": match.input, "prompt": match.prompt, "vote": vote,
                  "a": {**match.contenders[0].as_dict(), "answer": match.answers[0]},
                  "b": {**match.contenders[1].as_dict(), "answer": match.answers[1]}}
        try:
            self.store.add(owner, record)
        except PlaygroundError:
            self.pending.put_back(match)  # a full store or disk: the vote can be tried again
            raise
        return Reveal(match.match_id, vote, *match.contenders)

    # -- what the votes add up to ----------------------------------------------------------------
    def leaderboard(self) -> list[Standing]:
        """Every vote on this server, as Bradley-Terry ratings with vote counts."""
        return standings(self.store.all_votes())

    def vote_count(self, owner: str) -> int:
        return self.store.count(owner)

    def export(self, owner: str) -> tuple[Path, int]:
        """(the file, its pair count) of ``owner``'s votes as preference pairs in JSONL; ties are skipped."""
        pairs = preference_pairs(self.store.votes(owner))
        if not pairs:
            raise ArenaError("There is nothing to export yet: vote A or B on a match first (ties are not "
                             "preferences).").keyed("arena.error.nothing_to_export")
        path = self.root / "exports" / owner_file(owner)
        size = sum(len(json.dumps(p, ensure_ascii=False).encode("utf-8")) + 1 for p in pairs)
        if self.make_room is not None:
            self.make_room(size)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_jsonl(path, pairs, "the preference pairs")
        return path, len(pairs)

    # -- the judge -------------------------------------------------------------------------
    def judge(self, *args, **kwargs):
        """:func:`playground.prompting.judge.judge_evaluation` over this arena's Prompt Lab."""
        from playground.prompting.judge import judge_evaluation

        return judge_evaluation(self.lab, *args, **kwargs)
