"""Encoder-decoder prompting with fake engines: text-to-text prompts (no chat template, the system text folded into
the input), the window the encoder input must fit, the code shown for it, the text-to-text templates, and the
bundled setups (the classic lab's zero-, one- and few-shot FLAN-T5 on dialogue summaries)."""

from __future__ import annotations

import ast
from dataclasses import replace

import pytest

from playground.backends.base import GenerationParams
from playground.errors import ContextOverflowError, PlaygroundError
from playground.prompting.lab import LabRequest, PromptLab
from playground.prompting.setups import LabSetup, check_setup, choose_model, load_setups
from playground.prompting.snippet import code_snippet
from playground.prompting.strategies import PromptSetup, StrategyConfig, build_prompt, run_strategy
from playground.prompting.templates import TemplateLibrary
from tests.prompting.fakes import ScriptedEngine

LIBRARY = TemplateLibrary.load()
DIALOGUE = "#Person1#: Is the bakery open on Sunday?\n#Person2#: Only in the morning, until noon."


class TextToTextEngine(ScriptedEngine):
    """A scripted encoder-decoder: no chat template; the system text goes before the input, as the real one does."""

    is_encoder_decoder = True

    def __init__(self, reply="The bakery opens on Sunday mornings.", context: int = 512):
        super().__init__(reply, context=context, chat_template=False)

    def format_chat(self, messages) -> str:
        return "\n\n".join(m["content"] for m in messages)


def t2t_setup(template_id="t2t-dialogue-summary", strategy="zero_shot", k=0, system="") -> PromptSetup:
    template = LIBRARY.get(template_id)
    return PromptSetup.from_template(template, StrategyConfig(strategy=strategy, k=k), system=system)


def test_a_text_to_text_prompt_is_the_rendered_template_itself():
    engine = TextToTextEngine()
    built = build_prompt(engine, t2t_setup(), DIALOGUE)
    assert built.text == f"Summarize the following conversation.\n\n{DIALOGUE}\n\nSummary:"
    assert built.encoder_decoder and not built.chat_template_applied and built.token_count == len(built.text)
    with_system = build_prompt(engine, t2t_setup(system="Write one sentence."), DIALOGUE)
    assert with_system.text == "Write one sentence.\n\n" + built.text  # the system text is folded into the input


def test_one_shot_and_few_shot_repeat_the_layout_with_the_demonstrations():
    lab = PromptLab(LIBRARY)
    pool = lab.demos("summarization")
    one = build_prompt(TextToTextEngine(), t2t_setup("t2t-dialogue-going-on", "few_shot", 1), DIALOGUE, pool)
    assert one.text.count("What was going on?") == 2 and one.text.endswith("What was going on?")
    assert pool[0].input in one.text and pool[0].target in one.text and pool[1].input not in one.text
    few = build_prompt(TextToTextEngine(), t2t_setup("t2t-dialogue-going-on", "few_shot", 3), DIALOGUE, pool)
    assert few.text.count("Dialogue:") == 4 and len(few.demos) == 3


def test_the_encoder_input_alone_must_fit_the_window():
    engine = TextToTextEngine(context=200)
    built = build_prompt(engine, t2t_setup(), DIALOGUE, params=GenerationParams(max_new_tokens=150))
    assert built.token_count + 150 > 200 and built.fits(150)  # the decoder's answer has its own positions
    with pytest.raises(ContextOverflowError, match="reads at most 200 tokens of input"):
        build_prompt(engine, t2t_setup(), DIALOGUE * 3, params=GenerationParams(max_new_tokens=1))
    decoder = ScriptedEngine(context=200)
    with pytest.raises(ContextOverflowError):
        build_prompt(decoder, t2t_setup(), DIALOGUE, params=GenerationParams(max_new_tokens=150))


def test_a_text_to_text_run_is_scored_like_any_other():
    engine = TextToTextEngine()
    run = run_strategy(engine, t2t_setup(), DIALOGUE, (), GenerationParams(max_new_tokens=60, temperature=0))
    assert run.output == "The bakery opens on Sunday mornings." and run.answer == run.output
    assert engine.prompts == [f"Summarize the following conversation.\n\n{DIALOGUE}\n\nSummary:"]


def test_the_code_loads_a_sequence_to_sequence_model(catalog):
    built = build_prompt(TextToTextEngine(), t2t_setup(system="Be brief."), DIALOGUE)
    code = code_snippet(built, GenerationParams(max_new_tokens=50, temperature=0), engine="transformers",
                        spec=catalog.get("flan-t5-base"))
    ast.parse(code)
    assert "AutoModelForSeq2SeqLM" in code and "AutoModelForCausalLM" not in code
    assert "MODEL = 'google/flan-t5-base'" in code and "apply_chat_template" not in code
    assert "tokenizer.decode(sequence, skip_special_tokens=True)" in code and "Be brief." in code
    adapter = code_snippet(built, GenerationParams(), engine="transformers", spec=catalog.get("flan-t5-base"),
                           adapter="adapter")
    ast.parse(adapter)
    assert "AutoModelForSeq2SeqLM.from_pretrained(MODEL" in adapter and "merge_and_unload" in adapter


# --------------------------------------------------------------------------- the bundled setups


def test_the_bundled_setups_are_the_classic_labs_first_part():
    setups = {s.id: s for s in load_setups(LIBRARY)}
    zero, one, few = (setups[f"flan-t5-dialogue-{n}-shot"] for n in ("zero", "one", "few"))
    assert (zero.strategy, zero.k, one.strategy, one.k, few.strategy, few.k) == (
        "zero_shot", 0, "few_shot", 1, "few_shot", 3)
    for setup in (zero, one, few):
        assert setup.task == "summarization" and setup.models == ("flan-t5-base", "flan-t5-small")
        assert LIBRARY.get(setup.template).id.startswith("t2t-")


def test_applying_a_setup_picks_the_first_model_that_is_here():
    lab = PromptLab(LIBRARY)
    applied = lab.apply_setup("flan-t5-dialogue-one-shot", ["smollm2-135m-instruct", "flan-t5-small"])
    assert applied.model_id == "flan-t5-small" and not applied.missing_models
    assert applied.text == lab.first_example("summarization")
    assert applied.params == lab.suggested("summarization", "few_shot") and applied.params.temperature == 0
    missing = lab.apply_setup("flan-t5-dialogue-one-shot", ["smollm2-135m-instruct"])
    assert missing.model_id is None and missing.missing_models == ("flan-t5-base", "flan-t5-small")
    assert choose_model(applied.setup, ["flan-t5-base", "flan-t5-small"]) == "flan-t5-base"
    with pytest.raises(PlaygroundError, match="no setup 'nope'"):
        lab.apply_setup("nope", [])


def test_a_setup_runs_end_to_end_through_the_lab():
    from tests.prompting.test_lab import FakeModels

    lab = PromptLab(LIBRARY, token_limit=256)
    applied = lab.apply_setup("flan-t5-dialogue-few-shot", ["flan-t5-small"])
    setup = applied.setup
    models = FakeModels("A summary.")
    models.engines["flan-t5-small"] = TextToTextEngine("A summary.", context=4096)  # one token per character
    request = LabRequest(task=setup.task, template_id=setup.template, model_id=applied.model_id, text=applied.text,
                         params=applied.params, strategy=StrategyConfig(strategy=setup.strategy, k=setup.k),
                         template_text=LIBRARY.get(setup.template).template)
    updates = list(lab.run(request, models))
    run = updates[-1].run
    assert run.output == "A summary." and run.prompt.encoder_decoder and len(run.prompt.demos) == 3


@pytest.mark.parametrize("change, problem", [
    (dict(task="poetry"), "unknown task"),
    (dict(strategy="zero_shot_cot"), "zero_shot or few_shot"),
    (dict(template="sentiment-question"), "is not a summarization template"),
    (dict(k=0, strategy="few_shot"), "does not suit few_shot"),
    (dict(k=2), "does not suit zero_shot"),
    (dict(evaluate=("guessing",)), "evaluate must list"),
])
def test_a_bad_setup_is_refused_by_name(change, problem):
    good = LabSetup(id="mine", name="Mine", task="summarization", template="t2t-dialogue-summary")
    check_setup(good, LIBRARY)
    with pytest.raises(PlaygroundError, match=problem):
        check_setup(replace(good, **change), LIBRARY)


def test_the_setups_file_is_read_strictly(tmp_path):
    path = tmp_path / "setups.yaml"
    path.write_text("setups:\n  - {id: a, name: A, task: summarization, template: t2t-dialogue-summary, colour: red}\n")
    with pytest.raises(PlaygroundError, match="unknown keys \\['colour'\\]"):
        load_setups(LIBRARY, path)
    path.write_text("setups:\n" + "  - {id: a, name: A, task: summarization, template: t2t-dialogue-summary}\n" * 2)
    with pytest.raises(PlaygroundError, match="duplicate setup ids"):
        load_setups(LIBRARY, path)
    assert load_setups(LIBRARY, tmp_path / "none.yaml") == ()
