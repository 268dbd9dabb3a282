"""The run comparison, its chart, the forgetting line and the sweep preset through the API (gradio_client):
finished runs are written into the app's run store, a sweep is queued in a workshop app whose one training slot
another person's fake run holds, so nothing trains."""

from __future__ import annotations

import json

import pytest
from gradio_client.exceptions import AppError

from playground.finetune.runs import SUCCEEDED
from tests.finetune.test_runs_table import _metrics
from tests.ui.conftest import issue_token, owner_id
from tests.ui.test_finetune_client import _run_id, workshop_app  # noqa: F401  (a module fixture)


def _finished(services, owner: str, config: dict, metrics: dict) -> str:
    run_id = services.runs.create(owner, config, "tests.finetune.fake_jobs:quick")
    (services.runs.path(run_id) / "metrics.json").write_text(json.dumps(metrics))
    services.runs.set_status(run_id, SUCCEEDED, force=True)
    return run_id


def _poll(client, token, run_id="", compared=None, metric="gain_and_forgetting"):
    return client.predict(token, run_id, compared or [], metric, api_name="/finetune_poll")


def test_the_runs_table_and_chart_compare_the_picked_runs(client, app_services):
    token = issue_token(client)
    owner = owner_id(app_services, token)
    full = _finished(app_services, owner, {"model": "smollm2-135m-instruct", "method": "full"},
                     _metrics("full", trainable_share=1.0, forgetting={}))
    lora = _finished(app_services, owner, {"model": "smollm2-135m-instruct", "method": "lora", "lora_r": 4},
                     _metrics("lora"))
    result = _poll(client, token)
    gain, runs, compare, chart = result[5], result[7], result[-2], result[-1]
    assert "Forgetting (8 examples per task" in gain and "-7.5 points" in gain  # the newest run's summary
    headers = runs["headers"]
    for column in ("method", "rank", "trainable (%)", "weights saved (MB)", "peak memory (MB)", "duration (s)",
                   "training tokens/s", "last train loss", "validation loss", "ROUGE-L before", "ROUGE-L after",
                   "forgetting (points)"):
        assert column in headers, (column, headers)
    rows = [dict(zip(headers, row)) for row in runs["data"]]
    assert [r["method"] for r in rows] == ["lora", "full"] and rows[1]["rank"] == "—"
    assert {choice[1] for choice in compare["choices"]} == {full, lora}
    assert chart is not None
    picked = _poll(client, token, compared=[full], metric="peak_memory_mb")
    assert len(picked[7]["data"]) == 1 and picked[-2]["value"] == [full]
    assert client.predict(token, [full], api_name="/finetune_runs_csv").endswith("runs-en.csv")


def test_the_sweep_presets_say_what_they_run(client):
    assert "3 runs, one after another" in client.predict("sweep-cpu-demo", api_name="/finetune_sweep_info")
    assert "`method=full, learning_rate=5e-05`" in client.predict("sweep-cpu-demo", api_name="/finetune_sweep_info")


def test_a_sweep_is_queued_in_one_click_counts_as_one_run_and_cancels_as_one(workshop_app):  # noqa: F811
    client, services = workshop_app
    token = issue_token(client)
    with pytest.raises(AppError, match="method 'full' is not available in workshop mode"):
        client.predict(token, "sweep-cpu-demo", api_name="/finetune_sweep")
    _, picker = client.predict(token, "sweep-lora-ranks", api_name="/finetune_sweep")
    owner = owner_id(services, token)
    first = _run_id(picker)
    runs = services.jobs.list_runs(owner)
    assert len(runs) == 3 and {r.sweep for r in runs} == {services.jobs.get(first, owner).sweep}
    assert [r.config["lora_r"] for r in reversed(runs)] == [4, 8, 16]
    try:
        with pytest.raises(AppError, match="You already have run"):
            client.predict(token, "sweep-lora-ranks", api_name="/finetune_sweep")
    finally:
        client.predict(token, first, api_name="/finetune_cancel")
    assert {services.jobs.get(r.id, owner).status for r in runs} == {"cancelled"}
