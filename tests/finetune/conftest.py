"""Fixtures of the fine-tuning tests: tiny random models of every family, small data files, a recording control.

The tiny models (a Llama-style decoder with the test session's chat template, a T5 and a BERT) are
built once per session into their own folders; a config names them by path, which is the "local
folder" route of the model loader. The packaged SmolLM2 is converted once into the session's shared
data dir (the same copy the engine tests use).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import build_tiny_bert, build_tiny_causal_lm

# Short everyday dialogues, so the tiny byte-level tokenizer keeps them under a small max_length.
DIALOGUES = [
    ("A: Can we meet at six?\nB: Yes, at the cafe.", "They meet at six at the cafe."),
    ("A: The tap drips.\nB: I will call a plumber.", "B will call a plumber about the tap."),
    ("A: Is the bus late?\nB: It comes in ten minutes.", "The bus comes in ten minutes."),
    ("A: Lunch on Friday?\nB: Sorry, I am busy.", "B is busy on Friday and skips lunch."),
    ("A: Where is the station?\nB: Turn left at the bank.", "The station is left at the bank."),
    ("A: Can I pay by card?\nB: Only cash, sorry.", "The shop takes only cash."),
]


class RecordingControl:
    """A job control that records every event and asks to stop once ``stop_after_steps`` step events were seen."""

    def __init__(self, stop_after_steps: int | None = None):
        self.events: list[dict] = []
        self.stop_after_steps = stop_after_steps
        self.stop_checks = 0

    def should_stop(self) -> bool:
        self.stop_checks += 1
        steps = sum(1 for e in self.events if e["event"] == "step")
        return self.stop_after_steps is not None and steps >= self.stop_after_steps

    def emit(self, event: dict) -> None:
        json.dumps(event)  # every event must be JSON-serialisable
        self.events.append(event)

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["event"] == kind]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def dialogue_rows(train_repeats: int = 1, test: int = 2):
    rows = [{"dialogue": d, "summary": s, "split": "train"} for d, s in DIALOGUES] * train_repeats
    rows += [{"dialogue": d, "summary": s, "split": "test"} for d, s in DIALOGUES[:test]]
    return rows


@pytest.fixture(scope="session")
def ft_models(tmp_path_factory, tiny_tokenizer, tiny_t5) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune-models")
    return {
        "llama": build_tiny_causal_lm(root / "tiny-llama", "llama", tiny_tokenizer, 512),
        "t5": tiny_t5,  # the session's tiny T5 (tests/conftest.py)
        "bert": build_tiny_bert(root / "tiny-bert", context=128),
    }


@pytest.fixture(scope="session")
def dialogue_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("finetune-data") / "dialogues.jsonl", dialogue_rows())


@pytest.fixture(scope="session")
def offline_resolver(tmp_path_factory):
    """Packaged weights and local folders only: an empty Hub cache and no network."""
    from playground.models.sources import SourceResolver

    return SourceResolver(None, offline=True, hub_cache_dir=tmp_path_factory.mktemp("empty-hub"))


def train_tiny_lora(run_dir: Path, model_folder: Path, data_file: Path, resolver) -> Path:
    """``run_dir`` after a real two-step LoRA run of a tiny model on the dialogues (no samples scored)."""
    from playground.finetune.config import FinetuneConfig
    from playground.finetune.train import train

    config = FinetuneConfig.from_dict({
        "model": str(model_folder), "data": str(data_file), "input_column": "dialogue",
        "target_column": "summary", "max_steps": 2, "learning_rate": 5e-2, "max_length": 128, "sample_count": 0,
        "validation_fraction": 0})
    train(config, run_dir, RecordingControl(), run_dir.parent / "data", resolver=resolver)
    return run_dir


@pytest.fixture
def control() -> RecordingControl:
    return RecordingControl()


EVENT_FIELDS = {
    "stage": {"event": str, "stage": str, "message": str},
    "start": {"event": str, "total_steps": int},
    "step": {"event": str, "step": int, "total_steps": int, "loss": float, "learning_rate": float, "epoch": float,
             "tokens_per_s": float, "eta_s": float},
    "eval": {"event": str, "step": int, "eval_loss": float},
    "done": {"event": str, "metrics": dict},
    "cancelled": {"event": str, "step": int},
}
# A stage event with counts: the phase (playground.finetune.progress.PHASES), units done of total, and the
# seconds left over every phase (None before any phase has a pace).
PHASE_FIELDS = {**EVENT_FIELDS["stage"], "phase": str, "done": int, "total": int, "eta_s": (float, type(None))}


def assert_event_shapes(events: list[dict]) -> None:
    """Every event has exactly the keys (and types) the UI reads."""
    for event in events:
        fields = PHASE_FIELDS if event["event"] == "stage" and "phase" in event else EVENT_FIELDS[event["event"]]
        assert set(event) == set(fields), event
        for key, kind in fields.items():
            assert isinstance(event[key], kind), (key, event)
            assert not isinstance(event[key], bool)
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    order = ["loading", "baseline", "training", "evaluating", "saving"]
    assert stages == sorted(stages, key=order.index), stages
