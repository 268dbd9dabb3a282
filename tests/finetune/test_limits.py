"""Workshop limits on fine-tuning runs: each cap refused with its message, local mode untouched, one active run."""

from __future__ import annotations

import dataclasses

import pytest

from playground.errors import FinetuneConfigError, InvalidParameterError
from playground.finetune.config import FinetuneConfig
from playground.finetune.jobs import JobManager
from playground.finetune.limits import ActiveRunLimitError, FinetuneLimits
from playground.finetune.runs import CANCELLED, RunStore
from tests.helpers import offline_settings

JOBS = "tests.finetune.fake_jobs:"


@pytest.fixture
def workshop(tmp_path) -> FinetuneLimits:
    return FinetuneLimits.from_settings(offline_settings(tmp_path, PLAYGROUND_MODE="workshop"))


@pytest.fixture
def local(tmp_path) -> FinetuneLimits:
    return FinetuneLimits.from_settings(offline_settings(tmp_path))


def test_limits_are_a_frozen_dataclass_from_settings(workshop, local, tmp_path):
    assert local.unlimited and not workshop.unlimited
    assert workshop.catalog_only and not workshop.allow_full
    assert (workshop.max_steps, workshop.max_length, workshop.max_test_examples, workshop.max_samples) == \
        (200, 512, 16, 16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        workshop.max_steps = 10_000
    presenter = FinetuneLimits.from_settings(offline_settings(tmp_path, PLAYGROUND_MODE="presenter"))
    assert presenter.unlimited
    # The comparison's answers never exceed the per-request token cap of the chat tabs.
    small = FinetuneLimits.from_settings(offline_settings(tmp_path, PLAYGROUND_MODE="workshop",
                                                          PLAYGROUND_MAX_NEW_TOKENS="40"))
    assert small.max_new_tokens == 40


def test_workshop_accepts_a_bounded_run(workshop):
    config = FinetuneConfig(max_steps=200, batch_size=4, grad_accum=4, max_length=512, test_limit=16,
                            sample_count=16, max_new_tokens=128, lora_r=64)
    assert workshop.check(config) is config
    assert workshop.check(FinetuneConfig(method="qlora", max_steps=1, test_limit=1)) is not None


@pytest.mark.parametrize("changes, message", [
    (dict(model="tests/some-folder"), r"model 'tests/some-folder' cannot be fine-tuned in workshop mode: only catalog "
                                      r"models .* Choose one of: .*smollm2-135m-instruct"),
    (dict(model="gpt2-xl"), r"model 'gpt2-xl' cannot be fine-tuned in workshop mode"),
    (dict(method="full"), r"method 'full' is not available in workshop mode: .*several times the model's memory"
                          r".*Choose lora or qlora"),
    (dict(max_steps=201), r"max_steps=201 is above the limit of 200 steps per run in workshop mode\. "
                          r"Set max_steps to 200 or less\."),
    (dict(max_steps=0, epochs=3), r"max_steps=0 \(train for 'epochs'\) is not available in workshop mode.*"
                                  r"Set max_steps between 1 and 200"),
    (dict(batch_size=8, grad_accum=4), r"batch_size x grad_accum = 8 x 4 = 32 is above the limit of 16 examples "
                                       r"per optimizer step in workshop mode"),
    (dict(batch_size=17), r"batch_size x grad_accum = 17 x 1 = 17 is above the limit of 16"),
    (dict(max_length=1024), r"max_length=1024 is above the limit of 512 tokens per example"),
    (dict(test_limit=17), r"test_limit=17 is above the limit of 16 test examples"),
    (dict(test_limit=0), r"test_limit=0 \(score every test example\) is not available in workshop mode\. "
                         r"Set test_limit between 1 and 16"),
    (dict(sample_count=17), r"sample_count=17 is above the limit of 16 examples answered before and after"),
    (dict(max_new_tokens=129), r"max_new_tokens=129 is above the limit of 128 new tokens per answer"),
    (dict(lora_r=128), r"lora_r=128 is above the limit of 64 for the adapter's rank"),
])
def test_each_cap_is_refused_with_field_value_and_cap(workshop, changes, message):
    config = FinetuneConfig(**{"test_limit": 16, **changes})
    with pytest.raises(FinetuneConfigError, match=message):
        workshop.check(config)


def test_every_problem_is_reported_at_once(workshop):
    with pytest.raises(InvalidParameterError) as caught:
        workshop.check(FinetuneConfig(method="full", max_steps=500, max_length=2048, test_limit=0))
    text = str(caught.value)
    assert all(f in text for f in ("method 'full'", "max_steps=500", "max_length=2048", "test_limit=0"))


def test_local_mode_allows_everything_the_config_allows(local):
    config = FinetuneConfig(model="some/local-folder", method="full", max_steps=0, epochs=5, batch_size=64,
                            grad_accum=8, max_length=8192, test_limit=0, sample_count=1000, max_new_tokens=2048,
                            lora_r=1024)
    assert local.check(config) is config
    assert local.maximum("max_steps") is None
    assert local.fit(config) is config


def test_the_check_touches_no_file(workshop, tmp_path):
    # A path is refused for not being a catalog id, before anything looks at what is there.
    with pytest.raises(FinetuneConfigError, match="only catalog models"):
        workshop.check(FinetuneConfig(model=str(tmp_path / "nowhere")))


def test_fit_gives_starting_values_within_every_cap(workshop):
    fitted = workshop.fit(FinetuneConfig(max_steps=0, batch_size=8, grad_accum=8, max_length=1024, test_limit=0,
                                         sample_count=100, max_new_tokens=512, lora_r=256))
    assert workshop.check(fitted) is fitted
    assert (fitted.max_steps, fitted.batch_size * fitted.grad_accum, fitted.test_limit) == (200, 16, 16)
    assert workshop.fit(FinetuneConfig()).max_steps == FinetuneConfig().max_steps  # defaults within caps stay
    assert workshop.maximum("test_limit") == 16 and workshop.maximum("learning_rate") is None


def test_one_active_run_per_owner_names_the_active_run(workshop, local, tmp_path):
    store = RunStore(tmp_path / "runs")
    first = store.create("alice", {}, JOBS + "quick")
    with pytest.raises(ActiveRunLimitError, match=rf"You already have run {first} \(queued\)\. In workshop mode "
                                                  r"each person may have one run queued or running at a time"):
        workshop.check_active(store.list_runs("alice"))
    workshop.check_active(store.list_runs("bob"))  # others are not affected
    local.check_active(store.list_runs("alice"))  # local mode: no limit
    store.set_status(first, CANCELLED, message="Cancelled before it started.")
    workshop.check_active(store.list_runs("alice"))  # a finished run does not count


def test_the_job_manager_admits_under_its_lock(workshop, tmp_path):
    manager = JobManager(RunStore(tmp_path / "runs"), 1, poll_s=0.05, grace_s=5.0)
    try:
        first = manager.submit("alice", {}, JOBS + "until_stopped", admit=workshop.check_active)
        with pytest.raises(ActiveRunLimitError, match=f"You already have run {first}"):
            manager.submit("alice", {"steps": 1}, JOBS + "quick", admit=workshop.check_active)
        assert [r.id for r in manager.list_runs("alice")] == [first]  # nothing half-made
        queued = manager.submit("bob", {"steps": 1}, JOBS + "quick", admit=workshop.check_active)
        with pytest.raises(ActiveRunLimitError, match=rf"{queued} \(waiting in the queue at position \d\)"):
            manager.submit("bob", {"steps": 1}, JOBS + "quick", admit=workshop.check_active)
        manager.cancel(first, "alice")
        assert manager.wait(first, 120).terminal
        assert manager.submit("alice", {"steps": 1}, JOBS + "quick", admit=workshop.check_active)
    finally:
        manager.shutdown(cancel_running=True)
