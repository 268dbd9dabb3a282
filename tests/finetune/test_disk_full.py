"""A write that finds the disk full reads as a clear message: what was not saved, why, what to do, no path.

The writes really fail: the file they open is redirected to /dev/full, where the kernel answers
every write with ENOSPC (errno 28); EDQUOT (a used-up quota) is raised by hand.
"""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path

import pytest

from playground import atomic
from playground.atomic import atomic_directory, atomic_write_json, save_error
from playground.errors import DiskFullError, SaveError, disk_full_error, is_disk_full
from playground.finetune.runs import RunStore

pytestmark = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")


def to_dev_full(monkeypatch, module) -> None:
    """Every file ``module`` opens for writing goes to /dev/full instead."""
    real_open = builtins.open

    def full_open(path, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax"):
            return real_open("/dev/full", mode.replace("x", "w"), *args, **kwargs)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(module, "open", full_open, raising=False)


def assert_clear(message: str, what: str, tmp_path: Path) -> None:
    assert message.startswith(f"Could not save {what}: the server's disk is full")
    assert "Free some space" in message and "ask whoever hosts the app" in message
    assert "Errno" not in message and "28" not in message and str(tmp_path) not in message


def test_an_atomic_file_write_on_a_full_disk(tmp_path, monkeypatch):
    to_dev_full(monkeypatch, atomic)
    with pytest.raises(DiskFullError) as info:
        atomic_write_json(tmp_path / "metrics.json", {"a": 1}, "the metrics")
    assert_clear(str(info.value), "the metrics", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_an_atomic_directory_on_a_full_disk(tmp_path):
    with pytest.raises(DiskFullError) as info:
        with atomic_directory(tmp_path / "adapter", "the adapter") as partial:
            with open("/dev/full", "wb") as handle:
                handle.write(b"weights")
                (partial / "half").write_bytes(b"x")
                handle.flush()
    assert_clear(str(info.value), "the adapter", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_run_file_on_a_full_disk(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    to_dev_full(monkeypatch, atomic)  # the run store writes through the one atomic-write helper
    with pytest.raises(DiskFullError) as info:
        store.create("someone", {"model": "x"}, entry="playground.finetune.train:run_job")
    assert_clear(str(info.value), "the run file config.yaml", tmp_path)
    assert list((tmp_path / "runs").iterdir()) == []  # the half-made run is gone


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_full_disk_and_used_up_quota_read_the_same(code, tmp_path):
    error = save_error("the archive", tmp_path, OSError(code, os.strerror(code), str(tmp_path / "x.zip")))
    assert isinstance(error, DiskFullError) and isinstance(error, SaveError)
    assert_clear(str(error), "the archive", tmp_path)
    other = save_error("the archive", tmp_path, PermissionError(errno.EACCES, "Permission denied"))
    assert not isinstance(other, DiskFullError) and "Choose a folder you can write to" in str(other)


def test_a_full_disk_is_found_through_the_causes():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert not is_disk_full(RuntimeError("no")) and not is_disk_full(None)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert "the server's disk is full" in str(disk_full_error("x"))
