"""The Quantization ladder tab in a real browser: a two-type ladder is built, with counted progress, a table
and a chart."""

from __future__ import annotations

import time

import pytest

from tests.ui.test_browser import ARTIFACTS, _wait_for_rows, page  # noqa: F401  (a shared fixture)

pytestmark = pytest.mark.browser


def test_a_two_type_ladder_shows_progress_a_table_and_a_chart(page):  # noqa: F811
    page.get_by_role("tab", name="Quantization ladder").click()
    page.wait_for_selector("#ladder-build", state="visible", timeout=10_000)
    for box in page.locator("#ladder-types input[type=checkbox]").all():
        name = box.evaluate("e => e.closest('label').innerText.trim()")
        if box.is_checked() != (name in ("F32", "Q8_0")):
            box.click()
    page.click("#ladder-build")
    seen: set[str] = set()
    deadline = time.time() + 600
    status = ""
    while time.time() < deadline:
        seen.update(page.locator("#ladder-table .progress-level-inner").all_inner_texts())
        status = page.locator("#ladder-status").inner_text()
        if "Built in" in status:
            break
        time.sleep(0.2)
    assert "Built in" in status and "2 types" in status, status
    assert any("of 2)" in text for text in seen), f"no counted progress: {sorted(seen)[:10]}"
    assert "SmolLM2-135M-Instruct, Q4_1 (packaged)" in status
    _wait_for_rows(page, "#ladder-table", 1)
    rows = page.locator("#ladder-table [role=grid]").get_attribute("aria-rowcount")
    assert rows == "3", rows  # the header row and the two types
    table = page.locator("#ladder-table").inner_text()
    assert "F32" in table and "Q8_0" in table and "Q4_K_M" not in table
    page.wait_for_selector("#ladder-chart svg .mark-line path", timeout=30_000)
    assert page.locator("#ladder-chart svg .mark-line path").count() >= 3  # size, perplexity, agreement (+ speed)
    assert "file size" in (page.locator("#ladder-chart").text_content() or "")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "quantization-ladder.png"), full_page=True)
