"""FinetuneConfig: defaults, YAML round trip, unknown keys and every bad hyperparameter refused up front."""

from __future__ import annotations

import dataclasses
import re

import pytest

from playground.errors import FinetuneConfigError, InvalidParameterError, TemplateError
from playground.finetune.config import METHODS, FinetuneConfig
from playground.prompting.tasks import EXAMPLES_DIR


def test_defaults_are_valid_and_checkable():
    config = FinetuneConfig()
    assert config.method == "lora" and config.model == "smollm2-135m-instruct"
    assert config.check() is config


def test_every_field_has_help_text():
    for f in dataclasses.fields(FinetuneConfig):
        assert len(FinetuneConfig.help(f.name)) > 20, f.name
    assert FinetuneConfig.bounds("method")["choices"] == METHODS
    assert FinetuneConfig.bounds("lora_dropout") == {"minimum": 0.0, "below": 1.0}


def test_unknown_key_is_an_error_with_a_suggestion():
    with pytest.raises(FinetuneConfigError, match=r"Unknown config key 'learning_rat' \(did you mean 'learning_rate'"):
        FinetuneConfig.from_dict({"learning_rat": 1e-3})
    with pytest.raises(FinetuneConfigError, match="Allowed keys: model, method"):
        FinetuneConfig.from_dict({"bogus": 1})


def test_config_errors_are_invalid_parameter_errors():
    assert issubclass(FinetuneConfigError, InvalidParameterError)


@pytest.mark.parametrize("key, value, message", [
    ("learning_rate", 0, "learning_rate=0 is out of range: it must be > 0.0"),
    ("learning_rate", -1e-4, "learning_rate=-0.0001 is out of range"),
    ("learning_rate", "fast", "learning_rate='fast' is not a valid number"),
    ("learning_rate", float("nan"), "must be a finite number"),
    ("lora_r", 0, "lora_r=0 is out of range: it must be >= 1"),
    ("lora_r", 2.5, "lora_r=2.5 is not a valid whole number"),
    ("lora_alpha", 0, "lora_alpha=0 is out of range: it must be > 0.0"),
    ("lora_alpha", -8, "lora_alpha=-8 is out of range"),
    ("lora_dropout", 1.0, "lora_dropout=1.0 is out of range: it must be >= 0.0 and < 1.0"),
    ("lora_dropout", -0.1, "lora_dropout=-0.1 is out of range"),
    ("max_steps", -1, "max_steps=-1 is out of range: it must be >= 0"),
    ("max_steps", 10**6, "max_steps=1000000 is out of range"),
    ("epochs", 0, "epochs=0 is out of range: it must be > 0.0"),
    ("epochs", 1000, "epochs=1000 is out of range"),
    ("batch_size", 0, "batch_size=0 is out of range: it must be >= 1"),
    ("grad_accum", 0, "grad_accum=0 is out of range"),
    ("max_length", 8, "max_length=8 is out of range: it must be >= 16"),
    ("max_length", 100_000, "max_length=100000 is out of range"),
    ("validation_fraction", 0.9, "validation_fraction=0.9 is out of range"),
    ("test_fraction", 0, "test_fraction=0 is out of range"),
    ("sample_count", -1, "sample_count=-1 is out of range"),
    ("max_new_tokens", 0, "max_new_tokens=0 is out of range"),
    ("eval_every", -5, "eval_every=-5 is out of range"),
    ("method", "rlhf", "method='rlhf' is not one of: lora, qlora, full, classifier"),
    ("gradient_checkpointing", "maybe", "must be true or false"),
    ("batch_size", True, "must be a number"),
    ("target_modules", [1, 2], "target_modules must be a list of module names"),
])
def test_bad_values_are_refused_before_any_work(key, value, message):
    with pytest.raises(FinetuneConfigError) as info:
        FinetuneConfig.from_dict({key: value}, check=False)
    assert message in str(info.value)


def test_unknown_model_is_refused():
    with pytest.raises(FinetuneConfigError, match="Unknown model id 'gpt-17'"):
        FinetuneConfig.from_dict({"model": "gpt-17"})
    with pytest.raises(FinetuneConfigError, match="not a catalog id and not a folder with config.json"):
        FinetuneConfig.from_dict({"model": "/no/such/folder"})


def test_method_must_suit_the_model_family(ft_models):
    with pytest.raises(FinetuneConfigError, match="'classifier' puts a label head on an encoder"):
        FinetuneConfig.from_dict({"method": "classifier", "data": "sentiment"})
    with pytest.raises(FinetuneConfigError, match="is an encoder: it has no generative head"):
        FinetuneConfig.from_dict({"model": "all-minilm-l6-v2", "method": "lora"})
    assert FinetuneConfig.from_dict({"model": str(ft_models["bert"]), "method": "classifier",
                                     "data": "sentiment"}).method == "classifier"
    with pytest.raises(FinetuneConfigError, match="has no labels to classify"):
        FinetuneConfig.from_dict({"model": str(ft_models["bert"]), "method": "classifier", "data": "dialogues"})


def test_data_source_checks(tmp_path):
    with pytest.raises(FinetuneConfigError, match="neither a bundled data set"):
        FinetuneConfig.from_dict({"data": str(tmp_path / "missing.jsonl")})
    upload = tmp_path / "mine.jsonl"
    upload.write_text('{"a": "x", "b": "y"}\n')
    with pytest.raises(FinetuneConfigError, match="set input_column and target_column"):
        FinetuneConfig.from_dict({"data": str(upload)})
    assert FinetuneConfig.from_dict({"data": str(upload), "input_column": "a", "target_column": "b"}).data
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(FinetuneConfigError, match="must be JSONL or CSV"):
        FinetuneConfig.from_dict({"data": str(text), "input_column": "a", "target_column": "b"})
    with pytest.raises(FinetuneConfigError, match="needs a dataset id"):
        FinetuneConfig.from_dict({"data": "hub:"})
    with pytest.raises(FinetuneConfigError, match="set input_column and target_column"):
        FinetuneConfig.from_dict({"data": "hub:knkarthick/dialogsum"})


def test_data_messages_name_a_file_by_its_own_name(tmp_path):
    upload = tmp_path / "gradio" / "0a1b2c" / "mine.jsonl"
    upload.parent.mkdir(parents=True)
    upload.write_text('{"a": "x", "b": "y"}\n')
    for values, message in [({"data": str(upload)}, "data 'mine.jsonl' is not a bundled data set, so name its "
                                                    "columns: set input_column and target_column."),
                            ({"data": str(upload.with_name("gone.csv"))}, "data 'gone.csv' is neither a bundled"),
                            ({"data": str(upload.with_suffix(".txt"))}, "is neither a bundled data set")]:
        with pytest.raises(FinetuneConfigError) as info:
            FinetuneConfig.from_dict(values)
        assert message in str(info.value) and str(tmp_path) not in str(info.value)


@pytest.mark.parametrize("data, message", [
    ("hub:text", "'text' is not a Hub dataset id"),
    ("hub:/etc", "'/etc' looks like a file path"),
    ("hub:./examples/data", "looks like a file path"),
    ("hub:https://huggingface.co/datasets/knkarthick/dialogsum", "for that address: hub:knkarthick/dialogsum"),
    ("hub:owner/name/extra", "has more than one '/'"),
])
def test_a_hub_id_is_checked_when_the_config_is_made(data, message):
    with pytest.raises(FinetuneConfigError, match=re.escape(message)):
        FinetuneConfig.from_dict({"data": data, "input_column": "a", "target_column": "b"}, check=False)
    assert FinetuneConfig.from_dict({"data": "hub: knkarthick/dialogsum ", "input_column": "a",
                                     "target_column": "b"}).data == "hub:knkarthick/dialogsum"


def test_unknown_template_is_refused():
    with pytest.raises(TemplateError, match="Unknown fine-tuning template 'nope'"):
        FinetuneConfig.from_dict({"template": "nope"})


def test_yaml_round_trip_and_numbers_written_as_text(tmp_path):
    path = tmp_path / "run.yaml"
    # PyYAML reads 1e-3 (no dot) as a string; it is accepted as the number it means.
    path.write_text("model: smollm2-135m-instruct\nlearning_rate: 1e-3\ntarget_modules: q_proj, v_proj\n"
                    "max_steps: 5\n")
    config = FinetuneConfig.from_yaml(path)
    assert config.learning_rate == 1e-3 and config.target_modules == ("q_proj", "v_proj")
    again = tmp_path / "again.yaml"
    again.write_text(config.to_yaml())
    assert FinetuneConfig.from_yaml(again) == config
    assert FinetuneConfig.from_dict(config.to_dict()) == config


def test_yaml_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: x\nmethod: [lora\n")
    with pytest.raises(FinetuneConfigError, match=r"broken.yaml is not valid YAML \(line 3\)"):
        FinetuneConfig.from_yaml(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(FinetuneConfigError, match="must be a mapping"):
        FinetuneConfig.from_yaml(path)
    path.write_text("lora_r: 0\n")
    with pytest.raises(FinetuneConfigError, match="broken.yaml: lora_r=0 is out of range"):
        FinetuneConfig.from_yaml(path)
    with pytest.raises(FinetuneConfigError, match="Cannot read the config"):
        FinetuneConfig.from_yaml(tmp_path / "absent.yaml")


@pytest.mark.parametrize("name", ["cpu-demo.yaml", "flan-t5-base-lora.yaml", "flan-t5-base-qlora.yaml"])
def test_presets_are_valid(name):
    config = FinetuneConfig.from_yaml(EXAMPLES_DIR / "finetune" / name)
    assert config.data == "dialogues"


def test_flan_t5_presets_match_the_lab():
    lora = FinetuneConfig.from_yaml(EXAMPLES_DIR / "finetune" / "flan-t5-base-lora.yaml")
    assert (lora.model, lora.method, lora.lora_r, lora.lora_alpha, lora.lora_dropout, lora.target_modules,
            lora.learning_rate) == ("flan-t5-base", "lora", 32, 32.0, 0.05, ("q", "v"), 1e-3)
    qlora = FinetuneConfig.from_yaml(EXAMPLES_DIR / "finetune" / "flan-t5-base-qlora.yaml")
    assert qlora.method == "qlora" and qlora.replace(method="lora", gradient_checkpointing=False) == lora


def test_the_dialogsum_preset_is_the_lab_on_the_labs_data():
    lora = FinetuneConfig.from_yaml(EXAMPLES_DIR / "finetune" / "flan-t5-base-lora.yaml")
    dialogsum = FinetuneConfig.from_yaml(EXAMPLES_DIR / "finetune" / "flan-t5-base-lora-dialogsum.yaml")
    assert (dialogsum.data, dialogsum.input_column, dialogsum.target_column) == \
        ("hub:knkarthick/dialogsum", "dialogue", "summary")
    same = ("model", "method", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate", "template")
    assert all(getattr(dialogsum, name) == getattr(lora, name) for name in same)
    assert dialogsum.sample_count == dialogsum.test_limit == 200  # ROUGE over 200 test dialogues
