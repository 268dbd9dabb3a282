"""Carrying one's runs to another browser, in real browsers: two Chromium contexts (two browsers' local storages);
the second types the first's personal code and then lists the first's runs, also after a reload; a wrong code is
a clear toast."""

from __future__ import annotations

import pytest

from tests.helpers import wait_until
from tests.ui.conftest import record_issued_tokens
from tests.ui.test_browser import ARTIFACTS
from tests.ui.test_identity_carry_client import CODE, finished_run

pytestmark = pytest.mark.browser

TITLE = "Use your runs on another browser"


def _open(context, url):
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#carry", timeout=60_000)
    return page


def _picked_run(page) -> str:
    """What the Fine-tune tab's run picker shows (the page polls every 2 s and picks the newest run)."""
    return page.locator("#ft-run input").input_value()


def _name(services, run_id: str) -> str:
    """The short name the run picker shows for a run."""
    return services.runs.record(run_id).name or run_id


def test_a_second_browser_takes_the_first_ones_runs_with_its_code(browser, app_services, app_url, monkeypatch):
    issued = record_issued_tokens(app_services, monkeypatch)
    first = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    second = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    try:
        mine = _open(first, app_url)
        token = wait_until(lambda: issued and issued[0], "the first page getting an identity")
        run_id = _name(app_services, finished_run(app_services, token))
        mine.get_by_text(TITLE).first.click()
        mine.click("#carry-show")
        shown = wait_until(lambda: CODE.search(mine.locator("#carry-code").inner_text()), "the code showing", 30)
        code = shown.group(0)
        assert "15 minutes" in mine.locator("#carry-code").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        mine.locator("#carry").screenshot(path=str(ARTIFACTS / "carry-code.png"))

        other = _open(second, app_url)
        wait_until(lambda: len(issued) >= 2, "the second page getting its own identity")
        # The second browser has a run of its own, shown in its picker: after the switch it must not stay there.
        own_run = _name(app_services, finished_run(app_services, issued[1]))
        other.get_by_role("tab", name="Fine-tune").click()
        other.wait_for_selector("#ft-run", state="visible", timeout=10_000)
        wait_until(lambda: own_run in _picked_run(other), "the second browser's own run shown", 30)
        assert run_id not in _picked_run(other)
        other.get_by_text(TITLE).first.click()
        field = other.locator("#carry-paste input, #carry-paste textarea").first
        field.fill(" " + code.lower().replace("-", " "))  # as someone types what they heard
        other.click("#carry-use")
        wait_until(lambda: "now holds your runs" in other.locator("#carry-status").inner_text(), "the switch", 30)
        wait_until(lambda: run_id in _picked_run(other), "the first browser's run listed on the second", 30)
        other.wait_for_timeout(2500)  # a poll or two later, the run is still shown, not "no such run"
        assert run_id in _picked_run(other)
        assert "no run" not in other.locator("#ft-status").inner_text().lower()
        other.screenshot(path=str(ARTIFACTS / "carry-runs.png"), full_page=True)

        # The new identity is kept in the second browser's local storage: a reload still lists the run.
        other.reload()
        other.wait_for_selector("#carry", timeout=60_000)
        other.get_by_role("tab", name="Fine-tune").click()
        wait_until(lambda: run_id in _picked_run(other), "the run listed after a reload", 30)

        # The code was used up: typing it again is a clear toast, not a traceback.
        other.get_by_text(TITLE).first.click()
        field = other.locator("#carry-paste input, #carry-paste textarea").first
        field.fill(code)
        other.click("#carry-use")
        toast = other.locator(".toast-body").filter(has_text="already used")
        toast.first.wait_for(state="visible", timeout=30_000)
        assert "Traceback" not in toast.first.inner_text()
    finally:
        first.close()
        second.close()


def test_the_panel_speaks_the_pages_language(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="pt-BR")
    try:
        page = _open(context, app_url)
        title = page.get_by_text("Use suas execuções em outro navegador").first
        title.wait_for(state="visible", timeout=30_000)
        title.click()
        assert "Mostrar meu código" in page.locator("#carry-show").inner_text()
        field = page.locator("#carry-paste input, #carry-paste textarea").first
        assert field.get_attribute("placeholder") == "K7QM-3XRD-P9"
    finally:
        context.close()
