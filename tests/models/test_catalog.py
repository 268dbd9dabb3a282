"""The model catalog YAML and its dataclasses."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from playground.errors import PlaygroundError, UnknownModelError
from playground.models.catalog import CATALOG_FILE, FAMILIES, FORMATS, SOURCE_KINDS, Catalog
from tests.helpers import decoder_spec

REQUIRED = ["smollm2-135m-instruct", "gemma-3-270m", "all-minilm-l6-v2", "flan-t5-small", "flan-t5-base",
            "bert-base-uncased", "gpt2", "qwen2.5-0.5b-instruct"]


def test_required_entries_exist(catalog):
    for model_id in REQUIRED:
        assert model_id in catalog.ids
    assert len(catalog.ids) == len(set(catalog.ids))


def test_entries_are_consistent(catalog):
    for spec in catalog.models:
        assert spec.family in FAMILIES
        assert spec.parameters > 0 and spec.context_length > 0
        assert spec.name and spec.description and spec.license
        assert spec.lora_targets and isinstance(spec.lora_targets, tuple)
        assert spec.sources, f"{spec.id} has no source"
        for source in spec.sources:
            assert source.kind in SOURCE_KINDS and source.format in FORMATS
            if source.is_packaged:
                assert source.package
            if source.is_hub:
                assert source.repo
            assert source.describe()
        if spec.has_gguf:
            assert spec.family == "decoder"


def test_smollm2_entry(catalog):
    spec = catalog.get("smollm2-135m-instruct")
    assert spec.family == "decoder" and spec.chat_template and spec.is_generative
    assert spec.context_length == 8192
    assert spec.has_gguf and spec.gguf_sources[0].kind == "packaged_file"
    assert spec.gguf_sources[0].file.endswith(".gguf")
    assert spec.hub_repo == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert spec.parameters_label == "135M"


def test_qwen_has_a_hub_gguf_source(catalog):
    spec = catalog.get("qwen2.5-0.5b-instruct")
    gguf = [s for s in spec.sources if s.kind == "hub_gguf"]
    assert gguf and gguf[0].format == "gguf" and gguf[0].file.endswith(".gguf") and gguf[0].repo
    assert gguf[0].repo in gguf[0].describe()


def test_families_and_heads(catalog):
    assert catalog.get("all-minilm-l6-v2").family == "encoder"
    assert not catalog.get("all-minilm-l6-v2").is_generative
    assert catalog.get("bert-base-uncased").head == "masked_lm"
    assert catalog.get("flan-t5-small").family == "encoder-decoder"
    assert catalog.get("flan-t5-base").is_generative
    assert not catalog.get("gpt2").chat_template and not catalog.get("gpt2").has_gguf
    assert {m.id for m in catalog.by_family("encoder-decoder")} >= {"flan-t5-small", "flan-t5-base"}
    assert {m.id for m in catalog.with_gguf()} >= {"smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-0.5b-instruct"}


def test_parameters_label_in_billions():
    assert replace(decoder_spec("x"), parameters=1_500_000_000).parameters_label == "1.5B"


def test_unknown_id_lists_the_choices(catalog):
    with pytest.raises(UnknownModelError) as info:
        catalog.get("gpt-5")
    text = str(info.value)
    assert "'gpt-5'" in text
    for model_id in REQUIRED:
        assert model_id in text


def _write(tmp_path, data) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _entry(**overrides):
    data = yaml.safe_load(CATALOG_FILE.read_text(encoding="utf-8"))["models"][0]
    data.update(overrides)
    return data


def test_custom_catalog_file_loads(tmp_path):
    catalog = Catalog.load(_write(tmp_path, {"models": [_entry(id="copy")]}))
    assert catalog.ids == ["copy"]


def test_unknown_entry_key_is_refused(tmp_path):
    with pytest.raises(PlaygroundError, match="colour"):
        Catalog.load(_write(tmp_path, {"models": [_entry(colour="blue")]}))


def test_unknown_top_level_key_is_refused(tmp_path):
    with pytest.raises(PlaygroundError, match="extras"):
        Catalog.load(_write(tmp_path, {"models": [_entry()], "extras": 1}))


def test_unknown_source_key_is_refused(tmp_path):
    entry = _entry()
    entry["sources"] = [{"kind": "hub", "format": "transformers", "repo": "a/b", "revision": "main"}]
    with pytest.raises(PlaygroundError, match="revision"):
        Catalog.load(_write(tmp_path, {"models": [entry]}))


def test_bad_source_kind_is_refused(tmp_path):
    entry = _entry()
    entry["sources"] = [{"kind": "ftp", "format": "transformers", "repo": "a/b"}]
    with pytest.raises(PlaygroundError, match="kind"):
        Catalog.load(_write(tmp_path, {"models": [entry]}))


def test_missing_key_is_refused(tmp_path):
    entry = _entry()
    del entry["license"]
    with pytest.raises(PlaygroundError, match="license"):
        Catalog.load(_write(tmp_path, {"models": [entry]}))


def test_bad_family_is_refused(tmp_path):
    with pytest.raises(PlaygroundError, match="family"):
        Catalog.load(_write(tmp_path, {"models": [_entry(family="diffusion")]}))


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(PlaygroundError, match="duplicate"):
        Catalog.load(_write(tmp_path, {"models": [_entry(), _entry()]}))
