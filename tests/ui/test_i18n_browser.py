"""An error toast in a real browser reads in the page's language (Playwright driving Debian's Chromium)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("locale, message", [
    ("pt-BR", "A entrada está vazia: digite uma frase, uma pergunta ou um diálogo."),
    ("fr-FR", "L'entrée est vide : saisissez une phrase, une question ou un dialogue."),
    ("en-US", "The input is empty: type a sentence, question or dialogue."),
])
def test_an_empty_prompt_lab_input_is_refused_in_the_pages_language(browser, app_url, locale, message):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale=locale)
    try:
        page = context.new_page()
        page.goto(app_url)
        page.wait_for_selector("[role=tab]", timeout=60_000)
        page.locator("[role=tab]").nth(1).click()  # the Prompt Lab, whatever the language
        page.wait_for_selector("#lab-input textarea", state="visible", timeout=30_000)
        page.fill("#lab-input textarea", "   ")
        page.click("#lab-run")
        toast = page.locator(".toast-body").filter(has_text=message)
        toast.first.wait_for(state="visible", timeout=60_000)
        assert message in toast.first.inner_text()
    finally:
        context.close()
