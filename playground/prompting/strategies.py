"""Prompting strategies: build the exact prompt a model receives, run it, and read the answer.

The path from a template to an answer, step by step (each step visible in the
Prompt Lab):

1. choose the demonstrations (``demos.select_demos``) for few-shot strategies;
2. render the template in the sandbox with the input, the demonstrations (with
   their rationales for chain-of-thought) and the trigger;
3. wrap the rendered text in chat messages (an optional system message, then one
   user message) and apply the engine's chat template (``engine.format_chat``);
   with the trigger placed at the start of the answer, it follows the template's
   generation prompt, so the model continues from it. An encoder-decoder
   (FLAN-T5) has no chat template: the text is its encoder's input, with the
   system message folded in before the user's text (a blank line between), and
   a trigger placed "at the start of the answer" ends that input on its own line;
4. count the tokens against the engine's context window (a prompt that does not
   fit raises ``ContextOverflowError`` with the numbers; an encoder-decoder's
   input must fit on its own, since the decoder writes the answer afresh);
5. generate, once, or N times for self-consistency (``engine.sample_n``: the
   prompt is processed once and the samples are decoded together);
6. extract the answer of each output and, for self-consistency, take the
   majority vote.

The strategies:

- ``zero_shot``: the instruction and the input only;
- ``few_shot``: k demonstrations (input and answer) before the input;
- ``zero_shot_cot``: the trigger ("Let's think step by step.") makes the model
  reason before it answers;
- ``few_shot_cot``: demonstrations that show worked rationales;
- ``self_consistency``: N reasoning paths sampled from the chain-of-thought
  prompt (few-shot when k > 0, zero-shot otherwise), an answer extracted from
  each, and the most frequent answer wins.

If a chain-of-thought template does not place ``{{ cot_trigger }}`` itself, the
trigger goes on its own line at the end of the user message.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterator, Mapping, Sequence

from playground.backends.base import Engine, GenerationParams, GenerationResult, Message, SampleProgress, \
    TokenizedPrompt
from playground.backends.slots import SlotHolder, line_for, no_slot, slot_for
from playground.errors import ContextOverflowError, EncoderInputOverflowError, InvalidParameterError, \
    TemplateError
from playground.prompting.data import Example
from playground.prompting.demos import Embedder, select_demos
from playground.prompting.extraction import VoteResult, extract_answer, majority_vote
from playground.prompting.tasks import (
    ANSWER_KINDS,
    DEFAULT_COT_TRIGGER,
    FEW_SHOT,
    FEW_SHOT_COT,
    FIXED,
    SELECTIONS,
    SELF_CONSISTENCY,
    STRATEGIES,
    ZERO_SHOT,
    ZERO_SHOT_COT,
    TaskSpec,
    get_task,
)
from playground.prompting.templates import PromptTemplate, parse_template

MAX_SAMPLES = 20  # self-consistency paths per input
SAMPLING_TEMPERATURE = 0.7  # the temperature self-consistency samples its paths at unless told otherwise
PROGRESS_INTERVAL_S = 0.25  # at most four progress reports a second while self-consistency samples
TRIGGER_POSITIONS = ("user", "assistant")
# Variable names a template gets from the Prompt Lab; extra variables may not reuse them.
RESERVED_VARIABLES = frozenset({"input", "demos", "cot", "cot_trigger", "labels", "task"})

def _option(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class StrategyConfig:
    """How the prompt is built and sampled; the help texts become the widgets' info."""

    strategy: str = _option(ZERO_SHOT, "How the prompt is built: instruction only, with demonstrations, with a "
                                       "reasoning trigger, or N sampled reasoning paths and a vote.",
                            choices=STRATEGIES)
    k: int = _option(3, "Number of demonstrations shown before the input (few-shot strategies; self-consistency "
                        "uses them when k > 0).", low=0)
    selection: str = _option(FIXED, "Which demonstrations: the first k, k drawn at random with the seed, or the "
                                    "k most similar to the input (sentence embeddings).", choices=SELECTIONS)
    selection_seed: int = _option(0, "Seed of the random choice of demonstrations: same seed, same prompt.",
                                  low=0, high=2**31 - 1)
    cot_trigger: str = _option(DEFAULT_COT_TRIGGER, "Sentence that asks the model to reason before answering "
                                                    "(chain-of-thought strategies).")
    trigger_position: str = _option("user", "Where the trigger goes: at the end of the question (user) or as the "
                                            "start of the model's answer (assistant).", choices=TRIGGER_POSITIONS)
    samples: int = _option(5, "Self-consistency: reasoning paths sampled; the most frequent answer wins. The "
                              "paths must differ, so choosing self-consistency sets the temperature to "
                              f"{SAMPLING_TEMPERATURE} (with a fixed seed); the other strategies decode greedily.",
                           low=2, high=MAX_SAMPLES)

    def __post_init__(self) -> None:
        for name in ("k", "selection_seed", "samples"):  # number widgets give 3.0 for 3
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():
                object.__setattr__(self, name, int(value))

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)

    @classmethod
    def choices(cls, name: str) -> tuple[str, ...]:
        return next(f.metadata.get("choices", ()) for f in fields(cls) if f.name == name)

    def validated(self) -> "StrategyConfig":
        """Self after checking every field; raises InvalidParameterError naming the field."""
        for name in ("strategy", "selection", "trigger_position"):
            allowed = self.choices(name)
            if getattr(self, name) not in allowed:
                raise InvalidParameterError(f"{name} must be one of {', '.join(allowed)}, not "
                                            f"{getattr(self, name)!r}.")
        for name in ("k", "selection_seed", "samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidParameterError(f"{name} must be a whole number, not {value!r}.")
        if self.k < 0:
            raise InvalidParameterError(f"k must be 0 or more, not {self.k}.")
        if not 0 <= self.selection_seed < 2**31:
            raise InvalidParameterError(f"selection_seed={self.selection_seed} must be between 0 and {2**31 - 1}.")
        if self.strategy == SELF_CONSISTENCY and not 2 <= self.samples <= MAX_SAMPLES:
            raise InvalidParameterError(f"samples={self.samples} is out of range: self-consistency samples 2 to "
                                        f"{MAX_SAMPLES} reasoning paths.")
        if self.uses_cot and self.trigger_position == "assistant" and not self.cot_trigger.strip():
            raise InvalidParameterError("The trigger is empty: write one, or place it at the end of the question.")
        return self

    @property
    def uses_demos(self) -> bool:
        return self.strategy in (FEW_SHOT, FEW_SHOT_COT) or (self.strategy == SELF_CONSISTENCY and self.k > 0)

    @property
    def uses_cot(self) -> bool:
        return self.strategy in (ZERO_SHOT_COT, FEW_SHOT_COT, SELF_CONSISTENCY)

    @property
    def needs_rationales(self) -> bool:
        return self.uses_cot and self.uses_demos

    @property
    def demo_count(self) -> int:
        return self.k if self.uses_demos else 0

    @property
    def paths(self) -> int:
        """Completions to sample: N for self-consistency, else one."""
        return self.samples if self.strategy == SELF_CONSISTENCY else 1

    def describe(self) -> str:
        """A short label for tables: "few-shot CoT (k=3, similar)"."""
        short = {ZERO_SHOT: "zero-shot", FEW_SHOT: "few-shot", ZERO_SHOT_COT: "zero-shot CoT",
                 FEW_SHOT_COT: "few-shot CoT", SELF_CONSISTENCY: "self-consistency"}[self.strategy]
        details = []
        if self.strategy == SELF_CONSISTENCY:
            details.append(f"N={self.samples}")
        if self.uses_demos:
            details.append(f"k={self.k}, {self.selection}" + (f" seed {self.selection_seed}"
                                                                if self.selection == "random" else ""))
        return short + (f" ({', '.join(details)})" if details else "")


@dataclass(frozen=True)
class PromptSetup:
    """Everything that decides the prompt, apart from the input: task, template text and strategy."""

    task: str
    template: str  # Jinja text, possibly edited live
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    answer_kind: str = ""  # "" uses the task's kind
    system: str = ""  # optional system message
    variables: Mapping[str, str] = field(default_factory=dict)  # extra template variables
    name: str = ""  # the row's name in evaluation reports; "" uses the strategy's description
    stop: tuple[str, ...] = ()  # the template's stop sequences, added to the user's when generating

    def __post_init__(self) -> None:
        object.__setattr__(self, "variables", dict(self.variables or {}))
        object.__setattr__(self, "stop", tuple(self.stop or ()))

    @classmethod
    def from_template(cls, template: PromptTemplate, strategy: StrategyConfig | None = None,
                      **overrides: Any) -> "PromptSetup":
        """A setup from a library template (its text, system message, answer kind and variables)."""
        values = dict(task=template.task, template=template.template, strategy=strategy or StrategyConfig(),
                      answer_kind=template.answer, system=template.system, variables=dict(template.variables),
                      stop=template.stop)
        values.update(overrides)
        return cls(**values)

    @property
    def task_spec(self) -> TaskSpec:
        return get_task(self.task)

    @property
    def kind(self) -> str:
        kind = self.answer_kind or self.task_spec.answer_kind
        if kind not in ANSWER_KINDS:
            raise InvalidParameterError(f"answer_kind must be one of {', '.join(ANSWER_KINDS)}, not {kind!r}.")
        return kind

    @property
    def label(self) -> str:
        return self.name or self.strategy.describe()


@dataclass(frozen=True)
class BuiltPrompt:
    """The prompt exactly as the model receives it, and how it was made."""

    rendered: str  # the template's output (the user message)
    messages: tuple[Message, ...]  # what the chat template was applied to
    text: str  # the final prompt string sent to the engine
    answer_prefix: str  # text after the chat template's generation prompt ("" unless the trigger leads the answer)
    token_count: int
    context_window: int
    chat_template_applied: bool
    demos: tuple[Example, ...]  # the demonstrations, in prompt order
    ids: tuple[int, ...] = ()  # the prompt tokenised by its engine (empty when built for display only)
    # An encoder-decoder's prompt is its encoder's input: it must fit the window on its own, and the answer
    # (the decoder's) does not share it.
    encoder_decoder: bool = False

    @property
    def tokens(self) -> TokenizedPrompt | str:
        """What the engine gets: the text with its ids, so it is not tokenised again."""
        return TokenizedPrompt(self.text, self.ids) if self.ids else self.text

    def fits(self, max_new_tokens: int) -> bool:
        if self.encoder_decoder:
            return self.token_count <= self.context_window
        return self.token_count + max_new_tokens <= self.context_window

    def check_fits(self, max_new_tokens: int) -> "BuiltPrompt":
        """Self; raises ContextOverflowError with the token counts when prompt + answer overflow (an
        encoder-decoder: when the encoder's input does)."""
        if not self.fits(max_new_tokens):
            if self.encoder_decoder:
                raise EncoderInputOverflowError(self.token_count, self.context_window)
            raise ContextOverflowError(self.token_count, max_new_tokens, self.context_window)
        return self


@dataclass(frozen=True)
class SampledPath:
    """One generated output and the answer read from it."""

    text: str
    answer: str | None
    result: GenerationResult


@dataclass(frozen=True)
class StrategyRun:
    """What one strategy produced for one input."""

    label: str  # the setup's label
    prompt: BuiltPrompt
    output: str  # the text to show: the single output, or for self-consistency a path agreeing with the vote
    answer: str | None  # the extracted answer (self-consistency: the vote's winner); None when none was found
    paths: tuple[SampledPath, ...]  # one path, or N for self-consistency
    vote: VoteResult | None  # self-consistency only
    latency_s: float  # wall time of the generation(s)
    prompt_tokens: int
    completion_tokens: int  # over all paths
    cancelled: bool = False

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.latency_s if self.latency_s > 0 else 0.0


# --------------------------------------------------------------------------- building


def demo_variables(task: TaskSpec, demo: Example, with_rationale: bool) -> dict[str, str]:
    """A demonstration as template variables: generic names and the task's own field names."""
    return {"input": demo.input, task.input_field: demo.input, "target": demo.target,
            task.target_field: demo.target, "rationale": demo.rationale if with_rationale else ""}


def prompt_variables(setup: PromptSetup, input_text: str, demos: Sequence[Example]) -> dict[str, Any]:
    """The variables a template is rendered with."""
    task = setup.task_spec
    config = setup.strategy
    clash = sorted((RESERVED_VARIABLES | {task.input_field}).intersection(setup.variables))
    if clash:
        raise TemplateError(f"Extra variables may not reuse the names {', '.join(clash)}; rename them.")
    trigger = config.cot_trigger.strip() if config.uses_cot and config.trigger_position == "user" else ""
    variables: dict[str, Any] = dict(setup.variables)
    variables.update({
        "input": input_text, task.input_field: input_text, "task": task.id, "labels": list(task.labels),
        "demos": [demo_variables(task, d, config.needs_rationales) for d in demos],
        "cot": config.uses_cot, "cot_trigger": trigger,
    })
    return variables


def choose_demos(setup: PromptSetup, input_text: str, pool: Sequence[Example],
                 embedder: Embedder | None = None) -> tuple[Example, ...]:
    """The demonstrations the setup's strategy puts in the prompt for this input."""
    config = setup.strategy
    if not config.uses_demos:
        return ()
    demos = select_demos(pool, config.k, config.selection, seed=config.selection_seed, query=input_text,
                         embedder=embedder)
    if config.needs_rationales:
        missing = sum(1 for d in demos if not d.rationale.strip())
        if missing:
            raise InvalidParameterError(
                f"Few-shot chain-of-thought needs demonstrations with worked rationales, but {missing} of the "
                f"{len(demos)} chosen have none. Use demonstrations with rationales, or plain few-shot.")
    return demos


def check_input(input_text: str) -> None:
    """Raise InvalidParameterError for an empty input."""
    if not isinstance(input_text, str) or not input_text.strip():
        raise InvalidParameterError("The input is empty: type a sentence, question or dialogue.").keyed(
            "error.empty_input")


def build_prompt(engine: Engine, setup: PromptSetup, input_text: str, pool: Sequence[Example] = (), *,
                 embedder: Embedder | None = None, params: GenerationParams | None = None,
                 demos: Sequence[Example] | None = None) -> BuiltPrompt:
    """The final prompt for ``input_text``: render, wrap in messages, apply the chat template, count.

    ``pool`` is the demonstration set (``demos`` overrides the selection with given ones).
    With ``params`` the prompt is also checked against the context window
    (ContextOverflowError). Template problems raise TemplateError.
    """
    config = setup.strategy.validated()
    _ = setup.kind  # refuse an unknown answer kind before rendering anything
    check_input(input_text)
    template = parse_template(setup.template)  # checked and compiled once, rendered below
    used = template.variables
    if config.uses_demos and config.k > 0 and "demos" not in used:
        raise TemplateError(
            "This template never uses 'demos', so the demonstrations would be left out. Add a loop such as "
            "{% for demo in demos %}...{% endfor %}, or choose a zero-shot strategy.")
    chosen = tuple(demos) if demos is not None else choose_demos(setup, input_text.strip(), pool, embedder)
    rendered = template.render(prompt_variables(setup, input_text.strip(), chosen))
    if config.uses_cot and config.trigger_position == "user" and "cot_trigger" not in used \
            and config.cot_trigger.strip():
        rendered = f"{rendered}\n{config.cot_trigger.strip()}"
    if not rendered:
        raise TemplateError("The template rendered to an empty prompt.")
    messages: list[Message] = []
    if setup.system.strip():
        messages.append({"role": "system", "content": setup.system.strip()})
    messages.append({"role": "user", "content": rendered})
    prefix = config.cot_trigger.strip() if config.uses_cot and config.trigger_position == "assistant" else ""
    text = engine.format_chat(messages)
    if prefix:
        # "+" rather than an f-string: an engine whose server applies the template (the OpenAI-compatible one)
        # returns a str subclass that keeps its messages through "+" and sends the prefix as the answer's start.
        text = text + prefix if engine.has_chat_template else f"{text}\n{prefix}"
    ids = tuple(engine.tokenize(text))  # once: the engine gets these ids with the text
    built = BuiltPrompt(rendered=rendered, messages=tuple(messages), text=text, answer_prefix=prefix,
                        token_count=len(ids), context_window=engine.context_window,
                        chat_template_applied=engine.has_chat_template, demos=chosen, ids=ids,
                        encoder_decoder=bool(getattr(engine, "is_encoder_decoder", False)))
    if params is not None:
        built.check_fits(params.max_new_tokens)
    return built


# --------------------------------------------------------------------------- running


def effective_params(setup: PromptSetup, params: GenerationParams) -> GenerationParams:
    """``params`` with the template's stop sequences added after the user's (at most 8 in all).

    These are the settings a run really uses; pass them to ``code_snippet`` too.
    """
    stops = tuple(dict.fromkeys(params.stop + setup.stop))[:8]
    return params if stops == params.stop else replace(params, stop=stops)


@dataclass(frozen=True)
class SamplingProgress:
    """Self-consistency while its paths are sampled: paths done of ``total``, new tokens so far, and time."""

    done: int
    total: int
    tokens: int
    live_tokens: int  # new tokens of the paths still being generated
    max_new_tokens: int
    elapsed_s: float

    @classmethod
    def of(cls, report: SampleProgress, max_new_tokens: int, elapsed_s: float) -> "SamplingProgress":
        return cls(report.done, report.total, report.tokens, report.live_tokens, max_new_tokens, elapsed_s)

    @property
    def fraction(self) -> float:
        """How far the sampling is, 0 to 1: the paths done, and the live paths by their token budgets."""
        if not self.total:
            return 0.0
        budget = max(1, self.max_new_tokens)
        live = min(self.live_tokens, (self.total - self.done) * budget) / budget
        return min(1.0, (self.done + live) / self.total)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at most, at the speed so far, if every path went on to its token limit (None before the
        first token)."""
        if self.tokens <= 0 or self.elapsed_s <= 0:
            return None
        remaining = max(0, (self.total - self.done) * self.max_new_tokens - self.live_tokens)
        return remaining / (self.tokens / self.elapsed_s)


@dataclass(frozen=True)
class StrategyUpdate:
    """One step of a strategy's run: the output so far, and the finished run once it is done.

    While the run waits for its turn, ``queue_position`` says how many requests are ahead of it (for a
    generation slot, or in the engine's shared decode loop; 0: the loop is reading its prompt); None once the
    answer is coming.
    """

    text: str
    run: StrategyRun | None = None
    queue_position: int | None = None
    sampling: SamplingProgress | None = None  # self-consistency: how far its paths are


def check_sampling(setup: PromptSetup, params: GenerationParams) -> None:
    """Raise InvalidParameterError when self-consistency would sample greedily (every path the same)."""
    if setup.strategy.strategy == SELF_CONSISTENCY and params.temperature <= 0:
        raise InvalidParameterError(f"Self-consistency needs sampling: set the temperature above 0 "
                                    f"({SAMPLING_TEMPERATURE} is usual), or every path would be the same.")


def sample_paths(engine: Engine, built: BuiltPrompt, params: GenerationParams, n: int,
                 cancel: threading.Event | None = None, interval_s: float = PROGRESS_INTERVAL_S
                 ) -> Iterator[SamplingProgress | list[GenerationResult]]:
    """``engine.sample_n`` in a worker thread: a :class:`SamplingProgress` whenever it changed (at most every
    ``interval_s``), then the results. ``cancel`` reaches the sampling within ``interval_s``; so does the
    end of the caller (a closed generator stops the sampling)."""
    stop = threading.Event()
    latest: list[SampleProgress | None] = [None]
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["results"] = engine.sample_n(built.tokens, params, n, cancel=stop,
                                                 progress=lambda report: latest.__setitem__(0, report))
        except BaseException as exc:  # raised again in the caller's thread
            outcome["error"] = exc

    started = time.perf_counter()
    worker = threading.Thread(target=work, name="sample-paths", daemon=True)
    worker.start()
    shown = None
    try:
        while worker.is_alive():
            worker.join(interval_s)
            if cancel is not None and cancel.is_set():
                stop.set()
            report = latest[0]
            if report is not None and report != shown and worker.is_alive():
                shown = report
                yield SamplingProgress.of(report, params.max_new_tokens, time.perf_counter() - started)
    finally:
        stop.set()  # the caller went away (or the work is done): stop sampling
        worker.join()
    if "error" in outcome:
        raise outcome["error"]
    yield outcome["results"]


def stream_prompt(engine: Engine, built: BuiltPrompt, setup: PromptSetup, params: GenerationParams, *,
                  cancel: threading.Event | None = None, slot: SlotHolder = no_slot) -> Iterator[StrategyUpdate]:
    """Generate for a built prompt, yielding the growing output, and finally the run with its answer.

    Single-path strategies yield after every piece of text; self-consistency samples its N paths
    together, yields how far they are (``StrategyUpdate.sampling``: paths done, tokens, time left) and
    finally the run with the vote. The template's stop sequences are added to ``params``
    (``effective_params``); ``cancel`` stops the generation early (the run is then marked cancelled);
    ``slot`` is held only while the model generates (the app's generation slots). The prompt reaches the
    engine as the ids it was counted with, so it is not tokenised again. While the run waits for its turn,
    updates with no new text say how many requests are ahead (``StrategyUpdate.queue_position``).
    """
    config = setup.strategy
    params = effective_params(setup, params)
    check_sampling(setup, params)
    # A single path that joins the engine's shared decode loop is admitted by the loop, not by a slot.
    generation = None if config.strategy == SELF_CONSISTENCY else engine.stream(built.tokens, params)
    with line_for(slot_for(slot, generation), cancel) as place:
        waited = False
        for ahead in place.positions():  # waiting for a generation slot
            waited = True
            yield StrategyUpdate("", queue_position=ahead)
        if waited and place.held:  # its turn: a single path reads its prompt first; self-consistency samples
            yield StrategyUpdate("", queue_position=0 if generation is not None else None)
        started = time.perf_counter()
        if not place.held:  # cancelled while waiting for a slot
            results = [GenerationResult(text="", prompt_tokens=built.token_count, completion_tokens=0,
                                        time_to_first_token_s=0.0, total_s=0.0, finish_reason="cancelled",
                                        engine=engine.name, model_id=engine.model_id)]
        elif generation is None:
            results = []
            for step in sample_paths(engine, built, params, config.samples, cancel):
                if isinstance(step, SamplingProgress):
                    yield StrategyUpdate("", sampling=step)
                else:
                    results = step
        else:
            text, shown = "", None
            for piece in generation:
                if piece:
                    shown = None
                    text += piece
                    yield StrategyUpdate(text)
                elif getattr(generation, "queue_position", None) != shown:  # a batched generation waiting
                    shown = generation.queue_position  # for its turn in the decode loop
                    yield StrategyUpdate(text, queue_position=shown)
                if cancel is not None and cancel.is_set():
                    generation.cancel()
            assert generation.result is not None
            results = [generation.result]
        latency = time.perf_counter() - started
    yield StrategyUpdate(*_finished(built, setup, results, latency, cancel))


def _finished(built: BuiltPrompt, setup: PromptSetup, results: list[GenerationResult], latency: float,
              cancel: threading.Event | None) -> tuple[str, StrategyRun]:
    """(the text to show, the run) once the outputs are in: answers extracted, votes counted."""
    config = setup.strategy
    kind, labels = setup.kind, setup.task_spec.labels
    paths = tuple(SampledPath(r.text, extract_answer(r.text, kind, labels), r) for r in results)
    vote = majority_vote([p.answer for p in paths]) if config.strategy == SELF_CONSISTENCY else None
    if vote is not None:
        answer = vote.winner
        output = next((p.text for p in paths if p.answer == answer), paths[0].text if paths else "")
    else:
        answer, output = paths[0].answer, paths[0].text
    cancelled = (cancel is not None and cancel.is_set()) or any(r.finish_reason == "cancelled" for r in results)
    run = StrategyRun(
        label=setup.label, prompt=built, output=output, answer=answer, paths=paths, vote=vote, latency_s=latency,
        prompt_tokens=built.token_count, completion_tokens=sum(r.completion_tokens for r in results),
        cancelled=cancelled,
    )
    return output, run


def run_prompt(engine: Engine, built: BuiltPrompt, setup: PromptSetup, params: GenerationParams, *,
               cancel: threading.Event | None = None, slot: SlotHolder = no_slot) -> StrategyRun:
    """:func:`stream_prompt` to the end: the finished run."""
    for update in stream_prompt(engine, built, setup, params, cancel=cancel, slot=slot):
        if update.run is not None:
            return update.run
    raise AssertionError("stream_prompt ended without a run")


def run_strategy(engine: Engine, setup: PromptSetup, input_text: str, pool: Sequence[Example],
                 params: GenerationParams, *, embedder: Embedder | None = None,
                 cancel: threading.Event | None = None, slot: SlotHolder = no_slot) -> StrategyRun:
    """Build the prompt for ``input_text`` and run it to the end.

    The template renders before ``slot`` is taken: rendering never keeps a generation waiting.
    """
    built = build_prompt(engine, setup, input_text, pool, embedder=embedder, params=params)
    return run_prompt(engine, built, setup, params, cancel=cancel, slot=slot)


def suggested_params(task: str | TaskSpec, config: StrategyConfig, base: GenerationParams | None = None
                     ) -> GenerationParams:
    """Generation settings that suit a task and strategy (short answers short, reasoning longer).

    Direct label and choice answers get 8 new tokens, numbers and words 16, dates 24, summaries and translations 80,
    reasoning 128; greedy decoding, except self-consistency (temperature 0.7, seed 0).
    """
    task = get_task(task) if isinstance(task, str) else task
    base = base or GenerationParams()
    if config.uses_cot:
        tokens = 128
    else:
        tokens = {"label": 8, "choice": 8, "number": 16, "word": 16, "date": 24}.get(task.answer_kind, 80)
    if config.strategy == SELF_CONSISTENCY:
        return replace(base, max_new_tokens=tokens, temperature=SAMPLING_TEMPERATURE, top_p=0.95, top_k=40, seed=0)
    return replace(base, max_new_tokens=tokens, temperature=0.0, seed=0)
