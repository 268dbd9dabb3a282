"""The bench's fine-tune figure: the plain peft + Trainer script, the step clock, and the figure, on tiny runs.

No wall-clock time is asserted (speed is the bench's job); what is checked is that both trainers are
given the same work (tokens, labels, batches, first loss) and that the figure comes out whole.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from playground.bench import BenchOptions, Figure, cli, format_table
from playground.bench import finetune as ft
from playground.bench.plain_trainer import PlainSettings, encode_example
from playground.finetune.encoding import IGNORE_INDEX, encode_causal
from tests.finetune.conftest import DIALOGUES
from tests.helpers import SMOLLM2, build_tiny_causal_lm, fake_hardware, offline_settings

ROWS = DIALOGUES  # short enough for the tiny byte-level tokenizer at max_length 128


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, tiny_tokenizer):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("bench-ft-model") / "tiny-llama", "llama", tiny_tokenizer,
                                512)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory, tiny_llama):
    """The figure's config on the tiny model and a six-row file: three steps of batch two, one test row."""
    rows = [{"dialogue": d, "summary": s, "split": "train"} for d, s in ROWS]
    rows.append({"dialogue": ROWS[0][0], "summary": ROWS[0][1], "split": "test"})
    data = tmp_path_factory.mktemp("bench-ft-data") / "dialogues.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return ft.finetune_config(BenchOptions(quick=True), steps=3).replace(
        model=str(tiny_llama), data=str(data), input_column="dialogue", target_column="summary",
        template="dialogue-tldr", max_length=128, batch_size=2)


# ------------------------------------------------------------------ the plain script's data


def test_figure_config_trains_without_evaluation_or_generation():
    config = ft.finetune_config(BenchOptions())
    assert (config.model, config.method, config.data) == (SMOLLM2, "lora", "dialogues")
    assert config.validation_fraction == 0 and config.eval_every == 0 and config.sample_count == 0
    assert config.max_steps == BenchOptions().finetune_steps > BenchOptions(quick=True).finetune_steps >= 3
    settings = PlainSettings.from_config(config, ("q_proj", "v_proj"))
    for name in ("lora_r", "lora_alpha", "lora_dropout", "batch_size", "grad_accum", "max_length", "learning_rate",
                 "max_steps", "seed"):
        assert getattr(settings, name) == getattr(config, name), name
    assert settings.target_modules == ("q_proj", "v_proj")  # the catalog's targets when the config names none


def test_plain_encoding_masks_the_prompt_and_matches_the_apps(tiny_config, tiny_tokenizer):
    pairs = ft.train_pairs(tiny_config)
    assert len(pairs) == len(ROWS)
    app = encode_causal([SimpleNamespace(prompt=p, completion=c) for p, c in pairs], tiny_tokenizer, 128)
    for (prompt, completion), feature in zip(pairs, app.features):
        plain = encode_example(tiny_tokenizer, prompt, completion, 128)
        assert plain == feature
        labels = plain["labels"]
        masked = next(i for i, x in enumerate(labels) if x != IGNORE_INDEX)  # where the answer starts
        prompt_text = tiny_tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                         add_generation_prompt=True)
        assert masked == len(tiny_tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
        assert all(x == IGNORE_INDEX for x in labels[:masked]) and IGNORE_INDEX not in labels[masked:]
        assert completion in tiny_tokenizer.decode(labels[masked:])


def test_plain_encoding_cuts_at_max_length(tiny_tokenizer):
    plain = encode_example(tiny_tokenizer, ROWS[0][0], ROWS[0][1], 20)
    assert len(plain["input_ids"]) == len(plain["labels"]) == len(plain["attention_mask"]) == 20


@pytest.mark.slow
def test_plain_encoding_matches_the_apps_on_smollm2_dialogues(data_dir, catalog, tmp_path):
    """Every train row of the bundled set: the same token ids and labels from both encoders (real tokenizer)."""
    from transformers import AutoTokenizer

    from playground.finetune.methods import locate_model
    from playground.models.sources import SourceResolver

    config = ft.finetune_config(BenchOptions())
    source = locate_model(config, SourceResolver(None, offline=True, hub_cache_dir=tmp_path), data_dir, catalog)
    tokenizer = AutoTokenizer.from_pretrained(source.folder)
    pairs = ft.train_pairs(config)
    app = encode_causal([SimpleNamespace(prompt=p, completion=c) for p, c in pairs], tokenizer, config.max_length)
    assert len(app.features) == len(pairs) > 100
    mismatched = [i for i, ((prompt, completion), feature) in enumerate(zip(pairs, app.features))
                  if encode_example(tokenizer, prompt, completion, config.max_length) != feature]
    assert mismatched == []


# ------------------------------------------------------------------ the step clock


class _FakeLM:
    """A module that returns its input width as the loss."""

    @staticmethod
    def make():
        import torch

        class FakeLM(torch.nn.Module):
            def forward(self, input_ids=None, attention_mask=None, labels=None):
                return SimpleNamespace(loss=torch.tensor(float(input_ids.shape[1])))

        return FakeLM()


def test_step_clock_counts_training_batches_and_leaves_out_the_first_step():
    import torch

    clock = ft.step_clock()
    model = _FakeLM.make()
    clock.on_train_begin(None, None, None, model=model)
    model.train()

    def batch(width, real):
        mask = torch.zeros(2, width, dtype=torch.long)
        mask.view(-1)[:real] = 1
        return {"input_ids": torch.ones(2, width, dtype=torch.long), "attention_mask": mask}

    model(**batch(5, 7))  # step 1: 10 tokens, 7 real (warm-up: counted for padding, not timed)
    clock.on_step_end(None, None, None)
    model.eval()
    model(**batch(50, 100))  # evaluation: not training, not counted
    model.train()
    model(**batch(4, 8))  # step 2: two forward passes (gradient accumulation)
    model(**batch(3, 5))
    clock.on_step_end(None, None, None)
    model(**batch(4, 6))  # step 3
    clock.on_step_end(None, None, None)
    clock.on_train_end(None, None, None)
    model(**batch(9, 18))  # after training: the hooks are gone

    run = clock.result()
    assert run.steps == 2 and run.tokens == 8 + 5 + 6
    assert run.padding_share == pytest.approx(1 - (7 + 8 + 5 + 6) / (10 + 8 + 6 + 8))
    assert run.first_loss == 5.0
    assert run.seconds > 0 and run.tokens_per_s == pytest.approx(run.tokens / run.seconds)


def test_step_clock_needs_two_steps():
    clock = ft.step_clock()
    clock.on_train_begin(None, None, None, model=_FakeLM.make())
    clock.on_step_end(None, None, None)
    with pytest.raises(RuntimeError, match="at least 2"):
        clock.result()


# ------------------------------------------------------------------ real (tiny) runs


def test_both_trainers_train_on_the_same_batches(tiny_config, tiny_llama, tmp_path, catalog):
    from playground.models.sources import SourceResolver

    resolver = SourceResolver(None, offline=True, hub_cache_dir=tmp_path / "hub")
    # With the app's length grouping off, the two must be the same training, batch for batch.
    app = ft.app_training_run(tiny_config.replace(group_by_length=False), tmp_path / "app", tmp_path / "data",
                                 resolver, catalog)
    plain = ft.plain_training_run(tiny_config, tiny_llama, (), ft.train_pairs(tiny_config), tmp_path / "plain")
    assert app.steps == plain.steps == 2  # three steps, the first not timed
    # Same rows, same order, same batch size, same initial weights: the same tokens and the same first loss.
    assert app.tokens == plain.tokens > 0
    assert app.padding_share == pytest.approx(plain.padding_share) and 0 <= app.padding_share < 1
    assert app.first_loss == pytest.approx(plain.first_loss, rel=1e-5)


def test_length_grouping_pads_less_than_the_plain_script(tiny_config, tiny_llama, tmp_path, catalog):
    from playground.models.sources import SourceResolver

    # 32 dialogues of 1 to 8 exchanges: lengths vary, as real data's do. Sixteen steps of two (one epoch);
    # transformers sorts each megabatch of 8 by length, so neighbours in length share a batch.
    rows = [{"dialogue": "\n".join(["A: Are you coming?", "B: Yes, soon."] * (1 + i % 8)), "summary": "B comes.",
             "split": "train"} for i in range(32)]
    rows.append({"dialogue": "A: Tea?\nB: Yes.", "summary": "B wants tea.", "split": "test"})
    data = tmp_path / "varied.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = tiny_config.replace(data=str(data), max_steps=16, max_length=256)
    assert config.group_by_length  # the app's default
    resolver = SourceResolver(None, offline=True, hub_cache_dir=tmp_path / "hub")
    app = ft.app_training_run(config, tmp_path / "app", tmp_path / "data", resolver, catalog)
    plain = ft.plain_training_run(config, tiny_llama, (), ft.train_pairs(config), tmp_path / "plain")
    assert app.padding_share < plain.padding_share, (app.padding_share, plain.padding_share)  # 10 % against 16 %


def test_figure_is_measured_and_reported(tiny_config, tmp_path, catalog):
    settings = offline_settings(tmp_path / "app-data")
    figure = ft.bench_finetune(settings, fake_hardware(threads=2), catalog, BenchOptions(quick=True), tmp_path,
                                  config=tiny_config)
    assert figure.name == ft.FINETUNE_FIGURE and figure.unit == "x" and figure.target == ">= 1.0"
    assert figure.value is not None and figure.value > 0 and figure.passed is (figure.value >= 1.0)
    for part in ("tok/s", "padding share app", "plain", "3 steps of batch 2", "the first not timed",
                 "first-step loss"):
        assert part in figure.detail, part
    row = next(line for line in format_table([figure]).splitlines() if line.startswith(ft.FINETUNE_FIGURE))
    assert ">= 1.0" in row and row.endswith(("pass", "FAIL"))


def test_figure_is_skipped_for_a_model_that_is_not_a_decoder(tmp_path, catalog):
    figure = ft.bench_finetune(offline_settings(tmp_path), fake_hardware(), catalog,
                                  BenchOptions(model="all-minilm-l6-v2"), tmp_path)
    assert figure.value is None and figure.passed is None and "not a decoder" in figure.detail


def test_skip_finetune_flag_reaches_the_options(monkeypatch, capsys):
    seen = {}

    def fake_run(options, machine=None):
        seen["options"] = options
        return [Figure(ft.FINETUNE_FIGURE, None, "x", ">= 1.0", None, "skipped (--skip-finetune)")]

    monkeypatch.setattr(cli, "run_benchmarks", fake_run)
    assert cli.main(["--skip-finetune", "--skip-startup", "--quick"]) == 0
    assert seen["options"].skip_finetune and seen["options"].quick
    assert "skipped (--skip-finetune)" in capsys.readouterr().out
    assert not cli.build_arg_parser().parse_args([]).skip_finetune


@pytest.mark.slow
def test_peft_methods_figures_compare_each_method_with_lora(tiny_config, tmp_path, catalog):
    settings = offline_settings(tmp_path / "app-data")
    figures = ft.bench_peft_methods(settings, fake_hardware(threads=2), catalog, BenchOptions(quick=True), tmp_path,
                                    config=tiny_config, methods=("ia3", "prompt_tuning"))
    assert [f.name for f in figures] == ["fine-tune tokens/s: ia3 / lora", "fine-tune tokens/s: prompt_tuning / lora"]
    for figure in figures:
        assert figure.unit == "x" and figure.target == "" and figure.passed is None
        assert figure.value is not None and figure.value > 0
        assert "tok/s" in figure.detail and "lora" in figure.detail and "the first not timed" in figure.detail


def test_peft_methods_figures_are_skipped_for_a_model_that_is_not_a_decoder(tmp_path, catalog):
    figures = ft.bench_peft_methods(offline_settings(tmp_path), fake_hardware(), catalog,
                                    BenchOptions(model="all-minilm-l6-v2"), tmp_path)
    assert len(figures) == len(ft.PEFT_METHODS_BENCHED)
    assert all(f.value is None and "not a decoder" in f.detail for f in figures)
