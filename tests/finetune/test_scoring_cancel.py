"""A cancel while the base (or tuned) model is scored: honoured at every generated token and between evaluation
batches, so the run ends "cancelled" (not failed, not killed by force), in-process and through a real worker."""

from __future__ import annotations

import json
import time

import pytest

from playground.finetune.config import FinetuneConfig
from playground.finetune.encoding import DECODER
from playground.finetune.jobs import JobManager
from playground.finetune.runs import CANCELLED, RunStore
from playground.finetune.train import generate, train
from tests.finetune.conftest import DIALOGUES, RecordingControl, write_jsonl


class StopDuring(RecordingControl):
    """Asks to stop once the run has entered ``stage`` and ``after`` more stop checks were made there."""

    def __init__(self, stage: str, after: int = 0):
        super().__init__()
        self.stage, self.after = stage, after
        self.checks_in_stage = 0

    def should_stop(self) -> bool:
        self.stop_checks += 1
        if not any(e["event"] == "stage" and e["stage"] == self.stage for e in self.events):
            return False
        self.checks_in_stage += 1
        return self.checks_in_stage > self.after


@pytest.fixture(scope="module")
def tiny_llama(ft_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(ft_models["llama"]), AutoTokenizer.from_pretrained(ft_models["llama"])


@pytest.mark.parametrize("stop_after", [1, 3, 7])
def test_generation_asks_at_every_token_and_stops_when_told(tiny_llama, stop_after):
    model, tokenizer = tiny_llama
    checks = []

    def never():
        checks.append(1)
        return False

    generate(model, tokenizer, DECODER, ["A: hello\nB: hi"], 24, 128, should_stop=never)
    every_token = len(checks)
    assert every_token >= 12  # asked once per new token (fewer only if the model said EOS early)
    checks.clear()

    def soon():
        checks.append(1)
        return len(checks) >= stop_after

    answers = generate(model, tokenizer, DECODER, ["A: hello\nB: hi", "A: bye"], 24, 128, should_stop=soon)
    assert len(checks) == stop_after and len(answers) == 2  # ended at the check that said stop


def _scoring_config(ft_models, data, **extra) -> FinetuneConfig:
    values = {"model": str(ft_models["llama"]), "data": str(data), "input_column": "dialogue",
              "target_column": "summary", "template": "dialogue-tldr", "max_steps": 2, "batch_size": 2,
              "learning_rate": 1e-2, "max_length": 128, "sample_count": 4, "max_new_tokens": 64,
              "validation_fraction": 0.0, "seed": 3, **extra}
    return FinetuneConfig.from_dict(values)


@pytest.fixture(scope="module")
def scoring_data(tmp_path_factory):
    rows = [{"dialogue": d, "summary": s, "split": "train"} for d, s in DIALOGUES]
    rows += [{"dialogue": d, "summary": s, "split": "test"} for d, s in DIALOGUES * 2]
    return write_jsonl(tmp_path_factory.mktemp("scoring") / "dialogues.jsonl", rows)


@pytest.mark.parametrize("stage, after", [
    ("baseline", 0),    # at once: inside the base model's test-loss evaluation
    ("baseline", 6),    # a few checks in: inside the base model's answers
    ("evaluating", 6),  # the fine-tuned model's answers, after training
])
def test_a_cancel_while_scoring_ends_the_run_cancelled(tmp_path, ft_models, scoring_data, offline_resolver,
                                                       stage, after):
    control = StopDuring(stage, after)
    outcome = train(_scoring_config(ft_models, scoring_data), tmp_path / "run", control, tmp_path / "data",
                    resolver=offline_resolver)
    assert outcome.cancelled and control.events[-1]["event"] == "cancelled"
    assert control.of("stage")[-1]["stage"] == stage  # no later stage began
    # The check that said stop was the last but at most one (the one after a generation cut short).
    assert after + 1 <= control.checks_in_stage <= after + 2
    assert not control.of("done")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml"]  # nothing saved, no scratch
    if stage == "baseline":
        assert not control.of("start")  # training never began


def test_a_cancel_through_the_worker_while_the_base_model_answers(tmp_path, ft_models, scoring_data):
    """The real path: the cancel file and SIGTERM reach a worker busy generating the base model's answers."""
    config = _scoring_config(ft_models, scoring_data, sample_count=12, max_new_tokens=400, batch_size=1,
                             max_length=512)
    data_dir = tmp_path / "data"
    store = RunStore(data_dir / "runs")
    manager = JobManager(store, 1, poll_s=0.05, grace_s=90.0,
                         env={"PLAYGROUND_DATA_DIR": str(data_dir), "PLAYGROUND_OFFLINE": "1"})
    try:
        run_id = manager.submit("alice", config.to_dict())
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            stages = [json.loads(line).get("stage") for line in
                      (store.path(run_id) / "progress.jsonl").read_text().splitlines()
                      if '"stage"' in line] if (store.path(run_id) / "progress.jsonl").exists() else []
            if "baseline" in stages or store.status(run_id).terminal:
                break
            time.sleep(0.05)
        assert "baseline" in stages, store.status(run_id)
        time.sleep(1.0)  # into the answers (the test loss of a tiny model takes a moment)
        asked = time.monotonic()
        manager.cancel(run_id, "alice")
        record = manager.wait(run_id, 120)
        took = time.monotonic() - asked
    finally:
        manager.shutdown(cancel_running=True)
    assert record.status == CANCELLED and record.message == "Cancelled at step 0.", record.message
    assert took < 60  # well inside the 90 s grace: the worker stopped itself, nobody killed it
    assert not [p for p in store.path(run_id).iterdir() if p.name.startswith(".scratch-")]
    print(f"\ncancel during the base model's answers ended the run in {took:.2f} s")
