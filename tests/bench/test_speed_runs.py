"""The runs that stand alone (``--cpu-demo``, ``--trainer-variants``): their figures from a run's numbers, the
CPU's bf16 flags, and the options that pick them. No timing is asserted."""

from __future__ import annotations

import pytest

from playground.bench import cli
from playground.bench.cpu_demo import DEMO_GAIN, DEMO_WALL, ESTIMATE_ERROR, demo_figures
from playground.bench.trainer_variants import cpu_has_native_bf16
from playground.finetune.result import RunMetrics


def _metrics(**extra) -> RunMetrics:
    values = dict(steps=40, tokens_per_s=200.0, duration_s=200.0, sample_count=8, test_loss_before=1.96,
                  test_loss_after=1.28, rouge_before={"rougeL": 0.23}, rouge_after={"rougeL": 0.425},
                  phase_seconds={"load": 10.0, "base_scoring": 30.0, "training": 140.0, "tuned_scoring": 15.0,
                                 "save": 5.0})
    values.update(extra)
    return RunMetrics(**values)


def test_the_demo_gives_the_whole_run_each_phase_the_gain_and_the_estimate_error():
    figures = {f.name: f for f in demo_figures(_metrics(), 230.0, "load 10 s, ...", 20.0)}
    assert figures[DEMO_WALL.name].value == 200.0 and figures[DEMO_WALL.name].passed  # under 10 minutes
    phases = [f for f in figures.values() if f.name.startswith("CPU demo: ") and f.unit == "s"][1:]
    assert [f.name for f in phases] == ["CPU demo: loading", "CPU demo: base scoring", "CPU demo: training",
                                        "CPU demo: tuned scoring", "CPU demo: saving"]
    assert figures["CPU demo: training"].value == 140.0 and "70% of the run" in figures["CPU demo: training"].detail
    assert figures[DEMO_GAIN.name].value == pytest.approx(19.5) and figures[DEMO_GAIN.name].passed
    error = figures[ESTIMATE_ERROR.name]
    assert error.value == pytest.approx(0.15) and error.passed and "estimate / real 1.15" in error.detail


def test_an_estimate_far_off_fails_and_no_estimate_or_answers_leave_figures_unmeasured():
    figures = {f.name: f for f in demo_figures(_metrics(duration_s=700.0), 350.0, "", 1.0)}
    assert figures[ESTIMATE_ERROR.name].value == pytest.approx(0.5) and figures[ESTIMATE_ERROR.name].passed is False
    assert figures[DEMO_WALL.name].passed is False  # 700 s is over 10 minutes
    figures = {f.name: f for f in demo_figures(_metrics(rouge_before=None, rouge_after=None), None, "too big", 1.0)}
    assert figures[DEMO_GAIN.name].value is None and figures[ESTIMATE_ERROR.name].value is None
    assert "too big" in figures[ESTIMATE_ERROR.name].detail


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_has_native_bf16("flags\t\t: fpu avx2 amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16("flags\t\t: fpu sse avx avx2 fma\nmodel name\t: AMD EPYC\n")
    assert not cpu_has_native_bf16("")


def test_the_alone_runs_are_options_of_the_command_line():
    args = cli.build_arg_parser().parse_args(["--cpu-demo"])
    assert args.cpu_demo and not args.trainer_variants
    assert cli.build_arg_parser().parse_args(["--trainer-variants"]).trainer_variants
