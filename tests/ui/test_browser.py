"""The app in a real browser (Playwright driving Debian's Chromium): tabs, chat, streaming."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.ui.conftest import record_issued_tokens

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    page.goto(app_url)
    page.wait_for_selector("#arch-run", timeout=60_000)  # the app opens on its first tab, Architectures
    yield page
    context.close()


TAB_CONTENT = {
    "Architectures": "#arch-run",
    "Prompt Lab": "#lab-preview",
    "Fine-tune": "#ft-start",
    "Quantized CPU (llama.cpp)": "#quant-chatbot",
    "Quantization ladder": "#ladder-build",
    "About": "#about-models",
}


def test_every_tab_opens(page):
    for name, selector in TAB_CONTENT.items():
        page.get_by_role("tab", name=name).click()
        page.wait_for_selector(selector, state="visible", timeout=10_000)
        assert page.locator(selector).inner_text().strip(), f"{name} tab shows nothing"
    assert "Apache-2.0" in page.locator("#about-models").inner_text()


def test_chat_streams_an_answer(page):
    page.get_by_role("tab", name="Quantized CPU (llama.cpp)").click()
    page.fill("#quant-input textarea", "Tell me a short story about a cat who learns to sail.")
    page.click("#quant-send")
    bot = page.locator("#quant-chatbot .message.bot, #quant-chatbot [data-testid='bot']").last
    lengths: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline:
        if bot.count():
            lengths.append(len(bot.inner_text().strip()))
        if "tokens/s" in page.locator("#quant-stats").inner_text():
            break
        time.sleep(0.05)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "quantized-chat.png"), full_page=True)
    assert "tokens/s" in page.locator("#quant-stats").inner_text(), "the answer never finished"
    growing = sorted(set(n for n in lengths if n > 0))
    assert len(growing) >= 3, f"text did not arrive in pieces: {lengths[-10:]}"
    assert page.locator("#quant-input textarea").input_value() == ""


def test_portuguese_browser_sees_portuguese_labels(browser, app_url):
    context = browser.new_context(locale="pt-BR")
    page = context.new_page()
    page.goto(app_url)
    page.wait_for_selector("#arch-run", timeout=60_000)
    page.wait_for_function("document.body.innerText.includes('Sobre')", timeout=10_000)
    assert page.get_by_role("tab", name="Sobre").count() == 1
    context.close()


def test_architectures_tab_renders_charts_and_heatmaps(page):
    page.get_by_role("tab", name="Architectures").click()
    page.click("#arch-run")
    page.wait_for_selector("#arch-attn-heatmap table", timeout=120_000)
    assert page.locator("#arch-enc-label").inner_text().strip()
    assert page.locator("#arch-dec-label").inner_text().strip()
    assert page.locator("#arch-attn-mask table").count() >= 1
    assert page.locator("#arch-dec-tokens .tok").count() > 5
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "architectures.png"), full_page=True)


def _wait_for_text(page, selector: str, needle: str, timeout_s: float = 120) -> str:
    deadline = time.time() + timeout_s
    text = ""
    while time.time() < deadline:
        text = page.locator(selector).inner_text()
        if needle in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared in {selector}: {text[-300:]!r}")


def _wait_for_rows(page, selector: str, rows: int) -> None:
    """Wait until a Gradio dataframe holds ``rows`` data rows (its grid counts the header row too)."""
    page.wait_for_function(
        f"Number(document.querySelector('{selector} [role=grid]')?.getAttribute('aria-rowcount') || 0) > {rows}",
        timeout=30_000)


def test_prompt_lab_few_shot_cot_and_self_consistency(page):
    page.get_by_role("tab", name="Prompt Lab").click()
    page.wait_for_selector("#lab-preview textarea", timeout=30_000)
    _wait_for_text(page, "#lab-token-count", "prompt tokens", 60)

    # Few-shot chain-of-thought on an arithmetic problem: the preview shows worked demonstrations.
    page.locator("#lab-task input").click()
    page.get_by_role("option", name="Arithmetic word problems").click()
    _wait_for_text(page, "#lab-token-count", "prompt tokens", 60)
    page.locator("#lab-strategy").get_by_label("Few-shot chain-of-thought").check()
    page.wait_for_selector("#lab-k", state="visible")
    page.fill("#lab-input textarea", "A baker makes 4 trays of 6 rolls and sells 10. How many rolls are left?")
    tokens = _wait_for_text(page, "#lab-token-count", "3 demonstrations", 60)
    preview = page.locator("#lab-preview textarea").input_value()
    assert "A baker makes 4 trays" in preview and "<|im_start|>assistant" in preview
    assert "step by step" in preview.lower(), "the chain-of-thought trigger is not in the prompt"
    assert "context window" in tokens
    page.click("#lab-run")
    result = _wait_for_text(page, "#lab-result", "tokens/s")
    assert "Answer" in result
    assert page.locator("#lab-output textarea").input_value().strip()

    # Self-consistency: five sampled paths, a vote histogram and the paths table.
    page.locator("#lab-strategy").get_by_label("Self-consistency (majority vote over sampled reasoning paths)").check()
    page.wait_for_selector("#lab-samples", state="visible")
    page.wait_for_selector("#lab-votes", state="visible")
    page.click("#lab-run")
    result = _wait_for_text(page, "#lab-result", "of 5 paths")
    assert "Majority vote" in result
    _wait_for_rows(page, "#lab-paths", 5)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "prompt-lab.png"), full_page=True)


def test_prompt_lab_evaluates_with_a_chart_and_a_table(page):
    page.get_by_role("tab", name="Prompt Lab").click()
    page.wait_for_selector("#lab-eval-run", timeout=30_000)
    page.locator("#lab-eval-limit input[type='number']").fill("4")
    page.locator("#lab-eval-limit input[type='number']").press("Enter")
    page.click("#lab-eval-run")
    _wait_for_text(page, "#lab-eval-status", "8 of 8", 180)
    _wait_for_rows(page, "#lab-eval-rows", 8)
    page.wait_for_selector("#lab-eval-chart canvas, #lab-eval-chart svg", timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "prompt-lab-evaluate.png"), full_page=True)


def test_finetune_runs_a_tiny_job_and_shows_loss_and_before_after(page):
    page.get_by_role("tab", name="Fine-tune").click()
    page.wait_for_selector("#ft-start", timeout=30_000)
    page.locator("#ft-data input").click()
    page.get_by_role("option", name="dialogues-small", exact=False).first.click()
    page.get_by_text("Hyperparameters").click()
    for name, value in (("max-steps", "4"), ("batch-size", "1"), ("max-length", "160"), ("sample-count", "1"),
                        ("max-new-tokens", "8"), ("test-limit", "2"), ("eval-every", "2"),
                        ("learning-rate", "0.001")):
        field = page.locator(f"#ft-{name} input")
        field.fill(value)
        field.press("Tab")
    page.click("#ft-start")
    status = _wait_for_text(page, "#ft-status", "succeeded", 600)
    assert "step 4 of 4" in status or "succeeded" in status
    page.wait_for_selector("#ft-loss canvas, #ft-loss svg", timeout=30_000)
    _wait_for_rows(page, "#ft-comparison", 1)
    assert "ROUGE-L went from" in page.locator("#ft-gain").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "finetune.png"), full_page=True)

    # The finished run in the Prompt Lab: selected as the model, and beside its base in the columns.
    page.click("#ft-use-in-lab")
    page.wait_for_selector("#lab-preview textarea", state="visible", timeout=30_000)
    assert "★" in page.locator("#lab-model input").input_value()
    assert "run " in page.locator("#lab-col1-model input").input_value()
    _wait_for_text(page, "#lab-token-count", "prompt tokens", 120)
    page.click("#lab-compare")
    _wait_for_text(page, "#lab-col1-stats", "tokens/s", 300)
    _wait_for_text(page, "#lab-col0-stats", "tokens/s", 60)
    assert "★" in page.locator("#lab-col1-header").inner_text()
    assert page.locator("#lab-col1-text textarea").input_value().strip()
    page.locator("#lab-compare").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "prompt-lab-finetuned.png"), full_page=True)


def test_finetune_merged_gguf_download_gives_a_file_link(browser, app_url, app_services, monkeypatch):
    """A finished LoRA run of this page's person (a random adapter over SmolLM2, nothing trained): the merged
    GGUF button builds the chosen type and the download box links the file."""
    from tests.gguf_models import fabricated_run
    from tests.helpers import SMOLLM2

    issued = record_issued_tokens(app_services, monkeypatch)
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    try:
        page = context.new_page()
        page.goto(app_url)
        _stored_identity(page)
        owner = app_services.identities.person(issued[0]).id
        base = app_services.engines.resolve(SMOLLM2, "gguf").path
        run_id = fabricated_run(app_services.runs, owner, SMOLLM2, base, seed=21)
        page.get_by_role("tab", name="Fine-tune").click()
        page.wait_for_selector("#ft-download-gguf", state="visible", timeout=30_000)
        _wait_for_text(page, "#ft-status", app_services.runs.get(run_id, owner).name, 60)  # the poll chose it
        page.locator("#ft-gguf-type input").click()
        page.get_by_role("option", name="Q8_0", exact=True).click()
        page.click("#ft-download-gguf")
        name = f"{run_id}-Q8_0.gguf"
        link = page.locator(f'#ft-download a[href$="{name}"]').first  # the file's download link
        link.wait_for(state="visible", timeout=600_000)
        assert f"{run_id}-Q8_0" in page.locator("#ft-download").inner_text()  # its name, shown in the box
        assert (app_services.runs.path(run_id) / "downloads" / name).is_file()
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("#ft-download-gguf").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "finetune-gguf-download.png"), full_page=True)
    finally:
        context.close()


@pytest.mark.parametrize("locale, message", [("en-US", "No run yet: start one above."),
                                             ("pt-PT", "Ainda não há execuções")])
def test_finetune_cancel_without_a_run_shows_a_toast(browser, app_url, locale, message):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale=locale)
    try:
        page = context.new_page()
        page.goto(app_url)
        page.wait_for_selector("#tab-finetune-button, [role=tab]", timeout=60_000)
        page.locator("[role=tab]").nth(3).click()  # Fine-tune (after the Prompt Lab and Prompt search), whatever the language
        page.wait_for_selector("#ft-cancel", state="visible", timeout=30_000)
        page.click("#ft-cancel")
        toast = page.locator(".toast-body").filter(has_text=message)
        toast.first.wait_for(state="visible", timeout=30_000)
        assert message in toast.first.inner_text()
    finally:
        context.close()


def _stored_identity(page, not_value=None, timeout_s=60):
    """The value the page keeps in local storage for its identity, once there (and other than ``not_value``)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = page.evaluate("localStorage.getItem('playground-identity')")
        if value and value != not_value:
            return value
        time.sleep(0.2)
    raise AssertionError("the page never stored an identity")


def test_the_page_gets_a_signed_identity_once_and_a_new_one_for_a_forged_value(browser, app_url, app_services,
                                                                                monkeypatch):
    issued = record_issued_tokens(app_services, monkeypatch)
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    try:
        page = context.new_page()
        page.goto(app_url)
        first = _stored_identity(page)
        assert len(issued) == 1 and issued[0] not in first  # kept encrypted in the browser
        page.reload()
        page.wait_for_selector("#arch-run", timeout=60_000)
        time.sleep(2)  # the page-load event has run again by now
        # A reload keeps the identity (the stored text changes: Gradio encrypts it afresh each time it saves).
        assert _stored_identity(page) and len(issued) == 1
        page.evaluate("localStorage.setItem('playground-identity', 'forged-by-hand')")
        page.reload()
        assert _stored_identity(page, not_value="forged-by-hand") not in (first, "forged-by-hand")
        assert len(issued) == 2  # what the server could not read was replaced by a new identity
    finally:
        context.close()
