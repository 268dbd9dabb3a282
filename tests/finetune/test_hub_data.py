"""Hub data ids and the Hub code path: only owner/name ids, fetched from a stand-in Hub or the cache, never a path.

The Hub here is :class:`tests.finetune.hub_stand_in.HubStandIn`, a local HTTP server that answers
huggingface_hub's own calls, so ``dataset_info`` and ``snapshot_download`` run for real.
"""

from __future__ import annotations

import errno
import io
import os
import site
import tempfile
from pathlib import Path

import pytest

from playground.errors import DataFileError, DiskFullError, FinetuneConfigError
from playground.finetune.config import FinetuneConfig
from playground.finetune.data import load_splits, read_hub_records
from playground.finetune.hub_data import (
    HUB_DATA_MAX_BYTES,
    HubDataSource,
    check_hub_dataset_id,
    choose_data_files,
    fetch_hub_dataset,
    hub_source_for,
    load_hub_dataset,
)
from playground.prompting.tasks import EXAMPLES_DIR
from tests.finetune.hub_stand_in import HubStandIn

PROJECT = EXAMPLES_DIR.parent
TRAIN_CSV = b'dialogue,summary\n"A: Tea?\nB: Yes.",They have tea.\nA: Rain.,It rains.\nA: Bus?,The bus.\n'
TEST_CSV = b"dialogue,summary\nA: Hi.,A greets.\n"


def server_paths() -> list[str]:
    """Places of this machine a message must never show."""
    places = [os.getcwd(), str(Path.home()), tempfile.gettempdir(), str(PROJECT), *site.getsitepackages()]
    return [p for p in places if len(p) > 1]


def assert_no_server_path(message: str) -> None:
    for place in server_paths():
        assert place not in message, f"{place!r} leaked into: {message}"


def parquet_bytes(rows: list[dict]) -> bytes:
    import datasets

    buffer = io.BytesIO()
    datasets.Dataset.from_list(rows).to_parquet(buffer)
    return buffer.getvalue()


@pytest.fixture
def hub():
    rows = [{"dialogue": f"A: line {i}.", "summary": f"summary {i}"} for i in range(4)]
    repos = {
        "someone/dialogs": {"README.md": b"# Dialogs", "train.csv": TRAIN_CSV, "test.csv": TEST_CSV},
        "someone/both": {"data/train-00000-of-00001.parquet": parquet_bytes(rows),
                         "data/test-00000-of-00001.parquet": parquet_bytes(rows[:1]),
                         "train.csv": TRAIN_CSV, "dataset_infos.json": b"{}"},
        "someone/scripted": {"README.md": b"old", "scripted.py": b"import datasets"},
        "someone/broken": {"train.jsonl": b'{"dialogue": "a", "summary": "b"}\n{"dialogue": \n'},
        "someone/tsv": {"train.tsv": b"dialogue\tsummary\nA, b; c\tsum one\nD\tsum two\n"},
    }
    with HubStandIn(repos, gated=("someone/gated",)) as stand_in:
        yield stand_in


def online(tmp_path: Path, hub: HubStandIn, **options) -> HubDataSource:
    return HubDataSource.in_data_dir(tmp_path / "data", offline=False, endpoint=hub.endpoint, **options)


# ------------------------------------------------------------------ the id


@pytest.mark.parametrize("given, expected", [
    ("knkarthick/dialogsum", "knkarthick/dialogsum"),
    ("  someone/dialogs  ", "someone/dialogs"),
    ("Org-1/data_set.v2", "Org-1/data_set.v2"),
    ("examples/data", "examples/data"),  # the shape of a repo id, even though this folder exists locally
])
def test_owner_name_ids_pass(given, expected):
    assert check_hub_dataset_id(given) == expected
    config = FinetuneConfig(data=f"hub:{given}", input_column="dialogue", target_column="summary")
    assert config.data == f"hub:{expected}"


HOSTILE_IDS = [
    ("", "needs a dataset id after it"),
    ("   ", "needs a dataset id after it"),
    ("text", "'text' is not a Hub dataset id: give the owner and the name"),
    ("csv", "'csv' is not a Hub dataset id"),
    ("json", "'json' is not a Hub dataset id"),
    ("parquet", "'parquet' is not a Hub dataset id"),
    ("/etc", "'/etc' looks like a file path"),
    ("/etc/passwd", "looks like a file path"),
    ("../x", "'../x' looks like a file path"),
    ("./examples/data", "looks like a file path"),
    ("~/x", "'~/x' looks like a file path"),
    ("C:\\x", "looks like a file path"),
    ("C:/data/x", "looks like a file path"),
    ("owner\\name", "looks like a file path"),
    ("http://example.com/data.csv", "is an address, not a Hub dataset id"),
    ("https://huggingface.co/datasets/knkarthick/dialogsum", "(for that address: hub:knkarthick/dialogsum)"),
    ("hf://datasets/someone/dialogs", "(for that address: hub:someone/dialogs)"),
    ("file:///etc/passwd", "is an address"),
    ("owner/name/extra", "has more than one '/'"),
    ("datasets/owner/name", "has more than one '/'"),
    ("owner/" + "n" * 97, "is not a valid Hub dataset id"),
    ("o" * 97 + "/name", "is not a valid Hub dataset id"),
    ("own er/name", "is not a valid Hub dataset id"),
    ("owner/na$me", "is not a valid Hub dataset id"),
    ("owner/name;rm -rf", "is not a valid Hub dataset id"),
    ("ownér/name", "is not a valid Hub dataset id"),
    ("owner/-name", "is not a valid Hub dataset id"),
    ("owner/na..me", "is not a valid Hub dataset id"),
    ("owner/name.git", "is not a valid Hub dataset id"),
    ("/", "looks like a file path"),
    ("owner/", "is not a valid Hub dataset id"),
]


@pytest.mark.parametrize("given, message", HOSTILE_IDS)
def test_anything_but_owner_name_is_refused_with_a_clear_message(given, message):
    with pytest.raises(DataFileError) as info:
        check_hub_dataset_id(given)
    text = str(info.value)
    assert message in text and "hub:knkarthick/dialogsum" in text
    assert_no_server_path(text)
    with pytest.raises(FinetuneConfigError, match="hub:knkarthick/dialogsum"):  # the config refuses it too
        FinetuneConfig(data=f"hub:{given}", input_column="dialogue", target_column="summary")


def test_a_very_long_id_is_shown_cut_short():
    with pytest.raises(DataFileError) as info:
        check_hub_dataset_id("x" * 5000)
    assert len(str(info.value)) < 400 and "…" in str(info.value)


@pytest.mark.parametrize("given", ["text", "csv", "/etc", "../x", "./examples/data", "~/x", "owner/name/extra",
                                   "http://127.0.0.1:1/x"])
def test_a_refused_id_never_reaches_the_hub_or_the_disk(given, hub, tmp_path):
    with pytest.raises(DataFileError):
        read_hub_records(given, "dialogue", "summary", hub=online(tmp_path, hub))
    assert hub.requests == [] and not (tmp_path / "data").exists()


def test_a_repo_shaped_id_that_is_a_local_folder_is_looked_up_on_the_hub_only(hub, tmp_path, monkeypatch):
    folder = tmp_path / "work" / "owner" / "name"
    folder.mkdir(parents=True)
    (folder / "secret.csv").write_text("secret_column,other_secret\nx,y\n")
    monkeypatch.chdir(tmp_path / "work")
    for dataset_id in ("owner/name", "examples/data"):
        with pytest.raises(DataFileError) as info:
            read_hub_records(dataset_id, "secret_column", "other_secret", hub=online(tmp_path, hub))
        text = str(info.value)
        assert f"The Hub has no dataset {dataset_id!r}" in text and "secret" not in text
        assert_no_server_path(text)
    assert any("/api/datasets/owner/name" in path for _, path in hub.requests)
    monkeypatch.chdir(PROJECT)  # examples/data really exists here
    with pytest.raises(DataFileError, match="The Hub has no dataset 'examples/data'"):
        read_hub_records("examples/data", "text", "label", hub=online(tmp_path, hub))


# ------------------------------------------------------------------ fetching from the Hub


def test_a_hub_dataset_is_downloaded_into_the_data_dir_and_split_by_file_name(hub, tmp_path):
    source = online(tmp_path, hub)
    records = read_hub_records("someone/dialogs", "dialogue", "summary", hub=source)
    assert [(r.split, r.target) for r in records] == [("train", "They have tea."), ("train", "It rains."),
                                                      ("train", "The bus."), ("test", "A greets.")]
    assert records[0].input == "A: Tea?\nB: Yes."
    assert sorted(hub.downloaded()) == ["test.csv", "train.csv"]  # not the README
    assert (tmp_path / "data" / "datasets" / "hub" / "datasets--someone--dialogs").is_dir()
    assert any((tmp_path / "data" / "datasets" / "arrow").iterdir())  # the datasets cache, under the data dir
    config = FinetuneConfig(data="hub:someone/dialogs", input_column="dialogue", target_column="summary",
                            validation_fraction=0)
    splits = load_splits(config, hub=source)
    assert splits.counts() == {"train": 3, "validation": 0, "test": 1} and splits.source == "hub:someone/dialogs"


def test_parquet_is_preferred_and_only_its_files_are_downloaded(hub, tmp_path):
    loaded = load_hub_dataset("someone/both", online(tmp_path, hub))
    assert {name: len(rows) for name, rows in loaded.items()} == {"train": 4, "test": 1}
    assert sorted(hub.downloaded()) == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]


def test_a_tsv_is_read_with_tabs(hub, tmp_path):
    records = read_hub_records("someone/tsv", "dialogue", "summary", hub=online(tmp_path, hub))
    assert [r.input for r in records] == ["A, b; c", "D"]


def test_choosing_data_files():
    listing = [("README.md", 10), (".hidden/x.csv", 1), ("dataset_infos.json", 5), ("a/train.json", 7),
               ("a/test.jsonl", 3), ("b.csv", 4)]
    data_format, files = choose_data_files(listing)
    assert data_format.name == "JSON Lines" and files == [("a/test.jsonl", 3), ("a/train.json", 7)]
    assert choose_data_files([("README.md", 1), ("load.py", 2)]) is None


def test_the_size_cap_is_checked_before_any_download(hub, tmp_path):
    with pytest.raises(DataFileError) as info:
        fetch_hub_dataset("someone/dialogs", online(tmp_path, hub, max_bytes=50))
    text = str(info.value)
    assert "has 0 MB of CSV files; this server takes at most 0 MB per data set" in text
    assert "upload them as a JSONL or CSV file" in text and hub.downloaded() == []
    with pytest.raises(DataFileError, match="has 2 Parquet files; this server takes at most 1 per data set"):
        fetch_hub_dataset("someone/both", online(tmp_path, hub, max_files=1))
    assert hub.downloaded() == [] and HUB_DATA_MAX_BYTES <= 500_000_000


@pytest.mark.parametrize("dataset_id, message", [
    ("nobody/here", "The Hub has no dataset 'nobody/here' (or it is private). Check the owner and the name"),
    ("someone/gated", "The Hub dataset 'someone/gated' is gated: accept its conditions"),
    ("someone/scripted", "has no data files this app can read (Parquet, JSON Lines, CSV, TSV); its files: "
                         "README.md, scripted.py"),
    ("someone/broken", "The JSON Lines files of the Hub dataset 'someone/broken' could not be read: ArrowInvalid"),
])
def test_hub_problems_are_explained_without_server_paths(dataset_id, message, hub, tmp_path):
    with pytest.raises(DataFileError) as info:
        read_hub_records(dataset_id, "dialogue", "summary", hub=online(tmp_path, hub))
    assert message in str(info.value)
    assert_no_server_path(str(info.value))
    assert str(tmp_path) not in str(info.value)


# ------------------------------------------------------------------ offline and out of reach


def test_offline_reads_only_the_cache(hub, tmp_path):
    read_hub_records("someone/dialogs", "dialogue", "summary", hub=online(tmp_path, hub))
    asked = len(hub.requests)
    offline = HubDataSource.in_data_dir(tmp_path / "data", offline=True, endpoint=hub.endpoint)
    records = read_hub_records("someone/dialogs", "dialogue", "summary", hub=offline)
    assert len(records) == 4 and len(hub.requests) == asked  # the Hub was never asked
    with pytest.raises(DataFileError) as info:
        read_hub_records("someone/both", "dialogue", "summary", hub=offline)
    assert "The Hub dataset 'someone/both' is not in the app's Hub cache and the app is offline. Go online once" \
           in str(info.value)
    assert len(hub.requests) == asked
    assert_no_server_path(str(info.value))


def test_an_unreachable_hub_falls_back_to_the_cache(hub, tmp_path):
    read_hub_records("someone/dialogs", "dialogue", "summary", hub=online(tmp_path, hub))
    closed = HubDataSource.in_data_dir(tmp_path / "data", offline=False, endpoint="http://127.0.0.1:9")
    assert len(read_hub_records("someone/dialogs", "dialogue", "summary", hub=closed)) == 4
    with pytest.raises(DataFileError, match=r"not in the app's Hub cache and the Hub could not be reached "
                                            r"\(ConnectError\)"):
        read_hub_records("someone/other", "dialogue", "summary", hub=closed)


def test_the_cache_lives_under_the_data_dir(tmp_path):
    class Resolver:
        offline = True

    source = hub_source_for(tmp_path, Resolver())
    assert source.offline and source.cache_dir == tmp_path / "datasets"
    assert source.hub_cache.parent == source.arrow_cache.parent == tmp_path / "datasets"
    assert HubDataSource.from_settings(type("S", (), {"data_dir": tmp_path, "offline": False})()).cache_dir == \
        tmp_path / "datasets"


def test_a_full_disk_during_the_download_is_a_clear_message(hub, tmp_path, monkeypatch):
    import huggingface_hub

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "data" / "blob"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", full)
    with pytest.raises(DiskFullError) as info:
        fetch_hub_dataset("someone/dialogs", online(tmp_path, hub))
    text = str(info.value)
    assert "Could not save the Hub dataset 'someone/dialogs': the server's disk is full" in text
    assert "Errno" not in text and str(tmp_path) not in text
