"""A finished fine-tuning run used in the Prompt Lab, through the API: preview, run, compare, and the hand-over."""

from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError

from playground.finetune.config import FinetuneConfig
from playground.finetune.runs import SUCCEEDED
from playground.finetune.train import train
from tests.finetune.conftest import RecordingControl
from tests.ui.conftest import issue_token, owner_id
from tests.ui.test_prompt_lab_client import MODEL, form

ENTRY = "playground.finetune.train:run_job"
DIALOGUE = "#Person1#: Is the bakery open on Sunday?\n#Person2#: Only in the morning, until noon."


@pytest.fixture(scope="module")
def tuned(app_services, app_url) -> tuple[str, str]:
    """(identity token, run id) of a real two-step LoRA run of SmolLM2 on the bundled dialogues, in the app's
    run store."""
    from gradio_client import Client

    owner = issue_token(Client(app_url, verbose=False))
    config = FinetuneConfig(data="dialogues-small", max_steps=2, batch_size=1, max_length=160, sample_count=0,
                            validation_fraction=0.0, learning_rate=1e-3)
    run_id = app_services.runs.create(owner_id(app_services, owner), config.to_dict(), ENTRY)
    train(config, app_services.runs.path(run_id), RecordingControl(), app_services.settings.data_dir,
          resolver=app_services.engines.resolver, catalog=app_services.catalog)
    app_services.runs.set_status(run_id, SUCCEEDED, force=True)
    return owner, run_id


def summary_form(owner: str, run_id: str, **overrides) -> list:
    return form(task="summarization", template_id="dialogue-summary", model_id=f"run:{run_id}", owner=owner,
                text=DIALOGUE, max_new_tokens=12, **overrides)


def test_the_preview_and_code_use_the_adapter(client, tuned):
    owner, run_id = tuned
    tokens, prompt, code = client.predict(*summary_form(owner, run_id), "transformers",
                                          api_name="/prompt_lab_preview")
    assert "<|im_start|>user" in prompt and "bakery" in prompt and "chat template applied" in tokens
    assert "from peft import PeftModel" in code and "ADAPTER = 'adapter'" in code
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in code and "merge_and_unload" in code
    compile(code, "snippet.py", "exec")
    # On llama.cpp: the packaged base GGUF with the run's adapter GGUF (the Fine-tune tab's download).
    _, _, code = client.predict(*summary_form(owner, run_id), "llama.cpp", api_name="/prompt_lab_preview")
    assert "from llama_cpp import Llama" in code and "SmolLM2-135M-Instruct.Q4_1.gguf" in code
    assert f"ADAPTER_PATH = '{run_id}-adapter.gguf'" in code and "lora_path=ADAPTER_PATH" in code
    assert "peft" not in code
    compile(code, "snippet.py", "exec")


def test_the_tuned_model_answers_and_sits_beside_its_base(client, tuned):
    owner, run_id = tuned
    output, result, _, _ = client.predict(*summary_form(owner, run_id), api_name="/prompt_lab_run")
    assert output.strip() and "prompt tokens" in result

    values = client.predict(*summary_form(owner, run_id), "zero_shot", "zero_shot", "off", "off",
                            MODEL, f"run:{run_id}", MODEL, MODEL, api_name="/prompt_lab_compare")
    headers, texts = values[0:4], values[4:8]
    assert run_id in headers[1] and MODEL in headers[0] and run_id not in headers[0]
    assert texts[0].strip() and texts[1].strip() and texts[2] == ""


def test_the_hand_over_selects_the_run_and_the_comparison(client, tuned):
    owner, run_id = tuned
    values = client.predict(owner, run_id, api_name="/finetune_use_in_lab")
    # The API returns the updates (the tab switch is a page-only output): task, model, 4 strategies, 4 models.
    assert len(values) == 10, values
    task, model, strategies, models = values[0], values[1], values[2:6], values[6:10]
    assert task["value"] == "summarization" and model["value"] == f"run:{run_id}", values
    assert f"run:{run_id}" in [choice[1] for choice in model["choices"]]
    assert [s["value"] for s in strategies] == ["zero_shot", "zero_shot", "off", "off"]
    assert models[0]["value"] == MODEL and models[1]["value"] == f"run:{run_id}"


def test_nobody_else_can_use_the_run(client, tuned):
    _, run_id = tuned
    stranger = issue_token(client)  # another person, with a token of their own
    with pytest.raises(AppError, match="There is no run"):
        client.predict(*summary_form(stranger, run_id), api_name="/prompt_lab_run")
    with pytest.raises(AppError, match="There is no run"):
        client.predict(stranger, run_id, api_name="/finetune_use_in_lab")
    # Without a token one generates anonymously (local mode) and owns no runs; a made-up token is refused.
    with pytest.raises(AppError, match="There is no run"):
        client.predict(*summary_form("", run_id), api_name="/prompt_lab_run")
    forged = tuned[0][:-4] + ("0000" if not tuned[0].endswith("0000") else "1111")
    for token, message in (("", "carries no identity token"), ("someone-else", "not one this server issues"),
                           (forged, "signature does not match")):
        with pytest.raises(AppError, match=message):
            client.predict(token, run_id, api_name="/finetune_use_in_lab")
    with pytest.raises(AppError, match="signature does not match"):
        client.predict(*summary_form(forged, run_id), api_name="/prompt_lab_run")


def test_the_run_answers_on_llama_cpp_which_auto_picks_on_a_cpu(client, tuned, app_services):
    owner, run_id = tuned
    on_llama, result, _, _ = client.predict(*summary_form(owner, run_id, engine="llama.cpp"),
                                            api_name="/prompt_lab_run")
    assert on_llama.strip() and "prompt tokens" in result
    if not app_services.hardware.cuda:
        automatic, _, _, _ = client.predict(*summary_form(owner, run_id, engine="auto"), api_name="/prompt_lab_run")
        assert automatic == on_llama
