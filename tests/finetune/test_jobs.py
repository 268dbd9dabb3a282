"""The job manager with real worker processes running the fake jobs of ``fake_jobs.py``.

Timeouts are generous (a busy two-core machine starts Python slowly); nothing asserts speed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from playground.errors import InvalidParameterError
from playground.finetune.jobs import JobManager, SchedulerBusyError, automatic_slots, visible_gpus
from playground.finetune.runs import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, RunNotFoundError, RunStore
from tests.helpers import fake_hardware, offline_settings, wait_until

JOBS = "tests.finetune.fake_jobs:"
TIMEOUT = 120.0


@pytest.fixture
def make_manager(tmp_path):
    managers: list[JobManager] = []

    def make(slots: int = 1, root: Path | None = None, **kwargs) -> JobManager:
        manager = JobManager(RunStore(root or tmp_path / "runs"), slots, poll_s=0.05, **kwargs)
        managers.append(manager)
        return manager

    yield make
    for manager in reversed(managers):
        manager.shutdown(cancel_running=True)


def wait_running(manager: JobManager, run_id: str) -> int:
    """Wait until the worker runs the job (it wrote its pid and a first event); returns the pid."""
    def started():
        record = manager.store.record(run_id)
        return record.pid if record.status == RUNNING and record.pid and record.events else None
    return wait_until(started, f"run {run_id} to start", TIMEOUT)


def finished(manager: JobManager, run_id: str):
    record = manager.wait(run_id, TIMEOUT)
    assert record.terminal, f"run {run_id} still {record.status}"
    return record


def assert_consistent(store: RunStore, run_id: str) -> None:
    """status.json is valid, every progress line parses, no temp file is left behind."""
    path = store.path(run_id)
    assert json.loads((path / "status.json").read_text())["status"] in (SUCCEEDED, FAILED, CANCELLED)
    lines = (path / "progress.jsonl").read_text().splitlines() if (path / "progress.jsonl").exists() else []
    assert all(isinstance(json.loads(line), dict) for line in lines)
    assert [p.name for p in path.rglob("*") if ".partial" in p.name] == []


def test_one_slot_runs_jobs_in_submission_order(make_manager):
    manager = make_manager(slots=1)
    first = manager.submit("alice", {}, JOBS + "until_stopped")
    second = manager.submit("alice", {"steps": 2}, JOBS + "quick")
    third = manager.submit("bob", {"steps": 2}, JOBS + "quick")
    wait_running(manager, first)
    assert [manager.queue_position(r) for r in (first, second, third)] == [0, 1, 2]
    assert manager.store.status(second).status == QUEUED
    assert manager.get(second, "alice").queue_position == 1
    assert [(r.id, r.queue_position) for r in manager.list_runs("alice")] == [(second, 1), (first, 0)]
    assert manager.cancel(first, "alice")
    records = [finished(manager, r) for r in (first, second, third)]
    assert [r.status for r in records] == [CANCELLED, SUCCEEDED, SUCCEEDED]
    assert records[0].finished <= records[1].started and records[1].finished <= records[2].started
    assert [manager.queue_position(r) for r in (first, second, third)] == [None, None, None]


def test_two_slots_run_two_jobs_at_once(make_manager):
    manager = make_manager(slots=2)
    runs = [manager.submit("alice", {}, JOBS + "until_stopped") for _ in range(2)]
    pids = [wait_running(manager, run_id) for run_id in runs]
    assert len(set(pids)) == 2
    assert [manager.store.status(r).status for r in runs] == [RUNNING, RUNNING]
    assert [manager.queue_position(r) for r in runs] == [0, 0]
    for run_id in runs:
        manager.cancel(run_id, "alice")
    assert [finished(manager, r).status for r in runs] == [CANCELLED, CANCELLED]


def test_cancel_a_queued_run_at_once(make_manager):
    manager = make_manager(slots=1)
    running = manager.submit("alice", {}, JOBS + "until_stopped")
    queued = manager.submit("alice", {}, JOBS + "quick")
    wait_running(manager, running)
    assert manager.cancel(queued, "alice")
    status = manager.store.status(queued)
    assert (status.status, status.message) == (CANCELLED, "Cancelled before it started.")
    assert manager.queue_position(queued) is None
    assert not manager.cancel(queued, "alice")  # already ended
    manager.cancel(running, "alice")
    finished(manager, running)
    assert not (manager.store.path(queued) / "worker.log").exists()  # it never got a worker


def test_cancel_a_running_run_stops_it_between_steps(make_manager):
    manager = make_manager(slots=1)
    run_id = manager.submit("alice", {}, JOBS + "until_stopped")
    wait_running(manager, run_id)
    with pytest.raises(RunNotFoundError):
        manager.cancel(run_id, "bob")  # someone else's Stop button cannot reach it
    assert manager.cancel(run_id, "alice")
    record = finished(manager, run_id)
    assert record.status == CANCELLED and record.message == f"Cancelled at step {record.step}."
    assert manager.store.read_events(run_id).events[-1]["event"] == "cancelled"
    assert (record.path / "cancel").exists() and (record.path / "worker.log").exists()
    assert_consistent(manager.store, run_id)


def test_a_job_that_ignores_the_cancel_is_killed_after_the_grace_period(make_manager):
    manager = make_manager(slots=1, grace_s=1.0)
    run_id = manager.submit("alice", {}, JOBS + "ignores_stop")
    after = manager.submit("alice", {"steps": 1}, JOBS + "quick")
    wait_running(manager, run_id)
    manager.cancel(run_id, "alice")
    record = finished(manager, run_id)
    assert (record.status, record.message) == (CANCELLED, "Cancelled (stopped by force after 1 s).")
    assert finished(manager, after).status == SUCCEEDED
    assert_consistent(manager.store, run_id)


def test_a_killed_worker_fails_its_run_and_the_next_one_starts(make_manager):
    manager = make_manager(slots=1)
    victim = manager.submit("alice", {}, JOBS + "until_stopped")
    after = manager.submit("alice", {"steps": 2}, JOBS + "quick")
    pid = wait_running(manager, victim)
    os.kill(pid, signal.SIGKILL)
    record = finished(manager, victim)
    assert record.status == FAILED
    assert record.message == ("The worker process was killed by SIGKILL (often a sign of running out of memory) "
                              "before the run finished; see worker.log.")
    assert finished(manager, after).status == SUCCEEDED
    assert_consistent(manager.store, victim)


@pytest.mark.parametrize("job, message", [
    ("exits", "The worker process exited with code 3 before the run finished; see worker.log."),
    ("kills_itself", "The worker process was killed by SIGKILL"),
    ("raises", "ValueError: the data file has no rows (details in worker.log)"),
    ("not_callable", "TypeError: job entry 'tests.finetune.fake_jobs:not_callable' is not callable"),
])
def test_a_crash_or_an_exception_fails_the_run_with_a_message(make_manager, job, message):
    manager = make_manager(slots=1)
    run_id = manager.submit("alice", {}, JOBS + job)
    record = finished(manager, run_id)
    assert record.status == FAILED and record.message.startswith(message)
    assert_consistent(manager.store, run_id)


def test_submit_refuses_an_entry_that_cannot_exist(make_manager):
    manager = make_manager()
    with pytest.raises(InvalidParameterError, match="there is no module 'tests.finetune.nowhere'"):
        manager.submit("alice", {}, "tests.finetune.nowhere:run")
    with pytest.raises(InvalidParameterError, match="must look like"):
        manager.submit("alice", {}, "rm -rf /")
    assert manager.store.run_ids() == []


def test_a_new_manager_reattaches_to_finished_running_and_queued_runs(make_manager, tmp_path):
    old = make_manager(slots=1)
    done = old.submit("alice", {"steps": 2}, JOBS + "quick")
    finished(old, done)
    running = old.submit("alice", {}, JOBS + "until_stopped")
    queued = old.submit("alice", {"steps": 1}, JOBS + "quick")
    other = old.submit("bob", {"steps": 1}, JOBS + "quick")
    pid = wait_running(old, running)
    old.shutdown()  # the app stops; its worker goes on

    new = make_manager(slots=1)  # a fresh store and manager over the same folder, as after a restart
    assert [r.id for r in new.list_runs("alice")] == [queued, running, done]
    assert [r.id for r in new.list_runs("bob")] == [other]
    assert [e["event"] for e in new.store.read_events(done, owner="alice").events][-1] == "done"
    adopted = new.get(running, "alice")
    assert (adopted.status, adopted.pid, adopted.queue_position) == (RUNNING, pid, 0)
    assert [new.queue_position(r) for r in (queued, other)] == [1, 2]
    events = new.store.read_events(running, owner="alice")
    assert events.events[0]["event"] == "start"
    wait_until(lambda: new.store.read_events(running, events.next_line).events, "more progress", TIMEOUT)
    assert new.cancel(running, "alice")  # the Stop button still reaches the adopted worker
    assert finished(new, running).status == CANCELLED
    assert [finished(new, r).status for r in (queued, other)] == [SUCCEEDED, SUCCEEDED]


def test_after_a_restart_a_run_whose_worker_is_gone_fails(make_manager, tmp_path):
    store = RunStore(tmp_path / "runs")
    orphan = store.create("alice", {}, JOBS + "until_stopped")
    store.set_status(orphan, RUNNING, pid=2**22 + 7, started=time.time())  # no such process
    store.request_cancel(asked := store.create("alice", {}, JOBS + "until_stopped"))
    store.set_status(asked, RUNNING, pid=None)
    waiting = store.create("alice", {"steps": 1}, JOBS + "quick")
    manager = make_manager(slots=1)
    status = manager.store.status(orphan)
    assert (status.status, status.message) == (FAILED, "The app restarted while this run was in progress.")
    assert manager.store.status(asked).status == CANCELLED  # its cancel had been asked for
    assert finished(manager, waiting).status == SUCCEEDED  # queued runs are queued again


def test_a_second_manager_on_the_same_folder_defers_to_the_first(make_manager, tmp_path):
    first = make_manager(slots=1)
    run_id = first.submit("alice", {}, JOBS + "until_stopped")
    wait_running(first, run_id)
    second = make_manager(slots=1)
    assert first.leading and not second.leading
    with pytest.raises(SchedulerBusyError, match="Another app process already runs the fine-tuning jobs"):
        second.submit("alice", {}, JOBS + "quick")
    assert [r.id for r in second.list_runs("alice")] == [run_id]
    assert second.cancel(run_id, "alice")  # a Stop pressed in the other app still works
    assert finished(second, run_id).status == CANCELLED
    first.shutdown()
    wait_until(lambda: second.leading, "the second manager to take over", TIMEOUT)
    assert finished(second, second.submit("alice", {"steps": 1}, JOBS + "quick")).status == SUCCEEDED


def test_slots_follow_the_visible_gpus(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus(fake_hardware(cuda=False)) == []
    assert visible_gpus(fake_hardware(cuda=True)) == ["2", "3"]
    assert automatic_slots(0, ["2", "3"]) == 2
    assert automatic_slots(0, []) == 1
    assert automatic_slots(3, []) == 3
    with pytest.raises(InvalidParameterError):
        JobManager(RunStore(tmp_path), 0)


def test_gpus_are_pinned_one_per_job(make_manager):
    manager = make_manager(slots=2, gpus=["5", "7"])
    runs = [manager.submit("alice", {}, JOBS + "until_stopped") for _ in range(2)]
    for run_id in runs:
        wait_running(manager, run_id)
    assert sorted(manager.store.status(r).gpu for r in runs) == ["5", "7"]
    assert make_manager(slots=2, gpus=["0"], root=Path(str(manager.store.root) + "-b")).gpus == []  # too few: share


def test_services_own_the_store_and_the_manager(tmp_path):
    from playground.services import Services

    settings = offline_settings(tmp_path, PLAYGROUND_JOB_SLOTS="3")
    services = Services.create(settings, fake_hardware())
    try:
        assert services.runs.root == tmp_path / "runs" and services.jobs.store is services.runs
        assert services.jobs.slots == 3 and services.jobs.leading
    finally:
        services.close()
    assert not services.jobs.leading
    automatic = Services.create(offline_settings(tmp_path), fake_hardware())
    assert automatic.jobs.slots == 1
    automatic.close()
