"""The Prompt Lab in a real browser (Playwright driving Debian's Chromium, real SmolLM2 on llama.cpp).

A bad input is one toast and leaves the page as it was (no Gradio error badge on any output, the last answer
still there); self-consistency shows counted progress; an evaluation gives a chart, tables in percent and CSV
downloads; the tab is screenshotted on a laptop and a phone in English, Portuguese and French.
"""

from __future__ import annotations

import time

import pytest

from playground.ui.i18n import load_locales
from tests.ui.test_browser import ARTIFACTS, _wait_for_rows, _wait_for_text

pytestmark = pytest.mark.browser

LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
LOCALES = {"en": "en-US", "pt": "pt-BR", "fr": "fr-FR"}
# Gradio's error badge: the status tracker of an output whose event failed
ERROR_BADGES = """() => [...document.querySelectorAll('[data-testid="status-tracker"] .error')]
    .filter(e => e.offsetParent !== null && e.getBoundingClientRect().width > 0).length"""


def open_params(page):
    page.locator("#lab-params").get_by_text(load_locales()["en"]["lab.params"]).first.click()
    page.wait_for_selector("#lab-temperature input[type='number']", state="visible", timeout=10_000)


def use_transformers(page):
    """Generate with the transformers engine (the llama.cpp engine's decode loop has browser tests of its own)."""
    page.locator("#lab-engine").get_by_label("transformers").check()
    page.wait_for_timeout(300)


def open_lab(browser, app_url, language="en", viewport=LAPTOP):
    context = browser.new_context(viewport=viewport, locale=LOCALES[language], accept_downloads=True)
    page = context.new_page()
    page.goto(app_url)
    page.wait_for_selector("#arch-run", timeout=60_000)  # the app opens on Architectures
    page.get_by_role("tab", name=load_locales()[language]["tab.prompt_lab"]).first.click()
    page.wait_for_selector("#lab-preview textarea", state="visible", timeout=30_000)
    _wait_for_text(page, "#lab-token-count", load_locales()[language]["lab.chat_template_yes"], 60)
    return context, page


def dismiss_toasts(page):
    for close in page.locator("[data-testid='toast-close']").all():
        if close.is_visible():
            close.click()
    page.wait_for_function("document.querySelectorAll('[data-testid=\"toast-body\"]').length === 0",
                           timeout=15_000)


def expect_one_clear_message(page, needle: str, output_before: str):
    """A toast that says ``needle``, no error badge anywhere, and the last answer still in the output."""
    page.wait_for_selector("[data-testid='toast-body']", timeout=30_000)
    toast = page.locator("[data-testid='toast-body']").first.inner_text()
    assert needle.lower() in toast.lower(), toast
    assert "Traceback" not in toast and "/tmp" not in toast
    time.sleep(0.5)  # give a failed event the time it would take to paint its badge
    assert page.evaluate(ERROR_BADGES) == 0, "an output shows Gradio's error badge"
    assert page.locator("#lab-output textarea").input_value() == output_before
    dismiss_toasts(page)


def test_bad_inputs_are_one_message_and_leave_the_page_as_it_was(browser, app_url):
    context, page = open_lab(browser, app_url)
    try:
        # the teaching default: zero-shot, greedy with a fixed seed
        open_params(page)
        assert page.locator("#lab-temperature input[type='number']").input_value() == "0"
        assert page.locator("#lab-seed input").input_value() == "0"
        use_transformers(page)
        page.click("#lab-run")
        _wait_for_text(page, "#lab-result", "tokens/s")
        answer = page.locator("#lab-output textarea").input_value()
        assert answer.strip()

        # a template error
        page.locator("#lab-template-text .cm-content").click()
        page.keyboard.press("Control+A")
        page.keyboard.type("Hello {% for x in")
        page.click("#lab-run")
        expect_one_clear_message(page, "line 1", answer)
        page.click("#lab-reset-template")
        page.wait_for_function("document.querySelector('#lab-template-text .cm-content').innerText.includes('text')",
                               timeout=15_000)

        # an empty input
        page.fill("#lab-input textarea", "   ")
        page.click("#lab-run")
        expect_one_clear_message(page, "empty", answer)
        page.fill("#lab-input textarea", "The new library is bright, quiet and full of good books.")

        # self-consistency without sampling
        page.locator("#lab-strategy").get_by_label(load_locales()["en"]["strategy.self_consistency"]).check()
        page.wait_for_selector("#lab-samples", state="visible")
        assert "0.7" in page.locator("#lab-strategy-help").inner_text()
        temperature = page.locator("#lab-temperature input[type='number']")
        page.wait_for_function("document.querySelector(\"#lab-temperature input[type='number']\").value === '0.7'",
                               timeout=15_000)
        temperature.fill("0")
        temperature.press("Enter")
        page.click("#lab-run")
        expect_one_clear_message(page, "needs sampling", answer)

        # every column off, and an evaluation with no strategy
        for i in range(4):
            page.locator(f"#lab-col{i}-strategy input").click()
            page.locator("[data-testid='dropdown-option'][aria-label='(off)']").locator("visible=true").first.click()
        page.click("#lab-compare")
        expect_one_clear_message(page, "Every column is off", answer)
        for box in page.locator("#lab-eval-strategies input[type=checkbox]").all():
            if box.is_checked():
                box.click()
        page.click("#lab-eval-run")
        expect_one_clear_message(page, "at least one strategy", answer)
    finally:
        context.close()


def test_self_consistency_counts_its_paths_and_tokens(browser, app_url):
    context, page = open_lab(browser, app_url)
    try:
        use_transformers(page)
        open_params(page)
        page.locator("#lab-strategy").get_by_label(load_locales()["en"]["strategy.self_consistency"]).check()
        page.wait_for_function("document.querySelector(\"#lab-temperature input[type='number']\").value === '0.7'",
                               timeout=15_000)
        page.click("#lab-run")
        seen: set[str] = set()
        deadline = time.time() + 300
        result = ""
        while time.time() < deadline:
            result = page.locator("#lab-result").inner_text()
            seen.add(result)
            seen.update(page.locator("#lab-output .progress-text, #lab-output .progress-level-inner").all_inner_texts())
            if "of 5 paths" in result:
                break
            time.sleep(0.1)
        assert "of 5 paths" in result, result
        counted = [text for text in seen if "of 5 done" in text and "tokens generated" in text]
        assert counted, f"no counted progress: {sorted(seen)[:8]}"
        _wait_for_rows(page, "#lab-paths", 5)
        assert page.locator("#lab-paths").inner_text().count("Path") >= 1
    finally:
        context.close()


def test_an_evaluation_in_portuguese_has_percent_tables_and_csv_downloads(browser, app_url):
    context, page = open_lab(browser, app_url, "pt")
    try:
        use_transformers(page)
        page.locator("#lab-eval-limit input[type='number']").fill("3")
        page.locator("#lab-eval-limit input[type='number']").press("Enter")
        page.click("#lab-eval-run")
        _wait_for_text(page, "#lab-eval-status", "6 de 6", 240)
        _wait_for_rows(page, "#lab-eval-rows", 6)
        summary = page.locator("#lab-eval-summary").inner_text()
        assert "Acurácia (%)" in summary and "Estratégia" in summary and "mean_latency_s" not in summary
        page.wait_for_selector("#lab-eval-chart canvas, #lab-eval-chart svg", timeout=30_000)
        page.wait_for_selector("#lab-eval-download-scores", state="visible")
        with page.expect_download() as download:
            page.click("#lab-eval-download-scores")
        text = open(download.value.path(), encoding="utf-8-sig").read()
        assert text.startswith("Estratégia,Exemplos,Acurácia (%)") and len(text.splitlines()) == 3
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("#lab-eval-status").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "prompt-lab-eval-pt-1366.png"), full_page=False)
        page.screenshot(path=str(ARTIFACTS / "prompt-lab-eval-pt-1366-full.png"), full_page=True)
    finally:
        context.close()


def test_a_reasoning_task_is_chosen_from_the_task_list_and_run_with_few_shot_cot(browser, app_url):
    context, page = open_lab(browser, app_url)
    try:
        from playground.prompting.data import load_bundled

        locale = load_locales()["en"]  # generates on llama.cpp (auto), whose model the tab has already loaded
        page.locator("#lab-task input").click()
        page.locator(f"[data-testid='dropdown-option'][aria-label='{locale['task.commonsense']}']") \
            .locator("visible=true").first.click()
        question = load_bundled("commonsense").examples[0].input
        page.wait_for_function("q => document.querySelector('#lab-input textarea').value === q", arg=question,
                               timeout=15_000)  # the task's first example, its choices A) to E) included
        assert page.locator("#lab-task input").input_value() == locale["task.commonsense"]
        page.locator("#lab-strategy").get_by_label(locale["strategy.few_shot_cot"]).check()
        assert locale["template.commonsense-qa"] in page.locator("#lab-template input").input_value()
        demo = load_bundled("commonsense").demos[0]
        page.wait_for_function("r => document.querySelector('#lab-preview textarea').value.includes(r)",
                               arg=demo.rationale, timeout=120_000)  # the worked rationale of the first demo
        open_params(page)
        tokens = page.locator("#lab-max-new-tokens input[type='number']")
        tokens.fill("32")
        tokens.press("Enter")
        page.click("#lab-run")
        _wait_for_text(page, "#lab-result", "tokens/s", 240)
        assert page.locator("#lab-output textarea").input_value().strip()
        assert locale["lab.answer"] in page.locator("#lab-result").inner_text()
        assert page.evaluate(ERROR_BADGES) == 0
    finally:
        context.close()


@pytest.mark.parametrize("language", ["en", "pt", "fr"])
@pytest.mark.parametrize("size, viewport", [("1366", LAPTOP), ("390", PHONE)])
def test_the_tab_in_each_language_on_a_laptop_and_a_phone(browser, app_url, language, size, viewport):
    context, page = open_lab(browser, app_url, language, viewport)
    try:
        locale = load_locales()[language]
        strategy = page.locator("#lab-strategy").inner_text()
        assert locale["strategy.zero_shot"] in strategy and locale["strategy.few_shot_cot"] in strategy
        assert locale["task.sentiment"] in page.locator("#lab-task input").input_value()
        assert locale["template.sentiment-question"] in page.locator("#lab-template input").input_value()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "scrolls sideways"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"prompt-lab-{language}-{size}.png"), full_page=True)
    finally:
        context.close()
