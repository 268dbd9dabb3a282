"""The PEFT methods beside LoRA through the Fine-tune tab's API: each method's knobs are inputs of the pre-flight,
which reports its trainable share; a short prompt-tuning run of SmolLM2 trains, answers before and after, and
"merge and download" refuses it with the reason."""

from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError

from playground.finetune.config import FinetuneConfig
from playground.ui.tabs.finetune import EXTRA_FIELDS, knob_visibility
from tests.ui.conftest import issue_token
from tests.ui.test_finetune_client import config_args, wait_for

pytestmark = pytest.mark.slow


def method_args(method: str, numbers=None, **extras):
    """The tab's inputs for ``method``: the usual ones, then the extra fields (knobs and schedule)."""
    defaults = FinetuneConfig()
    values = [extras.get(name, getattr(defaults, name)) for name in EXTRA_FIELDS]
    values = [", ".join(v) if isinstance(v, tuple) else v for v in values]
    return [*config_args(method=method, **(numbers or {})), *values]


def test_the_tab_shows_only_the_chosen_methods_knobs():
    prompt = knob_visibility("prompt_tuning")
    assert prompt["num_virtual_tokens"] and prompt["prompt_tuning_init_text"] and not prompt["lora_r"]
    assert knob_visibility("ia3")["ia3_target_modules"] and not knob_visibility("ia3")["num_virtual_tokens"]
    assert knob_visibility("dora")["lora_r"] and not knob_visibility("full")["lora_r"]


def test_preflight_reports_a_new_methods_trainable_share(client):
    args = method_args("prefix_tuning", num_virtual_tokens=8, lr_scheduler_type="cosine", warmup_ratio=0.1)
    text = client.predict(*args, api_name="/finetune_preflight")
    assert "prefix_tuning" in text and "Trainable parameters" in text and "%" in text
    # SmolLM2-135M: 30 layers, a key and a value 3 heads x 64 wide per virtual token and layer
    assert f"{8 * 30 * 2 * 3 * 64:,}" in text


def test_a_bad_knob_is_refused_with_its_name(client):
    with pytest.raises(AppError, match="prompt_tuning_init_text is empty"):
        client.predict(*method_args("prompt_tuning", prompt_tuning_init="text"), api_name="/finetune_preflight")
    with pytest.raises(AppError, match="step is not in the list of choices"):
        client.predict(*method_args("lora", lr_scheduler_type="step"), api_name="/finetune_preflight")


def test_a_prompt_tuning_run_answers_before_and_after_and_refuses_to_merge(client):
    owner = issue_token(client)
    numbers = dict(max_steps=2, max_length=160, sample_count=1, max_new_tokens=4, test_limit=1, eval_every=0,
                   validation_fraction=0.0, learning_rate=0.3)
    args = method_args("prompt_tuning", numbers, num_virtual_tokens=4, prompt_tuning_init="text",
                       prompt_tuning_init_text="Summarize the dialogue:")
    _, picker = client.predict(owner, *args, api_name="/finetune_start")
    run_id = picker["value"] if isinstance(picker, dict) else picker
    status, _, _, gain, comparison = wait_for(client, owner, run_id, ["succeeded", "failed"])[2:7]
    assert "succeeded" in status, status
    assert comparison["data"] and any(h.startswith("fine-tuned · transformers") for h in comparison["headers"])
    with pytest.raises(AppError, match="prompt tuning adapter cannot be merged"):
        client.predict(owner, run_id, api_name="/finetune_merge")
    with pytest.raises(AppError, match="llama.cpp applies LoRA adapters only"):
        client.predict(owner, run_id, api_name="/finetune_adapter_gguf")
