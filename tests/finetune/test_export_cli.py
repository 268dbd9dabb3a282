"""``python -m playground export RUN_DIR --gguf TYPE | --adapter-gguf``: the path on stdout, clear refusals.

The runs are LoRA runs of the packaged SmolLM2 (found through the real catalog, as the command finds them)
with random adapters written from the GGUF's shapes, so nothing is trained.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from playground.finetune.export_cli import main
from playground.finetune.runs import RunStore
from playground.models.catalog import Catalog
from playground.models.sources import SourceResolver
from tests.gguf_models import fabricated_run
from tests.helpers import SMOLLM2

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smol_gguf() -> Path:
    return SourceResolver(None, offline=True).resolve(Catalog.load().get(SMOLLM2), "gguf").path


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory, smol_gguf) -> Path:
    runs = RunStore(tmp_path_factory.mktemp("cli-data") / "runs")
    return runs.path(fabricated_run(runs, "alice", SMOLLM2, smol_gguf, seed=3))


def export(args, tmp_path, timeout=600):
    env = {**os.environ, "PLAYGROUND_DATA_DIR": str(tmp_path / "data"), "PLAYGROUND_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "playground", "export", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_the_adapter_gguf_path_is_the_one_line_printed(smol_run, tmp_path):
    from gguf import GGUFReader

    result = export([smol_run, "--adapter-gguf"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = result.stdout.splitlines()
    assert Path(line).is_absolute() and Path(line) == (smol_run / "downloads" / f"{smol_run.name}-adapter.gguf")
    assert GGUFReader(line, "r").fields["adapter.type"].contents() == "lora"


@pytest.mark.slow
def test_a_merged_q8_0_export_from_the_command_line_loads_in_llama_cpp(smol_run, tmp_path):
    from playground.backends.llama_loading import llama_class

    Llama = llama_class()

    result = export([smol_run, "--gguf", "q8_0"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = result.stdout.splitlines()
    assert Path(line) == smol_run / "downloads" / f"{smol_run.name}-Q8_0.gguf"
    llm = Llama(model_path=line, n_ctx=128, n_threads=2, verbose=False)
    try:
        assert llm("The capital of France is", max_tokens=4, temperature=0.0)["usage"]["completion_tokens"] > 0
    finally:
        llm.close()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYGROUND_OFFLINE", "1")
    monkeypatch.setenv("PLAYGROUND_DATA_DIR", str(tmp_path / "data"))


def refused(capsys, args) -> str:
    assert main([str(a) for a in args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_bad_input_is_refused_with_exit_code_2(offline, capsys, smol_run, tmp_path):
    err = refused(capsys, [smol_run, "--gguf", "Q4"])
    assert "Unknown GGUF type 'Q4': choose one of F32, F16, Q8_0, Q5_K_M, Q4_K_M, Q3_K_M, Q2_K." in err
    assert "There is no run folder" in refused(capsys, [tmp_path / "no-such-run", "--adapter-gguf"])
    with pytest.raises(SystemExit) as neither:
        main([str(smol_run)])
    assert neither.value.code == 2 and "--gguf" in capsys.readouterr().err

    full = tmp_path / "full"
    shutil.copytree(smol_run / "adapter", full / "model")  # a full fine-tune saves model/, not adapter/
    assert "full fine-tune" in refused(capsys, [full, "--gguf", "Q4_K_M"])

    local = tmp_path / "local-base"
    shutil.copytree(smol_run / "adapter", local / "adapter")
    info = json.loads((local / "adapter" / "playground.json").read_text())
    (local / "adapter" / "playground.json").write_text(json.dumps({**info, "base_model": "/models/my-llama",
                                                                   "base_name": "my-llama"}))
    assert "base my-llama has no GGUF file in the catalog" in refused(capsys, [local, "--adapter-gguf"])

    (local / "adapter" / "playground.json").unlink()
    assert "is not a run of the playground" in refused(capsys, [local, "--adapter-gguf"])
    assert not (local / "downloads").exists() and not (full / "downloads").exists()
