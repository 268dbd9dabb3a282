"""The Prompt search tab in a real browser (Playwright driving Debian's Chromium, real SmolLM2 on llama.cpp):
a tiny search fills the chart and the tables with counted progress, and its winner reaches the Prompt Lab."""

from __future__ import annotations

import pytest

from playground.ui.i18n import load_locales
from tests.ui.test_browser import ARTIFACTS, _wait_for_rows, _wait_for_text

pytestmark = pytest.mark.browser

EN = load_locales()["en"]


def set_number(page, selector: str, value: int) -> None:
    box = page.locator(f"{selector} input[type='number']").first
    box.fill(str(value))
    box.press("Enter")


def test_a_search_fills_the_page_and_its_winner_reaches_the_prompt_lab(browser, app_url):
    context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US")
    try:
        page = context.new_page()
        page.goto(app_url)
        page.wait_for_selector("#arch-run", timeout=60_000)
        page.get_by_role("tab", name=EN["tab.ape"]).first.click()
        page.wait_for_selector("#ape-run", state="visible", timeout=30_000)
        assert "development split" in page.locator("#ape-intro").inner_text()
        for selector, value in (("#ape-candidates", 1), ("#ape-rounds", 1), ("#ape-dev", 2), ("#ape-test", 1)):
            set_number(page, selector, value)
        page.click("#ape-use")  # nothing to use yet: one clear toast
        toast = page.locator("[data-testid='toast-body']").filter(has_text="Run a search first")
        toast.first.wait_for(state="visible", timeout=30_000)
        page.click("#ape-run")
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            _wait_for_text(page, "#ape-status", "Done:", 900)  # five short generations (minutes on a busy machine)
        finally:
            page.screenshot(path=str(ARTIFACTS / "prompt-search.png"), full_page=True)
        _wait_for_rows(page, "#ape-table", 1)
        _wait_for_rows(page, "#ape-test-scores", 2)
        assert "search winner" in page.locator("#ape-test-scores").inner_text()
        assert page.locator("#ape-winner").is_visible()
        page.screenshot(path=str(ARTIFACTS / "prompt-search.png"), full_page=True)
        page.click("#ape-use")
        _wait_for_text(page, "#ape-used", "sentiment-question", 30)
        # The Prompt Lab loads the saved winner when its template is chosen.
        page.get_by_role("tab", name=EN["tab.prompt_lab"]).first.click()
        page.wait_for_selector("#lab-preview textarea", state="visible", timeout=30_000)
        page.locator("#lab-task input").click()
        page.get_by_role("option", name="Arithmetic word problems").click()
        page.wait_for_timeout(500)
        page.locator("#lab-task input").click()
        page.get_by_role("option", name="Sentiment classification").click()
        page.wait_for_function(
            "document.querySelector('#lab-template-text').innerText.includes('Input: {{ input }}')",
            timeout=30_000)
    finally:
        context.close()
