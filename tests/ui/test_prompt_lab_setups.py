"""The Prompt Lab's bundled setups and its text-to-text models, through the tab's handlers over fake engines."""

from __future__ import annotations

import pytest

from playground.prompting.lab import PromptLab
from playground.ui.tabs.prompt_lab import PromptLabHandlers, token_summary
from tests.prompting.test_encoder_decoder import LIBRARY, TextToTextEngine, t2t_setup
from tests.prompting.test_lab import FakeModels
from tests.ui.test_prompt_lab_handlers import PT, REQUEST, services, values  # noqa: F401 (the module's fixture)

DECODER = "smollm2-135m-instruct"


class PickerModels(FakeModels):
    """FakeModels with the pickers' list: a decoder, and FLAN-T5 small when its weights are "here"."""

    def __init__(self, flan_here: bool):
        super().__init__("A summary.")
        self.ids = [DECODER] + (["flan-t5-small"] if flan_here else [])
        self.engines["flan-t5-small"] = TextToTextEngine("A summary.", context=4096)

    def choices(self):
        return [(model_id, model_id) for model_id in self.ids]


def handlers_with(services, monkeypatch, flan_here: bool) -> PromptLabHandlers:  # noqa: F811
    models = PickerModels(flan_here)
    monkeypatch.setattr(services, "models_for", lambda owner="": models)
    return PromptLabHandlers(services, PromptLab(LIBRARY, max_chars=5_000, token_limit=256))


def test_choosing_a_setup_sets_every_prompt_control(services, monkeypatch):  # noqa: F811
    handlers = handlers_with(services, monkeypatch, flan_here=True)
    (task, strategy, template, template_text, system, k, selection, model, text, max_new_tokens, temperature, _top_p,
     _top_k, seed, evaluate, line) = handlers.on_setup("flan-t5-dialogue-one-shot", "", {}, REQUEST)
    assert task == "summarization" and strategy["value"] == "few_shot" and template["value"] == "t2t-dialogue-going-on"
    assert "What was going on?" in template_text and system == "" and k["value"] == 1 and selection == "fixed"
    assert model["value"] == "flan-t5-small" and text == handlers.lab.first_example("summarization")
    assert (max_new_tokens, temperature, seed) == (80, 0.0, 0) and evaluate == ["zero_shot", "few_shot"]
    assert "one earlier conversation" in line
    saved = {"t2t-dialogue-going-on": {"template": "Mine: {{ dialogue }}", "system": "Short."}}
    edited = handlers.on_setup("flan-t5-dialogue-one-shot", "", saved, REQUEST)
    assert edited[3:5] == ["Mine: {{ dialogue }}", "Short."]  # the session's saved edit of that template
    # The task's change event comes after, and keeps what the setup chose (template, k, input).
    after = handlers.on_task("summarization", "few_shot", {}, REQUEST, "flan-t5-dialogue-one-shot")
    assert after[0]["value"] == "few_shot" and after[1]["value"] == "t2t-dialogue-going-on"
    assert after[4] == text and after[5]["value"] == 1
    plain = handlers.on_task("summarization", "few_shot", {}, REQUEST, "")  # no setup: the task's defaults
    assert plain[1]["value"] == "dialogue-summary" and plain[5]["value"] == 3
    other = handlers.on_task("sentiment", "zero_shot", {}, REQUEST, "flan-t5-dialogue-one-shot")
    assert other[1]["value"] == "sentiment-question"  # a setup of another task is left alone


def test_a_setup_without_its_model_says_which_download_it_needs(services, monkeypatch):  # noqa: F811
    handlers = handlers_with(services, monkeypatch, flan_here=False)
    updates = handlers.on_setup("flan-t5-dialogue-zero-shot", "", {}, PT)
    model, line = updates[7], updates[-1]
    assert model == {"__type__": "update"}  # the model stays as it was
    assert line.startswith("⚠") and "python -m playground download flan-t5-base" in line and "máquina" in line
    assert updates[0] == "summarization" and updates[2]["value"] == "t2t-dialogue-summary"  # the rest applies
    nothing = handlers.on_setup("", "", {}, REQUEST)
    assert nothing[:-1] == [{"__type__": "update"}] * 15 and nothing[-1] == ""


def test_the_preview_of_an_encoder_decoder_says_text_to_text(services, monkeypatch):  # noqa: F811
    handlers = handlers_with(services, monkeypatch, flan_here=True)
    template = LIBRARY.get("t2t-dialogue-summary")
    line, prompt, code = handlers.preview(REQUEST, *values(
        task="summarization", template_id=template.id, template_text=template.template, model_id="flan-t5-small",
        text="A: Tea?\nB: Yes, please.", system="Be brief."), "transformers")
    assert "encoder input tokens" in line and "text to text, no chat template" in line
    assert prompt.startswith("Be brief.\n\nSummarize the following conversation.")
    output = list(handlers.run(REQUEST, *values(
        task="summarization", template_id=template.id, template_text=template.template, model_id="flan-t5-small",
        text="A: Tea?\nB: Yes, please.", max_new_tokens=40.0), progress=lambda *a, **k: None))[-1]
    assert output[0] == "A summary." and "Answer: **A summary.**" in output[1]


@pytest.mark.parametrize("request_, words", [(REQUEST, "encoder input tokens"), (PT, "tokens de entrada do encoder")])
def test_the_token_line_counts_the_encoder_input(request_, words):
    from playground.prompting.strategies import build_prompt
    from playground.ui.i18n import Texts

    built = build_prompt(TextToTextEngine(context=100), t2t_setup(), "A: Tea?\nB: Yes.")
    line = token_summary(built, 90, Texts.for_request(request_))
    assert words in line and "⚠" not in line  # 78 input tokens + 90 new ones: fine for an encoder-decoder
