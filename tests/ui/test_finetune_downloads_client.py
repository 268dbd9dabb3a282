"""The Fine-tune tab's downloads, Cancel and the disk, through the API: archives built once per run and handed
to Gradio without a copy (disk measured before and after repeated clicks), nobody else's, Cancel's messages,
uploads over the limit refused by Gradio, and a full data dir refused with a message."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from gradio_client.exceptions import AppError

from playground.finetune.config import FinetuneConfig
from playground.finetune.runs import SUCCEEDED
from playground.finetune.storage import disk_usage
from playground.finetune.train import train
from tests.finetune.conftest import RecordingControl
from tests.helpers import build_tiny_causal_lm
from tests.ui.conftest import issue_token, owner_id
from tests.ui.test_finetune_client import config_args

ENTRY = "playground.finetune.train:run_job"
ROWS = [("A: Can we meet at six?\nB: Yes, at the cafe.", "They meet at six at the cafe."),
        ("A: The tap drips.\nB: I will call a plumber.", "B will call a plumber about the tap."),
        ("A: Is the bus late?\nB: It comes in ten minutes.", "The bus comes in ten minutes.")]


def person(client, services) -> tuple[str, str]:
    """(the identity token a page sends, the owner its runs are filed under) of a new person."""
    token = issue_token(client)
    return token, owner_id(services, token)


@pytest.fixture(scope="module")
def tiny_run(app_services, app_url, tmp_path_factory, tiny_tokenizer) -> tuple[str, str]:
    """(owner key, run id) of a finished two-step LoRA run of a tiny Llama in the app's run store."""
    from gradio_client import Client

    root = tmp_path_factory.mktemp("downloads-ui")
    model = build_tiny_causal_lm(root / "tiny-llama", "llama", tiny_tokenizer, 256)
    data = root / "dialogues.jsonl"
    data.write_text("".join(json.dumps({"dialogue": d, "summary": s}) + "\n" for d, s in ROWS * 3), encoding="utf-8")
    config = FinetuneConfig.from_dict({"model": str(model), "data": str(data), "input_column": "dialogue",
                                       "target_column": "summary", "max_steps": 2, "max_length": 96,
                                       "sample_count": 0, "validation_fraction": 0, "learning_rate": 1e-2})
    key, owner = person(Client(app_url, verbose=False), app_services)
    run_id = app_services.runs.create(owner, config.to_dict(), ENTRY)
    train(config, app_services.runs.path(run_id), RecordingControl(), app_services.settings.data_dir,
          resolver=app_services.engines.resolver)
    app_services.runs.set_status(run_id, SUCCEEDED, force=True)
    return key, run_id


@pytest.fixture
def own_client(app_url, tmp_path):
    """A client that keeps what it downloads in its own folder, so Gradio's cache holds only the server's files."""
    from gradio_client import Client

    return Client(app_url, verbose=False, download_files=str(tmp_path / "client"))


def gradio_cache() -> Path:
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def served_copies(run_dir: Path, run_id: str, kind: str) -> tuple[int, int]:
    """(files in Gradio's cache named like the run's archive, bytes they take beyond the run's own archives)."""
    served = [p for p in gradio_cache().glob(f"*/{run_id}-{kind}.zip") if p.is_file()]
    own = {(s.st_dev, s.st_ino) for s in (p.stat() for p in (run_dir / "downloads").glob("*.zip"))}
    extra = sum(s.st_blocks * 512 for s in (p.stat() for p in served) if (s.st_dev, s.st_ino) not in own)
    return len(served), extra


@pytest.mark.parametrize("endpoint, kind", [("/finetune_download", "adapter"), ("/finetune_merge", "merged")])
def test_repeated_downloads_do_not_grow_the_disk(own_client, app_services, tiny_run, endpoint, kind):
    owner, run_id = tiny_run
    run_dir = app_services.runs.path(run_id)
    data_dir = app_services.settings.data_dir
    first = own_client.predict(owner, run_id, api_name=endpoint)
    archive = run_dir / "downloads" / f"{run_id}-{kind}.zip"
    assert archive.is_file() and Path(first).read_bytes() == archive.read_bytes()
    run_bytes, data_bytes = disk_usage(run_dir), disk_usage(data_dir)
    cache_bytes = disk_usage(gradio_cache())
    for _ in range(3):
        again = own_client.predict(owner, run_id, api_name=endpoint)
        assert Path(again).read_bytes() == archive.read_bytes()
    after_run, after_data, after_cache = disk_usage(run_dir), disk_usage(data_dir), disk_usage(gradio_cache())
    print(f"\n{kind}: archive {archive.stat().st_size / 1e6:.2f} MB; run dir {run_bytes} -> {after_run} B, "
          f"data dir {data_bytes} -> {after_data} B, Gradio cache {cache_bytes} -> {after_cache} B after 3 more")
    assert after_run == run_bytes  # the archive is built once and kept; nothing else is written
    assert abs(after_data - data_bytes) < 1_000_000  # (other tests' runs share the data dir)
    count, extra = served_copies(run_dir, run_id, kind)
    assert count == 1  # one file in Gradio's cache, reused by every click
    if os.stat(gradio_cache()).st_dev == archive.stat().st_dev:
        assert extra == 0  # a hard link: no second copy at all
    else:  # another filesystem: one copy, never one per click
        assert extra <= disk_usage(archive) + 64 * 1024
    folders = sorted(p.name for p in (run_dir / "downloads").iterdir())
    assert f"{run_id}-merged" not in folders and not [n for n in folders if n.startswith(".merge")]


@pytest.mark.parametrize("endpoint", ["/finetune_download", "/finetune_merge"])
@pytest.mark.parametrize("with_runs", [False, True])
def test_nobody_else_can_download_the_run(own_client, app_services, tiny_run, endpoint, with_runs):
    _, run_id = tiny_run
    stranger, stranger_owner = person(own_client, app_services)
    if with_runs:  # someone with finished runs of their own
        own = app_services.runs.create(stranger_owner, {"model": "m"}, ENTRY)
        app_services.runs.set_status(own, SUCCEEDED)
    with pytest.raises(AppError, match="There is no run"):
        own_client.predict(stranger, run_id, api_name=endpoint)


def test_the_served_link_is_not_the_run_folder_and_cannot_be_guessed(own_client, app_services, tiny_run):
    owner, run_id = tiny_run
    own_client.predict(owner, run_id, api_name="/finetune_download")
    (link,) = [p for p in gradio_cache().glob(f"*/{run_id}-adapter.zip")]
    assert len(link.parent.name) == 64 and int(link.parent.name, 16) >= 0  # an HMAC, not the run id
    base = own_client.src.rstrip("/")
    archive = app_services.runs.path(run_id) / "downloads" / f"{run_id}-adapter.zip"
    refused = httpx.get(f"{base}/gradio_api/file={archive}")  # the run's own folder is never served
    assert refused.status_code in (403, 404)


@pytest.mark.parametrize("run_id, message", [("", "No run yet"), ("20200101-000000-000000-abcdef", "There is no run")])
def test_cancel_errors_reach_the_caller_with_their_message(client, app_services, run_id, message):
    with pytest.raises(AppError, match=message):
        client.predict(person(client, app_services)[0], run_id, api_name="/finetune_cancel")


def test_cancel_of_a_finished_run_is_no_error(client, tiny_run):
    owner, run_id = tiny_run
    client.predict(owner, run_id, api_name="/finetune_cancel")  # a warning toast on the page, no error


# --------------------------------------------------------------------------- a small app with small limits


@pytest.fixture(scope="module")
def small_app(tmp_path_factory):
    """An app with a 1 MB upload limit and a 20 kB data budget, on its own data dir."""
    from gradio_client import Client

    from playground.config import Settings
    from playground.services import Services
    from playground.ui.app import build_app, launch_options
    from tests.ui.conftest import _free_port

    data_dir = tmp_path_factory.mktemp("small-data")
    settings = Settings.load([], {
        "PLAYGROUND_MAX_UPLOAD_MB": "1", "PLAYGROUND_DATA_BUDGET_GB": "0.00002", "PLAYGROUND_OFFLINE": "1",
        "PLAYGROUND_DATA_DIR": str(data_dir), "PLAYGROUND_HOST": "127.0.0.1", "PLAYGROUND_PORT": str(_free_port()),
    })
    services = Services.create(settings)
    demo = build_app(services)
    try:
        options = launch_options(services)
        options.update(prevent_thread_lock=True, quiet=True, share=False)
        demo.launch(**options)
        url = f"http://127.0.0.1:{settings.port}/"
        yield url, Client(url, verbose=False, download_files=str(data_dir.parent / "small-client")), services
    finally:
        demo.close()
        services.close()


@pytest.mark.parametrize("size, accepted", [(400_000, True), (999_000, True), (1_000_001, False), (3_000_000, False)])
def test_gradio_refuses_an_upload_over_the_limit(small_app, size, accepted):
    url, _, _ = small_app
    files = {"files": ("rows.jsonl", os.urandom(size), "application/octet-stream")}
    response = httpx.post(f"{url}gradio_api/upload", files=files, timeout=60)
    if accepted:
        assert response.status_code == 200, response.text
        (stored,) = response.json()
        assert Path(stored).stat().st_size == size
    else:
        assert response.status_code == 413 and "maximum allowed size" in response.text


def test_a_full_data_dir_refuses_a_run_with_a_message(small_app):
    _, client, services = small_app
    filler = services.settings.data_dir / "converted" / "model.safetensors"
    filler.parent.mkdir(parents=True, exist_ok=True)
    filler.write_bytes(os.urandom(100_000))  # the shared model cache: never removed to make room
    services.disk.used_bytes(fresh=True)
    key, owner = person(client, services)
    with pytest.raises(AppError, match=r"The server's data folder is full \(0\.0 of 0\.0 GB used\)"):
        client.predict(key, *config_args(), api_name="/finetune_start")
    assert services.jobs.list_runs(owner) == [] and filler.is_file()
