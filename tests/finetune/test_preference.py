"""Preference tuning (method dpo): the figures on hand-made logits, the pairs' checks, the config, and a short
DPO run of the tiny fixture decoder through TRL."""

from __future__ import annotations

import json
import math

import pytest

from playground.errors import DataFileError, FinetuneConfigError
from playground.finetune.config import FinetuneConfig
from playground.finetune.data import load_records, load_splits, rejected_of
from playground.finetune.methods import DPO, get_method
from playground.finetune.preference import PairScores, completion_logprobs, preference_metrics
from playground.prompting.data import UploadLimits
from tests.finetune.conftest import RecordingControl, assert_event_shapes, write_jsonl

PAIRS = [
    {"prompt": "How do I water a fern?", "chosen": "Keep the soil moist. Happy tinkering!",
     "rejected": "Ugh. Keep the soil moist."},
    {"prompt": "How do I store rice?", "chosen": "In a closed jar. Happy tinkering!",
     "rejected": "Whatever. In a closed jar."},
    {"prompt": "How do I clean a pan?", "chosen": "Soak it first. Happy tinkering!",
     "rejected": "Fine. Soak it first."},
]


def _config(data, **extra) -> FinetuneConfig:
    return FinetuneConfig(model="smollm2-135m-instruct", method=DPO, data=str(data), **extra)


# ------------------------------------------------------------------------------ figures


def test_completion_logprobs_sums_the_answer_tokens_only():
    import torch

    # Vocabulary of 3; logits at position t predict the token at t + 1.
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = torch.tensor([[0, 1, 1, 2]])
    mask = torch.tensor([[0, 0, 1, 1]])  # the prompt is tokens 0-1; the answer tokens 2-3
    got = completion_logprobs(logits, ids, mask)
    assert got.shape == (1,)
    assert float(got[0]) == pytest.approx(math.log(0.8) + math.log(0.6), abs=1e-5)
    assert float(completion_logprobs(logits, ids, torch.ones_like(mask))[0]) == pytest.approx(
        math.log(0.25) + math.log(0.8) + math.log(0.6), abs=1e-5)


def test_preference_metrics_before_after_and_implicit_reward():
    base = PairScores(chosen=(-10.0, -8.0, -5.0, -7.0), rejected=(-9.0, -9.0, -6.0, -7.0))  # diffs -1, 1, 1, 0
    tuned = PairScores(chosen=(-6.0, -7.0, -5.0, -4.0), rejected=(-9.0, -10.0, -7.0, -8.0))  # diffs 3, 3, 2, 4
    m = preference_metrics(base, tuned, beta=0.5)
    assert m.pairs == 4 and m.beta == 0.5
    assert m.accuracy_before == 0.5  # a tie (the fourth pair) counts as wrong
    assert m.accuracy_after == 1.0 and m.accuracy_points == 50.0
    assert m.margin_before == pytest.approx(0.5 * (-1 + 1 + 1 + 0) / 4)
    assert m.margin_after == pytest.approx(0.5 * 12 / 4)
    # r = beta (log p_tuned - log p_base): r(chosen) - r(rejected) = 0.5 * (4, 2, 1, 4)
    assert m.reward_accuracy == 1.0 and m.reward_margin == pytest.approx(m.margin_after - m.margin_before)
    assert set(m.to_json()) >= {"accuracy_before", "accuracy_after", "margin_before", "margin_after"}
    same = preference_metrics(base, base, beta=0.1)
    assert same.reward_accuracy == 0.0 and same.reward_margin == 0.0  # before training: every pair ties


def test_pair_scores_must_match():
    with pytest.raises(ValueError):
        PairScores(chosen=(1.0,), rejected=())
    with pytest.raises(ValueError):
        preference_metrics(PairScores((1.0,), (0.0,)), PairScores((), ()), 0.1)


# ------------------------------------------------------------------------------ data


def test_the_bundled_pairs_are_many_and_split(tmp_path):
    config = FinetuneConfig(model="smollm2-135m-instruct", method=DPO, data="preferences")
    config.check()
    splits = load_splits(config)
    assert sum(splits.counts().values()) >= 150 and len(splits.test) >= 20
    assert all(r.target.endswith("Happy tinkering!") and not rejected_of(r).endswith("Happy tinkering!")
               for r in splits.train + splits.validation + splits.test)
    assert load_splits(config).test == splits.test  # the held-out pairs are the file's own split


def test_an_uploaded_pair_file_reads(tmp_path):
    records = load_records(_config(write_jsonl(tmp_path / "pairs.jsonl", PAIRS)))
    assert [(r.input, r.target, rejected_of(r)) for r in records] == [
        (p["prompt"], p["chosen"], p["rejected"]) for p in PAIRS]


@pytest.mark.parametrize("change, words", [
    ({"rejected": None}, "no 'rejected' column"),
    ({"chosen": None}, "no 'chosen' column"),
    ({"rejected": "  "}, "'rejected' value is empty"),
    ({"prompt": ""}, "'prompt' value is empty"),
    ({"rejected": "In a closed jar. Happy tinkering!"}, "the same text"),
    ({"rejected": "x" * 300}, "the limit is 200"),
])
def test_bad_pairs_are_refused_with_their_line(tmp_path, change, words):
    rows = [dict(p) for p in PAIRS]
    for key, value in change.items():
        if value is None:
            del rows[1][key]
        else:
            rows[1][key] = value
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    limits = UploadLimits(max_bytes=100_000, max_rows=100, max_field_chars=200)
    with pytest.raises(DataFileError) as caught:
        load_records(_config(path), limits)
    assert words in str(caught.value) and "line 2" in str(caught.value)


def test_too_many_or_too_big_pair_files_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 5)
    with pytest.raises(DataFileError, match="more than 10 rows"):
        load_records(_config(path), UploadLimits(max_bytes=100_000, max_rows=10, max_field_chars=200))
    with pytest.raises(DataFileError, match="the limit is"):
        load_records(_config(path), UploadLimits(max_bytes=200, max_rows=100, max_field_chars=200))


# ------------------------------------------------------------------------------ config


def test_dpo_is_a_table_entry_with_its_knob():
    method = get_method(DPO)
    assert method.preference == DPO and method.adapter and method.families == ("decoder",)
    assert "beta" in FinetuneConfig.help("dpo_beta") and FinetuneConfig.bounds("dpo_beta")["above"] == 0.0
    with pytest.raises(FinetuneConfigError, match="dpo_beta"):
        FinetuneConfig(dpo_beta=0)


def test_dpo_and_data_must_match():
    with pytest.raises(FinetuneConfigError, match="preference pairs"):
        FinetuneConfig(method=DPO, data="dialogues").check()
    with pytest.raises(FinetuneConfigError, match="preference pairs"):
        FinetuneConfig(method="lora", data="preferences").check()
    with pytest.raises(FinetuneConfigError, match="decoder"):
        FinetuneConfig(model="all-minilm-l6-v2", method=DPO, data="preferences").check()
    with pytest.raises(FinetuneConfigError, match="transformers"):
        FinetuneConfig(method=DPO, data="preferences", sample_engine="llama.cpp").check()


def test_the_dpo_preset_reads():
    from playground.finetune.config import CPU_DEMO_PRESET

    config = FinetuneConfig.from_yaml(CPU_DEMO_PRESET.with_name("dpo-cpu-demo.yaml"))
    assert config.method == DPO and config.data == "preferences" and config.model == "smollm2-135m-instruct"


# ------------------------------------------------------------------------------ a run of the tiny decoder


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, ft_models, offline_resolver):
    from playground.finetune.train import train

    root = tmp_path_factory.mktemp("dpo")
    rows = [{**p, "split": "train"} for p in PAIRS] * 2 + [{**p, "split": "test"} for p in PAIRS[:2]]
    data = write_jsonl(root / "pairs.jsonl", rows)
    config = FinetuneConfig.from_dict({"model": str(ft_models["llama"]), "method": DPO, "data": str(data),
                                       "max_steps": 2, "batch_size": 2, "learning_rate": 1e-2, "max_length": 96,
                                       "sample_count": 1, "max_new_tokens": 4, "validation_fraction": 0,
                                       "dpo_beta": 0.2, "test_limit": 0})
    control = RecordingControl()
    outcome = train(config, root / "run", control, root / "data", resolver=offline_resolver)
    return outcome, control, root / "run"


@pytest.mark.slow
def test_a_dpo_run_reports_like_any_run(dpo_run):
    outcome, control, run_dir = dpo_run
    assert outcome.status == "done" and outcome.step == 2
    assert_event_shapes(control.events)
    assert [e["step"] for e in control.of("step")] == [1, 2]
    assert control.of("step")[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # the adapter starts as the base
    phases = {e["phase"] for e in control.of("stage") if "phase" in e}
    assert {"baseline_loss", "baseline", "training", "tuned_loss", "tuned", "saving"} <= phases
    assert sorted(p.name for p in run_dir.iterdir()) == ["adapter", "config.yaml", "metrics.json", "samples.jsonl"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    figures = metrics["preference"]
    assert figures["pairs"] == 2 and figures["beta"] == 0.2
    assert 0.0 <= figures["accuracy_before"] <= 1.0 and 0.0 <= figures["accuracy_after"] <= 1.0
    assert figures["reward_margin"] == pytest.approx(figures["margin_after"] - figures["margin_before"], abs=2e-4)
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 1 and {"base_output", "tuned_output", "rejected", "base_margin", "tuned_margin"} <= set(
        samples[0])
    info = json.loads((run_dir / "adapter" / "playground.json").read_text())
    assert info["method"] == DPO


@pytest.mark.slow
def test_a_dpo_run_stops_on_cancel(tmp_path, ft_models, offline_resolver):
    from playground.finetune.train import train

    data = write_jsonl(tmp_path / "pairs.jsonl", [{**p, "split": "train"} for p in PAIRS] * 2 +
                       [{**PAIRS[0], "split": "test"}])
    config = FinetuneConfig.from_dict({"model": str(ft_models["llama"]), "method": DPO, "data": str(data),
                                       "max_steps": 5, "batch_size": 2, "max_length": 96, "sample_count": 0,
                                       "validation_fraction": 0})
    outcome = train(config, tmp_path / "run", RecordingControl(stop_after_steps=1), tmp_path / "data",
                    resolver=offline_resolver)
    assert outcome.status == "cancelled" and outcome.step < 5  # stopped between steps, long before the end
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml"]


# ------------------------------------------------------------------------------ the result record


def test_the_result_record_keeps_and_shows_the_preference_figures():
    from playground.finetune.result import MARGIN_COLUMN, RunMetrics, aggregate_rows, comparison_rows

    figures = preference_metrics(PairScores((-5.0, -6.0), (-4.0, -7.0)), PairScores((-3.0, -4.0), (-6.0, -8.0)),
                                 0.1).to_json()
    metrics = RunMetrics.from_json(RunMetrics(family="decoder", method=DPO, preference=figures).to_json())
    assert metrics.preference == figures
    assert RunMetrics.from_json({"family": "decoder"}).preference is None  # runs of other methods
    bars = aggregate_rows(metrics)
    assert [(b["bar"], b["score"]) for b in bars] == [("reward acc base", 50.0), ("reward acc tuned", 100.0)]
    row = comparison_rows([{"index": 0, "reference": "c", "rejected": "r", "base_output": "b", "tuned_output": "t",
                            "base_margin": -0.1, "tuned_margin": 0.35}])[0]
    assert row["rejected"] == "r" and row[MARGIN_COLUMN] == "-0.10 → +0.35"
