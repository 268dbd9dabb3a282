"""The PEFT methods in Chromium: choosing prompt tuning shows its knobs (virtual tokens, how they start) and hides
IA3's, choosing IA3 swaps them, and the pre-flight reports prompt tuning's trainable share; the learning-rate
schedule sits with the hyperparameters. A screenshot at 1366x768 goes to the test artifacts."""

from __future__ import annotations

import pytest

from tests.ui.test_browser import ARTIFACTS, _wait_for_text
from tests.ui.test_finetune_browser import _open

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _visible(page, elem_id: str) -> bool:
    return page.locator(f"#{elem_id}").is_visible()


def test_choosing_a_method_shows_its_knobs_and_its_preflight(browser, app_url):
    context, page = _open(browser, app_url, "en", {"width": 1366, "height": 768})
    try:
        assert not _visible(page, "ft-num-virtual-tokens") and not _visible(page, "ft-ia3-target-modules")
        page.locator("#ft-method label").filter(has_text="prompt tuning").click()
        page.wait_for_selector("#ft-num-virtual-tokens", state="visible", timeout=30_000)
        assert _visible(page, "ft-prompt-tuning-init") and _visible(page, "ft-prompt-tuning-init-text")
        assert not _visible(page, "ft-ia3-target-modules")
        page.locator("#ft-method label").filter(has_text="IA3").click()
        page.wait_for_selector("#ft-ia3-target-modules", state="visible", timeout=30_000)
        assert _visible(page, "ft-ia3-feedforward-modules") and not _visible(page, "ft-num-virtual-tokens")
        page.locator("#ft-method label").filter(has_text="prompt tuning").click()
        page.wait_for_selector("#ft-num-virtual-tokens", state="visible", timeout=30_000)
        page.locator("#ft-num-virtual-tokens input").fill("6")
        page.locator("button").filter(has_text="Hyperparameters").first.click()
        page.wait_for_selector("#ft-lr-scheduler-type", state="visible", timeout=30_000)
        assert _visible(page, "ft-warmup-ratio") and _visible(page, "ft-warmup-steps")
        assert not _visible(page, "ft-lora-r")  # LoRA's rank means nothing to prompt tuning
        page.locator("#ft-preflight").click()
        text = _wait_for_text(page, "#ft-costs", "Trainable parameters", 600)
        assert "prompt_tuning" in text and f"{6 * 576:,}" in text  # 6 virtual tokens x SmolLM2's width
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "finetune-prompt-tuning-en.png"), full_page=True)
    finally:
        context.close()
