"""The Prompt Lab through its API, as gradio_client sees it (real SmolLM2 on llama.cpp, real MiniLM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from playground.prompting.templates import TemplateLibrary
from playground.ui.tabs.prompt_lab import PROMPT_CONTROLS

MODEL = "smollm2-135m-instruct"
LIBRARY = TemplateLibrary.load()


def form(**overrides) -> list:
    """The values every Prompt Lab endpoint starts with: the prompt controls in the tab's order, then the
    identity token (``owner``)."""
    template_id = overrides.get("template_id", "sentiment-question")
    values = dict(task="sentiment", template_id=template_id, template_text=LIBRARY.get(template_id).template,
                  system="", strategy="zero_shot", k=3, selection="fixed", selection_seed=0,
                  cot_trigger="Let's think step by step.", trigger_position="user", samples=5, model_id=MODEL, engine="auto",
                  text="The new library is bright, quiet and full of good books.", max_new_tokens=8,
                  temperature=0.0, top_p=1.0, top_k=40, repetition_penalty=1.0, seed=0, stop="", owner="")
    values.update(overrides)
    assert set(values) == set(PROMPT_CONTROLS) | {"owner"}
    return [values[name] for name in PROMPT_CONTROLS] + [values["owner"]]


def test_preview_shows_the_exact_prompt_its_tokens_and_the_code(client):
    tokens, prompt, code = client.predict(*form(strategy="few_shot", k=2), "llama.cpp",
                                          api_name="/prompt_lab_preview")
    assert "<|im_start|>user" in prompt and prompt.rstrip().endswith("<|im_start|>assistant")
    assert "The new library is bright" in prompt
    assert "8192" in tokens and "chat template applied" in tokens and "2 demonstrations" in tokens
    count = int(tokens.split("**")[1])
    assert 30 < count < 400
    assert "from llama_cpp import Llama" in code and f"counted {count}" in code

    _, _, transformers_code = client.predict(*form(), "transformers", api_name="/prompt_lab_preview")
    assert "AutoModelForCausalLM" in transformers_code


def test_preview_reports_template_problems_inline(client):
    tokens, prompt, _ = client.predict(*form(template_text="Hello {% if text %}\n{{ text }"), "llama.cpp",
                                       api_name="/prompt_lab_preview")
    assert tokens.startswith("⚠") and "line 2" in tokens and prompt == ""
    tokens, _, _ = client.predict(*form(template_text="{{ ''.__class__.__mro__ }}"), "llama.cpp",
                                  api_name="/prompt_lab_preview")
    assert tokens.startswith("⚠") and "unsafe" in tokens.lower()
    tokens, _, _ = client.predict(*form(template_text="{{ txet }}"), "llama.cpp", api_name="/prompt_lab_preview")
    assert tokens.startswith("⚠") and "txet" in tokens


def test_run_few_shot_cot_answers_with_timings(client):
    output, result, votes, paths = client.predict(
        *form(strategy="few_shot_cot", template_id="sentiment-classify", k=2, max_new_tokens=48),
        api_name="/prompt_lab_run")
    assert output.strip()
    assert "Answer:" in result and "prompt tokens" in result and "tokens/s" in result


def test_self_consistency_votes_over_five_paths(client):
    output, result, votes, paths = client.predict(
        *form(strategy="self_consistency", template_id="arithmetic-qa", task="arithmetic", k=2, samples=5,
              text="Tom has 3 boxes with 4 pencils each. How many pencils does he have?", max_new_tokens=48,
              temperature=0.7, seed=0),
        api_name="/prompt_lab_run")
    assert len(paths["data"]) == 5
    assert "Majority vote" in result and "of 5 paths" in result
    if votes.get("confidences"):
        assert abs(sum(c["confidence"] for c in votes["confidences"]) - 1.0) < 1e-6


def test_compare_fills_the_chosen_columns_and_leaves_the_others_empty(client):
    strategies = ["zero_shot", "off", "few_shot", "off"]
    models = [MODEL] * 4
    values = client.predict(*form(), *strategies, *models, api_name="/prompt_lab_compare")
    headers, texts, stats, download = values[0:4], values[4:8], values[8:12], values[12]
    assert "zero-shot" in headers[0] and "few-shot" in headers[2]
    assert headers[1] == "" and headers[3] == ""
    assert "Answer:" in stats[0] and "Answer:" in stats[2]
    lines = Path(download).read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("Column,Strategy,Model,Template,Status,Answer") and len(lines) >= 3
    assert lines[1].startswith("1,zero-shot,")


def test_compare_shows_a_missing_model_in_its_column_only(client):
    values = client.predict(*form(), "zero_shot", "zero_shot", "off", "off", MODEL, "gpt2", MODEL, MODEL,
                            api_name="/prompt_lab_compare")
    stats = values[8:12]
    assert "Answer:" in stats[0]
    assert stats[1].startswith("⚠")


def eval_args(strategies=("zero_shot",), source="bundled", path=None, input_column=None, label_column=None,
              rationale_column="", demo_rows=0, limit=3, **overrides):
    return [*form(**overrides), list(strategies), source, path, input_column, label_column, rationale_column,
            demo_rows, limit]


def test_evaluate_scores_each_strategy_on_the_bundled_set(client):
    status, chart, summary, rows, scores_file, rows_file = client.predict(
        *eval_args(("zero_shot", "few_shot"), limit=3), api_name="/prompt_lab_evaluate")
    assert "6 of 6" in status
    assert len(summary["data"]) == 2 and summary["headers"][:3] == ["Strategy", "Examples", "Accuracy (%)"]
    assert len(rows["data"]) == 6
    headers = rows["headers"]
    assert {"Prompt", "Model output", "Answer", "Correct"} <= set(headers)
    assert {row[headers.index("Correct")] for row in rows["data"]} <= {"✓", "✗"}
    assert all(0 <= row[2] <= 100 for row in summary["data"])  # percent, as in the chart
    scores = Path(scores_file).read_text(encoding="utf-8-sig").splitlines()
    assert scores[0].startswith("Strategy,Examples,Accuracy (%)") and len(scores) == 3
    assert len(Path(rows_file).read_text(encoding="utf-8-sig").splitlines()) >= 7


def test_evaluate_an_uploaded_file_with_a_column_mapping(client, tmp_path):
    path = tmp_path / "reviews.jsonl"
    rows = [{"sentence": "I adore this quiet park.", "mood": "positive"},
            {"sentence": "The bus was late again and I missed my class.", "mood": "negative"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    input_choice, label_choice, _ = client.predict(handle_file(str(path)), api_name="/prompt_lab_columns")
    assert set(input_choice["choices"][0]) >= {"sentence"} or "sentence" in str(input_choice)
    status, _, summary, table, *_ = client.predict(
        *eval_args(source="upload", path=handle_file(str(path)), input_column="sentence", label_column="mood"),
        api_name="/prompt_lab_evaluate")
    assert "reviews.jsonl" in status and "2 of 2" in status
    assert len(table["data"]) == 2


def test_a_reasoning_task_beyond_arithmetic_runs_and_evaluates(client):
    """Commonsense multiple choice with few-shot chain-of-thought, then date arithmetic evaluated (exact match)."""
    from playground.prompting.data import load_bundled

    question = load_bundled("commonsense").examples[0].input
    output, result, _, _ = client.predict(
        *form(task="commonsense", template_id="commonsense-qa", strategy="few_shot_cot", k=1, text=question,
              max_new_tokens=40), api_name="/prompt_lab_run")
    assert output.strip() and "Answer:" in result and "tokens/s" in result
    status, _, summary, rows, *_ = client.predict(
        *eval_args(("zero_shot", "few_shot"), task="dates", template_id="dates-qa", k=2, max_new_tokens=24,
                   text=load_bundled("dates").examples[0].input, limit=2), api_name="/prompt_lab_evaluate")
    assert "4 of 4" in status and "dates.jsonl" in status
    assert summary["headers"][:3] == ["Strategy", "Examples", "Exact match (%)"]
    headers = rows["headers"]
    assert {row[headers.index("Expected")] for row in rows["data"]} <= {"2027-04-01", "2026-10-02"}
    answers = {row[headers.index("Answer")] for row in rows["data"]}
    assert all(a in ("", None, "(none)") or len(a) == 10 and a[4] == "-" for a in answers), answers  # ISO dates


@pytest.mark.parametrize("content, mapping, expected", [
    ('{"sentence": "fine", "mood": "positive"}\n{"sentence": oops}\n', ("sentence", "mood"), "Line 2"),
    ('{"sentence": "fine", "mood": "positive"}\n', ("text", "mood"), "text"),
])
def test_a_bad_upload_is_refused_with_the_line_or_column(client, tmp_path, content, mapping, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(AppError, match=expected):
        client.predict(*eval_args(source="upload", path=handle_file(str(path)), input_column=mapping[0],
                                  label_column=mapping[1]), api_name="/prompt_lab_evaluate")


@pytest.mark.parametrize("overrides, expected", [
    (dict(strategy="few_shot", k=10, task="arithmetic", template_id="arithmetic-qa"), "has only 8"),
    (dict(text="   "), "empty"),
    (dict(template_text="{% for x in %}"), "line 1"),
    (dict(strategy="self_consistency", temperature=0.0, template_id="sentiment-classify"), "temperature"),
    (dict(text="word " * 9000, max_new_tokens=8), "context window"),
])
def test_bad_prompt_input_gives_a_clear_message(client, overrides, expected):
    with pytest.raises(AppError, match=expected):
        client.predict(*form(**overrides), api_name="/prompt_lab_run")


def test_the_transformers_engine_runs_the_same_prompt(client):
    tokens, prompt, _ = client.predict(*form(engine="transformers"), "transformers", api_name="/prompt_lab_preview")
    _, llama_prompt, _ = client.predict(*form(), "llama.cpp", api_name="/prompt_lab_preview")
    assert prompt.strip() == llama_prompt.strip()
    output, result, _, _ = client.predict(*form(engine="transformers"), api_name="/prompt_lab_run")
    assert "Answer:" in result and output.strip()


# The test app allows 60,000 characters (PLAYGROUND_MAX_PROMPT_CHARS in tests/ui/conftest.py).
@pytest.mark.parametrize("field, size, name", [("system", 61_000, "system message"), ("text", 61_000, "input"),
                                               ("cot_trigger", 600, "chain-of-thought trigger")])
def test_overlong_text_in_the_prompt_controls_is_refused_with_its_limit(client, field, size, name):
    values = form(**{field: "y " * (size // 2)})
    with pytest.raises(AppError, match=f"The {name} has {size:,} characters; the limit is"):
        client.predict(*values, api_name="/prompt_lab_run")
    tokens_line, prompt, _ = client.predict(*values, "llama.cpp", api_name="/prompt_lab_preview")
    assert tokens_line.startswith("⚠") and name in tokens_line and prompt == ""
