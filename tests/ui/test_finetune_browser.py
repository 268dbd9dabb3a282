"""The Fine-tune tab in Chromium: the loss chart draws train and validation with whole-number step ticks and a
visible legend, a running run shows its phase with counts, a bar and an ETA, a bad upload says why under its own
name; screenshots at 1366x768 and on a phone (390x844) in English, Portuguese and French."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from playground.finetune.runs import RUNNING, SUCCEEDED
from tests.ui.conftest import record_issued_tokens
from tests.ui.test_browser import ARTIFACTS, _stored_identity, _wait_for_text

pytestmark = pytest.mark.browser

LOCALES = {"en": "en-US", "pt": "pt-BR", "fr": "fr-FR"}
TAB_NAMES = {"en": "Fine-tune", "pt": "Fine-tuning", "fr": "Affinage"}
SAMPLE = {"index": 0, "reference": "Ana asks Bo to lunch.", "base_output": "Ana and Bo talk.",
          "tuned_output": "Ana invites Bo to lunch.", "base_rougeL": 0.2, "tuned_rougeL": 0.6, "improvement": 0.4,
          "input": "Ana: Lunch? Bo: Sure."}
METRICS = {"family": "decoder", "sample_count": 1, "steps": 40, "duration_s": 95.0, "eval_loss": 1.31,
           "train_losses": [2.1, 1.2], "rouge_before": {"rouge1": 0.25, "rouge2": 0.1, "rougeL": 0.2},
           "rouge_after": {"rouge1": 0.62, "rouge2": 0.4, "rougeL": 0.6}}


def _events(steps: int = 40, every: int = 20) -> list[dict]:
    events = [{"event": "start", "total_steps": steps}]
    for step in range(1, steps + 1):
        events.append({"event": "step", "step": step, "total_steps": steps, "loss": 2.2 - step * 0.025,
                       "learning_rate": 1e-3, "epoch": step / 10, "tokens_per_s": 150.0, "eta_s": 1.0})
        if step % every == 0:
            events.append({"event": "eval", "step": step, "eval_loss": 1.9 - step * 0.015})
    return events


def _run(services, owner: str, status: str, events: list[dict], results: bool) -> str:
    run_id = services.runs.create(owner, {"model": "smollm2-135m-instruct", "method": "lora", "max_steps": 40},
                                  "playground.finetune.train:run_job")
    folder = services.runs.path(run_id)
    (folder / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if results:
        (folder / "samples.jsonl").write_text(json.dumps(SAMPLE) + "\n")
        (folder / "metrics.json").write_text(json.dumps(METRICS))
    services.runs.set_status(run_id, status, force=True, started=time.time() - 60)
    return run_id


def _open(browser, app_url, language: str, viewport: dict):
    context = browser.new_context(viewport=viewport, locale=LOCALES[language])
    page = context.new_page()
    page.goto(app_url)
    page.wait_for_selector("[role=tab]", timeout=60_000)
    tab = page.locator("#tab-finetune-button")
    if tab.count() and tab.is_visible():
        tab.click()
    else:  # a phone: the tab sits in the tab bar's overflow menu
        page.locator("[role=tab]").filter(has_text=re.compile(r"^$")).first.click()
        page.locator("button").filter(has_text=TAB_NAMES[language]).first.click()
    page.wait_for_selector("#ft-start", state="visible", timeout=30_000)
    return context, page


def test_the_loss_chart_draws_train_and_validation_with_whole_step_ticks(browser, app_url, app_services,
                                                                        monkeypatch):
    issued = record_issued_tokens(app_services, monkeypatch)
    context, page = _open(browser, app_url, "en", {"width": 1366, "height": 768})
    try:
        _stored_identity(page)
        owner = app_services.identities.person(issued[0]).id
        run_id = _run(app_services, owner, SUCCEEDED, _events(), results=True)
        name = app_services.runs.get(run_id, owner).name
        _wait_for_text(page, "#ft-status", name, 60)
        chart = page.locator("#ft-loss svg.chart-svg")
        chart.wait_for(state="visible", timeout=30_000)
        assert page.locator('#ft-loss [data-series="train"] circle').count() == 40
        assert page.locator('#ft-loss [data-series="validation"] circle').count() == 2
        ticks = page.locator("#ft-loss .chart-x-tick").all_text_contents()
        assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), ticks
        legend = page.locator("#ft-loss .chart-legend")
        assert "train" in legend.inner_text() and "validation" in legend.inner_text()
        box, frame = legend.bounding_box(), page.locator("#ft-loss").bounding_box()
        assert box["x"] >= frame["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1
        assert name in page.locator("#ft-run input").input_value()  # the list shows the short name
        page.locator("#ft-runs").scroll_into_view_if_needed()
        assert "ROUGE-L after" in page.locator("#ft-runs").inner_text()
    finally:
        context.close()


def test_a_bad_upload_says_why_under_its_own_name(browser, app_url, tmp_path):
    bad = tmp_path / "my dialogues.csv"
    bad.write_bytes(b"caf\xe9,x\n1,2\n")
    context, page = _open(browser, app_url, "en", {"width": 1366, "height": 768})
    try:
        page.locator("#ft-upload input[type=file]").set_input_files(str(bad))
        toast = page.locator(".toast-body").filter(has_text="my dialogues.csv")
        toast.first.wait_for(state="visible", timeout=30_000)
        text = toast.first.inner_text()
        assert "my dialogues.csv cannot be used: The file is not UTF-8 text" in text
        assert "/tmp" not in text and "bundled" not in text
    finally:
        context.close()
    good = tmp_path / "notes.jsonl"
    good.write_text('{"q": "a", "r": "b"}\n{"q": "c", "r": "d"}\n')
    context, page = _open(browser, app_url, "pt", {"width": 1366, "height": 768})
    try:
        page.locator("#ft-upload input[type=file]").set_input_files(str(good))
        _wait_for_text(page, "#ft-data-summary", "notes.jsonl", 30)
        assert "2 linhas" in page.locator("#ft-data-summary").inner_text()
        assert page.locator("#ft-data input").input_value().startswith("upload")  # the data choice follows
    finally:
        context.close()


@pytest.mark.parametrize("language", list(LOCALES))
def test_screens_in_every_language(browser, app_url, app_services, monkeypatch, language):
    """A finished run and a running one (scoring its base model), on a laptop and a phone."""
    issued = record_issued_tokens(app_services, monkeypatch)
    ARTIFACTS.mkdir(exist_ok=True)
    for label, viewport in (("desktop", {"width": 1366, "height": 768}), ("phone", {"width": 390, "height": 844})):
        context, page = _open(browser, app_url, language, viewport)
        try:
            _stored_identity(page)
            owner = app_services.identities.person(issued[-1]).id
            done = _run(app_services, owner, SUCCEEDED, _events(), results=True)
            running = _run(app_services, owner, RUNNING, [
                {"event": "stage", "stage": "baseline", "phase": "baseline", "done": 3, "total": 12,
                 "eta_s": 245.0, "message": "Base model: generating 3 of 12 on llama.cpp Q4_1."}], results=False)
            name = app_services.runs.get(running, owner).name
            _wait_for_text(page, "#ft-status", name, 60)
            bar = page.locator("#ft-status .ft-progress")
            bar.wait_for(state="visible", timeout=30_000)
            fill = bar.locator(".ft-progress-fill").get_attribute("style").replace(" ", "")
            assert "width:25.0%" in fill  # 3 of 12 (the page's sanitizer keeps the style, drops aria-*)
            status = page.locator("#ft-status").inner_text()
            assert "3" in status and "12" in status and "min" in status
            if language == "en":
                assert "Base model: generating 3 of 12" in status and "left in all" in status
            page.get_by_text({"en": "Hyperparameters", "pt": "Hiperparâmetros", "fr": "Hyperparamètres"}[language],
                             exact=True).first.click()
            page.screenshot(path=str(ARTIFACTS / f"finetune-{language}-{label}-running.png"), full_page=True)
            page.locator("#ft-run input").click()
            page.get_by_role("option", name=app_services.runs.get(done, owner).name, exact=False).first.click()
            page.locator('#ft-loss [data-series] circle').first.wait_for(state="visible", timeout=30_000)
            page.locator("#ft-loss").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / f"finetune-{language}-{label}-finished.png"), full_page=True)
        finally:
            context.close()
