"""The Replay tab in a real browser, in English and Brazilian Portuguese: the bundled course played or stepped
through, every step under the replay banner in the page's language, the recorded blocks drawn, and the
fine-tuning run's loss curve redrawn point by point until every recorded event is on it. Screenshots go to
test-artifacts/replay-*.png."""

from __future__ import annotations

import pytest

from playground.walks import BUNDLED_DIR, walk_from_json
from tests.helpers import wait_until
from tests.ui.test_browser import ARTIFACTS

pytestmark = pytest.mark.browser

POINTS = "#replay-loss .chart-point"


def course():
    return walk_from_json((BUNDLED_DIR / "course.json").read_bytes())


def _open_replay(browser, url, locale, tab):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale=locale)
    page = context.new_page()
    page.goto(url)
    page.get_by_role("tab", name=tab).click()
    page.wait_for_selector("#replay-play", state="visible", timeout=60_000)
    return context, page


def _watch_the_curve(page, total: int) -> list[int]:
    """The number of points drawn, read while the curve redraws, until all ``total`` are there."""
    seen: list[int] = []

    def drawn():
        count = page.locator(POINTS).count()
        if not seen or seen[-1] != count:
            seen.append(count)
        return count == total

    wait_until(drawn, "the whole loss curve", timeout_s=120, poll_s=0.05)
    return seen


def test_playing_the_course_shows_the_banner_the_steps_and_a_curve_that_redraws(browser, app_url):
    walk = course()
    curve_step = next(i for i, step in enumerate(walk.steps) if step.loss_block is not None)
    total = len(walk.steps[curve_step].loss_block.events)
    context, page = _open_replay(browser, app_url, "en-US", "Replay")
    try:
        page.click("#replay-play")
        banner = page.locator("#replay-banner")
        wait_until(lambda: f"REPLAY — recorded on {walk.recorded_on}, nothing is computed" in banner.inner_text(),
                   "the replay banner", 60)
        heading = page.locator("#replay-step")
        wait_until(lambda: f"Step 1 of {len(walk.steps)}" in heading.inner_text(), "the first step", 30)
        # The first step's recorded blocks: what was asked, then the results.
        wait_until(lambda: "What was asked" in page.locator("#replay-block-0").inner_text(), "the first block", 30)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "replay-en-first-step.png"), full_page=True)
        # Play goes on by itself to the fine-tuning step, whose curve then redraws.
        wait_until(lambda: f"Step {curve_step + 1} of" in heading.inner_text(), "the fine-tuning step", 120)
        seen = _watch_the_curve(page, total)
        assert any(0 < count < total for count in seen), seen  # drawn progressively, not all at once
        assert "Recorded loss curve" in page.locator("#replay-loss").inner_text()
        assert "REPLAY" in banner.inner_text()  # still marked as a replay
        page.screenshot(path=str(ARTIFACTS / "replay-en-loss.png"), full_page=True)
        page.click("#replay-stop")
    finally:
        context.close()


def test_stepping_through_in_portuguese_keeps_the_banner_in_portuguese(browser, app_url):
    walk = course()
    curve_step = next(i for i, step in enumerate(walk.steps) if step.loss_block is not None)
    total = len(walk.steps[curve_step].loss_block.events)
    context, page = _open_replay(browser, app_url, "pt-BR", "Reprodução")
    try:
        heading = page.locator("#replay-step")
        assert "Escolha um percurso" in heading.inner_text()
        for number in range(1, curve_step + 2):
            page.click("#replay-next")
            wait_until(lambda: f"Passo {number} de {len(walk.steps)}" in heading.inner_text(), f"step {number}", 60)
        assert f"REPRODUÇÃO — gravada em {walk.recorded_on}, nada é calculado" in \
            page.locator("#replay-banner").inner_text()
        assert "gravado em inglês" in heading.inner_text()  # the results stay in the language they were recorded in
        seen = _watch_the_curve(page, total)
        assert any(0 < count < total for count in seen), seen
        assert "Curva de perda gravada" in page.locator("#replay-loss").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "replay-pt-loss.png"), full_page=True)
        page.click("#replay-previous")
        wait_until(lambda: f"Passo {curve_step} de" in heading.inner_text(), "the step before", 30)
        wait_until(lambda: not page.locator("#replay-loss").is_visible(),
                   "the curve hidden on a step without one", 30)
    finally:
        context.close()


@pytest.fixture(scope="module")
def presenter_app(tmp_path_factory):
    """An app in presenter mode with a data dir of its own (its saved walks are this test's only ones)."""
    from playground.services import Services
    from tests.helpers import offline_settings
    from tests.ui.conftest import _free_port, launched

    settings = offline_settings(tmp_path_factory.mktemp("replay-presenter"), PLAYGROUND_MODE="presenter",
                                PLAYGROUND_HOST="127.0.0.1", PLAYGROUND_PORT=str(_free_port()))
    services = Services.create(settings)
    try:
        with launched(services) as url:
            yield url
    finally:
        services.close()


def test_a_presenter_records_a_prompt_lab_run_saves_it_and_replays_it(browser, presenter_app):
    # A projector's width: presenter mode's large tab names all fit in one row.
    context = browser.new_context(viewport={"width": 1920, "height": 1080}, locale="en-US")
    page = context.new_page()
    try:
        page.goto(presenter_app)
        page.wait_for_selector("#walk-record", timeout=60_000)
        page.locator("#walk-record input[type=checkbox]").check()
        status = page.locator("#walk-status")
        wait_until(lambda: "Recording — steps: 0" in status.inner_text(), "recording on", 30)
        page.get_by_role("tab", name="Prompt Lab").click()
        page.click("#lab-run")  # the page's own Run button (its handler has no API name)
        wait_until(lambda: page.locator("#lab-output textarea").input_value().strip(), "the model's answer", 120)
        answer = page.locator("#lab-output textarea").input_value().strip()
        wait_until(lambda: "Recording — steps: 1" in status.inner_text(), "the run recorded", 30)
        page.locator("#walk-title input, #walk-title textarea").first.fill("Rehearsal")
        page.click("#walk-save")
        wait_until(lambda: "Recording — steps: 0" in status.inner_text(), "the walk saved", 30)

        page.get_by_role("tab", name="Replay").click()
        picker = page.locator("#replay-walk input")
        wait_until(lambda: picker.input_value().startswith("The course"), "the walk list", 30)
        picker.click()
        page.get_by_role("option", name="★ Rehearsal").click()
        wait_until(lambda: "Step 1 of 1 · Prompt Lab" in page.locator("#replay-step").inner_text(), "the step", 30)
        assert "REPLAY — recorded on" in page.locator("#replay-banner").inner_text()
        blocks = page.locator(".replay-block")
        wait_until(lambda: blocks.count() >= 3, "the recorded blocks", 30)
        assert "What was asked" in blocks.nth(0).inner_text() and "Zero-shot" in blocks.nth(0).inner_text()
        assert page.locator(".replay-text textarea").first.input_value().strip() == answer
        assert not page.locator("#replay-loss").is_visible()
        page.screenshot(path=str(ARTIFACTS / "replay-recorded.png"), full_page=True)
    finally:
        context.close()
