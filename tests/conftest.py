"""Shared fixtures: settings in a temporary data dir, the real catalog, and loaded engines.

Loaded engines are session-scoped: the packaged SmolLM2 GGUF loads once through
llama.cpp (about a second) and once through transformers (the first load
dequantises the GGUF, ~35 s on two cores; the safetensors copy lands in the
session's data dir). Tiny random causal LMs with a tokenizer trained here let
the transformers path run on local folders without any download.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from playground.config import Settings
from playground.models.catalog import Catalog
from tests.helpers import (
    SMOLLM2,
    TINY_MODELS,
    build_tiny_causal_lm,
    build_tiny_t5,
    decoder_spec,
    fake_hardware,
    offline_settings,
    train_tiny_tokenizer,
)

# ---------------------------------------------------------------- markers


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: loads the transformers engine or does other slow work (runs by default)")
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped where none is present")
    config.addinivalue_line("markers", "browser: drives a real browser through Playwright")


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
        for item in gpu_items:
            item.add_marker(skip)


# ---------------------------------------------------------------- session fixtures


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    # A fixed name under the session's base temp dir: the UI tests' app uses the same one,
    # so the SmolLM2 GGUF is dequantised once per test session.
    path = tmp_path_factory.getbasetemp() / "playground-data"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def settings(data_dir) -> Settings:
    return Settings.load([], {"PLAYGROUND_DATA_DIR": str(data_dir), "PLAYGROUND_OFFLINE": "1"})


@pytest.fixture(scope="session")
def hardware():
    from playground.hardware import detect

    return detect()


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(scope="session")
def provider(settings, hardware, catalog):
    from playground.backends.provider import EngineProvider

    engines = EngineProvider(settings, hardware, catalog)
    yield engines
    engines.cache.clear()  # closes llama.cpp contexts before the interpreter tears down


@pytest.fixture(scope="session")
def llama_engine(provider):
    return provider.get(SMOLLM2, "llama.cpp")


@pytest.fixture(scope="session")
def transformers_engine(provider):
    return provider.get(SMOLLM2, "transformers")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A PLAYGROUND_MODELS_DIR holding one folder per tiny model (config.json, safetensors, tokenizer)."""
    root = tmp_path_factory.mktemp("tiny-models")
    for arch, repo, context in TINY_MODELS.values():
        build_tiny_causal_lm(root / repo.split("/")[-1], arch, tiny_tokenizer, context)
    return root


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    """A tiny random T5ForConditionalGeneration with its T5 tokenizer (helpers.build_tiny_t5), built once per
    session: the encoder-decoder of the engine, Prompt Lab and fine-tuning tests."""
    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5") / "tiny-t5")


@pytest.fixture(scope="session")
def flan_models_dir(tmp_path_factory, tiny_t5) -> Path:
    """A PLAYGROUND_MODELS_DIR where the catalog's FLAN-T5 small is "present": the tiny T5 under the folder name the
    catalog looks for (flan-t5-small), as a download made ahead of time would be."""
    root = tmp_path_factory.mktemp("flan-models")
    (root / "flan-t5-small").symlink_to(tiny_t5, target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def tiny_catalog() -> Catalog:
    return Catalog(models=tuple(decoder_spec(mid, repo=repo, context_length=context)
                                for mid, (_, repo, context) in TINY_MODELS.items()))


@pytest.fixture(scope="session")
def tiny_provider(tmp_path_factory, tiny_models_dir, tiny_catalog):
    from playground.backends.provider import EngineProvider

    tiny_settings = offline_settings(tmp_path_factory.mktemp("tiny-data"), tiny_models_dir)
    engines = EngineProvider(tiny_settings, fake_hardware(cuda=False), tiny_catalog)
    yield engines
    engines.cache.clear()


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server on the packaged SmolLM2 GGUF, once per session (a few seconds
    to start); killed when the session ends."""
    from tests.openai_server import missing_extras, start_server, stop_server

    missing = missing_extras()
    if missing:
        pytest.fail(f"llama-cpp-python's server needs {', '.join(missing)}: pip install -r requirements-test.txt")
    try:
        server = start_server(tmp_path_factory.mktemp("openai-server") / "server.log")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    stop_server(server)
