"""Method dpo in Chromium: the Fine-tune tab offers DPO, its beta knob and the bundled preference pairs, and a
finished DPO run shows its reward accuracy before/after, the bars and the answers side by side with the
rejected answer and the margins (a run written into the store, so no model trains here)."""

from __future__ import annotations

import json
import time

import pytest

from playground.finetune.runs import SUCCEEDED
from tests.ui.conftest import record_issued_tokens
from tests.ui.test_browser import ARTIFACTS, _stored_identity, _wait_for_text
from tests.ui.test_finetune_browser import _events, _open

pytestmark = pytest.mark.browser

SAMPLE = {"index": 0, "input": "How do I store rice?", "prompt": "How do I store rice?",
          "reference": "In a closed jar. Happy tinkering!", "rejected": "Whatever. In a closed jar.",
          "base_output": "Rice keeps well in a dry place.", "tuned_output": "In a closed jar. Happy tinkering!",
          "base_rougeL": 0.2, "tuned_rougeL": 1.0, "improvement": 0.8, "base_margin": -0.41, "tuned_margin": 2.35}
PREFERENCE = {"pairs": 22, "beta": 0.1, "accuracy_before": 0.2727, "accuracy_after": 1.0, "margin_before": -0.35,
              "margin_after": 2.1, "reward_accuracy": 1.0, "reward_margin": 2.45}
METRICS = {"family": "decoder", "method": "dpo", "sample_count": 1, "steps": 15, "duration_s": 180.0,
           "train_losses": [0.69, 0.2], "rouge_before": {"rouge1": 0.25, "rouge2": 0.1, "rougeL": 0.2},
           "rouge_after": {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}, "preference": PREFERENCE,
           "engines": {"base": {"engine": "transformers", "weights": "fp32", "adapter": False},
                       "tuned": {"engine": "transformers", "weights": "fp32", "adapter": False}}}


def test_dpo_is_offered_and_its_run_shows_reward_accuracy_and_pairs(browser, app_url, app_services, monkeypatch):
    issued = record_issued_tokens(app_services, monkeypatch)
    context, page = _open(browser, app_url, "en", {"width": 1366, "height": 768})
    try:
        _stored_identity(page)
        page.locator("#ft-method label").filter(has_text="DPO (preference pairs)").click()
        page.locator("#ft-data input").click()
        page.locator("[role=option]").filter(has_text="preferences").first.click()
        assert page.locator("#ft-data input").input_value().startswith("preferences")
        page.locator("button, span").filter(has_text="Hyperparameters").first.click()
        beta = page.locator("#ft-dpo-beta")
        beta.wait_for(state="visible", timeout=30_000)
        assert "DPO beta" in beta.inner_text() and beta.locator("input").input_value() == "0.1"

        owner = app_services.identities.person(issued[0]).id
        run_id = app_services.runs.create(owner, {"model": "smollm2-135m-instruct", "method": "dpo",
                                                  "data": "preferences", "max_steps": 15},
                                          "playground.finetune.train:run_job")
        folder = app_services.runs.path(run_id)
        (folder / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in _events(15, 100)))
        (folder / "samples.jsonl").write_text(json.dumps(SAMPLE) + "\n")
        (folder / "metrics.json").write_text(json.dumps(METRICS))
        app_services.runs.set_status(run_id, SUCCEEDED, force=True, started=time.time() - 60)
        _wait_for_text(page, "#ft-status", app_services.runs.get(run_id, owner).name, 60)
        gain = _wait_for_text(page, "#ft-gain", "Reward accuracy", 60)
        assert "27.3%" in gain and "100.0%" in gain and "22 held-out pairs" in gain
        table = page.locator("#ft-comparison")
        table.scroll_into_view_if_needed()
        text = _wait_for_text(page, "#ft-comparison", "rejected answer", 30)
        assert "Whatever. In a closed jar." in text and "-0.41 → +2.35" in text
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "finetune-dpo-en.png"), full_page=True)
    finally:
        context.close()
