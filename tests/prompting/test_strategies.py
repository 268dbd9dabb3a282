"""Building the final prompt (messages, chat template, tokens) and running strategies, on a scripted engine."""

from __future__ import annotations

import threading

import pytest

from playground.backends.base import GenerationParams, SampleProgress
from playground.backends.slots import GenerationSlots
from playground.errors import ContextOverflowError, InvalidParameterError, TemplateError
from playground.prompting.data import Example, load_bundled
from playground.prompting.strategies import (
    SAMPLING_TEMPERATURE,
    PromptSetup,
    SamplingProgress,
    StrategyConfig,
    build_prompt,
    check_sampling,
    effective_params,
    run_strategy,
    sample_paths,
    stream_prompt,
    suggested_params,
)
from tests.prompting.fakes import KeywordEmbedder, QueuedEngine, ScriptedEngine

TEMPLATE = ("Classify as {{ labels | join(', ') }}.\n{% for d in demos %}\n{{ d.text }}\n"
            "{% if d.rationale %}Because: {{ d.rationale }}\n{% endif %}Label: {{ d.label }}\n{% endfor %}\n"
            "{{ text }}\nLabel:")
POOL = (Example("Great tea.", "positive", "The writer likes it."),
        Example("Cold soup.", "negative", "A complaint."),
        Example("Shop opens at 9.", "neutral", "Only a fact."))
GREEDY = GenerationParams(max_new_tokens=40, temperature=0)


def setup(strategy: str = "zero_shot", **config) -> PromptSetup:
    return PromptSetup(task="sentiment", template=TEMPLATE, strategy=StrategyConfig(strategy=strategy, **config))


def test_zero_shot_prompt_through_the_chat_template():
    engine = ScriptedEngine()
    built = build_prompt(engine, setup(), "Lovely day.", POOL, params=GREEDY)
    assert built.rendered == "Classify as positive, negative, neutral.\nLovely day.\nLabel:"
    assert built.messages == ({"role": "user", "content": built.rendered},)
    assert built.text == f"<|user|>{built.rendered}<|end|><|assistant|>"
    assert built.token_count == len(built.text) and built.context_window == 4096
    assert built.chat_template_applied and built.demos == () and built.answer_prefix == ""


def test_system_message_and_no_chat_template():
    engine = ScriptedEngine(chat_template=False)
    built = build_prompt(engine, PromptSetup("sentiment", TEMPLATE, system="Be brief."), "Lovely day.")
    assert [m["role"] for m in built.messages] == ["system", "user"]
    assert built.text == "Be brief.\n" + built.rendered and not built.chat_template_applied


def test_few_shot_uses_k_demos_without_rationales():
    built = build_prompt(ScriptedEngine(), setup("few_shot", k=2), "Lovely day.", POOL)
    assert built.demos == POOL[:2]
    assert "Great tea.\nLabel: positive" in built.rendered and "Because" not in built.rendered
    assert "Shop opens" not in built.rendered
    zero = build_prompt(ScriptedEngine(), setup("few_shot", k=0), "Lovely day.", POOL)
    assert zero.rendered == build_prompt(ScriptedEngine(), setup(), "Lovely day.", POOL).rendered


def test_few_shot_cot_shows_rationales_and_the_trigger():
    built = build_prompt(ScriptedEngine(), setup("few_shot_cot", k=3), "Lovely day.", POOL)
    assert "Because: The writer likes it." in built.rendered
    assert built.rendered.endswith("Label:\nLet's think step by step.")  # appended: the template has no trigger


def test_zero_shot_cot_trigger_can_lead_the_answer():
    engine = ScriptedEngine()
    user = build_prompt(engine, setup("zero_shot_cot", cot_trigger="Think first."), "Lovely day.")
    assert user.rendered.endswith("\nThink first.")
    leading = build_prompt(engine, setup("zero_shot_cot", trigger_position="assistant"), "Lovely day.")
    assert "step by step" not in leading.rendered
    assert leading.text.endswith("<|assistant|>Let's think step by step.")
    assert leading.answer_prefix == "Let's think step by step."


def test_template_trigger_variable_is_used_where_the_template_puts_it():
    template = "{{ text }}\nA: {{ cot_trigger }}"
    built = build_prompt(ScriptedEngine(), PromptSetup("sentiment", template,
                                                       StrategyConfig(strategy="zero_shot_cot")), "Nice.")
    assert built.rendered == "Nice.\nA: Let's think step by step."
    plain = build_prompt(ScriptedEngine(), PromptSetup("sentiment", template), "Nice.")
    assert plain.rendered == "Nice.\nA:"


def test_similar_selection_uses_the_embedder():
    pool = (Example("The train was late.", "negative"), Example("Lovely coffee.", "positive"),
            Example("Shoes on sale.", "neutral"))
    built = build_prompt(ScriptedEngine(), setup("few_shot", k=1, selection="similar"), "Coffee again!", pool,
                         embedder=KeywordEmbedder())
    assert built.demos == (pool[1],)


def test_clear_errors():
    engine = ScriptedEngine()
    with pytest.raises(InvalidParameterError, match="k=5 demonstrations .* only 3"):
        build_prompt(engine, setup("few_shot", k=5), "x", POOL)
    with pytest.raises(TemplateError, match="never uses 'demos'"):
        build_prompt(engine, PromptSetup("sentiment", "{{ text }}", StrategyConfig(strategy="few_shot", k=2)), "x",
                     POOL)
    with pytest.raises(InvalidParameterError, match="worked rationales"):
        build_prompt(engine, setup("few_shot_cot", k=1), "x", (Example("a", "positive"),))
    with pytest.raises(InvalidParameterError, match="input is empty"):
        build_prompt(engine, setup(), "  ")
    with pytest.raises(TemplateError, match="'sentence', which is not defined"):
        build_prompt(engine, PromptSetup("sentiment", "{{ sentence }}"), "x")
    with pytest.raises(InvalidParameterError, match="strategy must be one of"):
        build_prompt(engine, setup("best_shot"), "x")
    with pytest.raises(TemplateError, match="may not reuse the names demos"):
        build_prompt(engine, PromptSetup("sentiment", "{{ text }}", variables={"demos": "x"}), "x")
    with pytest.raises(InvalidParameterError, match="Unknown task"):
        build_prompt(engine, PromptSetup("poetry", "{{ input }}"), "x")


def test_prompt_over_the_context_window_reports_token_counts():
    engine = ScriptedEngine(context=100)
    with pytest.raises(ContextOverflowError) as info:
        build_prompt(engine, setup("few_shot", k=3), "Lovely day.", POOL, params=GenerationParams(max_new_tokens=10))
    error = info.value
    assert error.context_window == 100 and error.max_new_tokens == 10 and error.prompt_tokens > 100
    assert f"The prompt is {error.prompt_tokens} tokens" in str(error)
    built = build_prompt(engine, setup(), "Hi.", POOL)  # no params: built, and it says whether it fits
    assert built.fits(10) == (built.token_count + 10 <= 100)


def test_run_extracts_the_answer_and_counts_tokens():
    engine = ScriptedEngine("The answer is: Positive.")
    run = run_strategy(engine, setup(), "Lovely day.", POOL, GREEDY)
    assert run.answer == "positive" and run.output == "The answer is: Positive."
    assert run.prompt_tokens == run.prompt.token_count and run.completion_tokens == 24  # one token per character
    assert len(run.paths) == 1 and run.vote is None and run.latency_s >= 0 and not run.cancelled
    assert engine.prompts == [run.prompt.text]


def test_unextractable_answer_is_none_not_an_error():
    run = run_strategy(ScriptedEngine("I am not sure."), setup(), "Lovely day.", POOL, GREEDY)
    assert run.answer is None and run.output == "I am not sure."


def test_a_run_streams_as_a_generator_and_stops_on_cancel():
    cancel = threading.Event()
    engine = ScriptedEngine("positive and more words")
    params = GenerationParams(max_new_tokens=50, temperature=0)
    built = build_prompt(engine, setup(), "x", POOL, params=params)
    seen, run = [], None
    for update in stream_prompt(engine, built, setup(), params, cancel=cancel):
        if update.run is not None:
            run = update.run
            break
        seen.append(update.text)
        if len(update.text) >= 5:
            cancel.set()
    assert seen[0] == "p" and run.cancelled and len(run.output) < 10
    assert engine.prompts == [built.text]  # the prompt reached the engine as the ids it was counted with


def test_the_prompt_is_tokenised_once():
    engine = ScriptedEngine("positive")
    calls = []
    tokenize = engine.tokenize
    engine.tokenize = lambda text: calls.append(text) or tokenize(text)
    run = run_strategy(engine, setup(), "Lovely day.", POOL, GREEDY)
    assert len(calls) == 1 and run.prompt.ids and run.prompt.token_count == len(run.prompt.ids)


def test_self_consistency_votes_over_sampled_paths():
    answers = {0: "26", 1: "24", 2: "26", 3: "no idea", 4: "24"}
    engine = ScriptedEngine(lambda prompt, params: f"Some steps. The answer is {answers[params.seed % 5]}.")
    config = StrategyConfig(strategy="self_consistency", k=0, samples=5)
    arithmetic = PromptSetup("arithmetic", "Q: {{ question }}\nA:", config)
    params = GenerationParams(max_new_tokens=60, temperature=0.7, seed=0)
    run = run_strategy(engine, arithmetic, "How many?", (), params)
    assert [p.answer for p in run.paths] == ["26", "24", "26", None, "24"]
    assert run.vote.histogram == {"26": 2, "24": 2} and run.vote.unparsed == 1
    assert run.answer == "26"  # tie: the answer seen first wins
    assert run.output == "Some steps. The answer is 26."
    assert run.completion_tokens == sum(p.result.completion_tokens for p in run.paths)
    assert len(set(engine.prompts)) == 1  # the same prompt for every path
    with pytest.raises(InvalidParameterError, match="temperature above 0"):
        run_strategy(engine, arithmetic, "How many?", (), GenerationParams(temperature=0))


def test_strategy_config_describes_and_validates_itself():
    assert StrategyConfig().describe() == "zero-shot"
    assert StrategyConfig(strategy="few_shot_cot", k=3, selection="similar").describe() == \
        "few-shot CoT (k=3, similar)"
    assert StrategyConfig(strategy="self_consistency", k=0, samples=5).describe() == "self-consistency (N=5)"
    assert StrategyConfig(k=3.0, samples=4.0).k == 3  # number widgets give floats
    assert "demonstrations" in StrategyConfig.help("k")
    assert StrategyConfig.choices("selection") == ("fixed", "random", "similar")
    with pytest.raises(InvalidParameterError, match="samples=1 is out of range"):
        StrategyConfig(strategy="self_consistency", samples=1).validated()
    config = StrategyConfig(strategy="self_consistency", k=2)
    assert config.uses_demos and config.uses_cot and config.needs_rationales and config.paths == 5
    assert not StrategyConfig(strategy="zero_shot", k=3).uses_demos


def test_suggested_params():
    assert suggested_params("sentiment", StrategyConfig()).max_new_tokens == 8
    assert suggested_params("sentiment", StrategyConfig()).temperature == 0
    sc = suggested_params("arithmetic", StrategyConfig(strategy="self_consistency"))
    assert sc.temperature > 0 and sc.max_new_tokens == 128


def test_setup_from_a_library_template(library):
    template = library.get("translate-plain")
    built = build_prompt(ScriptedEngine(), PromptSetup.from_template(template), "The bread is fresh.")
    assert "into French" in built.rendered
    german = PromptSetup.from_template(template, variables={"target_language": "German"})
    assert "into German" in build_prompt(ScriptedEngine(), german, "Hi.").rendered
    data = load_bundled("translation")
    few = PromptSetup.from_template(template, StrategyConfig(strategy="few_shot", k=2))
    assert data.demos[1].target in build_prompt(ScriptedEngine(), few, "Hi.", data.demos).rendered


def test_template_stop_sequences_join_the_users(library):
    template = library.get("arithmetic-qa")
    assert template.stop == ("\nQ:",)
    setup = PromptSetup.from_template(template)
    assert setup.stop == ("\nQ:",)
    merged = effective_params(setup, GenerationParams(stop=("###",)))
    assert merged.stop == ("###", "\nQ:")
    assert effective_params(setup, GenerationParams(stop=("\nQ:",))).stop == ("\nQ:",)
    full = GenerationParams(stop=tuple(f"s{i}" for i in range(8)))
    assert effective_params(setup, full) is full  # at most 8: the user's come first
    engine = ScriptedEngine("3 x 4 = 12. The answer is 12.\nQ: A new question with 99 apples?")
    run = run_strategy(engine, setup, "How many?", (), GenerationParams(max_new_tokens=80, temperature=0))
    assert run.output == "3 x 4 = 12. The answer is 12." and run.answer == "12"


def test_a_run_waiting_in_a_shared_decode_loop_says_its_place_then_streams_without_a_slot():
    engine = QueuedEngine("positive", waits=(2, 2, 0))
    built = build_prompt(engine, setup(), "x", POOL, params=GREEDY)
    slots = GenerationSlots(1)
    with slots.hold():  # every slot busy: a batched generation does not need one
        updates = list(stream_prompt(engine, built, setup(), GREEDY, slot=slots))
    assert [(u.text, u.queue_position) for u in updates[:3]] == [("", 2), ("", 0), ("p", None)]
    assert updates[-1].run.answer == "positive" and updates[-1].queue_position is None


def test_a_run_waiting_for_a_generation_slot_says_how_many_are_ahead():
    engine = ScriptedEngine("positive")
    built = build_prompt(engine, setup(), "x", POOL, params=GREEDY)
    slots = GenerationSlots(1)
    with slots.hold():
        run = stream_prompt(engine, built, setup(), GREEDY, slot=slots)
        first = next(run)
    rest = list(run)
    assert (first.text, first.queue_position) == ("", 1)
    assert (rest[0].text, rest[0].queue_position) == ("", 0)  # its turn: the prompt is read
    assert rest[1].text == "p" and rest[-1].run.answer == "positive"
    assert all(u.queue_position is None for u in rest[1:]) and slots.busy == 0


# --------------------------------------------------------------------------- self-consistency's progress


def test_the_shared_sample_n_reports_paths_done_and_tokens():
    reports = []
    results = ScriptedEngine("positive").sample_n("Hi", GenerationParams(max_new_tokens=8, temperature=0.7, seed=1),
                                                  3, progress=reports.append)
    assert len(results) == 3
    assert reports[0] == SampleProgress(done=0, total=3, tokens=1, live_tokens=1)
    assert reports[-1] == SampleProgress(done=3, total=3, tokens=24, live_tokens=0)
    assert [r.done for r in reports] == sorted(r.done for r in reports)  # paths only ever finish


class HeldSampler(ScriptedEngine):
    """sample_n reports one step, then waits until the test lets it finish."""

    def __init__(self):
        super().__init__("positive")
        self.release = threading.Event()
        self.cancelled = False

    def sample_n(self, prompt, params, n, cancel=None, progress=None):
        progress(SampleProgress(1, n, 30, 12))
        while not self.release.wait(0.01):
            if cancel is not None and cancel.is_set():
                self.cancelled = True
                return []
        return super().sample_n(prompt, params, n, cancel)


def test_sampled_paths_report_their_progress_from_a_worker_thread():
    engine = HeldSampler()
    built = build_prompt(engine, setup("self_consistency", samples=4), "Nice.", POOL)
    steps = sample_paths(engine, built, GenerationParams(max_new_tokens=20, temperature=0.7, seed=0), 4,
                         interval_s=0.01)
    progress = next(steps)
    assert (progress.done, progress.total, progress.tokens, progress.live_tokens, progress.max_new_tokens) == (
        1, 4, 30, 12, 20)
    assert progress.elapsed_s >= 0
    engine.release.set()
    results = next(steps)
    assert len(results) == 4 and next(steps, None) is None


def test_a_closed_or_cancelled_sampling_stops_its_worker():
    engine = HeldSampler()
    built = build_prompt(engine, setup("self_consistency", samples=4), "Nice.", POOL)
    steps = sample_paths(engine, built, GenerationParams(max_new_tokens=20, temperature=0.7), 4, interval_s=0.01)
    next(steps)
    steps.close()  # the page went away: the sampling is told to stop, and the worker has ended
    assert engine.cancelled
    cancel = threading.Event()
    cancel.set()
    engine = HeldSampler()
    assert list(sample_paths(engine, built, GenerationParams(max_new_tokens=20, temperature=0.7), 4, cancel,
                             interval_s=0.01))[-1] == [] and engine.cancelled


def test_self_consistency_streams_its_progress_then_the_vote():
    engine = HeldSampler()
    updates = stream_prompt(engine, build_prompt(engine, setup("self_consistency", samples=3), "Nice.", POOL),
                            setup("self_consistency", samples=3), GenerationParams(max_new_tokens=20, temperature=0.7))
    first = next(updates)
    assert first.run is None and first.sampling is not None and first.sampling.done == 1
    engine.release.set()
    last = list(updates)[-1]
    assert last.run is not None and last.run.vote.total == 3


def test_sampling_progress_fraction_and_time_left():
    going = SamplingProgress(done=1, total=4, tokens=30, live_tokens=15, max_new_tokens=10, elapsed_s=3.0)
    assert going.fraction == pytest.approx((1 + 15 / 10) / 4)  # the live paths count by their token budgets
    half = SamplingProgress(done=2, total=4, tokens=50, live_tokens=10, max_new_tokens=10, elapsed_s=5.0)
    assert half.fraction == pytest.approx((2 + 1.0) / 4)
    assert half.eta_s == pytest.approx((2 * 10 - 10) / (50 / 5.0))  # at most the budget left, at 10 tokens/s
    assert SamplingProgress(0, 4, 0, 0, 10, 0.0).eta_s is None
    assert SamplingProgress(4, 4, 40, 0, 10, 4.0).eta_s == 0 and SamplingProgress(4, 4, 40, 0, 10, 4.0).fraction == 1


def test_self_consistency_samples_by_default_and_the_others_decode_greedily():
    assert suggested_params("arithmetic", StrategyConfig(strategy="self_consistency")).temperature == \
        SAMPLING_TEMPERATURE > 0
    for strategy in ("zero_shot", "few_shot", "zero_shot_cot", "few_shot_cot"):
        params = suggested_params("arithmetic", StrategyConfig(strategy=strategy))
        assert params.temperature == 0 and params.seed == 0
    with pytest.raises(InvalidParameterError, match="needs sampling"):
        check_sampling(setup("self_consistency"), GREEDY)
    check_sampling(setup("zero_shot"), GREEDY)
