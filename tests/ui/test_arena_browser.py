"""The Arena tab in a real browser (real SmolLM2, a few tokens): a blind match on a sentiment sentence, a vote
that reveals both sides, the leaderboard, the preference pairs downloaded, and the judge beside ROUGE on one
translation. A screenshot goes to test-artifacts/arena.png."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.ui.test_browser import ARTIFACTS

pytestmark = pytest.mark.browser

MODEL = "smollm2-135m-instruct"


def pick(page, selector: str, option: str):
    page.locator(f"{selector} input").click()
    page.get_by_role("option", name=option).click()


def test_a_blind_match_a_vote_the_leaderboard_the_export_and_the_judge(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US", accept_downloads=True)
    page = context.new_page()
    try:
        page.goto(app_url)
        page.wait_for_selector("#arch-run", timeout=60_000)
        page.get_by_role("tab", name="Arena").click()
        page.wait_for_selector("#arena-match", state="visible", timeout=30_000)
        assert "vote" in page.locator("#arena-intro").inner_text()

        pick(page, "#arena-task", "Sentiment classification")
        wait_until(lambda: page.locator("#arena-strategy-2 input").input_value() == "few-shot", "the strategies", 30)
        page.fill("#arena-input textarea", "The train was late again and nobody told us why.")
        page.click("#arena-match")
        reveal = page.locator("#arena-reveal")
        wait_until(lambda: "vote A, B or tie" in reveal.inner_text(), "both answers", 600, poll_s=0.5)
        answers = [page.locator(f"#arena-answer-{side} textarea").input_value() for side in "ab"]
        assert all(a.strip() for a in answers)
        assert MODEL in page.locator("#arena-model-2 input").input_value()  # one model: the strategies differ
        assert MODEL not in reveal.inner_text()  # nothing says where A and B came from before the vote

        page.click("#arena-vote-b")
        wait_until(lambda: "B =" in reveal.inner_text(), "the reveal", 60)
        shown = reveal.inner_text()
        assert "You voted B." in shown and "A =" in shown and MODEL in shown
        board = page.locator("#arena-leaderboard")
        wait_until(lambda: "zero-shot" in board.inner_text() and "few-shot" in board.inner_text(), "the board", 30)
        assert "rating" in board.inner_text()

        page.click("#arena-export")
        download_button = page.locator("#arena-download")
        download_button.wait_for(state="visible", timeout=30_000)
        with page.expect_download() as waiting:
            download_button.click()
        pairs = [json.loads(line) for line in Path(waiting.value.path()).read_text(encoding="utf-8").splitlines()]
        assert pairs and pairs[-1]["chosen"] == answers[1].strip() and pairs[-1]["rejected"] == answers[0].strip()

        # The judge: a translation rubric, one zero-shot answer, 8 new tokens each.
        pick(page, "#arena-judge-task", "Translation (English to French)")
        wait_until(lambda: "English:" in page.locator("#arena-rubric-text").inner_text(), "the rubric", 30)
        page.locator("#arena-judge-strategies label", has_text="few-shot").click()  # zero-shot only
        page.locator("#arena-judge-limit input[type='number']").fill("1")
        page.locator("#arena-judge-limit input[type='number']").press("Enter")
        page.locator("#arena-judge-tokens input[type='number']").fill("8")
        page.locator("#arena-judge-tokens input[type='number']").press("Enter")
        page.click("#arena-judge-run")
        status = page.locator("#arena-judge-status")
        wait_until(lambda: "Spearman" in status.inner_text(), "the judged evaluation", 600, poll_s=0.5)
        assert "agree" in status.inner_text()
        rows = page.locator("#arena-judge-rows")
        assert "judge's reasons" in rows.inner_text() and "ROUGE-L" in rows.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "arena.png"), full_page=True)
    finally:
        context.close()
