"""A person whose request waits for its turn sees their place in line, then the answer (Debian's Chromium).

The test holds every generation slot of the app itself, so the page's request waits in line for certain; it
then gives the slots back and the answer streams in.
"""

from __future__ import annotations

import contextlib

import pytest

from tests.ui.test_browser import ARTIFACTS, _wait_for_text

pytestmark = pytest.mark.browser


@contextlib.contextmanager
def every_slot_busy(services):
    with contextlib.ExitStack() as stack:
        for _ in range(services.generation_slots.slots):
            assert stack.enter_context(services.generation_slots.hold())
        yield


def _page(browser, url, locale):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale=locale)
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#quant-input textarea", timeout=60_000)
    return context, page


@pytest.mark.parametrize("locale, waiting", [
    ("en-US", "Waiting for the model — 2 requests ahead of you"),
    ("pt-BR", "Aguardando o modelo — 2 pedidos na sua frente"),
])
def test_a_waiting_chat_shows_its_place_in_line_then_the_answer(browser, app_url, app_services, locale, waiting):
    assert app_services.generation_slots.slots == 2  # the two held by the test are ahead
    context, page = _page(browser, app_url, locale)
    try:
        with every_slot_busy(app_services):
            page.fill("#quant-input textarea", "Name a colour.")
            page.click("#quant-send")
            _wait_for_text(page, "#quant-stats", waiting, 60)
            page.locator("#quant-stats").scroll_into_view_if_needed()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"quantized-waiting-{locale}.png"), full_page=False)
            assert page.locator("#quant-chatbot").inner_text().count("Name a colour.") == 1
        stats = _wait_for_text(page, "#quant-stats", "tokens/s", 120)
        assert waiting not in stats
        bot = page.locator("#quant-chatbot .message.bot, #quant-chatbot [data-testid='bot']").last
        assert bot.inner_text().strip()
        page.screenshot(path=str(ARTIFACTS / f"quantized-waited-answer-{locale}.png"), full_page=False)
    finally:
        context.close()


def test_a_waiting_prompt_lab_run_shows_its_place_in_line_then_the_answer(browser, app_url, app_services):
    context, page = _page(browser, app_url, "en-US")
    try:
        page.get_by_role("tab", name="Prompt Lab").click()
        page.wait_for_selector("#lab-run", state="visible", timeout=10_000)
        with every_slot_busy(app_services):
            page.click("#lab-run")
            _wait_for_text(page, "#lab-result", "Waiting for the model — 2 requests ahead of you", 60)
            page.locator("#lab-result").scroll_into_view_if_needed()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "prompt-lab-waiting.png"), full_page=False)
        result = _wait_for_text(page, "#lab-result", "tokens/s", 120)
        assert "Waiting" not in result and "Answer:" in result
    finally:
        context.close()
