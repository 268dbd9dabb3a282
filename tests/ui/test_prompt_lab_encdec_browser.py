"""The classic lab's setups in a real browser: one choice in the Prompt Lab's Setup list fills every control with
FLAN-T5 (the session's tiny T5, placed where the catalog looks), the preview is text to text, and Run answers; on
the default app, where FLAN-T5's weights are absent, the model list has no FLAN-T5 and the setup names the
download."""

from __future__ import annotations

import pytest

from playground.ui.i18n import load_locales
from tests.ui.test_browser import ARTIFACTS, _wait_for_text
from tests.ui.test_prompt_lab_browser import LAPTOP, open_lab

pytestmark = [pytest.mark.browser, pytest.mark.slow]
EN = load_locales()["en"]


def choose_setup(page, setup_id: str):
    page.locator("#lab-setup input").click()
    page.get_by_role("option", name=EN[f"setup.{setup_id}"], exact=True).click()


def model_options(page) -> list[str]:
    page.locator("#lab-model input").click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return options


def test_one_choice_sets_up_flan_t5_few_shot_and_it_runs(browser, flan_app):
    _, url = flan_app
    context, page = open_lab(browser, url, viewport=LAPTOP)
    try:
        assert any("FLAN-T5 small" in option for option in model_options(page))
        choose_setup(page, "flan-t5-dialogue-one-shot")
        _wait_for_text(page, "#lab-setup-info", "one earlier conversation", 30)
        _wait_for_text(page, "#lab-token-count", "encoder input tokens", 60)
        page.wait_for_function("document.querySelector('#lab-model input').value.startsWith('FLAN-T5 small')",
                               timeout=15_000)
        assert page.locator("#lab-template input").input_value() == EN["template.t2t-dialogue-going-on"]
        assert page.locator("#lab-k input[type='number']").input_value() == "1"
        preview = page.locator("#lab-preview textarea").input_value()
        assert preview.count("What was going on?") == 2 and "#Person1#" in preview and "<|" not in preview
        assert EN["lab.text_to_text"].split(":")[0] in page.locator("#lab-token-count").inner_text()
        # The task's change event ran after the setup and kept its template, k and input.
        page.wait_for_timeout(500)
        assert page.locator("#lab-k input[type='number']").input_value() == "1"
        # Runs on the tiny T5's 512-token window: a shorter conversation, with one demonstration before it.
        page.fill("#lab-input textarea", "A: Tea?\nB: Yes, please.")
        page.click("#lab-run")
        _wait_for_text(page, "#lab-result", "prompt tokens", 120)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "prompt-lab-flan-t5-setup.png"), full_page=False)
    finally:
        context.close()


def test_the_default_app_has_no_flan_t5_and_the_setup_names_the_download(browser, app_url, app_services):
    if app_services.engines.resolver.is_available_offline(app_services.catalog.get("flan-t5-small")) or \
            app_services.engines.resolver.is_available_offline(app_services.catalog.get("flan-t5-base")):
        pytest.skip("this machine holds FLAN-T5 weights (PLAYGROUND_MODELS_DIR or the Hub cache)")
    context, page = open_lab(browser, app_url, viewport=LAPTOP)
    try:
        assert not any("FLAN-T5" in option for option in model_options(page))
        choose_setup(page, "flan-t5-dialogue-zero-shot")
        _wait_for_text(page, "#lab-setup-info", "python -m playground download flan-t5-base", 30)
        page.wait_for_function("document.querySelector('#lab-template input').value === "
                               f"{EN['template.t2t-dialogue-summary']!r}", timeout=15_000)
        assert page.locator("#lab-model input").input_value().startswith("SmolLM2")  # the model stays
    finally:
        context.close()
