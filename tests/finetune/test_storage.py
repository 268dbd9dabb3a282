"""The data dir's budget: measuring, oldest-first removal of finished runs, refusal, and the job manager using it;
removing runs and the scratch folders a killed worker leaves."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from playground.finetune.jobs import JobManager
from playground.finetune.runs import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, RunNotFoundError, RunStore, \
    scratch_dir, try_lock
from playground.finetune.storage import GB, DataBudget, DataDirFullError, disk_usage, full_message
from tests.finetune.test_jobs import JOBS, finished, wait_running

KB = 1024


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fill(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))  # random bytes: a filesystem cannot compress or skip them
    return path


def make_run(store: RunStore, status: str, size: int, finished_at: float | None = None, owner: str = "alice"
             ) -> str:
    run_id = store.create(owner, {"model": "m"}, "tests.finetune.fake_jobs:quick")
    fill(store.path(run_id) / "adapter" / "adapter_model.safetensors", size)
    if status != QUEUED:
        store.set_status(run_id, status, finished=finished_at)
    return run_id


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "data" / "runs")


def budget_for(store: RunStore, budget: int, **kwargs) -> DataBudget:
    return DataBudget(store.root.parent, store, budget, **kwargs)


# ------------------------------------------------------------------ measuring


def test_disk_usage_counts_allocated_bytes_and_hard_links_once(tmp_path):
    assert disk_usage(tmp_path / "missing") == 0
    fill(tmp_path / "a" / "one.bin", 100 * KB)
    fill(tmp_path / "a" / "b" / "two.bin", 50 * KB)
    single = disk_usage(tmp_path)
    assert 150 * KB <= single < 170 * KB
    os.link(tmp_path / "a" / "one.bin", tmp_path / "a" / "b" / "link.bin")
    assert disk_usage(tmp_path) == single  # a hard link is no second copy


def test_measuring_is_cached_between_refreshes(store):
    clock = Clock()
    budget = budget_for(store, 10 * GB, refresh_s=60, clock=clock)
    first = budget.used_bytes()
    fill(store.root.parent / "converted" / "m.safetensors", 200 * KB)
    assert budget.used_bytes() == first and budget.measurements == 1  # no walk within the minute
    for _ in range(20):
        budget.make_room()  # the common case, under budget: no walk either
    assert budget.measurements == 1
    clock.now += 61
    assert budget.used_bytes() >= first + 200 * KB and budget.measurements == 2
    assert budget.used_bytes(fresh=True) >= first + 200 * KB and budget.measurements == 3


def test_no_budget_never_measures_nor_removes(store):
    run_id = make_run(store, SUCCEEDED, 100 * KB)
    budget = budget_for(store, 0)
    assert not budget.enabled and budget.make_room(10 * GB) == []
    assert budget.measurements == 0 and store.run_ids() == [run_id]


# ------------------------------------------------------------------ making room


def test_oldest_finished_runs_go_first_until_the_work_fits(store):
    old = make_run(store, SUCCEEDED, 300 * KB, finished_at=100.0)
    middle = make_run(store, FAILED, 300 * KB, finished_at=200.0)
    new = make_run(store, CANCELLED, 300 * KB, finished_at=300.0)
    budget = budget_for(store, disk_usage(store.root.parent) + 100 * KB)
    assert budget.make_room(450 * KB) == [old, middle]  # one run (~310 KB) was not enough for 450 KB more
    assert store.run_ids() == [new]
    with pytest.raises(RunNotFoundError):
        store.get(old, "alice")
    assert [r.id for r in store.list_runs("alice")] == [new]


@pytest.mark.parametrize("status", [QUEUED, RUNNING])
def test_queued_and_running_runs_are_never_removed(store, status):
    active = make_run(store, status, 400 * KB)
    done = make_run(store, SUCCEEDED, 100 * KB, finished_at=1.0)
    budget = budget_for(store, 200 * KB)
    with pytest.raises(DataDirFullError, match=r"The server's data folder is full \(0\.0 of 0\.0 GB used\)"):
        budget.make_room()
    assert store.run_ids() == [active]  # the finished one went, and it was still not enough
    assert done not in store.run_ids()


def test_kept_busy_and_building_runs_stay(store):
    kept = make_run(store, SUCCEEDED, 200 * KB, finished_at=1.0)
    busy = make_run(store, SUCCEEDED, 200 * KB, finished_at=2.0)
    building = make_run(store, SUCCEEDED, 200 * KB, finished_at=3.0)
    downloads = store.path(building) / "downloads"
    downloads.mkdir()
    budget = budget_for(store, 100 * KB)
    builder = try_lock(downloads / ".lock")  # an archive of it is being built
    try:
        with pytest.raises(DataDirFullError):
            budget.make_room(keep=[kept], busy={busy})
    finally:
        os.close(builder)
    assert store.run_ids() == [kept, busy, building]
    with pytest.raises(DataDirFullError):
        budget.make_room(keep=[kept], busy={busy})
    assert store.run_ids() == [kept, busy]  # no longer building: it could go


def test_the_converted_model_cache_is_never_removed(store):
    converted = fill(store.root.parent / "converted" / "model" / "model.safetensors", 300 * KB)
    run_id = make_run(store, SUCCEEDED, 100 * KB)
    budget = budget_for(store, 200 * KB)
    with pytest.raises(DataDirFullError) as refused:
        budget.make_room()
    assert converted.is_file() and store.run_ids() == []
    assert run_id not in store.run_ids()
    text = str(refused.value)
    assert "no finished run is left to remove" in text and "PLAYGROUND_DATA_BUDGET_GB" in text
    assert str(store.root) not in text and "/" not in text.replace("PLAYGROUND_DATA_BUDGET_GB", "")


@pytest.mark.parametrize("used, budget, needed, expected", [
    (21.34 * GB, 20 * GB, 0, "(21.3 of 20.0 GB used)"),
    (19.5 * GB, 20 * GB, 1.2 * GB, "(19.5 of 20.0 GB used; this needs about 1.2 GB more)"),
    (5 * GB, 5 * GB, 1000, "(5.0 of 5.0 GB used)"),
])
def test_the_full_message_says_how_full(used, budget, needed, expected):
    assert expected in full_message(int(used), int(budget), int(needed))


def test_admitted_work_counts_until_the_next_measurement(store):
    clock = Clock()
    budget = budget_for(store, 1 * GB, clock=clock)
    empty = budget.used_bytes()
    budget.make_room(600_000_000)  # fits; nothing is written yet, but the figure remembers it
    assert budget.used_bytes() == empty + 600_000_000 and budget.measurements == 1
    budget.make_room(300_000_000)
    assert budget.used_bytes() == empty + 900_000_000 and budget.measurements == 1
    budget.make_room(200_000_000)  # the figure says full: measured again before anything is removed
    assert budget.measurements == 2 and budget.used_bytes() == empty + 200_000_000
    clock.now += 3600
    assert budget.used_bytes() == empty and budget.measurements == 3


def test_a_removal_interrupted_by_a_crash_is_finished_later(store):
    run_id = make_run(store, SUCCEEDED, 100 * KB)
    leftover = store.root / f".removing-{run_id}-1-2"
    os.rename(store.path(run_id), leftover)
    budget = budget_for(store, 10 * KB)
    with pytest.raises(DataDirFullError):
        budget.make_room(50 * KB)
    assert not leftover.exists()


# ------------------------------------------------------------------ the store


def test_remove_refuses_an_active_run_and_hides_a_finished_one_at_once(store):
    running = make_run(store, RUNNING, 1 * KB)
    done = make_run(store, SUCCEEDED, 1 * KB)
    assert store.remove(running) is False and store.path(running).is_dir()
    assert store.remove(done) is True and store.run_ids() == [running]
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".removing")] == []
    with pytest.raises(RunNotFoundError):
        store.remove(done)


def test_scratch_folders_are_made_in_the_run_and_removed_by_the_store(store):
    run_id = make_run(store, RUNNING, 1 * KB)
    scratch = scratch_dir(store.path(run_id), "trainer")
    assert scratch.parent == store.path(scratch.parent.name) and scratch.name == f".scratch-trainer-{os.getpid()}"
    (scratch / "tmp.txt").write_text("x")
    assert store.remove_scratch(run_id) == 1 and not scratch.exists()
    assert store.remove_scratch(run_id) == 0
    assert store.remove_scratch("20990101-000000-000000-abcdef") == 0  # no such run: nothing to do


# ------------------------------------------------------------------ the job manager


@pytest.fixture
def manager_with(tmp_path):
    managers = []

    def make(budget_bytes: int, refresh_s: float = 60.0) -> JobManager:
        store = RunStore(tmp_path / "data" / "runs")
        budget = DataBudget(store.root.parent, store, budget_bytes, refresh_s=refresh_s)
        manager = JobManager(store, 1, poll_s=0.05, budget=budget)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.shutdown(cancel_running=True)


def test_submit_makes_room_or_refuses_before_writing_anything(manager_with, tmp_path):
    manager = manager_with(50 * KB)
    old = make_run(manager.store, SUCCEEDED, 100 * KB, finished_at=1.0, owner="someone-else")
    run_id = manager.submit("alice", {"steps": 1}, JOBS + "quick")  # the old run made way for it
    assert old not in manager.store.run_ids() and finished(manager, run_id).status == SUCCEEDED
    fill(tmp_path / "data" / "converted" / "big.safetensors", 200 * KB)
    before = manager.store.run_ids()
    manager.budget.used_bytes(fresh=True)
    with pytest.raises(DataDirFullError, match="The server's data folder is full"):
        manager.submit("alice", {"steps": 1}, JOBS + "quick")
    assert set(manager.store.run_ids()) <= set(before)  # no new run (the finished one may have made way)


def test_a_queued_run_that_finds_the_disk_full_at_its_start_fails_with_the_message(manager_with, tmp_path):
    manager = manager_with(10 * GB, refresh_s=0.0)  # measured at every check
    blocker = manager.submit("bob", {"sleep_s": 0.05}, JOBS + "until_stopped")
    waiting = manager.submit("alice", {"steps": 1}, JOBS + "quick")
    wait_running(manager, blocker)
    manager.budget.budget_bytes = 1  # the room filled up while it waited
    manager.cancel(blocker, "bob")
    record = finished(manager, waiting)
    assert record.status == FAILED and record.message.startswith("The server's data folder is full")
    assert blocker not in manager.store.run_ids()  # once it had finished, it was the oldest run to go


def test_a_killed_worker_leaves_no_scratch_folder(manager_with):
    manager = manager_with(0)
    run_id = manager.submit("alice", {}, JOBS + "holds_scratch")
    pid = wait_running(manager, run_id)
    scratch = manager.store.path(run_id) / f".scratch-trainer-{pid}"
    assert scratch.is_dir()
    os.kill(pid, signal.SIGKILL)
    assert finished(manager, run_id).status == FAILED
    assert not [p for p in manager.store.path(run_id).iterdir() if p.name.startswith(".scratch-")]


def test_a_restarted_app_removes_the_scratch_of_a_worker_that_died_meanwhile(tmp_path):
    store = RunStore(tmp_path / "runs")
    run_id = make_run(store, RUNNING, 1 * KB)
    scratch = scratch_dir(store.path(run_id), "trainer")
    manager = JobManager(store, 1, poll_s=0.05)
    try:
        assert store.status(run_id).status == FAILED and not scratch.exists()
    finally:
        manager.shutdown()
