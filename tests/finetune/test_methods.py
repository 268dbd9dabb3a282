"""Building the trainable model: weight sources, method checks, LoRA targets, 4-bit availability."""

from __future__ import annotations

import shutil
import sys

import pytest

from playground.errors import FinetuneConfigError, QuantizationUnavailableError, TrainingError
from playground.finetune.config import FinetuneConfig
from playground.finetune.methods import bnb_4bit_config, build_trainable
from playground.finetune.weights import locate_model, model_shape, safetensors_parameter_count


def test_local_folder_is_located_with_its_family(ft_models, offline_resolver, tmp_path):
    source = locate_model(FinetuneConfig(model=str(ft_models["t5"])), offline_resolver, tmp_path)
    assert source.family == "encoder-decoder" and source.folder == ft_models["t5"] and not source.from_gguf
    shape = model_shape(source)
    assert shape.layers == 4 and shape.hidden_size == 32 and shape.parameters == safetensors_parameter_count(
        ft_models["t5"])


def test_pickled_weights_are_refused(ft_models, offline_resolver, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(ft_models["llama"] / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(TrainingError, match="only safetensors are loaded"):
        locate_model(FinetuneConfig(model=str(folder)), offline_resolver, tmp_path)


def test_lora_targets_that_match_nothing_name_the_layers(ft_models, offline_resolver, tmp_path):
    config = FinetuneConfig(model=str(ft_models["llama"]), target_modules=("attention_magic",))
    source = locate_model(config, offline_resolver, tmp_path)
    with pytest.raises(FinetuneConfigError, match="LoRA could not be attached to tiny-llama.*q_proj"):
        build_trainable(config, source)


def test_trainable_share_is_reported(ft_models, offline_resolver, tmp_path):
    config = FinetuneConfig(model=str(ft_models["llama"]), lora_r=4, target_modules=("q_proj", "v_proj"))
    trainable = build_trainable(config, locate_model(config, offline_resolver, tmp_path))
    # 2 layers x (q: 32->32, v: 32->16 with 2 of 4 heads for keys and values), r=4
    assert trainable.trainable_parameters == 2 * (4 * (32 + 32) + 4 * (32 + 16))
    assert trainable.describe().startswith(f"lora: {trainable.trainable_parameters:,} of ")
    full = build_trainable(config.replace(method="full"), locate_model(config, offline_resolver, tmp_path))
    assert full.trainable_share == 1.0 and not full.is_adapter


def test_classifier_needs_labels_and_an_encoder(ft_models, offline_resolver, tmp_path):
    config = FinetuneConfig(model=str(ft_models["bert"]), method="classifier", data="sentiment")
    source = locate_model(config, offline_resolver, tmp_path)
    with pytest.raises(TrainingError, match="at least two labels"):
        build_trainable(config, source, labels=("only",))
    trainable = build_trainable(config, source, labels=("neg", "pos"))
    assert trainable.model.config.id2label == {0: "neg", 1: "pos"}
    decoder = locate_model(FinetuneConfig(model=str(ft_models["llama"])), offline_resolver, tmp_path)
    with pytest.raises(FinetuneConfigError, match="needs an encoder"):
        build_trainable(config, decoder, labels=("neg", "pos"))


def test_missing_bitsandbytes_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(QuantizationUnavailableError, match="QLoRA needs bitsandbytes .*or choose method lora"):
        bnb_4bit_config("float32")


def test_a_new_peft_method_is_one_table_entry(ft_models, offline_resolver, tmp_path, monkeypatch):
    """DoRA as an entry of its own: LoRA's config with one flag; the model is built, wrapped and saved from it."""
    from functools import partial
    from types import MappingProxyType

    from playground.finetune import methods

    dora = methods.Method("dora", "LoRA with a learned magnitude per weight column",
                          peft_config=partial(methods.lora_config, use_dora=True), adapter_kind="DoRA")
    monkeypatch.setattr(methods, "TABLE", MappingProxyType({**methods.TABLE, "dora": dora}))
    config = FinetuneConfig(model=str(ft_models["llama"]), lora_r=4, target_modules=("q_proj",))
    object.__setattr__(config, "method", "dora")  # the config's choices are read when the module loads
    trainable = build_trainable(config, locate_model(config, offline_resolver, tmp_path))
    assert trainable.is_adapter and trainable.method == "dora" and trainable.target_modules == ("q_proj",)
    assert any("lora_magnitude_vector" in name for name, _ in trainable.model.named_parameters())
    assert methods.get_method("dora").saves == "adapter"
