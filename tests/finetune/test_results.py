"""Reading a run back for display: loss points, before/after rows, aggregate bars, the length histogram."""

from __future__ import annotations

import json

from playground.finetune.gguf_samples import SampleEngine
from playground.finetune.preflight import DataReport
from playground.finetune.result import (
    QUANTIZATION_COLUMN,
    RunMetrics,
    RunResult,
    aggregate_rows,
    comparison_rows,
    loss_points,
)


def test_loss_points_take_train_steps_and_validation_evals_in_order():
    events = [{"event": "start", "total_steps": 4}, {"event": "step", "step": 1, "loss": 2.5},
              {"event": "step", "step": 2, "loss": 2.0}, {"event": "eval", "step": 2, "eval_loss": 2.2},
              {"event": "step", "step": 3, "loss": None}, {"event": "done", "metrics": {}}]
    points = loss_points(events)
    assert [(p.step, p.loss, p.kind) for p in points] == [(1, 2.5, "train"), (2, 2.0, "train"),
                                                          (2, 2.2, "validation")]


def test_comparison_rows_put_the_largest_gain_first_with_all_rouge_scores():
    samples = [{"index": 0, "input": "a", "reference": "r", "base_output": "x", "tuned_output": "y",
                "base_rouge1": 0.1, "base_rouge2": 0.0, "base_rougeL": 0.1, "tuned_rouge1": 0.2, "tuned_rouge2": 0.1,
                "tuned_rougeL": 0.2, "improvement": 0.1},
               {"index": 1, "input": "b", "reference": "r", "base_output": "x", "tuned_output": "y",
                "base_rouge1": 0.1, "base_rouge2": 0.0, "base_rougeL": 0.1, "tuned_rouge1": 0.6, "tuned_rouge2": 0.3,
                "tuned_rougeL": 0.5, "improvement": 0.4}]
    rows = comparison_rows(samples)
    assert [r["#"] for r in rows] == [2, 1]
    assert rows[0]["ROUGE-L"] == "10.0 → 50.0" and rows[0]["ROUGE-2"] == "0.0 → 30.0"
    assert rows[0]["ROUGE-1"] == "10.0 → 60.0" and rows[0]["ROUGE-L gain"] == 40.0
    assert list(rows[0]) == ["#", "reference", "base", "fine-tuned", "ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-L gain",
                             "input"]


def test_classifier_rows_show_correctness():
    rows = comparison_rows([{"index": 0, "reference": "positive", "base_output": "negative",
                             "tuned_output": "positive", "base_correct": False, "tuned_correct": True,
                             "improvement": 1}])
    assert rows[0]["base correct"] is False and rows[0]["tuned correct"] is True


def test_aggregate_rows_give_one_bar_per_metric_and_model():
    rows = aggregate_rows(RunMetrics(rouge_before={"rouge1": 0.2, "rouge2": 0.05, "rougeL": 0.15},
                                     rouge_after={"rouge1": 0.4, "rouge2": 0.2, "rougeL": 0.35}))
    assert len(rows) == 6 and len({r["bar"] for r in rows}) == 6
    assert {"bar": "R-L tuned", "metric": "rougeL", "model": "fine-tuned", "score": 35.0} in rows
    assert aggregate_rows(RunMetrics(accuracy_before=0.5, accuracy_after=0.75))[1]["score"] == 75.0
    assert aggregate_rows(RunMetrics()) == [] and aggregate_rows(None) == []


def test_missing_or_partial_files_read_as_empty(tmp_path):
    result = RunResult(tmp_path)
    assert result.metrics() is None and result.samples() == [] and result.weights_dir is None
    (tmp_path / "metrics.json").write_text("{not json")
    (tmp_path / "samples.jsonl").write_text(json.dumps({"index": 0}) + "\n{half a line")
    assert result.metrics() is None
    assert result.samples() == [{"index": 0}]


def test_histogram_counts_every_example_and_marks_the_cut():
    report = DataReport(counts={"train": 6, "validation": 0, "test": 1}, source="x", template="plain", examples=(),
                        lengths=(10, 12, 30, 31, 90, 200), truncated=1, max_length=128)
    bins = report.histogram(bins=4)
    assert sum(b["examples"] for b in bins) == 6
    assert bins[-1]["cut"] == "over max_length" and bins[0]["cut"] == "fits"
    assert DataReport({}, "x", "plain", (), (), 0, 128).histogram() == []


QUANTIZED_SAMPLE = {"index": 0, "input": "a", "reference": "r", "base_output": "x", "tuned_output": "y",
                    "quantized_output": "z", "base_rouge1": 0.1, "base_rouge2": 0.0, "base_rougeL": 0.1,
                    "tuned_rouge1": 0.6, "tuned_rouge2": 0.3, "tuned_rougeL": 0.5, "quantized_rouge1": 0.55,
                    "quantized_rouge2": 0.2, "quantized_rougeL": 0.45, "improvement": 0.4}
QUANTIZED_METRICS = {"family": "decoder", "sample_count": 1, "sample_engine": "transformers",
                     "rouge_before": {"rouge1": 0.1, "rouge2": 0.0, "rougeL": 0.1},
                     "rouge_after": {"rouge1": 0.6, "rouge2": 0.3, "rougeL": 0.5},
                     "rouge_quantized": {"rouge1": 0.55, "rouge2": 0.2, "rougeL": 0.45},
                     "engines": {"base": {"engine": "transformers", "weights": "fp32", "adapter": False},
                                 "tuned": {"engine": "transformers", "weights": "fp32", "adapter": False},
                                 "quantized": {"engine": "llama.cpp", "weights": "Q4_1", "adapter": True}},
                     "quantized_unavailable": ""}


def test_a_quantized_third_system_gets_its_column_cells_and_cost():
    rows = comparison_rows([QUANTIZED_SAMPLE])
    assert list(rows[0]) == ["#", "reference", "base", "fine-tuned", "fine-tuned, quantized", "ROUGE-1", "ROUGE-2",
                             "ROUGE-L", "ROUGE-L gain", QUANTIZATION_COLUMN, "input"]
    assert rows[0]["fine-tuned, quantized"] == "z" and rows[0]["ROUGE-L"] == "10.0 → 50.0 → 45.0"
    assert rows[0][QUANTIZATION_COLUMN] == -5.0 and rows[0]["ROUGE-L gain"] == 40.0
    bars = aggregate_rows(RunMetrics.from_json(QUANTIZED_METRICS))
    assert len(bars) == 9 and [b["model"] for b in bars[:3]] == ["base", "fine-tuned", "fine-tuned, quantized"]
    assert {"bar": "R-L quant", "metric": "rougeL", "model": "fine-tuned, quantized", "score": 45.0} in bars


def test_metrics_say_which_engine_answered_and_round_trip(tmp_path):
    metrics = RunMetrics.from_json(QUANTIZED_METRICS)
    assert metrics.engine_of("base") == SampleEngine("transformers", "fp32")
    assert metrics.engine_of("quantized").label == "llama.cpp Q4_1 + adapter"
    assert metrics.quantization_points == -5.0
    assert RunMetrics.from_json(metrics.to_json()) == metrics
    unavailable = RunMetrics.from_json({**QUANTIZED_METRICS, "rouge_quantized": None, "engines": {},
                                        "quantized_unavailable": "the base is a local folder"})
    assert unavailable.quantization_points is None and len(aggregate_rows(unavailable)) == 6
    assert unavailable.to_json()["quantized_unavailable"] == "the base is a local folder"


def test_an_older_runs_files_without_the_engine_fields_still_read(tmp_path):
    older = {"model": "smollm2-135m-instruct", "method": "lora", "family": "decoder", "sample_count": 1,
             "rouge_before": {"rouge1": 0.1, "rouge2": 0.0, "rougeL": 0.1},
             "rouge_after": {"rouge1": 0.6, "rouge2": 0.3, "rougeL": 0.5}, "rougeL_improvement": 0.4,
             "retired_field": 1}
    (tmp_path / "metrics.json").write_text(json.dumps(older))
    (tmp_path / "samples.jsonl").write_text(json.dumps({k: v for k, v in QUANTIZED_SAMPLE.items()
                                                        if not k.startswith("quantized")}) + "\n")
    result = RunResult(tmp_path)
    metrics = result.metrics()
    assert metrics.sample_engine == "" and metrics.rouge_quantized is None and metrics.quantized_unavailable == ""
    assert metrics.engine_of("base") == metrics.engine_of("tuned") == SampleEngine("transformers")  # all were
    assert metrics.engine_of("quantized") is None and metrics.quantization_points is None
    assert [b["model"] for b in aggregate_rows(metrics)] == ["base", "fine-tuned"] * 3
    row = comparison_rows(result.samples())[0]
    assert "fine-tuned, quantized" not in row and QUANTIZATION_COLUMN not in row and row["ROUGE-L"] == "10.0 → 50.0"
