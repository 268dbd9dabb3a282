"""The run store: run directories, atomic files, owners, incremental progress; and the worker on its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from playground.errors import InvalidParameterError
from playground.finetune.runs import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    RunNotFoundError,
    RunStore,
    summarize_config,
)
from playground.finetune.worker import JobControl, outcome

ROOT = Path(__file__).resolve().parents[2]
QUICK = "tests.finetune.fake_jobs:quick"


def _leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if ".partial" in p.name]


def test_create_writes_a_complete_run(tmp_path):
    store = RunStore(tmp_path / "runs")
    run_id = store.create("alice", {"model": "smollm2-135m-instruct", "method": "lora", "lora": {"r": 8},
                                    "data": Path("examples/data/dialogues.jsonl")}, QUICK)
    path = store.path(run_id)
    assert sorted(p.name for p in path.iterdir()) == ["config.yaml", "job.json", "status.json"]
    config = yaml.safe_load((path / "config.yaml").read_text())
    assert config == {"model": "smollm2-135m-instruct", "method": "lora", "lora": {"r": 8},
                      "data": "examples/data/dialogues.jsonl"}
    job = json.loads((path / "job.json").read_text())
    assert job["entry"] == QUICK and job["owner"] == "alice" and job["created"] > 0
    assert json.loads((path / "status.json").read_text())["status"] == QUEUED
    record = store.get(run_id, "alice")
    assert (record.id, record.status, record.owner, record.path) == (run_id, QUEUED, "alice", path)
    assert record.config_summary.startswith("model=smollm2-135m-instruct · method=lora")
    assert record.step is None and record.events == 0 and record.progress is None
    assert _leftovers(tmp_path) == []


def test_a_run_keeps_its_own_copy_of_an_uploaded_file(tmp_path):
    """An upload lives in a temporary folder that is cleaned up; a run waiting in the queue must still find it."""
    upload = tmp_path / "gradio-cache" / "abc123" / "my data.jsonl"
    upload.parent.mkdir(parents=True)
    upload.write_text('{"dialogue": "a", "summary": "b"}\n')
    store = RunStore(tmp_path / "runs")
    run_id = store.create("alice", {"data": str(upload)}, QUICK, keep_files=("data",))
    upload.unlink()  # the cache is cleaned
    kept = Path(store.config(run_id)["data"])
    assert kept == store.path(run_id) / "inputs" / "my data.jsonl"
    assert kept.read_text() == '{"dialogue": "a", "summary": "b"}\n'
    with pytest.raises(InvalidParameterError, match="upload it again"):
        store.create("alice", {"data": str(upload)}, QUICK, keep_files=("data",))
    assert _leftovers(tmp_path) == [] and len(store.run_ids()) == 1


def test_run_ids_are_unique_and_sort_by_creation(tmp_path):
    store = RunStore(tmp_path)
    ids = [store.create("alice", {}, QUICK) for _ in range(20)]
    assert len(set(ids)) == 20
    assert ids == sorted(ids) == store.run_ids()
    assert [r.id for r in store.list_runs("alice")] == ids[::-1]  # newest first


def test_bad_owner_and_entry_are_refused(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(InvalidParameterError, match="owner"):
        store.create("", {}, QUICK)
    with pytest.raises(InvalidParameterError, match="must look like 'package.module:function'"):
        store.create("alice", {}, "os.system")
    assert store.run_ids() == [] and list(tmp_path.iterdir()) == []


def test_one_owner_never_sees_another_owners_runs(tmp_path):
    store = RunStore(tmp_path)
    mine = store.create("alice", {}, QUICK)
    theirs = store.create("bob", {}, QUICK)
    assert [r.id for r in store.list_runs("alice")] == [mine]
    assert [r.id for r in store.list_runs("bob")] == [theirs]
    assert store.list_runs("carol") == []
    with pytest.raises(RunNotFoundError, match="There is no run"):
        store.get(theirs, "alice")
    with pytest.raises(RunNotFoundError):
        store.read_events(theirs, 0, owner="alice")
    for bad in ("../" + mine, "nonsense", "20990101-000000-000000-abcdef"):
        with pytest.raises(RunNotFoundError):
            store.get(bad, "alice")


def test_status_writes_are_atomic_and_terminal_is_final(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create("alice", {}, QUICK)
    assert store.set_status(run_id, RUNNING, pid=123, started=1.0)
    status = store.status(run_id)
    assert (status.status, status.pid, status.started, status.finished) == (RUNNING, 123, 1.0, None)
    assert store.set_status(run_id, SUCCEEDED, message="Finished.")
    assert store.status(run_id).finished is not None and store.status(run_id).pid == 123
    assert not store.set_status(run_id, FAILED, message="too late")
    assert store.status(run_id).status == SUCCEEDED
    assert _leftovers(tmp_path) == []
    (store.path(run_id) / "status.json").write_text("{not json")
    assert store.status(run_id).status == FAILED  # a damaged file reads as a failed run, never a crash


def test_read_events_is_incremental_and_skips_a_partial_last_line(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create("alice", {}, QUICK)
    assert store.read_events(run_id) == ([], 0)
    progress = store.path(run_id) / "progress.jsonl"
    with open(progress, "ab") as handle:
        handle.write(b'{"event": "start", "total_steps": 4}\n{"event": "step", "step": 1, "loss": 2.5}\n')
        handle.write(b'{"event": "step", "st')  # the trainer is in the middle of a write
    events, next_line = store.read_events(run_id, 0)
    assert [e["event"] for e in events] == ["start", "step"] and next_line == 2
    assert store.read_events(run_id, next_line) == ([], 2)
    with open(progress, "ab") as handle:
        handle.write(b'ep": 2, "total_steps": 4, "loss": 1.5, "eta_s": 30}\nnot json\n[1, 2]\n')
        handle.write(b'{"event": "eval", "step": 2, "eval_loss": 1.25}\n')
    events, next_line = store.read_events(run_id, 2)
    assert events == [{"event": "step", "step": 2, "total_steps": 4, "loss": 1.5, "eta_s": 30},
                      {"event": "eval", "step": 2, "eval_loss": 1.25}]
    assert next_line == 6  # lines that are not events still count
    assert len(store.read_events(run_id, 0).events) == 4  # from the start again
    assert store.read_events(run_id, 99) == ([], 6)
    record = store.record(run_id)
    assert (record.step, record.total_steps, record.loss, record.eval_loss, record.events) == (2, 4, 1.5, 1.25, 6)
    assert record.progress == 0.5
    assert record.eta_s is None  # only a running run has an ETA
    store.set_status(run_id, RUNNING)
    assert 0 <= store.record(run_id).eta_s <= 30


def test_job_control_emits_timed_lines_and_sees_the_cancel_file(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create("alice", {}, QUICK)
    control = JobControl(store.path(run_id))
    control.emit({"event": "step", "step": 1, "loss": 0.5})
    assert not control.should_stop()
    store.request_cancel(run_id)
    assert control.should_stop()
    control.emit({"event": "cancelled", "step": 1})
    control.close()
    events = store.read_events(run_id).events
    assert [e["event"] for e in events] == ["step", "cancelled"] and all(e["time"] > 0 for e in events)
    assert outcome(control, None) == (CANCELLED, "Cancelled at step 1.")


def test_outcome_rules(tmp_path):
    control = JobControl(tmp_path)
    assert outcome(control, None) == (SUCCEEDED, "Finished.")
    assert outcome(control, "ValueError: bad") == (FAILED, "ValueError: bad (details in worker.log)")
    control.request_stop()
    assert outcome(control, None)[0] == CANCELLED  # returned early after the cancel
    assert outcome(control, "RuntimeError: interrupted")[0] == CANCELLED
    control.emit({"event": "done", "metrics": {}})
    assert outcome(control, None)[0] == SUCCEEDED  # it had finished when the cancel came
    control.close()


def test_summary_puts_known_keys_first():
    summary = summarize_config({"seed": 1, "training": {"learning_rate": 0.001, "max_steps": 60},
                                "model": "gpt2", "method": "lora", "notes": ""})
    assert summary == "model=gpt2 · method=lora · max_steps=60 · learning_rate=0.001 · seed=1"


def _worker(run_dir: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "playground.finetune.worker", str(run_dir)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_worker_runs_from_a_fresh_interpreter(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create("alice", {"steps": 3}, QUICK)
    process = _worker(store.path(run_id))
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    record = store.record(run_id)
    assert (record.status, record.message, record.step, record.total_steps) == (SUCCEEDED, "Finished.", 3, 3)
    assert record.metrics == {"train_loss": pytest.approx(1 / 3)} and record.pid == process.pid
    assert [e["event"] for e in store.read_events(run_id).events] == \
        ["stage", "start", "step", "step", "step", "eval", "done"]
    assert (store.path(run_id) / "metrics.json").exists()


def test_worker_reports_an_exception_and_a_bad_entry(tmp_path):
    store = RunStore(tmp_path)
    failing = store.create("alice", {}, "tests.finetune.fake_jobs:raises")
    missing = store.create("alice", {}, "tests.finetune.fake_jobs:no_such_function")
    for run_id in (failing, missing):
        process = _worker(store.path(run_id))
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 1
    assert store.status(failing).message == "ValueError: the data file has no rows (details in worker.log)"
    assert "Traceback" in output  # the traceback goes to the log, not the message
    assert store.status(missing).status == FAILED and "no_such_function" in store.status(missing).message


def test_worker_turns_sigterm_into_a_cancel(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create("alice", {}, "tests.finetune.fake_jobs:until_stopped")
    process = _worker(store.path(run_id))
    deadline = time.monotonic() + 120
    while store.record(run_id).step is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGTERM)
    process.communicate(timeout=120)
    record = store.record(run_id)
    assert record.status == CANCELLED and record.message == f"Cancelled at step {record.step}."


def test_worker_leaves_an_ended_or_cancelled_run_alone(tmp_path):
    store = RunStore(tmp_path)
    cancelled = store.create("alice", {}, QUICK)
    store.set_status(cancelled, CANCELLED, message="Cancelled before it started.")
    asked = store.create("alice", {}, QUICK)
    store.request_cancel(asked)
    for run_id in (cancelled, asked):
        assert _worker(store.path(run_id)).wait(timeout=120) == 0
        assert store.status(run_id).status == CANCELLED and store.record(run_id).events == 0
