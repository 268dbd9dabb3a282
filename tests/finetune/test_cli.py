"""``python -m playground finetune``: a tiny config end to end, and bad input refused with a message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from playground.finetune.cli import format_event, summarize_metrics
from playground.finetune.result import RunMetrics

ROOT = Path(__file__).resolve().parents[2]


def _run(args, tmp_path, timeout=300):
    env = {**os.environ, "PLAYGROUND_DATA_DIR": str(tmp_path / "data"), "PLAYGROUND_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "playground", "finetune", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cli_trains_a_tiny_config_end_to_end(tmp_path, ft_models, dialogue_file):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"model: {ft_models['llama']}\nmethod: lora\ndata: {dialogue_file}\ninput_column: dialogue\n"
                      f"target_column: summary\nmax_steps: 50\nlearning_rate: 1.0e-2\nmax_length: 128\n"
                      f"sample_count: 1\nmax_new_tokens: 4\nvalidation_fraction: 0\n")
    result = _run([str(config), "--max-steps", "2", "--output", str(tmp_path / "run")], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "[loading]" in out and "step    2/2  loss" in out and "[done]" in out and "results in" in out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 2
    assert "max_steps: 2" in (tmp_path / "run" / "config.yaml").read_text()  # the resolved config is saved
    again = _run([str(config), "--output", str(tmp_path / "run")], tmp_path)
    assert again.returncode == 2 and "already holds a finished run" in again.stderr


def test_cli_refuses_a_bad_config_with_its_message(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("lora_r: 0\n")
    result = _run([str(config)], tmp_path, timeout=120)
    assert result.returncode == 2
    assert "bad.yaml: lora_r=0 is out of range" in result.stderr and "Traceback" not in result.stderr


def test_console_lines():
    assert format_event({"event": "stage", "stage": "loading", "message": "Reading"}) == "[loading] Reading"
    line = format_event({"event": "step", "step": 3, "total_steps": 40, "loss": 1.23456, "learning_rate": 2e-4,
                         "epoch": 0.25, "tokens_per_s": 151.2, "eta_s": 95})
    assert line == "step    3/40  loss 1.2346  lr 2.00e-04  epoch 0.25  151 tok/s  eta 1m35s"
    assert format_event({"event": "cancelled", "step": 7}).startswith("[cancelled] stopped at step 7")
    summary = summarize_metrics(RunMetrics(train_losses=(2.0, 1.5, 1.0), steps=5, test_loss_before=2.5,
                                           test_loss_after=1.5, rouge_before={"rougeL": 0.1},
                                           rouge_after={"rougeL": 0.3}, sample_count=4, tokens_per_s=150.0,
                                           train_duration_s=30, duration_s=65))
    assert "rougeL 0.100 -> 0.300" in summary and "150 tokens/s" in summary and "whole run 1m05s" in summary
    assert "train loss 2.0000 -> 1.0000 over 5 steps" in summary
    # The done event carries the metrics as JSON; its line is the same summary.
    assert format_event({"event": "done", "metrics": RunMetrics(train_losses=(2.0, 1.0), steps=5).to_json()}) == \
        summarize_metrics(RunMetrics(train_losses=(2.0, 1.0), steps=5))
