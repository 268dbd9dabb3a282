"""FLAN-T5 in the Prompt Lab through its API (gradio_client): the classic lab's setups, the text-to-text preview and
code, a run and an evaluation, on an app whose models dir holds FLAN-T5 small (the session's tiny T5); and the
default app, where FLAN-T5's weights are absent, is unchanged."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client, handle_file

from tests.ui.conftest import issue_token
from tests.ui.test_prompt_lab_client import LIBRARY, form

FLAN = "flan-t5-small"
DIALOGUE = "#Person1#: Is the bakery open on Sunday?\n#Person2#: Only in the morning, until noon."

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flan_client(flan_app):
    return Client(flan_app[1], verbose=False)


def flan_form(template_id="t2t-dialogue-summary", **overrides) -> list:
    values = dict(task="summarization", template_id=template_id, template_text=LIBRARY.get(template_id).template,
                  model_id=FLAN, text=DIALOGUE, max_new_tokens=8, temperature=1.0, top_k=0, seed=3)
    values.update(overrides)
    return form(**values)


def test_a_setup_fills_the_controls_with_flan_t5(flan_client):
    token = issue_token(flan_client)
    values = flan_client.predict("flan-t5-dialogue-few-shot", token, api_name="/prompt_lab_setup")
    task, strategy, template, _, _, k, selection, model, text = values[:9]
    assert task == "summarization" and strategy["value"] == "few_shot" and template["value"] == "t2t-dialogue-going-on"
    assert k["value"] == 3 and selection == "fixed" and model["value"] == FLAN and "#Person1#" in text
    assert values[-2] == ["zero_shot", "few_shot"] and "three earlier conversations" in values[-1]


def test_the_preview_and_code_are_text_to_text(flan_client):
    tokens, prompt, code = flan_client.predict(*flan_form(system="Be brief."), "llama.cpp",
                                               api_name="/prompt_lab_preview")
    assert "encoder input tokens" in tokens and "512" in tokens and "no chat template" in tokens
    assert prompt == f"Be brief.\n\nSummarize the following conversation.\n\n{DIALOGUE}\n\nSummary:"
    assert "AutoModelForSeq2SeqLM" in code and "llama.cpp cannot run FLAN-T5 small" in code  # asked: llama.cpp
    compile(code, "snippet.py", "exec")


def test_flan_t5_runs_one_and_few_shot_and_is_evaluated(flan_client, tmp_path):
    output, result, _, _ = flan_client.predict(*flan_form("t2t-dialogue-going-on", strategy="few_shot", k=1),
                                               api_name="/prompt_lab_run")
    assert output.strip() and "prompt tokens" in result
    # Short dialogues: the tiny T5's 150-token vocabulary spends many tokens on the bundled ones.
    path = tmp_path / "short.jsonl"
    rows = [{"dialogue": "A: Tea?\nB: Yes, please.", "summary": "B wants tea."},
            {"dialogue": "A: Is it raining?\nB: Yes, take a coat.", "summary": "It rains; A needs a coat."},
            {"dialogue": "A: Lunch at one?\nB: Make it two.", "summary": "They lunch at two."}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    status, _chart, summary, table, _, _ = flan_client.predict(
        *flan_form(temperature=0.0, k=1), ["zero_shot", "few_shot"], "upload", handle_file(str(path)), "dialogue",
        "summary", "", 1, 2, api_name="/prompt_lab_evaluate")
    assert "4 of 4" in status and len(summary["data"]) == 2 and len(table["data"]) == 4, status
    assert {"ROUGE-1 (%)", "ROUGE-L (%)"} <= set(summary["headers"]), summary["headers"]


def test_the_default_app_lists_no_flan_t5_and_a_setup_names_the_download(client, app_services):
    assert FLAN not in [model_id for _, model_id in app_services.models_for().choices()] or \
        app_services.engines.resolver.is_available_offline(app_services.catalog.get(FLAN))
    line = client.predict("flan-t5-dialogue-zero-shot", "", api_name="/prompt_lab_setup")[-1]
    if not app_services.engines.resolver.is_available_offline(app_services.catalog.get("flan-t5-base")):
        assert "python -m playground download" in line
