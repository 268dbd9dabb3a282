"""The command line: bad settings stop the app with a message naming the variable or flag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=full_env)


def test_bad_flag_value_names_the_flag():
    result = _run(["app.py", "--mode", "bogus"])
    assert result.returncode == 2
    assert "--mode='bogus' is not one of: local, workshop, presenter" in result.stderr


def test_bad_environment_value_names_the_variable():
    result = _run(["-m", "playground", "serve"], {"PLAYGROUND_PORT": "abc"})
    assert result.returncode == 2
    assert "PLAYGROUND_PORT='abc' is not a valid int" in result.stderr


def test_unknown_command_prints_usage():
    result = _run(["-m", "playground", "frobnicate"])
    assert result.returncode == 2
    assert "serve" in result.stderr and "bench" in result.stderr and "export RUN_DIR --gguf TYPE" in result.stderr
