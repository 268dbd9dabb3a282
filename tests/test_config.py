"""Settings from PLAYGROUND_* variables and CLI flags (no model needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from playground.config import Settings, build_arg_parser, settings_table_markdown
from playground.errors import PlaygroundError, SettingsError


def load(argv=(), **env):
    return Settings.load(list(argv), {f"PLAYGROUND_{k.upper()}": v for k, v in env.items()})


def test_defaults_without_any_setting(tmp_path):
    s = Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path)})
    assert s.mode == "local"
    assert s.engine == "auto"
    assert s.models_dir is None
    assert s.share is False
    assert s.max_new_tokens == 1024
    assert s.request_token_limit == 1024
    assert s.catalog_only is False
    assert s.default_model == "smollm2-135m-instruct"
    assert s.data_dir == tmp_path


def test_environment_variables_are_read(tmp_path):
    s = load(port="8000", share="yes", mode="presenter", data_dir=str(tmp_path), offline="1",
             engine="llama.cpp", memory_budget_gb="2.5", threads="3", max_new_tokens="64",
             max_prompt_chars="500", concurrency="4", host="0.0.0.0", default_model="gpt2")
    assert (s.port, s.share, s.mode, s.data_dir, s.offline) == (8000, True, "presenter", tmp_path, True)
    assert (s.engine, s.memory_budget_gb, s.threads, s.max_new_tokens) == ("llama.cpp", 2.5, 3, 64)
    assert (s.max_prompt_chars, s.concurrency, s.host, s.default_model) == (500, 4, "0.0.0.0", "gpt2")


def test_parallel_sequences_default_to_32_and_size_the_generation_group(tmp_path):
    from playground.ui.widgets import HANDLERS_PER_SLOT, generation_event_options

    assert load(data_dir=str(tmp_path)).parallel == 32
    settings = load(data_dir=str(tmp_path), parallel="8", concurrency="3")
    assert settings.parallel == 8 and load(["--parallel", "4"], data_dir=str(tmp_path)).parallel == 4
    assert generation_event_options(settings) == dict(concurrency_limit=3 * HANDLERS_PER_SLOT + 8,
                                                      concurrency_id="generation")


def test_empty_environment_value_means_unset():
    assert load(port="", mode="").mode == "local"


@pytest.mark.parametrize("raw, expected", [("1", True), ("true", True), ("ON", True), ("0", False), ("no", False),
                                           ("off", False)])
def test_boolean_spellings(raw, expected):
    assert load(share=raw).share is expected


def test_cli_flags_override_environment(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    s = load(["--port", "9000", "--mode", "workshop", "--no-share", "--models-dir", str(models)],
             port="8000", mode="presenter", share="1")
    assert s.port == 9000
    assert s.mode == "workshop"
    assert s.share is False
    assert s.models_dir == models


def test_cli_boolean_flag_sets_true():
    assert load(["--offline"], offline="0").offline is True


@pytest.mark.parametrize("env, name", [
    ({"PORT": "abc"}, "PLAYGROUND_PORT"),
    ({"PORT": "0"}, "PLAYGROUND_PORT"),
    ({"PORT": "70000"}, "PLAYGROUND_PORT"),
    ({"MODE": "bogus"}, "PLAYGROUND_MODE"),
    ({"ENGINE": "vllm"}, "PLAYGROUND_ENGINE"),
    ({"SHARE": "maybe"}, "PLAYGROUND_SHARE"),
    ({"MEMORY_BUDGET_GB": "lots"}, "PLAYGROUND_MEMORY_BUDGET_GB"),
    ({"MEMORY_BUDGET_GB": "0"}, "PLAYGROUND_MEMORY_BUDGET_GB"),
    ({"THREADS": "-1"}, "PLAYGROUND_THREADS"),
    ({"MAX_NEW_TOKENS": "0"}, "PLAYGROUND_MAX_NEW_TOKENS"),
    ({"CONCURRENCY": "1.5"}, "PLAYGROUND_CONCURRENCY"),
    ({"PARALLEL": "0"}, "PLAYGROUND_PARALLEL"),
])
def test_bad_environment_values_name_the_variable(env, name):
    with pytest.raises(SettingsError) as info:
        Settings.load([], {f"PLAYGROUND_{k}": v for k, v in env.items()})
    assert name in str(info.value)
    assert isinstance(info.value, PlaygroundError)


def test_bad_mode_lists_the_choices():
    with pytest.raises(SettingsError, match="local, workshop, presenter"):
        load(mode="bogus")


@pytest.mark.parametrize("argv, flag", [
    (["--port", "0"], "--port"),
    (["--port", "x"], "--port"),
    (["--mode", "party"], "--mode"),
    (["--max-new-tokens", "-3"], "--max-new-tokens"),
])
def test_bad_cli_values_name_the_flag(argv, flag):
    with pytest.raises(SettingsError) as info:
        load(argv)
    assert flag in str(info.value)


def test_models_dir_must_exist(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SettingsError) as info:
        load(models_dir=str(missing))
    assert "PLAYGROUND_MODELS_DIR" in str(info.value)
    assert "nowhere" in str(info.value)
    with pytest.raises(SettingsError, match="--models-dir"):
        load(["--models-dir", str(missing)])


def test_models_dir_must_be_a_folder(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(SettingsError, match="PLAYGROUND_MODELS_DIR"):
        load(models_dir=str(a_file))


def test_workshop_caps_request_token_limit():
    workshop = load(mode="workshop")
    assert workshop.max_new_tokens == 1024
    assert workshop.request_token_limit == 256
    assert workshop.catalog_only is True
    assert load(mode="workshop", max_new_tokens="100").request_token_limit == 100
    assert load(mode="local", max_new_tokens="2000").request_token_limit == 2000
    assert load(mode="presenter").request_token_limit == 1024


def test_settings_are_immutable():
    s = load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


def test_every_setting_has_help_variable_and_flag():
    parser_help = build_arg_parser().format_help()
    table = settings_table_markdown()
    for f in dataclasses.fields(Settings):
        assert f.metadata["help"], f.name
        assert Settings.cli_flag(f.name) in parser_help
        assert f"`{Settings.env_var(f.name)}`" in table
        assert f"`{Settings.cli_flag(f.name)}`" in table
    assert Settings.env_var("models_dir") == "PLAYGROUND_MODELS_DIR"
    assert Settings.cli_flag("models_dir") == "--models-dir"


def test_describe_lists_every_field():
    names = [name for name, _ in load().describe()]
    assert names == [f.name for f in dataclasses.fields(Settings)]


def test_data_dir_expands_user():
    assert load(data_dir="~/pg-data").data_dir == Path("~/pg-data").expanduser()


def test_settings_pass_to_a_child_process_through_the_environment(tmp_path):
    settings = Settings.load(["--data-dir", str(tmp_path), "--offline", "--threads", "3"], {})
    again = Settings.load([], settings.as_environment())
    assert again == settings
