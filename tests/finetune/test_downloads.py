"""A run's downloads: each archive built once in the run's folder and reused, one build for clicks at the same
moment, the merged folder gone once zipped, the budget asked first, and no growth on disk per click."""

from __future__ import annotations

import shutil
import threading
import time
import zipfile

import pytest

from playground.errors import PlaygroundError
from playground.finetune import export
from playground.finetune.export import merged_archive, result_archive
from playground.finetune.result import RunResult
from playground.finetune.runs import RunNotFoundError
from playground.finetune.storage import DataDirFullError, disk_usage
from tests.finetune.conftest import train_tiny_lora


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, ft_models, dialogue_file, offline_resolver):
    """A real two-step LoRA run of the tiny Llama, in a folder named like a run id."""
    run_dir = tmp_path_factory.mktemp("runs") / "20260101-000000-000000-abcdef"
    return train_tiny_lora(run_dir, ft_models["llama"], dialogue_file, offline_resolver)


@pytest.fixture
def run_dir(finished_run, tmp_path):
    """A fresh copy of the finished run for each test (its downloads folder starts empty)."""
    copy = tmp_path / finished_run.name
    shutil.copytree(finished_run, copy)
    return copy


def counting(monkeypatch, name: str, delay_s: float = 0.0) -> list:
    """Count calls of export.<name> (optionally slowed down, so concurrent callers overlap)."""
    calls = []
    original = getattr(export, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        time.sleep(delay_s)
        return original(*args, **kwargs)

    monkeypatch.setattr(export, name, wrapper)
    return calls


def test_the_adapter_archive_is_built_once_in_the_run_folder_and_reused(run_dir, monkeypatch):
    builds = counting(monkeypatch, "zip_directory")
    first = result_archive(run_dir)
    assert first == run_dir / "downloads" / f"{run_dir.name}-adapter.zip" == RunResult(run_dir).archive_path("adapter")
    inode, size = first.stat().st_ino, disk_usage(run_dir)
    for _ in range(5):
        assert result_archive(run_dir) == first
    assert len(builds) == 1 and first.stat().st_ino == inode and disk_usage(run_dir) == size
    names = set(zipfile.ZipFile(first).namelist())
    assert {"adapter/adapter_model.safetensors", "adapter/playground.json"} <= names
    assert sorted(p.name for p in (run_dir / "downloads").iterdir()) == [".lock", first.name]


@pytest.mark.parametrize("clicks", [2, 4])
def test_clicks_at_the_same_moment_build_one_archive(run_dir, monkeypatch, clicks):
    builds = counting(monkeypatch, "zip_directory", delay_s=0.3)
    results, errors = [], []

    def click():
        try:
            results.append(result_archive(run_dir))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=click) for _ in range(clicks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(builds) == 1 and len(set(results)) == 1 and len(results) == clicks
    assert sorted(p.name for p in (run_dir / "downloads").iterdir()) == [".lock", f"{run_dir.name}-adapter.zip"]


def test_the_merged_archive_keeps_only_the_zip_and_is_reused(run_dir, offline_resolver, monkeypatch, tmp_path):
    builds = counting(monkeypatch, "merge_adapter")
    data_dir = tmp_path / "data"
    first = merged_archive(run_dir, data_dir, resolver=offline_resolver)
    assert first.name == f"{run_dir.name}-merged.zip"
    after_one = disk_usage(run_dir)
    for _ in range(3):
        assert merged_archive(run_dir, data_dir, resolver=offline_resolver) == first
    assert len(builds) == 1 and disk_usage(run_dir) == after_one
    assert sorted(p.name for p in (run_dir / "downloads").iterdir()) == [".lock", first.name]  # no merged folder
    with zipfile.ZipFile(first) as opened:
        names = set(opened.namelist())
    top = f"{run_dir.name}-merged"
    assert {f"{top}/model.safetensors", f"{top}/config.json", f"{top}/playground.json"} <= names


def test_the_budget_is_asked_before_building_and_may_refuse(run_dir, offline_resolver, tmp_path):
    asked = []

    def full(needed):
        asked.append(needed)
        raise DataDirFullError("The server's data folder is full (20.0 of 20.0 GB used).")

    with pytest.raises(DataDirFullError, match="data folder is full"):
        result_archive(run_dir, make_room=full)
    with pytest.raises(DataDirFullError):
        merged_archive(run_dir, tmp_path / "data", resolver=offline_resolver, make_room=full)
    adapter_bytes = export.folder_bytes(run_dir / "adapter")
    total_parameters = __import__("json").loads((run_dir / "metrics.json").read_text())["total_parameters"]
    assert asked == [adapter_bytes, 2 * 4 * total_parameters]  # the merged folder and its zip, in fp32
    assert sorted(p.name for p in (run_dir / "downloads").iterdir()) == [".lock"]  # nothing written

    asked.clear()
    archive = result_archive(run_dir, make_room=asked.append)
    assert asked == [adapter_bytes] and archive.is_file()
    result_archive(run_dir, make_room=asked.append)
    assert asked == [adapter_bytes]  # reused: nothing to make room for


def test_leftovers_of_a_builder_that_died_are_cleared(run_dir):
    downloads = run_dir / "downloads"
    (downloads / f".merge-999-1/{run_dir.name}-merged").mkdir(parents=True)
    (downloads / f".{run_dir.name}-adapter.zip.partial-999-1").write_bytes(b"half")
    result_archive(run_dir)
    assert sorted(p.name for p in downloads.iterdir()) == [".lock", f"{run_dir.name}-adapter.zip"]


def test_a_run_without_weights_is_refused(run_dir, tmp_path):
    shutil.rmtree(run_dir / "adapter")
    with pytest.raises(PlaygroundError, match="saved no weights"):
        result_archive(run_dir)
    with pytest.raises(PlaygroundError, match="no adapter to merge"):
        merged_archive(run_dir, tmp_path / "data")


def test_a_removed_run_is_no_run(run_dir, tmp_path):
    shutil.rmtree(run_dir)
    with pytest.raises(RunNotFoundError, match="There is no run"):
        result_archive(run_dir)
    with pytest.raises(RunNotFoundError, match="There is no run"):
        merged_archive(run_dir, tmp_path / "data")


def test_a_run_removed_while_a_click_waited_for_the_lock_is_no_run(run_dir):
    from playground.finetune.runs import exclusive_lock

    downloads = run_dir / "downloads"
    downloads.mkdir()
    outcome = []

    def click():
        try:
            outcome.append(result_archive(run_dir))
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    with exclusive_lock(downloads / ".lock"):  # the budget's cleaner holds it while it removes the run
        waiter = threading.Thread(target=click)
        waiter.start()
        time.sleep(0.3)
        run_dir.rename(run_dir.with_name(".removing-" + run_dir.name))
    waiter.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], RunNotFoundError)
