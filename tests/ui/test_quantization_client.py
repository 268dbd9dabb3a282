"""The Quantization ladder tab through its API, as gradio_client sees it (real packaged SmolLM2, two types)."""

from __future__ import annotations

import time

import pytest
from gradio_client.exceptions import AppError

from tests.ui.conftest import issue_token

MODEL = "smollm2-135m-instruct"
HEADERS = ["type", "file (MB)", "bits/weight", "tokens/s", "speed × F32", "perplexity", "top-1 agreement (%)",
           "KL to F32"]


def _rows(table) -> list[list]:
    return table["data"]


def test_a_ladder_is_built_then_read_from_the_cache(client):
    token = issue_token(client)
    table, chart, status, download = client.predict(MODEL, ["Q4_K_M"], token, api_name="/quantization_ladder")
    assert table["headers"] == HEADERS
    rows = _rows(table)
    assert [row[0] for row in rows] == ["F32", "Q4_K_M"]  # F32 joins as the reference
    f32, q4 = ({h: v for h, v in zip(HEADERS, row)} for row in rows)
    assert float(f32["bits/weight"]) == pytest.approx(32.0, abs=0.01)
    assert float(q4["file (MB)"].replace(",", "")) < float(f32["file (MB)"].replace(",", ""))
    assert float(f32["top-1 agreement (%)"]) == 100.0
    assert 50.0 <= float(q4["top-1 agreement (%)"]) < 100.0
    assert f32["speed × F32"].startswith("1.00×")
    assert "Built in" in status
    assert "SmolLM2-135M-Instruct, Q4_1 (packaged)" in status and "re-quantized" in status
    assert "not a multiple of 256" in status  # SmolLM2's 576-wide matrices and the k-quants
    assert chart is not None
    # The same ladder downloads as CSV, with the stored figures.
    with open(download, encoding="utf-8-sig") as handle:
        lines = handle.read().splitlines()
    assert lines[0].startswith("type,file_mb,bits_per_weight") and [line.split(",")[0] for line in lines[1:]] == [
        "F32", "Q4_K_M"]

    again, _, status, _ = client.predict(MODEL, ["Q4_K_M", "F32"], token, api_name="/quantization_ladder")
    assert "From the cache" in status
    assert _rows(again) == rows


@pytest.mark.parametrize("model, types, expected", [
    (MODEL, [], "Choose at least one GGUF type"),
    (MODEL, ["Q9_X"], "Q9_X"),
    ("no-such-model", ["F32"], "no-such-model"),
    ("flan-t5-small", ["F32"], "not in the list of choices"),  # the dropdown offers GGUF models only
    ("qwen2.5-0.5b-instruct", ["F32"], "PLAYGROUND_MODELS_DIR"),
])
def test_bad_choices_get_a_clear_message(client, model, types, expected):
    with pytest.raises(AppError, match=expected):
        client.predict(model, types, "", api_name="/quantization_ladder")


def test_a_made_up_identity_is_refused(client):
    with pytest.raises(AppError, match="identity"):
        client.predict(MODEL, ["Q3_K_M"], "pg1.made-up.token", api_name="/quantization_ladder")


def test_stop_ends_a_build_and_keeps_nothing(client, app_services):
    job = client.submit(MODEL, ["Q2_K"], "", api_name="/quantization_ladder")
    deadline = time.time() + 120
    while time.time() < deadline and not job.done():  # wait for the build to report its first step
        status = job.status()
        if status.progress_data:
            break
        time.sleep(0.05)
    client.predict(api_name="/quantization_stop")
    table, chart, status, download = job.result(timeout=300)
    assert "Stopped" in status
    assert _rows(table) == [] or _rows(table) == [[""] * len(HEADERS)]
    ladder_dir = app_services.settings.data_dir / "ladder"
    assert not [p for p in ladder_dir.rglob("*") if p.suffix == ".gguf" or ".partial-" in p.name]
