"""One's own fine-tuned run in the Quantized CPU tab, in a real browser: it joins the model list when the tab
opens, its facts show the adapter, and the chat answers with it (the tiny GGUF app, Debian's Chromium)."""

from __future__ import annotations

import re

import pytest

from playground.backends.base import GenerationParams
from playground.backends.chat import build_messages
from tests.helpers import wait_until
from tests.ui.conftest import owner_id, record_issued_tokens
from tests.ui.test_browser import ARTIFACTS

pytestmark = pytest.mark.browser

MESSAGE = "The quick brown fox"


def _letters(text: str) -> str:
    """The letters and digits of a text: what survives the chat's Markdown rendering of a random model's output."""
    return re.sub(r"[\W_]+", "", text)


def test_pick_ones_run_in_the_quantized_tab_and_chat_with_it(browser, gguf_app, monkeypatch):
    services = gguf_app.services
    issued = record_issued_tokens(services, monkeypatch)
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="en-US")
    try:
        page = context.new_page()
        page.goto(gguf_app.url)
        page.wait_for_selector("#arch-run", timeout=60_000)  # the app opens on its first tab, Architectures
        token = wait_until(lambda: issued and issued[0], "the page getting an identity")
        # The run finishes while the page is open: opening the tab again lists it.
        run_id = gguf_app.run_for(token, seed=5)
        page.get_by_role("tab", name="About").click()
        page.get_by_role("tab", name="Quantized CPU (llama.cpp)").click()
        page.locator("#quant-model input").click()
        option = page.get_by_role("option").filter(has_text=run_id)
        option.first.wait_for(state="visible", timeout=30_000)
        assert option.first.inner_text().startswith("★")
        option.first.click()

        facts = page.locator("#quant-facts")
        wait_until(lambda: "adapter rank" in facts.inner_text(), "the adapter's facts showing", 60)
        assert f"{run_id}-adapter.gguf" in facts.inner_text() and "LORA" in facts.inner_text()

        page.get_by_text("Generation parameters").first.click()
        for name, value in (("temperature", "0"), ("repetition-penalty", "1"), ("max-new-tokens", "10")):
            field = page.locator(f"#quant-{name} input[type=number]")
            field.fill(value)
            field.press("Tab")
        page.fill("#quant-input textarea", MESSAGE)
        page.click("#quant-send")
        wait_until(lambda: "tokens/s" in page.locator("#quant-stats").inner_text(), "the answer finishing", 120)

        engine = services.engine(f"run:{run_id}", "llama.cpp", owner_id(services, token))
        params = GenerationParams(max_new_tokens=10, temperature=0.0, repetition_penalty=1.0)
        expected = engine.generate(engine.format_chat(build_messages([], MESSAGE)), params).text
        base = services.engine("tiny-llama-gguf", "llama.cpp")
        base_answer = base.generate(base.format_chat(build_messages([], MESSAGE)), params).text
        assert _letters(expected) != _letters(base_answer)  # so the page's answer tells the run from its base
        bot = page.locator("#quant-chatbot .message.bot, #quant-chatbot [data-testid='bot']").last
        assert _letters(bot.inner_text()) == _letters(expected)
        assert "adapter rank" in facts.inner_text() and "no run" not in facts.inner_text()  # still the run's facts
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "quantized-run-chat.png"), full_page=True)
    finally:
        context.close()
