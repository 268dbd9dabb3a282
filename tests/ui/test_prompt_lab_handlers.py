"""The Prompt Lab tab's handlers called directly, over a controller with fake engines: no live app, no model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from playground.config import Settings
from playground.prompting.lab import PromptLab
from playground.prompting.templates import TemplateLibrary
from playground.services import Services
from playground.ui.tabs.prompt_lab import PROMPT_CONTROLS, PromptLabHandlers
from tests.prompting.test_lab import FakeModels

LIBRARY = TemplateLibrary.load()
REQUEST = SimpleNamespace(headers={"accept-language": "en"}, session_hash="session-1",
                          client=SimpleNamespace(host="127.0.0.1"))


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    return Services.create(Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path_factory.mktemp("handlers")),
                                              "PLAYGROUND_OFFLINE": "1"}))


@pytest.fixture
def handlers(services, monkeypatch):
    models = FakeModels("positive")
    monkeypatch.setattr(services, "models_for", lambda owner="": models)
    return PromptLabHandlers(services, PromptLab(LIBRARY, max_chars=1_000, token_limit=256))


def values(token="", **overrides) -> list:
    template_id = overrides.get("template_id", "sentiment-question")
    controls = dict(task="sentiment", template_id=template_id, template_text=LIBRARY.get(template_id).template,
                    system="", strategy="zero_shot", k=3.0, selection="fixed", selection_seed=0.0,
                    cot_trigger="Let's think step by step.", trigger_position="user", samples=5.0, model_id="m",
                    engine="auto", text="Lovely soup.", max_new_tokens=8.0, temperature=0.0, top_p=1.0, top_k=40.0,
                    repetition_penalty=1.0, seed=0.0, stop="")
    controls.update(overrides)
    return [controls[name] for name in PROMPT_CONTROLS] + [token]


def test_preview_gives_the_token_line_the_prompt_and_the_code(handlers):
    token_line, prompt, code = handlers.preview(REQUEST, *values(), "llama.cpp")
    assert "prompt tokens" in token_line and "chat template applied" in token_line
    assert "Lovely soup." in prompt and "path/to/m" in code
    bad_line, bad_prompt, bad_code = handlers.preview(REQUEST, *values(template_text="{% for %}"), "llama.cpp")
    assert bad_line.startswith("⚠") and "line 1" in bad_line and bad_prompt == bad_code == ""
    huge = handlers.preview(REQUEST, *values(template_text="{{ 'x' * 10 ** 6 }}"), "llama.cpp")[0]
    assert huge.startswith("⚠") and "value budget" in huge


def test_run_streams_into_the_output_widgets(handlers):
    outputs = list(handlers.run(REQUEST, *values(), progress=lambda *a, **k: None))
    text, result_line, votes, paths = outputs[-1]
    assert text == "positive" and "Answer: **positive**" in result_line
    assert votes is None and paths.values.tolist() == [[1, "positive", 8, "positive"]]
    assert list(paths.columns) == ["Path", "Answer", "Tokens", "Text"]
    assert [o[0] for o in outputs[:-1]] == ["p", "po", "pos", "posi", "posit", "positi", "positiv", "positive"]


def test_a_forged_token_or_a_bad_setting_becomes_a_toast(handlers):
    with pytest.raises(gr.Error, match="not one this server issues"):
        next(handlers.run(REQUEST, *values(token="forged"), progress=lambda *a, **k: None))
    with pytest.raises(gr.Error, match="temperature"):
        next(handlers.run(REQUEST, *values(temperature=9.0), progress=lambda *a, **k: None))


def test_compare_fills_four_columns_and_names_the_models(handlers):
    column_values = ["zero_shot", "off", "few_shot", "off"] + ["m", "m", "run:1", "m"]
    *_, outputs, last = list(handlers.compare(REQUEST, *values(), *column_values))
    headers, texts, stats = outputs[0:4], outputs[4:8], outputs[8:12]
    assert "label of m" in headers[0] and "label of run:1" in headers[2] and headers[1] == headers[3] == ""
    assert "_Ask how the writer feels_" in headers[0]  # the template by its translated name
    assert texts[0] == "positive" and "tokens/s" in stats[2]
    download = last[-1]
    assert download["visible"] and download["value"].endswith("prompt-lab-columns.csv")
    csv_text = Path(download["value"]).read_text(encoding="utf-8-sig")
    assert csv_text.splitlines()[0].startswith("Column,Strategy,Model,Template,Status,Answer")
    assert '3,"few-shot (k=3, fixed)",label of run:1,Ask how the writer feels,done,positive' in csv_text
    with pytest.raises(gr.Error, match="Every column is off"):
        next(handlers.compare(REQUEST, *values(), *(["off"] * 4 + ["m"] * 4)))


def test_evaluate_returns_status_chart_and_tables(handlers):
    seen = []
    status, chart, summary, rows, scores_file, rows_file = handlers.evaluate(
        REQUEST, *values(), ["zero_shot", "few_shot"], "bundled", None, "", "", "", 0, 4,
        progress=lambda fraction, desc: seen.append((fraction, desc)))
    assert status.startswith("Done: 8 of 8 runs in") and status.endswith("on sentiment.jsonl.")
    chart, summary, rows = chart["value"], summary["value"], rows["value"]
    assert list(chart["strategy"]) == ["zero-shot", "few-shot"]  # short names under the bars
    assert list(rows.columns)[:6] == ["Strategy", "#", "Input", "Expected", "Answer", "Correct"]
    assert set(rows["Correct"]) <= {"✓", "✗"} and len(summary) == 2
    assert list(summary.columns) == ["Strategy", "Examples", "Accuracy (%)", "No answer", "Mean time per example (s)",
                                     "Total time (s)"]
    # one unit: the table's scores are the chart's percentages
    assert list(summary["Accuracy (%)"]) == list(chart["score"])
    assert list(summary["Strategy"]) == ["zero-shot", "few-shot (k=3, fixed)"]
    # progress: loading, then each example with its counts, runs done of planned and tokens
    assert seen[0] == (0.0, "loading the model…")
    assert "zero-shot: example 1 of 4 · 1 of 8 runs · " in seen[1][1] and "tokens generated" in seen[1][1]
    assert "s left" in seen[1][1] and seen[-1][0] == 1.0
    for download, name in ((scores_file, "prompt-lab-scores.csv"), (rows_file, "prompt-lab-examples.csv")):
        assert download["visible"] and Path(download["value"]).name == name
    assert Path(scores_file["value"]).read_text(encoding="utf-8-sig").startswith(
        "Strategy,Examples,Accuracy (%),No answer")
    with pytest.raises(gr.Error, match="Choose at least one strategy to evaluate"):
        handlers.evaluate(REQUEST, *values(), [], "bundled", None, "", "", "", 0, 4, progress=lambda *a, **k: None)


def test_the_controls_follow_the_task_and_the_strategy(handlers):
    updates = handlers.on_task("summarization", "few_shot_cot", {})
    assert [value for _, value in updates[0]["choices"]] == ["zero_shot", "few_shot"]
    assert updates[0]["value"] == "zero_shot" and "#Person1#" in updates[4]
    on_sc = handlers.on_strategy("arithmetic", "self_consistency", "arithmetic-qa", {})
    assert on_sc[3]["visible"] and on_sc[5]["visible"] and on_sc[7] == 0.7  # demos, samples, temperature
    assert "0.7" in on_sc[-1]  # its help says why it samples
    on_zero = handlers.on_strategy("arithmetic", "zero_shot", "arithmetic-qa", {})
    assert on_zero[7] == 0.0 and on_zero[10] == 0 and "greedily" in on_zero[-1]  # greedy, seed 0
    saved = handlers.save_template("sentiment-question", "Mine: {{ text }}", "", {}, REQUEST)
    assert handlers.on_template("sentiment-question", saved) == ("Mine: {{ text }}", "")
    assert handlers.reset_template("sentiment-question", saved)[0] == {}
    with pytest.raises(gr.Error, match="line 1"):
        handlers.save_template("sentiment-question", "{% if %}", "", {}, REQUEST)


def test_upload_columns_are_guessed(handlers, tmp_path):
    upload = tmp_path / "data.csv"
    upload.write_text("question,answer,reasoning\n2+2?,4,add\n")
    text_column, label_column, rationale_column = handlers.upload_columns(str(upload))
    assert (text_column["value"], label_column["value"], rationale_column["value"]) == (
        "question", "answer", "reasoning")


def test_a_run_waiting_for_its_turn_says_so_in_the_result_line(services, monkeypatch):
    from tests.prompting.fakes import QueuedEngine

    models = FakeModels("positive")
    models.engines["m"] = QueuedEngine("positive", waits=(3, 1, 0))
    monkeypatch.setattr(services, "models_for", lambda owner="": models)
    handlers = PromptLabHandlers(services, PromptLab(LIBRARY, max_chars=1_000, token_limit=256))
    lines = [result_line for _, result_line, _, _ in handlers.run(REQUEST, *values(),
                                                                  progress=lambda *a, **k: None)]
    assert lines[:3] == ["_Waiting for the model — 3 requests ahead of you_",
                         "_Waiting for the model — 1 request ahead of you_", "_Reading your prompt…_"]
    assert lines[3] == "" and "Answer: **positive**" in lines[-1]
