"""The Prompt Lab's controller: preview, run, compare and evaluate, each from one request dataclass.

The Prompt Lab tab only lays out widgets, turns their values into a
:class:`LabRequest` and calls :class:`PromptLab`; everything the page decides
lives here: which template a strategy uses, the generation settings each
strategy gets, which demonstrations a task offers, the length limits, where
"show the code" takes the model from. Models come through
:class:`ModelChoices`, one person's view of the catalog and their fine-tuned
runs (made by ``Services.models_for``), so this module knows nothing of run
stores, identities or gradio.

A run is a generator from start to finish: the prompt is validated, rendered
and tokenised once, before a generation slot is taken, and its ids go to the
engine, which streams the answer.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Mapping, Protocol, Sequence

from playground.backends.base import Engine, GenerationParams
from playground.backends.slots import SlotHolder, no_slot
from playground.errors import InvalidParameterError
from playground.prompting.columns import MAX_COLUMNS, Column, ColumnState, choose_template, run_columns
from playground.prompting.data import ColumnMapping, LabelledSet, file_columns, labelled_set_from_upload, \
    load_bundled
from playground.prompting.demos import Embedder
from playground.prompting.evaluation import EvaluationReport, Progress, evaluate
from playground.prompting.setups import AppliedSetup, LabSetup, choose_model, get_setup, load_setups
from playground.prompting.snippet import code_snippet
from playground.prompting.strategies import BuiltPrompt, PromptSetup, SamplingProgress, StrategyConfig, StrategyRun, \
    build_prompt, check_input, check_sampling, effective_params, stream_prompt, suggested_params
from playground.prompting.tasks import FEW_SHOT, SELF_CONSISTENCY, STRATEGIES, TASKS, ZERO_SHOT, get_task
from playground.prompting.templates import PromptTemplate, TemplateLibrary, parse_template

MAX_TRIGGER_CHARS = 500
MAX_EVAL_LIMIT = 200
OFF = "off"  # a side-by-side column that is not used
BUNDLED, UPLOAD = "bundled", "upload"  # where an evaluation's examples come from


class ModelChoices(Protocol):
    """The models one person may use: the catalog's, and their own finished fine-tuning runs."""

    def engine(self, model_id: str, engine: str) -> Engine:
        """A loaded engine for the model, with the engine choice (auto, llama.cpp or transformers)."""

    def label(self, model_id: str) -> str:
        """How the page names the model (a run's label, else its id)."""

    def code_source(self, model_id: str, engine: str) -> dict:
        """Where "show the code" takes the model from: keyword arguments of ``code_snippet``."""


@dataclass(frozen=True)
class LabRequest:
    """What the prompt controls say: task, template (as edited), strategy, model, input and settings."""

    task: str
    template_id: str
    model_id: str
    text: str
    params: GenerationParams = field(default_factory=GenerationParams)  # checked by the controller
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    template_text: str = ""  # the editor's text; it runs when the chosen template suits the strategy
    system: str = ""
    engine: str = "auto"  # auto, llama.cpp or transformers


@dataclass(frozen=True)
class Preview:
    """The prompt exactly as the model receives it, the settings a run would use, and the code for it."""

    prompt: BuiltPrompt
    params: GenerationParams
    code: str


@dataclass(frozen=True)
class RunUpdate:
    """One step of the Run button: loading, then the growing output, then the finished run."""

    text: str = ""
    run: StrategyRun | None = None
    loading: bool = False
    sampling: int = 0  # self-consistency: the number of paths being sampled together
    queue_position: int | None = None  # waiting for its turn: requests ahead (0: its prompt is being read)
    progress: SamplingProgress | None = None  # self-consistency: paths done, tokens so far, time left


@dataclass(frozen=True)
class EvaluationRequest:
    """Which strategies to score, on which examples."""

    strategies: tuple[str, ...]
    source: str = BUNDLED  # bundled or upload
    upload: Path | None = None
    mapping: ColumnMapping | None = None
    demo_rows: int = 0  # the upload's first rows serve as demonstrations
    limit: int = 20


class PromptLab:
    """The Prompt Lab's logic for one app: its template library, bundled data, embedder and slots."""

    def __init__(self, library: TemplateLibrary, *, embedder: Embedder | None = None, slot: SlotHolder = no_slot,
                 max_chars: int = 20_000, token_limit: int | None = None,
                 bundled: Mapping[str, LabelledSet] | None = None, setups: Sequence[LabSetup] | None = None
                 ) -> None:
        self.library = library
        # The bundled setups (examples/setups/prompt_lab.yaml): one choice fills every prompt control.
        self.setups = tuple(setups) if setups is not None else load_setups(library)
        self.embedder = embedder
        self.slot = slot
        self.max_chars = max_chars
        self.token_limit = token_limit
        self.bundled = dict(bundled) if bundled is not None else {task: load_bundled(task) for task in TASKS}

    # ------------------------------------------------------------------ what the controls offer
    @staticmethod
    def strategies_for(task: str) -> tuple[str, ...]:
        """The strategies a task offers: reasoning ones only where an answer can be checked."""
        return STRATEGIES if get_task(task).supports_reasoning else (ZERO_SHOT, FEW_SHOT)

    def templates_for(self, task: str, strategy: str) -> list[PromptTemplate]:
        return self.library.for_task(task, strategy)

    def template_text(self, template_id: str, saved: Mapping[str, Mapping[str, str]] | None = None
                      ) -> tuple[str, str]:
        """(template text, system message) of a template: the session's saved edit, else the library's."""
        edited = (saved or {}).get(template_id)
        if edited:
            return edited["template"], edited["system"]
        chosen = self.library.get(template_id)
        return chosen.template, chosen.system

    def check_template(self, template_id: str, text: str) -> None:
        """Raise TemplateError (with its line) unless ``text`` could be saved as ``template_id``'s edit."""
        parse_template(text or "")
        self.library.get(template_id)

    def suggested(self, task: str, strategy: str) -> GenerationParams:
        """Generation settings that suit a task and strategy, within the app's token limit."""
        params = suggested_params(task, StrategyConfig(strategy=strategy))
        limit = self.token_limit or params.max_new_tokens
        return replace(params, max_new_tokens=min(params.max_new_tokens, limit))

    def demos(self, task: str) -> tuple:
        """The bundled demonstration pool of a task."""
        return self.bundled[get_task(task).id].demos

    def example(self, task: str, rng: random.Random | None = None) -> str:
        """A bundled input of the task, at random."""
        return (rng or random).choice(self.bundled[get_task(task).id].examples).input

    def first_example(self, task: str) -> str:
        return self.bundled[get_task(task).id].examples[0].input

    def apply_setup(self, setup_id: str, available: Sequence[str]) -> AppliedSetup:
        """What choosing a bundled setup sets: its controls, the first of its models among ``available`` (the
        pickers' model ids; None when none is here), its input (a bundled example) and the settings that suit it."""
        setup = get_setup(self.setups, setup_id)
        examples = self.bundled[get_task(setup.task).id].examples
        text = examples[min(setup.example, len(examples) - 1)].input if examples else ""
        return AppliedSetup(setup, choose_model(setup, available), text, self.suggested(setup.task, setup.strategy))

    @staticmethod
    def upload_columns(path: Path) -> list[str]:
        """The column names of an uploaded file, in file order."""
        return file_columns(Path(path).read_bytes(), Path(path).name)

    # ------------------------------------------------------------------ building blocks
    def checked(self, request: LabRequest) -> LabRequest:
        """The request after the checks every action shares: the task and the lengths of its texts.

        The strategy settings are checked where the prompt is built, the generation settings where the
        engine takes them (each once).
        """
        for name, value, limit in (("input", request.text, self.max_chars),
                                   ("system message", request.system, self.max_chars),
                                   ("chain-of-thought trigger", request.strategy.cot_trigger, MAX_TRIGGER_CHARS)):
            if len(value or "") > limit:
                raise InvalidParameterError(f"The {name} has {len(value):,} characters; the limit is {limit:,} "
                                            f"(PLAYGROUND_MAX_PROMPT_CHARS for the input and system message).")
        get_task(request.task)
        return request

    def setup(self, request: LabRequest, strategy: str | None = None) -> tuple[PromptSetup, PromptTemplate]:
        """The setup for ``strategy`` (default: the request's): the edited template when it suits, else the
        task's first library template that does."""
        strategy = strategy or request.strategy.strategy
        chosen = self.library.get(request.template_id)
        if chosen.task != request.task:
            raise InvalidParameterError(f"The template {chosen.id!r} is for the task {chosen.task!r}, not "
                                        f"{request.task!r}.")
        template = choose_template(self.library, request.task, strategy, chosen)
        setup = PromptSetup.from_template(template, replace(request.strategy, strategy=strategy))
        if template is chosen:  # the text in the editor, possibly edited, is what runs
            setup = replace(setup, template=request.template_text or "", system=request.system or "")
        return setup, template

    def params_for(self, request: LabRequest, setup: PromptSetup) -> GenerationParams:
        """The request's own settings for its strategy; another strategy gets the settings that suit it."""
        if setup.strategy.strategy == request.strategy.strategy:
            return request.params
        return suggested_params(request.task, setup.strategy, request.params)

    # ------------------------------------------------------------------ checks before the work starts
    def check_run(self, request: LabRequest, models: ModelChoices) -> None:
        """Raise the error a run of ``request`` would meet before generating (template, input, settings,
        model, context window), without generating; the page checks this before it starts a run."""
        request = self.checked(request)
        setup, _ = self.setup(request)
        check_sampling(setup, request.params)
        engine = models.engine(request.model_id, request.engine)
        build_prompt(engine, setup, request.text, self.demos(request.task), embedder=self.embedder,
                     params=request.params)

    def check_compare(self, request: LabRequest, choices: Sequence[tuple[str, str]]) -> None:
        """Raise the error a side-by-side run would meet for every column (no column, no input); a problem of
        one column (its model, its template) shows in that column instead."""
        self.columns(request, choices)
        check_input(request.text)

    def check_evaluation(self, request: LabRequest, evaluation: EvaluationRequest, models: ModelChoices) -> None:
        """Raise the error an evaluation would meet before generating: the data, the count, the strategies and
        every strategy's prompt for the first example."""
        engine, setups, data, _ = self._evaluation_plan(request, evaluation, models)
        first = data.examples[0].input if data.examples else ""
        for setup in setups:
            params = self.params_for(request, setup)
            check_sampling(setup, params)
            build_prompt(engine, setup, first, data.demos, embedder=self.embedder, params=params)

    # ------------------------------------------------------------------ the four actions
    def preview(self, request: LabRequest, models: ModelChoices, code_engine: str) -> Preview:
        """The final prompt as the model receives it, its token count, and a script that reproduces a run."""
        request = self.checked(request)
        setup, _ = self.setup(request)
        params = effective_params(setup, request.params)
        engine = models.engine(request.model_id, request.engine)
        built = build_prompt(engine, setup, request.text, self.demos(request.task), embedder=self.embedder)
        code = code_snippet(built, params, samples=setup.strategy.paths,
                            **models.code_source(request.model_id, code_engine))
        return Preview(built, params, code)

    def run(self, request: LabRequest, models: ModelChoices, cancel: threading.Event | None = None
            ) -> Iterator[RunUpdate]:
        """The Run button: load the model, build the prompt, and stream the answer to the finished run."""
        request = self.checked(request)
        setup, _ = self.setup(request)
        check_sampling(setup, request.params)
        yield RunUpdate(loading=True)
        engine = models.engine(request.model_id, request.engine)
        built = build_prompt(engine, setup, request.text, self.demos(request.task), embedder=self.embedder,
                             params=request.params)
        sampling = setup.strategy.samples if setup.strategy.strategy == SELF_CONSISTENCY else 0
        if sampling:
            yield RunUpdate(sampling=sampling)
        for update in stream_prompt(engine, built, setup, request.params, cancel=cancel, slot=self.slot):
            yield RunUpdate(text=update.text, run=update.run, sampling=sampling, queue_position=update.queue_position,
                            progress=update.sampling)

    def columns(self, request: LabRequest, choices: Sequence[tuple[str, str]]) -> list[tuple[int, Column]]:
        """(slot, column) for each used (strategy, model) choice; a strategy other than the request's gets
        the settings that suit it."""
        request = self.checked(request)
        if len(choices) > MAX_COLUMNS:
            raise InvalidParameterError(f"{len(choices)} columns; compare at most {MAX_COLUMNS} side by side.")
        columns = []
        for slot, (strategy, model_id) in enumerate(choices):
            if not strategy or strategy == OFF:
                continue
            setup, template = self.setup(request, strategy)
            columns.append((slot, Column(setup, model_id, self.params_for(request, setup), template.name)))
        if not columns:
            raise InvalidParameterError("Choose a strategy for at least one column.")
        return columns

    def compare(self, request: LabRequest, choices: Sequence[tuple[str, str]], models: ModelChoices,
                cancel: threading.Event | None = None) -> Iterator[list[ColumnState | None]]:
        """Side by side: every column's state after each change, ``None`` where a column is off."""
        placed = self.columns(request, choices)
        engines = lambda model_id: models.engine(model_id, request.engine)  # noqa: E731
        for states in run_columns([column for _, column in placed], request.text, self.demos(request.task),
                                  engines, embedder=self.embedder, cancel=cancel, slot=self.slot):
            views: list[ColumnState | None] = [None] * len(choices)
            for (slot, _), state in zip(placed, states):
                views[slot] = state
            yield views

    def evaluation_data(self, request: LabRequest, evaluation: EvaluationRequest) -> LabelledSet:
        if evaluation.source != UPLOAD:
            return self.bundled[get_task(request.task).id]
        if not evaluation.upload:
            raise InvalidParameterError("Upload a JSONL or CSV file first, or evaluate on the bundled examples.")
        path = Path(evaluation.upload)
        return labelled_set_from_upload(path, evaluation.mapping or ColumnMapping("", ""), request.task,
                                        filename=path.name, demo_rows=int(evaluation.demo_rows or 0))

    def _evaluation_plan(self, request: LabRequest, evaluation: EvaluationRequest, models: ModelChoices
                         ) -> tuple[Engine, list[PromptSetup], LabelledSet, int]:
        """(engine, setups in the page's order, examples, limit) of an evaluation, after its checks."""
        request = self.checked(request)
        data = self.evaluation_data(request, evaluation)
        limit = int(evaluation.limit)
        if not 1 <= limit <= MAX_EVAL_LIMIT:
            raise InvalidParameterError(f"Evaluate 1 to {MAX_EVAL_LIMIT} examples at once, not {limit}.")
        setups = [self.setup(request, strategy)[0] for strategy in STRATEGIES if strategy in evaluation.strategies]
        if not setups:
            raise InvalidParameterError("Choose at least one strategy to evaluate.")
        return models.engine(request.model_id, request.engine), setups, data, limit

    def evaluate(self, request: LabRequest, evaluation: EvaluationRequest, models: ModelChoices, *,
                 progress: Progress | None = None, cancel: threading.Event | None = None,
                 max_new_tokens: int | None = None) -> EvaluationReport:
        """Score the chosen strategies on the bundled or uploaded examples (one slot per example); with
        ``max_new_tokens``, no strategy's answers get more new tokens than that (the Arena's judge)."""
        engine, setups, data, limit = self._evaluation_plan(request, evaluation, models)
        params = [self.params_for(request, s) for s in setups]
        if max_new_tokens:
            params = [replace(p, max_new_tokens=min(p.max_new_tokens, int(max_new_tokens))) for p in params]
        return evaluate(engine, setups, data, params, limit=limit,
                        embedder=self.embedder, progress=progress, cancel=cancel, slot=self.slot)


def request_from_controls(values: Mapping[str, object], params: GenerationParams) -> LabRequest:
    """A LabRequest from the prompt controls' values by name (numbers from widgets may be floats)."""
    strategy = StrategyConfig(strategy=str(values["strategy"] or ZERO_SHOT), k=int(values["k"] or 0),
                              selection=str(values["selection"] or ""),
                              selection_seed=int(values["selection_seed"] or 0),
                              cot_trigger=str(values["cot_trigger"] or ""),
                              trigger_position=str(values["trigger_position"] or ""),
                              samples=int(values["samples"] or 0))
    return LabRequest(task=str(values["task"] or ""), template_id=str(values["template_id"] or ""),
                      model_id=str(values["model_id"] or ""), text=str(values["text"] or ""), params=params,
                      strategy=strategy, template_text=str(values["template_text"] or ""),
                      system=str(values["system"] or ""), engine=str(values["engine"] or "auto"))

