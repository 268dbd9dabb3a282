"""Prompt Lab: self-consistency's cost over one sample, and a whole sentiment evaluation, on llama.cpp.

Two promises are measured here; the timing functions take any engine (a test runs them on a tiny one):

1. ``time_self_consistency``: N sampled reasoning paths cost little more than
   one, because the prompt is processed once (llama.cpp decodes the paths in one
   batch of parallel sequences; transformers uses ``num_return_sequences``).
   On the same few-shot chain-of-thought prompt, "one sample" is timed once per
   seed of the N paths (sampled answers differ in length, so one seed alone
   would be a lucky or unlucky yardstick) and averaged; then the N samples are
   timed together. Before every timed call a different prompt flushes the
   caches, so each evaluates the prompt from scratch. Target: N=5 at most
   2.0 x one sample (issue 18).
2. ``time_sentiment_evaluation``: a whole evaluation of the bundled sentiment
   set (60 examples). Target on the default model, two cores: under 2 minutes.

:func:`bench_prompt_lab` turns both into the bench's figures. Tests never assert these times; they
only check the functions run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

from playground.backends.base import Engine, GenerationParams
from playground.bench.core import BenchOptions, Figure, Measure
from playground.prompting.data import load_bundled
from playground.prompting.evaluation import EvaluationReport, Progress, evaluate
from playground.prompting.strategies import (
    PromptSetup,
    StrategyConfig,
    build_prompt,
    effective_params,
    suggested_params,
)
from playground.prompting.tasks import FEW_SHOT, SELF_CONSISTENCY, ZERO_SHOT
from playground.prompting.templates import TemplateLibrary

FLUSH_PROMPT = "Name one colour of the rainbow."
SAMPLES = 5  # the self-consistency paths the figure times

SELF_CONSISTENCY_COST = Measure(f"Prompt Lab: self-consistency N={SAMPLES} / one sample", "x", "<= 2.0")
SENTIMENT_EXAMPLES = 60  # the bundled set; the target is judged only on a whole evaluation
SENTIMENT_EVALUATION = Measure(f"Prompt Lab: evaluate {SENTIMENT_EXAMPLES} sentiment examples", "s", "< 120 s")


@dataclass(frozen=True)
class SelfConsistencyTiming:
    """One sample against N samples of the same prompt (seconds: medians over the rounds)."""

    samples: int
    prompt_tokens: int
    max_new_tokens: int
    single_s: float  # one sample: the mean over the N paths' seeds, each generated alone
    parallel_s: float  # the N samples in one sample_n call
    single_tokens: float  # completion tokens of one sample (mean over the seeds, median over rounds)
    parallel_tokens: int  # completion tokens of all N samples together (median over rounds)
    rounds: int

    @property
    def ratio(self) -> float:
        """N samples' time over one sample's time (target: at most 2.0 for N=5, issue 18)."""
        return self.parallel_s / self.single_s if self.single_s > 0 else float("inf")


def self_consistency_setup(k: int = 4, samples: int = 5, template_id: str = "arithmetic-qa") -> PromptSetup:
    """The self-consistency setup the bench times: few-shot CoT arithmetic, k fixed demonstrations."""
    template = TemplateLibrary.load().get(template_id)
    return PromptSetup.from_template(template, StrategyConfig(strategy=SELF_CONSISTENCY, k=k, samples=samples))


def _flush(engine: Engine, params: GenerationParams) -> None:
    """Send another prompt through both paths, so the next prompt is evaluated from scratch."""
    flush = engine.format_chat([{"role": "user", "content": FLUSH_PROMPT}])
    tiny = replace(params, max_new_tokens=2, stop=())
    engine.generate(flush, tiny)
    engine.sample_n(flush, tiny, 2)


def time_self_consistency(engine: Engine, samples: int = 5, rounds: int = 3, setup: PromptSetup | None = None,
                          params: GenerationParams | None = None, question_index: int = 0
                          ) -> SelfConsistencyTiming:
    """Time of one sample (mean over the N paths' seeds) and of ``samples`` samples together.

    Round ``r`` uses seeds ``r * samples`` to ``r * samples + samples - 1`` for both, so the
    single samples are exactly the N paths, each generated alone. The template's stop
    sequences apply, as in a real run.
    """
    setup = setup or self_consistency_setup(samples=samples)
    data = load_bundled(setup.task)
    params = params or suggested_params(setup.task, setup.strategy)
    built = build_prompt(engine, setup, data.examples[question_index].input, data.demos, params=params)
    params = effective_params(setup, params)
    singles, parallels, single_tokens, parallel_tokens = [], [], [], []
    for round_ in range(rounds):
        base = round_ * samples
        times, tokens = [], []
        for i in range(samples):  # path i of sample_n uses seed base + i
            seeded = replace(params, seed=base + i)
            _flush(engine, seeded)
            started = time.perf_counter()
            one = engine.generate(built.text, seeded)
            times.append(time.perf_counter() - started)
            tokens.append(one.completion_tokens)
        singles.append(statistics.mean(times))
        single_tokens.append(statistics.mean(tokens))
        seeded = replace(params, seed=base)
        _flush(engine, seeded)
        started = time.perf_counter()
        many = engine.sample_n(built.text, seeded, samples)
        parallels.append(time.perf_counter() - started)
        parallel_tokens.append(sum(r.completion_tokens for r in many))
    return SelfConsistencyTiming(
        samples=samples, prompt_tokens=built.token_count, max_new_tokens=params.max_new_tokens,
        single_s=statistics.median(singles), parallel_s=statistics.median(parallels),
        single_tokens=statistics.median(single_tokens), parallel_tokens=int(statistics.median(parallel_tokens)),
        rounds=rounds,
    )


def sentiment_setup(strategy: str = ZERO_SHOT, k: int = 3, template_id: str = "sentiment-question") -> PromptSetup:
    """The sentiment setup the bench evaluates (zero-shot by default; few-shot with k fixed demos)."""
    template = TemplateLibrary.load().get(template_id)
    config = StrategyConfig(strategy=strategy, k=k if strategy == FEW_SHOT else 3)
    return PromptSetup.from_template(template, config)


def time_sentiment_evaluation(engine: Engine, strategy: str = ZERO_SHOT, limit: int | None = None,
                              progress: Progress | None = None) -> EvaluationReport:
    """Evaluate one strategy over the bundled sentiment set; ``report.elapsed_s`` is the time taken."""
    setup = sentiment_setup(strategy)
    data = load_bundled("sentiment")
    return evaluate(engine, [setup], data, suggested_params("sentiment", setup.strategy), limit=limit,
                    progress=progress)


def bench_prompt_lab(provider, options: BenchOptions) -> list[Figure]:
    """Self-consistency's cost over one sample, and a sentiment evaluation of the bundled set, on llama.cpp."""
    try:
        engine = provider.get(options.model, "llama.cpp")
    except Exception as exc:
        return [SELF_CONSISTENCY_COST.failed(exc), SENTIMENT_EVALUATION.failed(exc)]
    figures = []
    try:
        timing = time_self_consistency(engine, samples=SAMPLES, rounds=2 if options.quick else 3)
        figures.append(SELF_CONSISTENCY_COST.measured(
            timing.ratio,
            f"{timing.parallel_s:.2f} s for {SAMPLES} paths ({timing.parallel_tokens} tokens) vs "
            f"{timing.single_s:.2f} s for one ({timing.single_tokens:.0f} tokens); prompt of "
            f"{timing.prompt_tokens} tokens read once; median of {timing.rounds} rounds"))
    except Exception as exc:
        figures.append(SELF_CONSISTENCY_COST.failed(exc))
    try:
        report = time_sentiment_evaluation(engine, limit=20 if options.quick else None)
        score = report.scores[0]
        measure = replace(SENTIMENT_EVALUATION, name=f"Prompt Lab: evaluate {score.examples} sentiment examples")
        figures.append(measure.measured(
            report.elapsed_s,
            f"zero-shot, accuracy {score.metrics['accuracy']:.2f}, {score.completion_tokens} new tokens",
            judged=score.examples >= SENTIMENT_EXAMPLES))
    except Exception as exc:
        figures.append(SENTIMENT_EVALUATION.failed(exc))
    return figures
