"""Sweep presets: what a preset may say (any method of the method table, nothing that breaks the comparison, a cap
on runs), and the job manager running a sweep's runs one after another, cancel stopping the sweep, and the
workshop's one-run rule counting a sweep as one (fake jobs in real worker processes)."""

from __future__ import annotations

import pytest

from playground.errors import FinetuneConfigError
from playground.finetune.jobs import JobManager
from playground.finetune.limits import ActiveRunLimitError
from playground.finetune.methods import METHODS
from playground.finetune.runs import CANCELLED, QUEUED, RUNNING, SUCCEEDED, RunStore
from playground.finetune.sweep import MAX_RUNS, load_sweep, preset_ids, sweep_from_dict
from tests.finetune.sessions import UNTIL_STOPPED, fake_session, form
from tests.helpers import wait_until

JOBS = "tests.finetune.fake_jobs:"
TIMEOUT = 120.0


def test_the_shipped_presets_share_data_and_seed_and_differ_in_method_or_rank():
    assert {"sweep-cpu-demo", "sweep-lora-ranks"} <= set(preset_ids())
    demo = load_sweep("sweep-cpu-demo")
    assert [c.method for c in demo.configs] == ["full", "lora", "lora"]
    assert [c.lora_r for c in demo.configs][1:] == [4, 16]
    for sweep in (demo, load_sweep("sweep-lora-ranks")):
        assert len({(c.model, c.data, c.seed, c.test_limit) for c in sweep.configs}) == 1
        assert all(c.forgetting_examples == 8 and c.sample_engine == "transformers" for c in sweep.configs)
    assert load_sweep("sweep-lora-ranks").labels()[0] == "lora_r=4, lora_alpha=8"


@pytest.mark.parametrize("method", METHODS)
def test_any_method_of_the_table_can_be_a_variation(method):
    sweep = sweep_from_dict({"base": "cpu-demo.yaml", "variations": [{"method": method}, {"method": method,
                                                                                         "lora_r": 2}]}, "t")
    assert [c.method for c in sweep.configs] == [method, method]


@pytest.mark.parametrize("data, message", [
    ({"base": "cpu-demo.yaml", "variations": [{"method": "magic"}]}, "method 'magic' is not in the method table"),
    ({"base": "cpu-demo.yaml", "variations": [{"seed": 1}]}, "variation 1 changes seed"),
    ({"base": "cpu-demo.yaml", "variations": [{"data": "sentiment"}]}, "variation 1 changes data"),
    ({"base": "cpu-demo.yaml", "variations": [{"lora_rank": 4}]}, "did you mean 'lora_r'"),
    ({"base": "cpu-demo.yaml", "variations": [{"lora_r": 4}, {"lora_r": 4}]}, "variations 1 and 2 are the same run"),
    ({"base": "cpu-demo.yaml", "variations": []}, "variations must be a list"),
    ({"base": "../secrets.yaml", "variations": [{"lora_r": 4}]}, "base must name a preset beside it"),
    ({"base": "cpu-demo.yaml", "grid": {}, "variations": [{"lora_r": 4}]}, "unknown key grid"),
    ({"base": "cpu-demo.yaml", "variations": [{"lora_r": r} for r in range(1, MAX_RUNS + 2)]},
     f"a sweep runs at most {MAX_RUNS}"),
])
def test_a_bad_preset_is_refused_with_what_is_wrong(data, message):
    with pytest.raises(FinetuneConfigError, match=message):
        sweep_from_dict(data, "t")


def test_a_preset_is_a_name_never_a_path():
    with pytest.raises(FinetuneConfigError, match="no sweep preset"):
        load_sweep("../finetune/cpu-demo")
    with pytest.raises(FinetuneConfigError, match="at most 2"):
        load_sweep("sweep-cpu-demo", max_runs=2)


@pytest.fixture
def manager(tmp_path):
    made = JobManager(RunStore(tmp_path / "runs"), 2, poll_s=0.05)
    yield made
    made.shutdown(cancel_running=True)


def test_a_sweep_runs_one_after_another_while_others_use_the_free_slot(manager):
    configs = [{"steps": 3, "sleep_s": 0.1, "n": n} for n in range(3)]
    ids = manager.submit_sweep("alice", configs, "s1", JOBS + "quick")
    other = manager.submit("bob", {"steps": 2}, JOBS + "quick")
    assert [manager.store.record(i).sweep for i in ids] == ["s1"] * 3 and manager.store.record(other).sweep == ""
    assert [r.id for r in manager.sweep_runs("s1", "alice")] == ids and manager.sweep_runs("s1", "bob") == []
    for run_id in (*ids, other):
        assert manager.wait(run_id, TIMEOUT).status == SUCCEEDED
    statuses = [manager.store.status(i) for i in ids]
    for before, after in zip(statuses, statuses[1:]):  # the next starts once the one before has ended
        assert after.started >= before.finished
    assert manager.store.status(other).started < statuses[1].started  # bob did not wait for the whole sweep


def test_cancel_stops_the_whole_sweep(manager):
    ids = manager.submit_sweep("alice", [{"sleep_s": 0.05, "n": n} for n in range(3)], "s2", JOBS + "until_stopped")
    wait_until(lambda: manager.store.record(ids[0]).status == RUNNING, "the first run to start", TIMEOUT)
    assert manager.store.status(ids[1]).status == QUEUED  # the second slot is free, but the sweep waits its turn
    assert manager.cancel_sweep("s2", "alice") == 3
    assert [manager.wait(i, TIMEOUT).status for i in ids] == [CANCELLED] * 3
    assert manager.store.status(ids[2]).started is None  # never started


def test_the_session_queues_a_preset_and_the_workshop_counts_it_as_one_run(tmp_path):
    session = fake_session(tmp_path, entry=UNTIL_STOPPED, PLAYGROUND_MODE="workshop")
    try:
        token = session.identities.issuer.issue()
        with pytest.raises(FinetuneConfigError, match="sweep-cpu-demo, run 1 .*method 'full' is not available"):
            session.start_sweep("sweep-cpu-demo", token, "10.0.0.1")
        started = session.start_sweep("sweep-lora-ranks", token, "10.0.0.1")
        assert len(started.sweep_runs) == 3 and started.run_id == started.sweep_runs[0]
        assert started.sweep.startswith("sweep-lora-ranks-")
        owner = session.identities.person(token).id
        configs = [session.jobs.get(i, owner).config for i in started.sweep_runs]
        assert [c["lora_r"] for c in configs] == [4, 8, 16] and len({c["seed"] for c in configs}) == 1
        with pytest.raises(ActiveRunLimitError):  # the sweep is the person's one active run
            session.start(form(), token, "10.0.0.1")
        with pytest.raises(ActiveRunLimitError):
            session.start_sweep("sweep-lora-ranks", token, "10.0.0.1")
        outcome = session.cancel(token, started.sweep_runs[1])  # Cancel on any of its runs stops the sweep
        assert outcome.sweep == started.sweep and outcome.stopped == 3
        for run_id in started.sweep_runs:
            assert session.jobs.wait(run_id, TIMEOUT).status == CANCELLED
        session.start(form(), token, "10.0.0.1")  # and then the person may start again
    finally:
        session.jobs.shutdown(cancel_running=True)


def test_the_cli_says_a_sweep_preset_is_not_one_run(capsys):
    from playground.finetune.cli import main
    from playground.finetune.sweep import PRESETS_DIR

    assert main([str(PRESETS_DIR / "sweep-cpu-demo.yaml")]) == 2
    assert "is a sweep preset" in capsys.readouterr().err
