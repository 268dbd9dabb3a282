"""The bench's reporting and argument handling (its measurements run in `python -m playground bench`)."""

from __future__ import annotations

import json

import pytest

from playground.bench import Figure, Measure, format_table, main


def test_table_shows_value_target_and_result():
    figures = [
        Figure("llama.cpp app / direct speed", 1.01, "x", ">= 0.9", True, "per round 1.01"),
        Figure("app start-up to ready", 12.2, "s", "< 10 s", False),
        Figure("transformers decode", 10.7, "tok/s"),
        Figure("skipped figure", None, "s"),
    ]
    table = format_table(figures, {"summary": "no CUDA", "cpu": "test cpu", "packages": {"torch": "2.13"}})
    lines = table.splitlines()
    assert lines[0] == "machine: no CUDA; test cpu"
    row = next(line for line in lines if line.startswith("llama.cpp app / direct speed"))
    assert "1.01 x" in row and ">= 0.9" in row and row.endswith("pass")
    assert next(line for line in lines if line.startswith("app start-up")).endswith("FAIL")
    assert next(line for line in lines if line.startswith("transformers decode")).endswith("info")
    assert next(line for line in lines if line.startswith("skipped figure")).endswith("skipped")
    assert "  llama.cpp app / direct speed: per round 1.01" in lines


def test_figures_serialise_to_json():
    data = Figure("ttft", 0.0661234, "s", "< 0.5 s", True).to_dict()
    assert json.loads(json.dumps(data)) == {"name": "ttft", "value": 0.0661, "unit": "s", "target": "< 0.5 s",
                                            "passed": True, "detail": ""}


def test_bad_arguments_are_refused(capsys):
    assert main(["--threads", "-1"]) == 2
    assert "--threads" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--no-such-flag"])


def test_unknown_model_is_refused_before_measuring(capsys):
    assert main(["--model", "no-such-model", "--skip-startup"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_a_measure_reads_its_check_from_its_target():
    at_least = Measure("ratio", "x", ">= 0.9")
    assert at_least.measured(0.9, "").passed is True and at_least.measured(0.89, "").passed is False
    below = Measure("start-up", "s", "< 10 s")
    assert below.measured(9.99, "").passed is True and below.measured(10.0, "").passed is False
    assert Measure("cost", "x", "<= 2.5").measured(2.5, "").passed is True
    assert Measure("speed", "tok/s").measured(80.0, "").passed is None  # informational
    assert below.measured(12.0, "part of a set", judged=False).passed is None
    with pytest.raises(ValueError, match="target"):
        Measure("bad", "s", "about 10 s")


def test_a_measure_makes_failed_missing_and_skipped_figures():
    measure = Measure("start-up", "s", "< 10 s")
    failed = measure.failed(RuntimeError("no port\nmore"))
    assert (failed.value, failed.passed, failed.detail) == (None, False, "not measured: RuntimeError: no port")
    assert measure.not_measured("no app.py").passed is False
    assert Measure("ratio", "x").not_measured("speed missing").passed is None  # no target, nothing fails
    assert Measure("ratio", "x").failed(ValueError()).passed is False
    skipped = measure.skipped("skipped (--skip-startup)")
    assert skipped.passed is None and skipped.target == "< 10 s"


def test_importing_the_bench_loads_no_engine_library():
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, playground.bench; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, check=True).stdout.split()
    assert "torch" not in out and "llama_cpp" not in out and "transformers" not in out


def test_the_fine_tuned_run_figures_are_skipped_for_a_model_without_gguf(tmp_path):
    from playground.bench.core import BenchOptions
    from playground.bench.finetuned_llama import bench_finetuned_llama
    from playground.models.catalog import Catalog
    from tests.helpers import decoder_spec, fake_hardware, offline_settings

    catalog = Catalog((decoder_spec("plain", repo="test-org/plain"),))
    figures = bench_finetuned_llama(offline_settings(tmp_path), fake_hardware(), catalog,
                                    BenchOptions(model="plain"), tmp_path)
    assert [f.passed for f in figures] == [None, None]
    assert all("no GGUF source" in f.detail for f in figures)
    assert [f.target for f in figures] == [">= 0.9", ">= 4"]
