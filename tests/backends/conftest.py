"""Fixtures of the backend tests: one app's services over the tiny GGUF model, with fine-tuned runs on it."""

from __future__ import annotations

import pytest

from playground.services import Services
from tests.gguf_models import make_lora_run, tiny_gguf_catalog
from tests.helpers import fake_hardware, offline_settings


@pytest.fixture(scope="session")
def gguf_room(tmp_path_factory, tiny_tokenizer):
    """(services, runs by name) over a catalog whose one decoder has safetensors and an F32 GGUF twin:
    alice's LoRA, rsLoRA with a per-module rank and DoRA runs, and bob's LoRA, each with large random B."""
    models = tmp_path_factory.mktemp("gguf-models")
    folder, catalog = tiny_gguf_catalog(models, tiny_tokenizer)
    services = Services.create(offline_settings(tmp_path_factory.mktemp("gguf-data"), models),
                               fake_hardware(cuda=False), catalog)
    runs = {"alice": make_lora_run(services, folder, "alice", 1), "bob": make_lora_run(services, folder, "bob", 2),
            "rslora": make_lora_run(services, folder, "alice", 3, use_rslora=True, r=8, lora_alpha=4,
                                    rank_pattern={"o_proj": 2}),
            "dora": make_lora_run(services, folder, "alice", 4, use_dora=True)}
    yield services, runs
    services.close()
