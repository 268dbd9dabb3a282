"""The offline kit: ``python -m playground download`` against a stand-in Hub on a loopback port.

The Hub is :class:`tests.finetune.hub_stand_in.HubStandIn` (huggingface_hub's own calls run for real);
the models are tiny fake repos (a config.json, a tokenizer file and a small safetensors built here).
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from playground.__main__ import main as playground_main
from playground.errors import ModelUnavailableError
from playground.finetune.hub_data import HubDataSource, load_hub_dataset
from playground.models import download
from playground.models.catalog import Catalog
from playground.models.download import DATASET_ID, PARTIAL_FOLDER, DownloadError, Downloader
from playground.models.sources import SourceResolver
from tests.finetune.hub_stand_in import HubStandIn
from tests.helpers import offline_settings

CATALOG_YAML = """
models:
  - {id: packaged-tiny, name: Packaged tiny, family: decoder, parameters: 1000, license: MIT, chat_template: false,
     context_length: 64, objective: causal_lm, head: causal_lm, lora_targets: [q], description: ships in a package,
     sources: [{kind: packaged_call, format: transformers, package: yaml, call: __name__},
               {kind: hub, format: transformers, repo: someone/packaged-tiny}]}
  - {id: tiny-t5, name: Tiny T5, family: encoder-decoder, parameters: 2000, license: MIT, chat_template: false,
     context_length: 64, objective: span_corruption, head: seq2seq, lora_targets: [q], description: Hub only,
     sources: [{kind: hub, format: transformers, repo: someone/tiny-t5}]}
  - {id: tiny-bert, name: Tiny BERT, family: encoder, parameters: 3000, license: MIT, chat_template: false,
     context_length: 64, objective: masked_lm, head: masked_lm, lora_targets: [q], description: Hub only,
     sources: [{kind: hub, format: transformers, repo: someone/tiny-bert}]}
  - {id: tiny-gguf, name: Tiny GGUF, family: decoder, parameters: 4000, license: MIT, chat_template: false,
     context_length: 64, objective: causal_lm, head: causal_lm, lora_targets: [q], description: a GGUF,
     sources: [{kind: hub_gguf, format: gguf, repo: someone/tiny-GGUF, file: tiny-q4.gguf},
               {kind: hub, format: transformers, repo: someone/tiny-bert}]}
"""
TRAIN_CSV = b"id,dialogue,summary,topic\n1,\"#Person1#: Tea?\n#Person2#: Yes.\",They have tea.,tea\n2,A: Rain.,It rains.,rain\n"
TEST_CSV = b"id,dialogue,summary,topic\n3,A: Hi.,A greets.,hello\n"


def safetensors_bytes(values: int = 512) -> bytes:
    """A small, valid safetensors file: one float32 tensor."""
    header = json.dumps({"weight": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + struct.pack(f"<{values}f", *range(values))


def model_repo(model_type: str) -> dict[str, bytes]:
    return {"config.json": json.dumps({"model_type": model_type}).encode(),
            "tokenizer_config.json": b'{"model_max_length": 64}',
            "model.safetensors": safetensors_bytes(),
            "pytorch_model.bin": b"pickled weights the app never loads",
            "onnx/config.json": b"{}", "README.md": b"# tiny"}


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG_YAML, encoding="utf-8")
    return Catalog.load(path)


@pytest.fixture
def hub():
    models = {"someone/tiny-t5": model_repo("t5"), "someone/tiny-bert": model_repo("bert"),
              "someone/packaged-tiny": model_repo("llama"),
              "someone/tiny-GGUF": {"tiny-q4.gguf": b"GGUF" + bytes(2000), "README.md": b"# gguf"}}
    datasets = {DATASET_ID: {"train.csv": TRAIN_CSV, "test.csv": TEST_CSV, "README.md": b"# DialogSum"}}
    with HubStandIn(datasets, models=models) as stand_in:
        yield stand_in


@pytest.fixture
def settings(tmp_path):
    return replace(offline_settings(tmp_path / "data"), models_dir=tmp_path / "models")


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """huggingface_hub waits a second before it retries a broken connection; the tests need not."""
    import huggingface_hub.file_download as file_download

    monkeypatch.setattr(file_download.time, "sleep", lambda seconds: None)


def downloader(settings, catalog, hub, events=None, **options) -> Downloader:
    return Downloader.from_settings(settings, catalog, endpoint=hub.endpoint,
                                    hub_cache_dir=settings.data_dir / "hub-cache",
                                    progress=events.append if events is not None else None, **options)


def run_cli(argv, settings, catalog, hub_endpoint, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", hub_endpoint)
    code = download.main(argv, settings=settings, catalog=catalog, hub_cache_dir=settings.data_dir / "hub-cache")
    out = capsys.readouterr()
    return code, out.out, out.err


def get_count(hub: HubStandIn, filename: str) -> int:
    return sum(1 for method, path in hub.requests if method == "GET" and path.endswith("/" + filename))


# ------------------------------------------------------------------ fetching


def test_one_model_lands_where_the_resolver_finds_it_with_the_hub_unreachable(settings, catalog, hub):
    events = []
    where = downloader(settings, catalog, hub, events).fetch("tiny-t5")
    assert where == "PLAYGROUND_MODELS_DIR/tiny-t5"
    folder = settings.models_dir / "tiny-t5"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer_config.json"]
    assert not (settings.models_dir / PARTIAL_FOLDER).exists()
    assert "pytorch_model.bin" not in hub.downloaded() and "onnx/config.json" not in hub.downloaded()
    # The app's resolver, offline: the local folder, no network.
    weights = SourceResolver(settings.models_dir, offline=True, hub_cache_dir=settings.data_dir / "x").resolve(
        catalog.get("tiny-t5"))
    assert weights.origin == "local" and weights.path == folder and weights.format == "transformers"
    # Progress: files and bytes counted up to the whole; config.json (what marks a model folder) comes last.
    assert [e.files_done for e in events] == [1, 2, 3] and {e.files_total for e in events} == {3}
    assert events[-1].file == "config.json" and events[-1].bytes_done == events[-1].bytes_total
    assert events[-1].bytes_total == sum(len(b) for n, b in model_repo("t5").items() if "/" not in n
                                         and n not in ("pytorch_model.bin", "README.md"))
    assert "3/3 files" in events[-1].line() and "MB" in events[-1].line()


def test_a_gguf_model_and_the_hub_cache_without_a_models_folder(settings, catalog, hub):
    no_folder = replace(settings, models_dir=None)
    cache = settings.data_dir / "hub-cache"
    where = downloader(no_folder, catalog, hub).fetch("tiny-gguf")
    assert where.startswith("Hub cache")
    resolver = SourceResolver(None, offline=True, hub_cache_dir=cache)
    spec = catalog.get("tiny-gguf")
    assert resolver.is_available_offline(spec, "gguf") and not resolver.is_available_offline(spec, "transformers")
    weights = resolver.resolve(spec, "gguf")
    assert weights.origin == "hub" and weights.path.name == "tiny-q4.gguf"
    assert weights.path.read_bytes() == b"GGUF" + bytes(2000)


def test_all_then_check_and_the_data_set_reads_offline(settings, catalog, hub, monkeypatch, capsys):
    code, out, err = run_cli(["--check"], settings, catalog, hub.endpoint, monkeypatch, capsys)
    assert code == 0 and hub.requests == []  # --check never touches the Hub
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "yes" in lines["packaged-tiny"] and "PyPI package yaml" in lines["packaged-tiny"]
    assert "NO" in lines["tiny-t5"] and "python -m playground download tiny-t5" in lines["tiny-t5"]
    assert "python -m playground download tiny-gguf" in lines["tiny-gguf"]
    assert "python -m playground download dialogsum" in lines["dialogsum"]
    assert "1 of 5 work offline now. Everything missing: python -m playground download --all" in out

    code, out, err = run_cli(["--all"], settings, catalog, hub.endpoint, monkeypatch, capsys)
    assert code == 0, err
    assert "tiny-t5: now found in PLAYGROUND_MODELS_DIR/tiny-t5" in out
    assert "dialogsum: now found in data cache" in out and "dialogsum: 2/2 files" in out
    assert "someone/packaged-tiny" not in " ".join(p for _, p in hub.requests)  # works offline: not fetched

    code, out, err = run_cli(["--check"], settings, catalog, hub.endpoint, monkeypatch, capsys)
    assert code == 0 and "NO" not in out and "5 of 5 work offline now." in out
    assert "local folder PLAYGROUND_MODELS_DIR/tiny-bert" in out
    # What the fine-tune tab reads for hub:knkarthick/dialogsum, with the Hub out of reach:
    splits = load_hub_dataset(DATASET_ID, HubDataSource.in_data_dir(settings.data_dir, offline=True))
    assert sorted(splits) == ["test", "train"] and splits["train"][0]["summary"] == "They have tea."


def test_an_id_already_offline_is_not_fetched_again(settings, catalog, hub):
    fetcher = downloader(settings, catalog, hub)
    fetcher.fetch("tiny-bert")
    before = len(hub.requests)
    assert "already there" in fetcher.fetch("tiny-bert")
    assert "already there" in fetcher.fetch("packaged-tiny")
    assert len(hub.requests) == before


# ------------------------------------------------------------------ resuming and verifying


def test_a_broken_connection_resumes_where_it_stopped(settings, catalog, hub):
    """huggingface_hub keeps what arrived in whole chunks (10 MB) and asks for the rest with a Range request."""
    from huggingface_hub import constants

    big = safetensors_bytes(3_000_000)  # 12 MB: more than one chunk
    hub.models["someone/tiny-t5"]["model.safetensors"] = big
    offset = constants.DOWNLOAD_CHUNK_SIZE + 1000
    hub.cut["someone/tiny-t5/model.safetensors"] = [offset, 1]  # the first body stops past the first chunk
    downloader(settings, catalog, hub).fetch("tiny-t5")
    assert hub.ranges == [("/someone/tiny-t5/resolve/main/model.safetensors",
                           f"bytes={constants.DOWNLOAD_CHUNK_SIZE}-")]
    assert (settings.models_dir / "tiny-t5" / "model.safetensors").read_bytes() == big


def test_a_file_cut_off_before_a_whole_chunk_is_fetched_again(settings, catalog, hub):
    hub.cut["someone/tiny-t5/model.safetensors"] = [1000, 1]
    downloader(settings, catalog, hub).fetch("tiny-t5")
    assert get_count(hub, "model.safetensors") == 2 and hub.ranges == []
    assert (settings.models_dir / "tiny-t5" / "model.safetensors").read_bytes() == safetensors_bytes()


def test_an_interrupted_download_is_never_a_model_and_the_next_run_finishes_it(settings, catalog, hub):
    hub.cut["someone/tiny-t5/model.safetensors"] = [1000, 99]  # the connection keeps breaking at byte 1000
    fetcher = downloader(settings, catalog, hub)
    with pytest.raises(DownloadError, match="could not be reached .* run the command again: files already verified"):
        fetcher.fetch("tiny-t5")
    staging = settings.models_dir / PARTIAL_FOLDER / "tiny-t5"
    assert not (settings.models_dir / "tiny-t5").exists()  # nothing that looks like a model
    assert not list(staging.rglob("model.safetensors")) and not list(staging.rglob("*.incomplete"))  # no partial file
    resolver = SourceResolver(settings.models_dir, offline=True, hub_cache_dir=settings.data_dir / "x")
    with pytest.raises(ModelUnavailableError):
        resolver.resolve(catalog.get("tiny-t5"))
    assert get_count(hub, "tokenizer_config.json") == 1

    hub.cut.clear()  # the network is back: the same command again
    fetcher.fetch("tiny-t5")
    assert get_count(hub, "tokenizer_config.json") == 1  # the verified file was kept, not fetched again
    assert resolver.resolve(catalog.get("tiny-t5")).origin == "local"
    assert (settings.models_dir / "tiny-t5" / "model.safetensors").read_bytes() == safetensors_bytes()


def test_a_corrupted_file_is_caught_by_its_sha256_and_removed(settings, catalog, hub):
    hub.corrupt.add("someone/tiny-t5/model.safetensors")  # same size, one byte changed
    fetcher = downloader(settings, catalog, hub)
    with pytest.raises(DownloadError, match="model.safetensors of someone/tiny-t5 failed verification twice "
                                            r"\(its sha256 differs from the Hub's\); it was removed"):
        fetcher.fetch("tiny-t5")
    assert get_count(hub, "model.safetensors") == 2  # fetched once more before giving up
    assert not (settings.models_dir / "tiny-t5").exists()
    assert not list((settings.models_dir / PARTIAL_FOLDER).rglob("model.safetensors"))
    hub.corrupt.clear()
    fetcher.fetch("tiny-t5")
    assert (settings.models_dir / "tiny-t5" / "model.safetensors").read_bytes() == safetensors_bytes()


def test_a_damaged_local_file_is_re_fetched(settings, catalog, hub):
    """A file already in the partial folder whose bytes went bad (a crash, a disk) fails its git checksum."""
    events = []
    fetcher = downloader(settings, catalog, hub, events)
    hub.cut["someone/tiny-t5/model.safetensors"] = [1000, 99]
    with pytest.raises(DownloadError):
        fetcher.fetch("tiny-t5")
    kept = settings.models_dir / PARTIAL_FOLDER / "tiny-t5" / "tokenizer_config.json"
    kept.write_bytes(b'{"model_max_length": 65}')  # same size, other bytes
    hub.cut.clear()
    events.clear()
    fetcher.fetch("tiny-t5")
    assert any(e.file == "tokenizer_config.json" and e.note == "re-fetched" for e in events)
    assert (settings.models_dir / "tiny-t5" / "tokenizer_config.json").read_bytes() == b'{"model_max_length": 64}'


# ------------------------------------------------------------------ the command's answers


def test_unknown_id_exits_2_with_the_ids_to_choose(settings, catalog, hub, monkeypatch, capsys):
    code, out, err = run_cli(["tiny-t5", "no-such-model"], settings, catalog, hub.endpoint, monkeypatch, capsys)
    assert code == 2 and hub.requests == []
    assert "Unknown model id 'no-such-model'" in err and "tiny-t5" in err and "dialogsum" in err
    code, out, err = run_cli([], settings, catalog, hub.endpoint, monkeypatch, capsys)
    assert code == 2 and "--all" in err


def test_hub_unreachable_gives_one_clear_message(settings, catalog, monkeypatch, capsys):
    with socket.socket() as s:  # a loopback port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = run_cli(["tiny-t5"], settings, catalog, f"http://127.0.0.1:{port}", monkeypatch, capsys)
    assert code == 1
    assert f"tiny-t5: The Hugging Face Hub (http://127.0.0.1:{port}) could not be reached (ConnectError)" in err
    assert "Connect this machine to the network" in err and "Traceback" not in err + out
    assert str(settings.models_dir) not in err
    assert not (settings.models_dir / "tiny-t5").exists()
    code, out, err = run_cli(["--all"], settings, catalog, f"http://127.0.0.1:{port}", monkeypatch, capsys)
    assert code == 1 and err.count("could not be reached") == 1  # said once, not once per model
    assert "so the other 3 were not tried" in err and "4 of 4 could not be fetched" in err


def test_help_lists_the_download_command(capsys):
    assert playground_main(["--help"]) == 0
    assert "download  fetch Hub models and the DialogSum data set" in capsys.readouterr().out
    assert playground_main(["download", "--help"]) == 0
    assert "--check" in capsys.readouterr().out


# ------------------------------------------------------------------ the message of a missing model


def test_a_missing_model_names_the_command_that_fetches_it_first(tmp_path):
    real = Catalog.load()
    resolver = SourceResolver(tmp_path, offline=True, hub_cache_dir=tmp_path / "hub")
    with pytest.raises(ModelUnavailableError) as info:
        resolver.resolve(real.get("flan-t5-small"))
    first = str(info.value).splitlines()[0]
    assert first.endswith("To fetch it ahead of time for offline use, run: python -m playground download flan-t5-small")
    with pytest.raises(ModelUnavailableError) as info:
        resolver.resolve(real.get("qwen2.5-0.5b-instruct"), "transformers")
    assert "run: python -m playground download qwen2.5-0.5b-instruct --format transformers" in str(info.value)
    with pytest.raises(ModelUnavailableError) as info:
        resolver.resolve(real.get("gpt2"), "gguf")  # no GGUF source: no command that cannot help
    assert "python -m playground download" not in str(info.value)
