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
    assert last[:-1] == outputs[:-1]  # the last message repeats the finished columns, with the CSV file
    download = last[-1]  # the plain path (the page shows the button after: reveal_when_filled)
    assert download.endswith("prompt-lab-columns.csv")
    csv_text = Path(download).read_text(encoding="utf-8-sig")
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
    assert scores_file.endswith(".csv") and rows_file.endswith(".csv")  # plain values, as a script receives them
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
        assert Path(download).name == name
    assert Path(scores_file).read_text(encoding="utf-8-sig").startswith(
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


PT = SimpleNamespace(headers={"accept-language": "pt-BR,pt;q=0.9"}, session_hash="session-2",
                     client=SimpleNamespace(host="127.0.0.1"))


@pytest.mark.parametrize("overrides, expected", [
    (dict(template_text="{% for x in %}"), "line 1"),
    (dict(text="  "), "empty"),
    (dict(strategy="few_shot", k=50.0), "only"),
    (dict(strategy="self_consistency", template_id="sentiment-classify"), "needs sampling"),
    (dict(temperature=9.0), "temperature"),
])
def test_the_check_before_run_is_one_toast_titled_check_the_input(handlers, overrides, expected):
    with pytest.raises(gr.Error, match=expected) as caught:
        handlers.check_run(REQUEST, *values(**overrides))
    assert caught.value.title == "Check the input" and not caught.value.print_exception
    handlers.check_run(REQUEST, *values())  # a good input passes, and the run goes on


def test_the_checks_before_compare_and_evaluate(handlers):
    with pytest.raises(gr.Error, match="Todas as colunas") as caught:
        handlers.check_compare(PT, *values(), *(["off"] * 4 + ["m"] * 4))
    assert caught.value.title == "Confira a entrada"
    with pytest.raises(gr.Error, match="empty"):
        handlers.check_compare(REQUEST, *values(text=""), *(["zero_shot"] * 4 + ["m"] * 4))
    with pytest.raises(gr.Error, match="Choose at least one strategy"):
        handlers.check_evaluation(REQUEST, *values(), [], "bundled", None, "", "", "", 0, 4)
    with pytest.raises(gr.Error, match="Upload a JSONL or CSV file first"):
        handlers.check_evaluation(REQUEST, *values(), ["zero_shot"], "upload", None, "", "", "", 0, 4)
    with pytest.raises(gr.Error, match="1 to 200"):
        handlers.check_evaluation(REQUEST, *values(), ["zero_shot"], "bundled", None, "", "", "", 0, 0)
    handlers.check_evaluation(REQUEST, *values(), ["zero_shot", "few_shot"], "bundled", None, "", "", "", 0, 4)


def test_portuguese_names_headers_and_progress(handlers):
    updates = handlers.on_task("arithmetic", "zero_shot", {}, PT)
    assert ("Autoconsistência (voto da maioria entre caminhos de raciocínio amostrados)", "self_consistency") in \
        updates[0]["choices"]
    assert ("P / R", "arithmetic-qa") in updates[1]["choices"]
    seen = []
    status, chart, summary, rows, *_ = handlers.evaluate(
        PT, *values(), ["zero_shot"], "bundled", None, "", "", "", 0, 2,
        progress=lambda fraction, desc: seen.append(desc))
    assert status.startswith("Concluído") and list(summary.columns)[:3] == ["Estratégia", "Exemplos",
                                                                                  "Acurácia (%)"]
    assert "exemplo 1 de 2" in seen[1] and "tokens gerados" in seen[1]


def test_every_strategy_task_and_bundled_template_is_named_in_every_language():
    from playground.prompting.tasks import SELECTIONS, STRATEGIES, TASKS
    from playground.prompting.strategies import TRIGGER_POSITIONS
    from playground.ui.i18n import LANGUAGES, load_locales

    keys = [f"strategy.{s}{part}" for s in STRATEGIES for part in ("", ".short", ".help")]
    keys += [f"task.{task}" for task in TASKS] + [f"template.{tpl.id}" for tpl in LIBRARY.templates]
    keys += [f"selection.{s}{part}" for s in SELECTIONS for part in ("", ".short")]
    keys += [f"trigger_position.{p}" for p in TRIGGER_POSITIONS]
    locales = load_locales()
    for language in LANGUAGES:
        missing = [key for key in keys if not locales[language].get(key)]
        assert not missing, f"{language}: {missing}"
    assert locales["pt"]["strategy.self_consistency.short"] != locales["en"]["strategy.self_consistency.short"]
    assert locales["fr"]["task.sentiment"] != locales["en"]["task.sentiment"]


def test_the_prompt_lab_starts_greedy_with_a_fixed_seed(services):
    from playground.ui.tabs import prompt_lab

    with gr.Blocks() as demo:
        owner = gr.BrowserState("")
        prompt_lab.build(services, owner, PromptLab(LIBRARY, max_chars=1_000, token_limit=256))
    by_id = {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    assert by_id["lab-temperature"].value == 0.0 and by_id["lab-seed"].value == 0
    assert by_id["lab-strategy"].choices[0][1] == "zero_shot"


@pytest.mark.parametrize("task, reply, metric", [
    ("dates", "So it is March 3, 2027.", "Exact match (%)"),
    ("last_letters", "**ER**", "Exact match (%)"),
    ("coin_flips", "Yes.", "Accuracy (%)"),
    ("commonsense", "C) a fridge", "Accuracy (%)"),
])
def test_a_reasoning_task_offers_chain_of_thought_and_evaluates(services, monkeypatch, task, reply, metric):
    models = FakeModels(reply)
    monkeypatch.setattr(services, "models_for", lambda owner="": models)
    handlers = PromptLabHandlers(services, PromptLab(LIBRARY, max_chars=5_000, token_limit=2_048))
    updates = handlers.on_task(task, "few_shot_cot", {})
    assert [value for _, value in updates[0]["choices"]] == ["zero_shot", "few_shot", "zero_shot_cot",
                                                             "few_shot_cot", "self_consistency"]
    assert updates[0]["value"] == "few_shot_cot"
    template_id = updates[1]["value"]
    assert template_id in [t.id for t in LIBRARY.for_task(task, "few_shot_cot")]
    assert updates[4] and updates[5]["maximum"] == 8  # the first example, and k up to the demonstration pool
    status, _, summary, rows, *_ = handlers.evaluate(
        REQUEST, *values(task=task, template_id=template_id, strategy="few_shot_cot", text=updates[4],
                         max_new_tokens=60.0),
        ["zero_shot", "few_shot_cot"], "bundled", None, "", "", "", 0, 2, progress=lambda *a, **k: None)
    assert status.startswith("Done: 4 of 4 runs") and list(summary.columns)[2] == metric
    assert set(rows["Answer"]) <= {"2027-03-03", "er", "yes", "C"} and len(rows) == 4
