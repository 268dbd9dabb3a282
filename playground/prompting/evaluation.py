"""Evaluate prompting strategies on a labelled set: per-strategy scores and a per-example table.

``evaluate`` runs every chosen strategy over the examples (strategy by
strategy, so a shared demonstration prefix stays in llama.cpp's KV cache from
one example to the next) and scores the answers:

- labels (sentiment): accuracy;
- numbers (arithmetic): exact match of the extracted number;
- dates and words (date arithmetic, last letters): exact match after normalising (ISO date, lower case);
- multiple-choice letters (commonsense questions): accuracy;
- free text (summaries, translations): ROUGE-1/2/L F1 from ``rouge-score``.

An answer that cannot be extracted counts as wrong. ``progress`` hears an
:class:`EvaluationProgress` after every example (runs done of planned, the
strategy, new tokens, time and time left); a ``threading.Event`` passed as
``cancel`` is checked between examples, and a cancelled evaluation returns the
part it finished, marked ``cancelled``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from playground.backends.base import Engine, GenerationParams
from playground.backends.slots import SlotHolder, no_slot, requests_decoded_together
from playground.errors import InvalidParameterError
from playground.prompting.data import LabelledSet
from playground.prompting.demos import Embedder
from playground.prompting.extraction import is_correct
from playground.prompting.strategies import PromptSetup, StrategyRun, build_prompt, run_prompt
from playground.prompting.tasks import SIMILAR

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
MAX_EVAL_EXAMPLES = 2_000
EXAMPLES_IN_FLIGHT = 4  # examples one evaluation decodes together; the rest of the room's requests share the loop too



@dataclass(frozen=True)
class EvaluationProgress:
    """How far an evaluation is: example runs done of ``planned`` (examples x strategies), the strategy being
    run and its examples done of ``examples``, the new tokens so far, the time taken, and the last answer."""

    done: int
    planned: int
    strategy: str = ""  # the setup's label
    strategy_done: int = 0
    examples: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    correct: bool | None = None  # the last example's answer: right, wrong, or None (free text, or none yet)
    finished: bool = False
    cancelled: bool = False

    @property
    def fraction(self) -> float:
        return self.done / self.planned if self.planned else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (None before the first example is done, or once finished)."""
        if self.finished or not self.done or self.elapsed_s <= 0:
            return None
        return self.elapsed_s / self.done * (self.planned - self.done)


Progress = Callable[[EvaluationProgress], None]


def rouge_scores(prediction: str | None, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 (0 to 1) of one prediction against one reference (stemmed)."""
    from rouge_score import rouge_scorer

    if not prediction:
        return {name: 0.0 for name in ROUGE_TYPES}
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores = scorer.score(reference, prediction)
    return {name: float(scores[name].fmeasure) for name in ROUGE_TYPES}


@dataclass(frozen=True)
class ExampleResult:
    """One row of the per-example table."""

    strategy: str  # the setup's label
    index: int  # position in the evaluated examples (0-based)
    input: str
    target: str
    prompt: str  # the final prompt text
    output: str
    answer: str | None  # None: no answer could be extracted (counted wrong)
    correct: bool | None  # None for free-text tasks (scored with ROUGE instead)
    scores: Mapping[str, float]  # ROUGE for free text; empty otherwise
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    votes: Mapping[str, int] = field(default_factory=dict)  # self-consistency's histogram

    def as_row(self) -> dict:
        row = {"strategy": self.strategy, "#": self.index + 1, "input": self.input, "target": self.target,
               "prompt": self.prompt, "output": self.output, "answer": self.answer, "correct": self.correct}
        row.update({name: round(value, 4) for name, value in self.scores.items()})
        if self.votes:
            row["votes"] = ", ".join(f"{answer}: {count}" for answer, count in self.votes.items())
        row.update(latency_s=round(self.latency_s, 3), prompt_tokens=self.prompt_tokens,
                   completion_tokens=self.completion_tokens)
        return row


@dataclass(frozen=True)
class StrategyScore:
    """One strategy's scores over the examples it ran on."""

    strategy: str
    examples: int
    metrics: Mapping[str, float]  # accuracy / exact_match (0-1), or rouge1 / rouge2 / rougeL (0-1)
    unanswered: int  # outputs with no extractable answer
    latency_s: float  # total generation time
    completion_tokens: int

    @property
    def mean_latency_s(self) -> float:
        return self.latency_s / self.examples if self.examples else 0.0

    def as_row(self) -> dict:
        row = {"strategy": self.strategy, "examples": self.examples}
        row.update({name: round(value, 4) for name, value in self.metrics.items()})
        row.update(unanswered=self.unanswered, mean_latency_s=round(self.mean_latency_s, 3),
                   total_latency_s=round(self.latency_s, 2))
        return row


@dataclass(frozen=True)
class EvaluationReport:
    """Scores per strategy, the per-example table, and whether the run was cancelled."""

    task: str
    source: str
    scores: tuple[StrategyScore, ...]
    results: tuple[ExampleResult, ...]
    cancelled: bool
    elapsed_s: float
    planned: int  # example runs planned (examples x strategies)

    def summary_rows(self) -> list[dict]:
        return [score.as_row() for score in self.scores]

    def rows(self) -> list[dict]:
        return [result.as_row() for result in self.results]

    def score(self, strategy: str) -> StrategyScore:
        return next(s for s in self.scores if s.strategy == strategy)


def _metric_name(kind: str) -> str:
    return {"label": "accuracy", "choice": "accuracy", "number": "exact_match", "date": "exact_match",
            "word": "exact_match"}[kind]


def score_results(strategy: str, kind: str, results: Sequence[ExampleResult]) -> StrategyScore:
    """Aggregate one strategy's rows: accuracy / exact match, or mean ROUGE F1."""
    n = len(results)
    if kind == "text":
        metrics = {name: (sum(r.scores.get(name, 0.0) for r in results) / n if n else 0.0) for name in ROUGE_TYPES}
    else:
        metrics = {_metric_name(kind): (sum(1 for r in results if r.correct) / n if n else 0.0)}
    return StrategyScore(strategy=strategy, examples=n, metrics=metrics,
                         unanswered=sum(1 for r in results if r.answer is None),
                         latency_s=sum(r.latency_s for r in results),
                         completion_tokens=sum(r.completion_tokens for r in results))


def _example_result(setup: PromptSetup, index: int, text: str, target: str, run: StrategyRun) -> ExampleResult:
    kind = setup.kind
    if kind == "text":
        correct, scores = None, rouge_scores(run.answer, target)
    else:
        correct, scores = is_correct(run.answer, target, kind, setup.task_spec.labels), {}
    return ExampleResult(
        strategy=setup.label, index=index, input=text, target=target, prompt=run.prompt.text, output=run.output, answer=run.answer, correct=correct,
        scores=scores, latency_s=run.latency_s, prompt_tokens=run.prompt_tokens,
        completion_tokens=run.completion_tokens, votes=run.vote.histogram if run.vote else {},
    )


def evaluate(engine: Engine, setups: Sequence[PromptSetup], data: LabelledSet,
             params: GenerationParams | Sequence[GenerationParams], *, limit: int | None = None,
             embedder: Embedder | None = None, progress: Progress | None = None,
             cancel: threading.Event | None = None, slot: SlotHolder = no_slot) -> EvaluationReport:
    """Run each setup over ``data``'s examples and score them.

    ``params`` is one GenerationParams for every setup, or one per setup. ``limit``
    evaluates only the first examples. ``embedder`` is needed by setups that choose the
    most similar demonstrations. Template and parameter problems are raised before the
    first generation. ``slot`` is taken for each example's generation and given back after it. On an
    engine with a shared decode loop (llama.cpp) up to ``EXAMPLES_IN_FLIGHT`` examples are decoded together.
    """
    started = time.perf_counter()
    setups = list(setups)
    if not setups:
        raise InvalidParameterError("Choose at least one strategy to evaluate.")
    per_setup = list(params) if isinstance(params, (list, tuple)) else [params] * len(setups)
    if len(per_setup) != len(setups):
        raise InvalidParameterError(f"Give one set of generation parameters, or one per strategy "
                                    f"({len(setups)}), not {len(per_setup)}.")
    for setup in setups:
        if setup.task != data.task.id:
            raise InvalidParameterError(f"The strategy {setup.label!r} is for the task {setup.task!r}, but the "
                                        f"examples are for {data.task.id!r}.")
    labels = [s.label for s in setups]
    if len(set(labels)) != len(labels):
        raise InvalidParameterError("Two strategies have the same name; give each a distinct name.")
    examples = data.limited(limit).examples
    if not examples:
        raise InvalidParameterError("There are no examples to evaluate.")
    if len(examples) > MAX_EVAL_EXAMPLES:
        raise InvalidParameterError(f"{len(examples)} examples; evaluate at most {MAX_EVAL_EXAMPLES} at once.")
    if embedder is not None and any(s.strategy.uses_demos and s.strategy.selection == SIMILAR for s in setups):
        embedder.embed([e.input for e in examples] + [d.input for d in data.demos])  # one batch, then cached

    # Build every first prompt before generating anything, so a broken template fails fast (and keep them).
    first_prompts = [build_prompt(engine, setup, examples[0].input, data.demos, embedder=embedder, params=p)
                     for setup, p in zip(setups, per_setup)]

    planned = len(examples) * len(setups)
    done = 0
    tokens = 0
    cancelled = False
    rows: list[ExampleResult] = []
    scores: list[StrategyScore] = []
    # An engine with a shared decode loop decodes several examples in one batch; the others take them in turn.
    in_flight = min(EXAMPLES_IN_FLIGHT, requests_decoded_together(engine))
    halt = threading.Event()  # set on cancel or a failed example: the examples in flight stop
    for setup, p, first_prompt in zip(setups, per_setup, first_prompts):
        def one(index: int, setup=setup, p=p, first_prompt=first_prompt) -> StrategyRun:
            built = first_prompt if index == 0 else build_prompt(engine, setup, examples[index].input, data.demos,
                                                                 embedder=embedder, params=p)
            return run_prompt(engine, built, setup, p, cancel=halt, slot=slot)

        mine: list[ExampleResult] = []
        with ThreadPoolExecutor(in_flight, thread_name_prefix="evaluate") as pool:
            waiting = iter(range(len(examples)))
            running = {}
            error: BaseException | None = None
            while True:
                if cancel is not None and cancel.is_set():
                    halt.set()
                while len(running) < in_flight and not halt.is_set():
                    index = next(waiting, None)
                    if index is None:
                        break
                    running[pool.submit(one, index)] = index
                if not running:
                    break
                finished, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = running.pop(future)
                    try:
                        run = future.result()
                    except BaseException as exc:  # the first failure is raised once the rest have stopped
                        halt.set()
                        error = error or exc
                        continue
                    if run.cancelled:
                        halt.set()
                        continue
                    example = examples[index]
                    result = _example_result(setup, index, example.input, example.target, run)
                    mine.append(result)
                    done += 1
                    tokens += result.completion_tokens
                    if progress is not None:
                        progress(EvaluationProgress(done, planned, setup.label, len(mine), len(examples), tokens,
                                                    time.perf_counter() - started, result.correct))
            if error is not None:
                raise error
        cancelled = cancelled or halt.is_set()
        mine.sort(key=lambda r: r.index)
        rows.extend(mine)
        if mine:
            scores.append(score_results(setup.label, setup.kind, mine))
        if cancelled:
            break
    if progress is not None:
        progress(EvaluationProgress(done, planned, tokens=tokens, elapsed_s=time.perf_counter() - started,
                                    finished=True, cancelled=cancelled))
    return EvaluationReport(task=data.task.id, source=data.source, scores=tuple(scores), results=tuple(rows),
                            cancelled=cancelled, elapsed_s=time.perf_counter() - started, planned=planned)
