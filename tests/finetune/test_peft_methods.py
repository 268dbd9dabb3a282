"""The PEFT methods beside LoRA (DoRA, rsLoRA, IA3, prompt and prefix tuning) and the learning-rate schedule.

Each method is one entry of ``methods.TABLE``: its knobs are config fields, its trainable share is estimated
before loading (checked against peft's own count after wrapping, on the tiny fixture models), it trains and
answers before/after through the same path as LoRA, and a saved run loads back with peft and generates. Merging
and the llama.cpp adapter refuse what they cannot carry.
"""

from __future__ import annotations

import json

import pytest

from playground.errors import FinetuneConfigError, PlaygroundError
from playground.finetune.config import LR_SCHEDULES, FinetuneConfig
from playground.finetune.methods import (
    DORA,
    IA3,
    KNOBS,
    LORA,
    LORA_KNOBS,
    PREFIX_TUNING,
    PROMPT_TUNING,
    RSLORA,
    TABLE,
    build_trainable,
    estimate_trainable,
    get_method,
    load_trained,
)
from playground.finetune.train import generate, train
from playground.finetune.weights import DECODER, ENCODER, ENCODER_DECODER, locate_model
from tests.finetune.conftest import RecordingControl, assert_event_shapes

NEW_METHODS = (DORA, RSLORA, IA3, PROMPT_TUNING, PREFIX_TUNING)
SIZED_BY_PEFT = (IA3, PROMPT_TUNING, PREFIX_TUNING)  # estimates that follow peft's own arithmetic exactly


# ------------------------------------------------------------------ the table and the config (no model)


def test_every_new_method_is_an_entry_with_help_knobs_and_families():
    for name in NEW_METHODS:
        method = get_method(name)
        assert method.help and method.adapter and method.saves == "adapter"
        assert set(method.families) == {DECODER, ENCODER_DECODER} and not method.suits(ENCODER)
        assert set(method.knobs) <= set(FinetuneConfig.field_names()) and set(method.knobs) <= set(KNOBS)
        for knob in method.knobs:
            assert FinetuneConfig.help(knob)
        assert f"{name}:" in FinetuneConfig.help("method")
    assert get_method(DORA).knobs == get_method(RSLORA).knobs == LORA_KNOBS
    assert get_method(IA3).knobs == ("ia3_target_modules", "ia3_feedforward_modules")
    assert get_method(PREFIX_TUNING).knobs == ("num_virtual_tokens",)
    assert "prompt_tuning_init" in get_method(PROMPT_TUNING).knobs
    assert get_method("full").knobs == ()


def test_only_plain_lora_adapters_convert_for_llama_cpp_and_prompts_never_merge():
    # DPO trains a plain LoRA adapter (on preference pairs), so it converts like LoRA.
    assert {m.name for m in TABLE.values() if m.gguf_adapter} == {LORA, "qlora", RSLORA, "dpo"}
    assert {m.name for m in TABLE.values() if not m.mergeable} == {PROMPT_TUNING, PREFIX_TUNING}


def test_method_knobs_and_schedule_are_validated():
    with pytest.raises(FinetuneConfigError, match="prompt_tuning_init_text is empty"):
        FinetuneConfig(method=PROMPT_TUNING, prompt_tuning_init="text")
    assert FinetuneConfig(method=PROMPT_TUNING, prompt_tuning_init="text", prompt_tuning_init_text="Summarise:")
    FinetuneConfig(method=LORA, prompt_tuning_init="text")  # another method's knob is not read
    with pytest.raises(FinetuneConfigError, match="prompt_tuning_init='zeros' is not one of: random, sample_vocab"):
        FinetuneConfig(method=PROMPT_TUNING, prompt_tuning_init="zeros")
    with pytest.raises(FinetuneConfigError, match="num_virtual_tokens=0 is out of range"):
        FinetuneConfig(method=PREFIX_TUNING, num_virtual_tokens=0)
    with pytest.raises(FinetuneConfigError, match="gradient checkpointing"):
        FinetuneConfig(method=PREFIX_TUNING, gradient_checkpointing=True)
    assert FinetuneConfig(ia3_target_modules="k_proj, down_proj").ia3_target_modules == ("k_proj", "down_proj")
    assert LR_SCHEDULES == ("linear", "cosine", "constant", "constant_with_warmup")
    with pytest.raises(FinetuneConfigError, match="lr_scheduler_type='polynomial' is not one of"):
        FinetuneConfig(lr_scheduler_type="polynomial")
    with pytest.raises(FinetuneConfigError, match="both set"):
        FinetuneConfig(warmup_ratio=0.1, warmup_steps=3)
    with pytest.raises(FinetuneConfigError, match="constant has no warmup"):
        FinetuneConfig(lr_scheduler_type="constant", warmup_steps=3)
    with pytest.raises(FinetuneConfigError, match="warmup_ratio=1.0 is out of range"):
        FinetuneConfig(warmup_ratio=1.0)
    with pytest.raises(FinetuneConfigError, match="Unknown config key 'warmup'"):
        FinetuneConfig.from_dict({"warmup": 3}, check=False)
    assert FinetuneConfig(warmup_steps=3).warmup == 3 and FinetuneConfig(warmup_ratio=0.25).warmup == 0.25
    for field in ("lr_scheduler_type", "warmup_ratio", "warmup_steps", "num_virtual_tokens"):
        assert FinetuneConfig.help(field)


def test_schedule_and_knobs_round_trip_through_the_saved_config():
    config = FinetuneConfig(method=PROMPT_TUNING, lr_scheduler_type="cosine", warmup_ratio=0.2,
                            num_virtual_tokens=7, prompt_tuning_init="text", prompt_tuning_init_text="Summarise:")
    again = FinetuneConfig.from_dict(json.loads(json.dumps(config.to_dict())), check=False)
    assert again == config and "lr_scheduler_type: cosine" in config.to_yaml()


# ------------------------------------------------------------------ trainable share: estimate vs peft


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "t5"])
def test_the_estimate_before_loading_matches_peft_after_wrapping(family, ft_models, offline_resolver, tmp_path):
    counted = {}
    for name in (LORA, *NEW_METHODS):
        config = FinetuneConfig(model=str(ft_models[family]), method=name, lora_r=4, num_virtual_tokens=5)
        source = locate_model(config, offline_resolver, tmp_path)
        trainable = build_trainable(config, source)
        estimate, total = estimate_trainable(config, source)
        counted[name] = trainable.trainable_parameters
        if name in SIZED_BY_PEFT:
            assert estimate == trainable.trainable_parameters, name
            assert trainable.total_parameters == total + trainable.trainable_parameters, name
        else:  # LoRA's estimate assumes square targets: the right order of magnitude
            assert trainable.trainable_parameters / 3 < estimate < 3 * trainable.trainable_parameters, name
        assert 0 < trainable.trainable_share < 0.2
        assert trainable.describe().startswith(f"{name}: ")
    assert counted[RSLORA] == counted[LORA] < counted[DORA]  # DoRA adds a magnitude per output
    assert counted[IA3] < counted[LORA]


@pytest.mark.slow
def test_ia3_takes_its_targets_from_the_config(ft_models, offline_resolver, tmp_path):
    config = FinetuneConfig(model=str(ft_models["llama"]), method=IA3, ia3_target_modules=("v_proj", "down_proj"),
                            ia3_feedforward_modules=("down_proj",))
    source = locate_model(config, offline_resolver, tmp_path)
    trainable = build_trainable(config, source)
    assert trainable.target_modules == ("down_proj", "v_proj")
    assert estimate_trainable(config, source)[0] == trainable.trainable_parameters
    with pytest.raises(FinetuneConfigError, match="IA3 could not be attached"):
        build_trainable(config.replace(ia3_target_modules=("nothing_here",), ia3_feedforward_modules=()), source)


@pytest.mark.slow
def test_prompt_tuning_from_a_text_starts_at_its_token_embeddings(ft_models, offline_resolver, tmp_path):
    import torch

    config = FinetuneConfig(model=str(ft_models["llama"]), method=PROMPT_TUNING, num_virtual_tokens=4,
                            prompt_tuning_init="text", prompt_tuning_init_text="Summarise the dialogue:")
    source = locate_model(config, offline_resolver, tmp_path)
    trainable = build_trainable(config, source)
    ids = trainable.tokenizer("Summarise the dialogue:")["input_ids"][:4]
    start = trainable.model.prompt_encoder["default"].embedding.weight
    words = trainable.model.get_base_model().get_input_embeddings().weight[ids]
    assert torch.allclose(start, words)
    # the saved config names the base, never the server's folder
    assert trainable.model.peft_config["default"].tokenizer_name_or_path == source.name


# ------------------------------------------------------------------ before/after runs and loading them back


RUN = dict(max_steps=3, batch_size=2, learning_rate=5e-2, max_length=96, sample_count=1, max_new_tokens=4,
           validation_fraction=0, seed=3, num_virtual_tokens=4, lora_r=4, test_limit=2)


def _run(tmp_path, model, data, method, resolver, **extra):
    config = FinetuneConfig.from_dict({"model": str(model), "data": str(data), "input_column": "dialogue",
                                       "target_column": "summary", "method": method, **RUN, **extra})
    control = RecordingControl()
    outcome = train(config, tmp_path / "run", control, tmp_path / "data", resolver=resolver)
    return outcome, control, tmp_path / "run"


@pytest.mark.slow
@pytest.mark.parametrize("family,method", [("llama", m) for m in NEW_METHODS]
                         + [("t5", m) for m in (PROMPT_TUNING, PREFIX_TUNING)])
def test_each_method_trains_answers_and_loads_back(family, method, tmp_path, ft_models, dialogue_file,
                                                   offline_resolver):
    # Virtual tokens learn slowly at LoRA's rates: prompt and prefix tuning take a higher one, as usual.
    rate = 0.3 if not get_method(method).mergeable else RUN["learning_rate"]
    outcome, control, run_dir = _run(tmp_path, ft_models[family], dialogue_file, method, offline_resolver,
                                     learning_rate=rate)
    assert outcome.status == "done", control.events[-3:]
    assert_event_shapes(control.events)
    metrics = outcome.metrics
    assert metrics.method == method and 0 < metrics.trainable_parameters < metrics.total_parameters
    assert metrics.test_loss_after < metrics.test_loss_before
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 1 and {"base_output", "tuned_output"} <= set(samples[0])
    adapter = run_dir / "adapter"
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["peft_type"] == {DORA: "LORA", RSLORA: "LORA", IA3: "IA3", PROMPT_TUNING: "PROMPT_TUNING",
                                  PREFIX_TUNING: "PREFIX_TUNING"}[method]
    assert str(tmp_path) not in (adapter / "adapter_config.json").read_text()
    info = json.loads((adapter / "playground.json").read_text())
    model, tokenizer = load_trained(adapter, base_model=info["base_model"], method=method, family=info["family"],
                                    data_dir=tmp_path / "data", resolver=offline_resolver)
    merged = get_method(method).mergeable
    assert (type(model).__name__.startswith("Peft")) is not merged
    answer = generate(model, tokenizer, info["family"], [samples[0]["input"]], max_new_tokens=4, max_length=96)
    assert len(answer) == 1 and isinstance(answer[0], str)


@pytest.mark.slow
def test_the_baseline_is_the_base_even_where_an_untrained_prompt_changes_it(tmp_path, ft_models, dialogue_file,
                                                                          offline_resolver):
    """Prompt tuning's virtual tokens change the answers before any training: the 'before' side switches them off,
    so it equals a LoRA run's base (same data, seed and base)."""
    prompt, _, _ = _run(tmp_path / "p", ft_models["llama"], dialogue_file, PROMPT_TUNING, offline_resolver)
    lora, _, _ = _run(tmp_path / "l", ft_models["llama"], dialogue_file, LORA, offline_resolver)
    assert prompt.metrics.test_loss_before == pytest.approx(lora.metrics.test_loss_before, rel=1e-5)


@pytest.mark.slow
def test_the_schedule_and_warmup_reach_the_trainer(tmp_path, ft_models, dialogue_file, offline_resolver):
    outcome, control, run_dir = _run(tmp_path, ft_models["llama"], dialogue_file, LORA, offline_resolver,
                                     max_steps=4, lr_scheduler_type="constant_with_warmup", warmup_steps=2)
    assert outcome.status == "done"
    rates = [e["learning_rate"] for e in control.of("step")]
    assert len(rates) == 4 and rates == sorted(rates) and rates[0] < rates[-1]  # up during the warmup
    assert rates[-2] == rates[-1] == pytest.approx(5e-2)  # then the peak, held (a linear schedule would fall)
    saved = FinetuneConfig.from_yaml(run_dir / "config.yaml", check=False)
    assert saved.lr_scheduler_type == "constant_with_warmup" and saved.warmup_steps == 2


# ------------------------------------------------------------------ exports: merge and llama.cpp


@pytest.fixture(scope="module")
def prompt_run(tmp_path_factory, ft_models, dialogue_file, offline_resolver):
    tmp = tmp_path_factory.mktemp("prompt-run")
    outcome, _, run_dir = _run(tmp, ft_models["llama"], dialogue_file, PROMPT_TUNING, offline_resolver,
                               sample_count=0)
    assert outcome.status == "done"
    return run_dir


@pytest.mark.slow
def test_merge_refuses_prompt_tuning_and_llama_cpp_refuses_it(prompt_run, tmp_path):
    from playground.finetune.export import merge_adapter, merge_problem
    from playground.finetune.gguf_adapter import AdapterConversionError, check_adapter

    assert merge_problem(PROMPT_TUNING) and merge_problem(PREFIX_TUNING) and not merge_problem(IA3)
    with pytest.raises(PlaygroundError, match="prompt tuning adapter cannot be merged.*PeftModel.from_pretrained"):
        merge_adapter(prompt_run / "adapter", tmp_path / "merged", tmp_path / "data")
    assert not (tmp_path / "merged").exists()
    with pytest.raises(AdapterConversionError, match="llama.cpp applies LoRA adapters only.*PROMPT_TUNING"):
        check_adapter(prompt_run / "adapter")


@pytest.mark.slow
@pytest.mark.parametrize("method", [IA3, DORA])
def test_ia3_and_dora_merge_but_do_not_convert_for_llama_cpp(method, tmp_path, ft_models, dialogue_file,
                                                             offline_resolver):
    import torch
    from transformers import AutoModelForCausalLM

    from playground.finetune.export import merge_adapter
    from playground.finetune.gguf_adapter import AdapterConversionError, check_adapter
    from playground.finetune.gguf_samples import llama_cpp_problem

    outcome, _, run_dir = _run(tmp_path, ft_models["llama"], dialogue_file, method, offline_resolver,
                               sample_count=0)
    assert outcome.status == "done"
    merged_dir = merge_adapter(run_dir / "adapter", tmp_path / "merged", tmp_path / "data",
                               resolver=offline_resolver)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, use_safetensors=True).eval()
    info = json.loads((run_dir / "adapter" / "playground.json").read_text())
    adapted, _ = load_trained(run_dir / "adapter", base_model=info["base_model"], method=method, family=DECODER,
                              data_dir=tmp_path / "data", resolver=offline_resolver)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, adapted.eval()(input_ids=ids).logits, atol=1e-4)
    with pytest.raises(AdapterConversionError):
        check_adapter(run_dir / "adapter")
    assert "llama.cpp LoRA adapter cannot carry" in llama_cpp_problem(method, "smollm2-135m-instruct", DECODER, None)


def test_workshop_limits_cap_virtual_tokens_and_a_rank_only_where_the_method_reads_them():
    from playground.finetune.limits import WORKSHOP_MAX_VIRTUAL_TOKENS, FinetuneLimits

    limits = FinetuneLimits(mode="workshop", max_virtual_tokens=WORKSHOP_MAX_VIRTUAL_TOKENS, max_lora_r=64)
    with pytest.raises(FinetuneConfigError, match="num_virtual_tokens=100 is above the limit of 64"):
        limits.check(FinetuneConfig(method=PREFIX_TUNING, num_virtual_tokens=100))
    limits.check(FinetuneConfig(method=LORA, num_virtual_tokens=100))  # LoRA reads no virtual tokens
    limits.check(FinetuneConfig(method=IA3, lora_r=128))  # nor does IA3 read a rank
    with pytest.raises(FinetuneConfigError, match="lora_r=128 is above the limit"):
        limits.check(FinetuneConfig(method=DORA, lora_r=128))
    assert limits.maximum("num_virtual_tokens") == 64
    assert limits.fit(FinetuneConfig(method=PROMPT_TUNING, num_virtual_tokens=100)).num_virtual_tokens == 64
