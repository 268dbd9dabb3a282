"""Method dpo through the Fine-tune tab's API, on the GGUF app's tiny catalog Llama: inspect and pre-flight of
the bundled preference pairs, a real two-step DPO run (trained here, filed in the app's run store) whose poll
shows reward accuracy before/after and the answers side by side, and an upload without the pair fields refused
by name."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.finetune.config import FinetuneConfig
from playground.ui.tabs.finetune import NUMBER_FIELDS
from tests.gguf_models import TINY_GGUF
from tests.ui.conftest import issue_token, owner_id

QUICK = dict(max_steps=2, batch_size=2, max_length=128, sample_count=1, max_new_tokens=4, test_limit=2,
             validation_fraction=0.0, eval_every=0, learning_rate=1e-2, dpo_beta=0.2)

pytestmark = pytest.mark.slow


def dpo_args(data="preferences", upload=None, **numbers):
    defaults = FinetuneConfig()
    values = {name: numbers.get(name, QUICK.get(name, getattr(defaults, name))) for name in NUMBER_FIELDS}
    return [TINY_GGUF, "dpo", data, upload, "", "", "auto", "", *values.values()]


@pytest.fixture(scope="module")
def client(gguf_app):
    return Client(gguf_app.url, verbose=False)


def test_inspect_and_preflight_of_preference_pairs(client):
    summary, examples, _ = client.predict(*dpo_args(), api_name="/finetune_inspect")
    assert "**137** train" in summary and "**2** test" in summary  # the bundled train pairs; test_limit 2
    assert examples["data"] and examples["data"][0][2].endswith("Happy tinkering!")  # the chosen answer
    text = client.predict(*dpo_args(), api_name="/finetune_preflight")
    assert "Trainable parameters" in text and "training step took" in text


def test_a_dpo_run_shows_reward_accuracy_and_answers_side_by_side(client, gguf_app):
    from playground.finetune.runs import SUCCEEDED
    from playground.finetune.train import train

    services = gguf_app.services
    owner = issue_token(client)
    config = FinetuneConfig.from_dict({"model": TINY_GGUF, "method": "dpo", "data": "preferences", **QUICK},
                                      catalog=services.catalog)
    run_id = services.runs.create(owner_id(services, owner), config.to_dict(), "playground.finetune.train:run_job")
    outcome = train(config, services.runs.path(run_id), None, services.settings.data_dir,
                    resolver=services.engines.resolver, catalog=services.catalog)
    assert outcome.status == "done"
    services.runs.set_status(run_id, SUCCEEDED, force=True)

    status, _, scores, gain, comparison = client.predict(owner, run_id, api_name="/finetune_poll")[2:7]
    assert "succeeded" in status, status
    assert "Reward accuracy on 2 held-out pairs" in gain and "implicit reward" in gain
    assert [row[0] for row in scores["data"]][:2] == ["reward acc base", "reward acc tuned"]
    headers = comparison["headers"]
    assert {"rejected answer", "margin (base → tuned)", "reference"} <= set(headers)
    assert any(h.startswith("base · ") for h in headers) and any(h.startswith("fine-tuned · ") for h in headers)


def test_an_upload_without_pair_fields_is_refused(client, tmp_path):
    from gradio_client import handle_file

    path = tmp_path / "votes.jsonl"
    path.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello."}) + "\n")
    with pytest.raises(AppError, match="'rejected'"):
        client.predict(issue_token(client), *dpo_args(data="upload", upload=handle_file(str(path))),
                       api_name="/finetune_start")
