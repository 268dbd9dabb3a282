"""The run comparison in Chromium: the table with the lecture's columns ("—" where a run has no figure), the chart
of gain beside forgetting, picking runs to compare, the forgetting line beside the gain, and the sweep preset's
description; a screenshot at 1366x768."""

from __future__ import annotations

import json
import time

import pytest

from playground.finetune.runs import SUCCEEDED
from tests.finetune.test_runs_table import _metrics
from tests.ui.conftest import record_issued_tokens
from tests.ui.test_browser import ARTIFACTS, _stored_identity, _wait_for_rows, _wait_for_text
from tests.ui.test_finetune_browser import _open

pytestmark = pytest.mark.browser


def _finished(services, owner: str, config: dict, metrics: dict) -> str:
    run_id = services.runs.create(owner, config, "playground.finetune.train:run_job")
    (services.runs.path(run_id) / "metrics.json").write_text(json.dumps(metrics))
    services.runs.set_status(run_id, SUCCEEDED, force=True, started=time.time() - 300)
    return run_id


def test_runs_compare_side_by_side_with_a_chart_and_forgetting(browser, app_url, app_services, monkeypatch):
    issued = record_issued_tokens(app_services, monkeypatch)
    context, page = _open(browser, app_url, "en", {"width": 1366, "height": 768})
    try:
        _stored_identity(page)
        owner = app_services.identities.person(issued[0]).id
        full = _finished(app_services, owner, {"model": "smollm2-135m-instruct", "method": "full"},
                         _metrics("full", trainable_share=1.0, forgetting={}))
        lora = _finished(app_services, owner, {"model": "smollm2-135m-instruct", "method": "lora", "lora_r": 4},
                         _metrics("lora"))
        _wait_for_text(page, "#ft-status", app_services.runs.get(lora, owner).name, 60)
        _wait_for_text(page, "#ft-gain", "Forgetting (8 examples per task", 30)
        table = page.locator("#ft-runs")
        table.scroll_into_view_if_needed()
        _wait_for_rows(page, "#ft-runs", 2)
        text = table.inner_text()
        for column in ("trainable (%)", "peak memory (MB)", "training tokens/s", "forgetting (points)"):
            assert column in text, column
        assert "—" in text  # the full run had the check off
        page.locator("#ft-runs-chart canvas, #ft-runs-chart svg").first.wait_for(state="visible", timeout=30_000)
        assert "3 runs, one after another" in page.locator("#ft-sweep-info").inner_text()
        page.screenshot(path=str(ARTIFACTS.joinpath("finetune-runs-en.png")), full_page=True)
        # Pick one run: the table keeps only it.
        page.locator("#ft-compare-runs input").click()
        page.get_by_role("option", name=app_services.runs.get(full, owner).name, exact=False).first.click()
        page.keyboard.press("Escape")
        page.wait_for_function(  # the grid counts its header row too
            "document.querySelector('#ft-runs [role=grid]')?.getAttribute('aria-rowcount') === '2'", timeout=30_000)
        assert "full" in table.inner_text() and "lora" not in table.inner_text()
    finally:
        context.close()
