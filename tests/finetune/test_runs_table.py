"""The table of runs: every column from a run's record, mixed methods side by side, newest first, a figure a run
lacks shown as "—", picking runs to compare, and the chart's bars."""

from __future__ import annotations

import pytest

from playground.errors import PlaygroundError
from playground.finetune.result import (
    GAIN_AND_FORGETTING,
    MISSING,
    RUN_COLUMNS,
    chart_rows,
    run_rows,
    shown_rows,
)
from tests.finetune.sessions import QUICK, fake_session, finished_run

FORGETTING = {"examples": 8, "target_task": "summarization", "tasks": [
    {"task": "sentiment", "metric": "accuracy", "examples": 8, "before": 0.5, "after": 0.375},
    {"task": "arithmetic", "metric": "exact_match", "examples": 8, "before": 0.25, "after": 0.25},
    {"task": "translation", "metric": "rougeL", "examples": 8, "before": 0.3, "after": 0.2}]}


def _metrics(method: str, **changes) -> dict:
    values = {"family": "decoder", "method": method, "steps": 20, "trainable_share": 0.012, "duration_s": 301.4,
              "tokens_per_s": 151.26, "train_losses": [2.0, 1.25], "eval_loss": 1.5, "peak_memory_bytes": 2_400_000_000,
              "peak_memory_kind": "rss", "weights_bytes": 1_700_000, "sample_count": 8,
              "rouge_before": {"rouge1": 0.25, "rouge2": 0.1, "rougeL": 0.2},
              "rouge_after": {"rouge1": 0.4, "rouge2": 0.2, "rougeL": 0.35}, "forgetting": FORGETTING}
    values.update(changes)
    return values


@pytest.fixture
def session(tmp_path):
    made = fake_session(tmp_path)
    yield made
    made.jobs.shutdown(cancel_running=True)


def _person(session):
    token = session.identities.issuer.issue()
    return token, session.identities.person(token).id


def test_every_column_of_the_lecture_table_comes_from_the_run_record(session):
    _, owner = _person(session)
    finished_run(session, owner, {"model": "smollm2-135m-instruct", "method": "lora", "lora_r": 16},
                 metrics=_metrics("lora"))
    row = run_rows(session.jobs.list_runs(owner))[0]
    assert row["method"] == "lora" and row["lora_r"] == 16
    assert row["trainable_share"] == 1.2 and row["adapter_mb"] == 1.7 and row["peak_memory_mb"] == 2400
    assert row["duration_s"] == 301 and row["tokens_per_s"] == 151.3
    assert row["train_loss"] == 1.25 and row["validation_loss"] == 1.5
    assert (row["rougeL_before"], row["rougeL_after"], row["rougeL_gain"]) == (20.0, 35.0, 15.0)
    # Forgetting: the mean change over the other tasks in points, and each task's change.
    assert row["forgetting"] == round((-12.5 + 0 - 10) / 3, 1)
    assert (row["forgetting_sentiment"], row["forgetting_arithmetic"], row["forgetting_translation"]) == \
        (-12.5, 0.0, -10.0)
    assert "forgetting_summarization" not in row  # no run scored it: the column is left out
    assert list(row) == [c for c in RUN_COLUMNS if c in row]  # the lecture's order


def test_mixed_methods_newest_first_and_missing_figures_as_a_dash(session):
    _, owner = _person(session)
    full = finished_run(session, owner, {"model": "smollm2-135m-instruct", "method": "full", "lora_r": 8},
                        metrics=_metrics("full", trainable_share=1.0, weights_bytes=540_000_000, forgetting={}))
    lora = finished_run(session, owner, {"model": "smollm2-135m-instruct", "method": "lora", "lora_r": 4},
                        metrics=_metrics("lora"))
    queued = session.runs.create(owner, {"model": "smollm2-135m-instruct", "method": "lora", "lora_r": 8}, QUICK)
    records = session.jobs.list_runs(owner)
    rows = run_rows(records)
    assert [r["method"] for r in rows] == ["lora", "lora", "full"]
    assert [r["name"] for r in rows] == [session.jobs.get(i, owner).name for i in (queued, lora, full)]
    assert rows[2]["lora_r"] is None and rows[2]["trainable_share"] == 100.0 and rows[2]["adapter_mb"] == 540.0
    assert rows[2]["forgetting"] is None and rows[0]["rougeL_gain"] is None  # off / still queued
    shown = shown_rows(rows)
    assert shown[0]["rougeL_gain"] == MISSING == "—" and shown[2]["lora_r"] == "—"
    assert shown[1]["forgetting"] == rows[1]["forgetting"]  # figures stay numbers
    # Picking runs to compare keeps those, in the same order.
    picked = run_rows(records, chosen=[full, lora])
    assert [r["method"] for r in picked] == ["lora", "full"]
    assert run_rows(records, chosen=[]) == []


def test_older_runs_read_their_weights_size_from_the_folder(session):
    _, owner = _person(session)
    finished_run(session, owner, weights={"base_model": "x"}, metrics=_metrics("lora", weights_bytes=None,
                                                                               peak_memory_bytes=None))
    row = run_rows(session.jobs.list_runs(owner))[0]
    assert row["adapter_mb"] == round(64 / 1e6, 2) and "peak_memory_mb" not in row


def test_the_chart_puts_the_runs_in_the_order_they_ran():
    rows = [{"name": "new", "rougeL_gain": 15.0, "forgetting": -7.5, "duration_s": None},
            {"name": "old", "rougeL_gain": 5.0, "forgetting": None, "duration_s": 40}]
    assert chart_rows(rows, GAIN_AND_FORGETTING) == [
        {"run": "old", "series": "rougeL_gain", "value": 5.0},
        {"run": "new", "series": "rougeL_gain", "value": 15.0},
        {"run": "new", "series": "forgetting", "value": -7.5}]
    assert chart_rows(rows, "duration_s") == [{"run": "old", "series": "duration_s", "value": 40.0}]
    with pytest.raises(PlaygroundError, match="runs chart"):
        chart_rows(rows, "name")


def test_the_session_compares_and_charts_the_picked_runs(session):
    token, owner = _person(session)
    first = finished_run(session, owner, {"model": "m", "method": "lora", "lora_r": 4}, metrics=_metrics("lora"))
    finished_run(session, owner, {"model": "m", "method": "full"}, metrics=_metrics("full"))
    view = session.poll(token, None)
    assert len(view.compared()) == 2 and len(view.compared([first])) == 1
    bars = view.chart([first], "rougeL_gain")
    assert bars == [{"run": session.jobs.get(first, owner).name, "series": "rougeL_gain", "value": 15.0}]
    path = session.runs_csv(token, chosen=[first])
    assert len(path.read_text(encoding="utf-8").strip().splitlines()) == 2  # the header and the picked run
