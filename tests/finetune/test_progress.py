"""The run clock: units per phase, measured paces, borrowed paces, and an ETA over every phase left."""

from __future__ import annotations

import pytest

from playground.finetune.progress import (
    BASELINE,
    BASELINE_LOSS,
    SAVING,
    TRAINING,
    TUNED,
    TUNED_LOSS,
    VALIDATION,
    RunClock,
    batches,
    validation_passes,
)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def planned(clock_fn, grad_accum=1) -> RunClock:
    clock = RunClock(clock=clock_fn, grad_accum=grad_accum)
    for phase, total in ((BASELINE_LOSS, 4), (BASELINE, 3), (TRAINING, 10), (VALIDATION, 4), (TUNED_LOSS, 4),
                         (TUNED, 3), (SAVING, 1)):
        clock.plan(phase, total)
    return clock


@pytest.mark.parametrize("steps, every, has_validation, passes", [
    (40, 20, True, 2),  # at 20 and 40: the last is one of them
    (30, 20, True, 2),  # at 20, and one at the end
    (10, 0, True, 1),  # none during training, one at the end
    (10, 5, False, 0),
])
def test_validation_passes(steps, every, has_validation, passes):
    assert validation_passes(steps, every, has_validation) == passes


def test_batches_round_up():
    assert batches(12, 4) == 3 and batches(13, 4) == 4 and batches(0, 4) == 0


def test_nothing_measured_means_no_eta():
    assert planned(FakeClock()).remaining_s() is None


def test_the_eta_counts_every_phase_left_with_borrowed_paces():
    fake = FakeClock()
    clock = planned(fake)
    clock.begin(BASELINE_LOSS)
    fake.now = 2.0
    clock.advance(BASELINE_LOSS, 1)  # a test batch takes 2 s
    # 3 test batches, 4 validation and 4 tuned test batches at 2 s; 10 steps at 3 forward passes (6 s); the
    # answers have no pace yet, so no ETA at all.
    assert clock.pace(VALIDATION) == 2.0 and clock.pace(TRAINING) == 6.0 and clock.remaining_s() is None
    fake.now = 8.0
    clock.advance(BASELINE_LOSS, 4)
    clock.begin(BASELINE)
    fake.now = 18.0
    clock.advance(BASELINE, 1)  # an answer takes 10 s
    # 2 answers left (20) + 10 steps (60) + 4 validation (8) + 4 tuned test (8) + 3 tuned answers (30)
    assert clock.remaining_s() == pytest.approx(126.0)


def test_measured_paces_replace_the_borrowed_ones_and_validation_counts_apart_from_steps():
    fake = FakeClock()
    clock = planned(fake, grad_accum=2)
    clock.begin(BASELINE_LOSS)
    fake.now = 1.0
    clock.advance(BASELINE_LOSS, 4)  # 0.25 s a batch
    assert clock.pace(TRAINING) == pytest.approx(0.25 * 3 * 2)  # grad_accum batches, forward and backward
    clock.begin(TRAINING)
    fake.now = 11.0
    clock.advance(TRAINING, 5)  # 2 s a step
    fake.now = 15.0
    clock.advance(VALIDATION, 2)  # 2 validation batches inside training: 2 s each
    fake.now = 17.0
    clock.advance(TRAINING, 6)  # the next step's time counts for training, not validation
    assert clock.pace(TRAINING) == pytest.approx(2.0) and clock.pace(VALIDATION) == pytest.approx(2.0)
    assert clock.pace(TUNED_LOSS) == pytest.approx(0.25)  # a test batch is a test batch
    assert clock.pace(TUNED) is None  # no answer measured yet, and none to borrow


def test_a_phase_done_adds_nothing():
    fake = FakeClock()
    clock = RunClock(clock=fake)
    clock.plan(TRAINING, 2)
    clock.begin(TRAINING)
    fake.now = 4.0
    clock.advance(TRAINING, 2)
    assert clock.remaining_s() == 0.0


def test_section_timer_adds_up_sections_entered_twice_in_run_order():
    from playground.finetune.progress import SectionTimer, sections_text

    now = [0.0]
    timer = SectionTimer(clock=lambda: now[0])
    for section, seconds in (("load", 2.0), ("base_scoring", 3.0), ("training", 10.0), ("tuned_scoring", 1.0),
                             ("save", 0.5), ("tuned_scoring", 2.0), ("save", 1.0)):
        timer.enter(section)
        now[0] += seconds
    assert timer.as_dict() == {"load": 2.0, "base_scoring": 3.0, "training": 10.0, "tuned_scoring": 3.0,
                               "save": 1.5}  # the running section counts up to now
    timer.stop()
    now[0] += 100.0  # after stop, nothing counts
    assert timer.as_dict()["save"] == 1.5
    assert sections_text(timer.as_dict()).startswith("load 2.0 s, base scoring 3.0 s, training 10.0 s")


def test_phase_seconds_round_trip_through_metrics_json():
    from playground.finetune.result import RunMetrics

    metrics = RunMetrics(phase_seconds={"load": 1.5, "training": 20.0})
    assert RunMetrics.from_json(metrics.to_json()).phase_seconds == {"load": 1.5, "training": 20.0}
    assert RunMetrics.from_json({"phase_seconds": {"load": "x", "save": 2}}).phase_seconds == {"save": 2.0}
    assert RunMetrics.from_json({}).phase_seconds == {}  # an older run
