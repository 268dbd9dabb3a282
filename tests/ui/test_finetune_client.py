"""The Fine-tune tab through its API: inspect, estimate, a real tiny LoRA run in a child process, results, and
the workshop limits on runs."""

from __future__ import annotations

import time
import zipfile

import pytest
from gradio_client.exceptions import AppError

from playground.finetune.config import FinetuneConfig
from playground.ui.tabs.finetune import NUMBER_FIELDS
from tests.ui.conftest import issue_token, owner_id

QUICK = dict(max_steps=3, batch_size=1, max_length=160, sample_count=1, max_new_tokens=8, test_limit=2,
             validation_fraction=0.2, eval_every=2, learning_rate=1e-3)


def config_args(model="smollm2-135m-instruct", method="lora", data="dialogues-small", **numbers):
    defaults = FinetuneConfig()
    values = {name: numbers.get(name, QUICK.get(name, getattr(defaults, name))) for name in NUMBER_FIELDS}
    return [model, method, data, None, "", "", "auto", "", *values.values()]


def wait_for(client, owner, run_id, statuses, timeout_s=600):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        result = client.predict(owner, run_id, api_name="/finetune_poll")
        if any(f"· {status}" in result[2] for status in statuses):
            return result
        time.sleep(2)
    raise AssertionError(f"run {run_id} never reached {statuses}: {result[2]}")


def test_inspect_shows_splits_examples_and_token_lengths(client):
    summary, examples, lengths = client.predict(*config_args(), api_name="/finetune_inspect")
    assert "train" in summary and "validation" in summary and "test" in summary
    assert examples["data"] and "Summarize" in examples["data"][0][1]
    assert lengths is not None


def test_preflight_reports_trainable_share_memory_and_duration(client):
    text = client.predict(*config_args(), api_name="/finetune_preflight")
    assert "Trainable parameters" in text and "%" in text
    assert "full fine-tuning" in text and "GiB" in text
    assert "training step took" in text


@pytest.mark.parametrize("numbers, expected", [
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(lora_r=0), "lora_r"),
    (dict(max_steps=-1), "max_steps"),
])
def test_bad_hyperparameters_are_refused_before_any_work(client, numbers, expected):
    with pytest.raises(AppError, match=expected):
        client.predict(issue_token(client), *config_args(**numbers), api_name="/finetune_start")


def test_a_tiny_run_trains_in_the_background_and_fills_the_results(client, tmp_path):
    owner = issue_token(client)
    owner_back, picker = client.predict(owner, *config_args(), api_name="/finetune_start")
    assert owner_back == owner
    run_id = picker["value"] if isinstance(picker, dict) else picker
    assert run_id

    status, loss, scores, gain, comparison = wait_for(client, owner, run_id, ["succeeded", "failed"])[2:7]
    assert "succeeded" in status, status
    assert loss is not None and scores is not None
    assert "ROUGE-L went from" in gain
    headers = comparison["headers"]
    assert comparison["data"] and "reference" in headers
    # The systems carry the engine that answered (on a CPU: llama.cpp on SmolLM2's Q4_1 GGUF).
    assert any(h.startswith("base · ") for h in headers) and any(h.startswith("fine-tuned · ") for h in headers)

    archive = client.predict(owner, run_id, api_name="/finetune_download")
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
    files = {name.rsplit("/", 1)[-1] for name in names}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files

    # Another owner cannot see or download this run.
    stranger = issue_token(client)
    assert "⚠" in client.predict(stranger, run_id, api_name="/finetune_poll")[2]
    with pytest.raises(AppError):
        client.predict(stranger, run_id, api_name="/finetune_download")


def test_cancel_stops_a_run(client):
    owner = issue_token(client)
    _, picker = client.predict(owner, *config_args(max_steps=200), api_name="/finetune_start")
    run_id = picker["value"] if isinstance(picker, dict) else picker
    client.predict(owner, run_id, api_name="/finetune_cancel")
    status = wait_for(client, owner, run_id, ["cancelled", "failed", "succeeded"], timeout_s=300)[2]
    assert "cancelled" in status, status


def test_the_page_cannot_read_files_of_the_server(client):
    with pytest.raises(AppError, match="not available here"):
        client.predict(*config_args(data="/etc/hostname"), api_name="/finetune_inspect")


# --------------------------------------------------------------------------- workshop mode


@pytest.fixture(scope="module")
def workshop_app(tmp_path_factory):
    """A second app in workshop mode with one training slot, held by another person's never-ending fake run.

    Runs submitted through the page then wait in the queue, so a test can see them accepted and cancel them
    at once, without training anything.
    """
    from gradio_client import Client

    from playground.config import Settings
    from playground.services import Services
    from playground.ui.app import build_app, launch_options
    from tests.ui.conftest import _free_port

    settings = Settings.load([], {
        "PLAYGROUND_MODE": "workshop", "PLAYGROUND_JOB_SLOTS": "1", "PLAYGROUND_OFFLINE": "1",
        "PLAYGROUND_DATA_DIR": str(tmp_path_factory.mktemp("workshop-data")),  # its own scheduler and runs
        "PLAYGROUND_HOST": "127.0.0.1", "PLAYGROUND_PORT": str(_free_port()),
    })
    services = Services.create(settings)
    blocker = services.jobs.submit("someone-else", {}, "tests.finetune.fake_jobs:until_stopped")
    demo = None
    try:  # the blocker's worker outlives the app unless cancelled, so cancel it even if the app fails to start
        demo = build_app(services)
        options = launch_options(services)
        options.update(prevent_thread_lock=True, quiet=True, share=False)
        demo.launch(**options)
        yield Client(f"http://127.0.0.1:{settings.port}/", verbose=False), services
    finally:
        if demo is not None:
            demo.close()
        services.jobs.cancel(blocker, "someone-else")
        services.jobs.wait(blocker, 60)
        services.close()


def _run_id(picker):
    return picker["value"] if isinstance(picker, dict) else picker


def test_workshop_refuses_a_run_over_the_limits_before_any_work(workshop_app):
    client, services = workshop_app
    owner = issue_token(client)
    with pytest.raises(AppError, match=r"max_steps=500 is above the limit of 200 steps per run in workshop mode"):
        client.predict(owner, *config_args(max_steps=500), api_name="/finetune_start")
    with pytest.raises(AppError, match=r"method 'full' is not available in workshop mode"):
        client.predict(*config_args(method="full"), api_name="/finetune_preflight")
    assert services.jobs.list_runs(owner_id(services, owner)) == []


def test_workshop_accepts_a_bounded_run_and_one_at_a_time(workshop_app):
    client, services = workshop_app
    owner = issue_token(client)
    _, picker = client.predict(owner, *config_args(), api_name="/finetune_start")
    run_id = _run_id(picker)
    assert [r.id for r in services.jobs.list_runs(owner_id(services, owner))] == [run_id]
    try:
        with pytest.raises(AppError, match=rf"You already have run {run_id} \(waiting in the queue"):
            client.predict(owner, *config_args(), api_name="/finetune_start")
    finally:
        client.predict(owner, run_id, api_name="/finetune_cancel")
    assert services.jobs.get(run_id, owner_id(services, owner)).status == "cancelled"
    _, picker = client.predict(owner, *config_args(), api_name="/finetune_start")  # the next run may start
    client.predict(owner, _run_id(picker), api_name="/finetune_cancel")


def test_workshop_widgets_show_the_caps(workshop_app):
    client, _ = workshop_app
    props = {c["props"].get("elem_id"): c["props"] for c in client.config["components"]}
    # The field's name is a locale key that the page translates inside the label; the cap follows it.
    assert props["ft-max-steps"]["label"].endswith('"key": "ft.field.max_steps"} ≤ 200')
    assert props["ft-test-limit"]["label"].endswith('"key": "ft.field.test_limit"} ≤ 16')
    assert props["ft-test-limit"]["value"] == 16  # the default (50) lowered, so the form submits as it is


def test_a_queued_run_keeps_its_own_copy_of_the_upload(workshop_app, tmp_path):
    from gradio_client import handle_file

    client, services = workshop_app
    owner = issue_token(client)
    upload = tmp_path / "my-dialogues.jsonl"
    upload.write_text("".join(f'{{"text": "A: Hello number {i}.\\nB: Hi.", "gist": "They greet {i}."}}\n'
                              for i in range(12)))
    args = config_args(data="upload")
    args[3], args[4], args[5] = handle_file(str(upload)), "text", "gist"
    _, picker = client.predict(owner, *args, api_name="/finetune_start")
    run_id = _run_id(picker)
    try:
        record = services.jobs.get(run_id, owner_id(services, owner))
        kept = record.config["data"]
        assert kept == str(record.path / "inputs" / "my-dialogues.jsonl")  # not Gradio's cache, which is cleaned
        assert "They greet 3." in open(kept, encoding="utf-8").read()
    finally:
        client.predict(owner, run_id, api_name="/finetune_cancel")
