"""The bench's stdout is its table or one JSON object, whatever the libraries print while it measures.

The command line runs in a child process with its suites stubbed (:mod:`tests.bench.stubs`): they load
the packaged SmolLM2 GGUF in the app's llama.cpp engine and print the way libraries do, from Python,
from C onto descriptor 1, from a child process, through tqdm bars and warnings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from playground.bench import machine, roofline
from tests.bench.stubs import NOISE

ROOT = Path(__file__).resolve().parents[2]


def _noisy_bench(tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "tests.bench.noisy_bench", "--skip-startup", "--quick",
                             "--data-dir", str(tmp_path), *options], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: a figure missed its target, not an error
    return result


def _the_noise_went_to_the_log(result: subprocess.CompletedProcess) -> None:
    for line in NOISE:
        assert line not in result.stdout, line
        assert line in result.stderr, line  # not lost: the log has it
    assert "a tqdm bar" not in result.stderr and "%|" not in result.stderr  # progress bars are off


def test_json_output_is_one_clean_object(tmp_path):
    result = _noisy_bench(tmp_path, "--json")
    data = json.loads(result.stdout)  # fails on anything before or after the one object
    assert set(data) == {"machine", "figures"}
    names = [f["name"] for f in data["figures"]]
    for name in (machine.READ_ONE_THREAD.name, machine.READ_ALL_THREADS.name, machine.SGEMM.name,
                 roofline.roofline_measure("smollm2-135m-instruct").name, roofline.TRAINING_MFU.name):
        assert name in names, name
    _the_noise_went_to_the_log(result)


def test_the_prompt_search_run_alone_is_one_clean_object(tmp_path):
    from playground.bench.prompt_search import SEARCH_TIME

    result = _noisy_bench(tmp_path, "--ape", "--json")
    data = json.loads(result.stdout)
    assert [f["name"] for f in data["figures"]] == [SEARCH_TIME.name]  # nothing else is measured
    assert data["machine"]["cpu"]
    _the_noise_went_to_the_log(result)


def test_the_table_has_no_progress_bar_or_warning_lines(tmp_path):
    result = _noisy_bench(tmp_path)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("machine: ") and any(line.startswith("figure ") for line in lines)
    assert not [line for line in lines if "%|" in line or "Warning" in line]
    assert "Warning" in result.stderr  # the library's warning is in the log instead
    _the_noise_went_to_the_log(result)


def test_stdout_is_the_real_one_again_after_the_suites(capfd, monkeypatch):
    """In this process too: what is printed after the block reaches stdout, and the environment is put back."""
    import os

    from playground.bench.quiet import suites_write_to_the_log

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    with suites_write_to_the_log():
        print("inside")
        os.write(1, b"inside, descriptor 1\n")
        assert os.environ["TQDM_DISABLE"] == os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    print("after")
    out, err = capfd.readouterr()
    assert out == "after\n" and "inside\n" in err and "inside, descriptor 1\n" in err
    assert "TQDM_DISABLE" not in os.environ and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
