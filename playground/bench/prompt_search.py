"""Prompt search (APE): one search of 8 candidates x 2 rounds on 20 development examples, on llama.cpp.

The figure is the search's wall time (proposals, variations and every development score, then the winner
and the hand-written baseline on the test split); a second figure is the winner's test score minus the
baseline's, in percentage points, on the test examples the search never saw. Both are informational: a
135M-parameter model writes weak instructions, and the point is what the search costs and whether its
winner holds up off the development split. Tests never assert these; they only check the function runs.
"""

from __future__ import annotations

from dataclasses import replace

from playground.bench.core import BenchOptions, Figure, Measure, log
from playground.prompting.ape import ApeConfig, ApeResult, baseline_template, search_instructions
from playground.prompting.data import load_bundled
from playground.prompting.templates import TemplateLibrary

CANDIDATES, ROUNDS, DEV = 8, 2, 20
SEARCH_TIME = Measure(f"Prompt search: APE {CANDIDATES} candidates x {ROUNDS} rounds on {DEV} dev examples", "s")
WINNER_GAIN = Measure("Prompt search: winner - baseline on the test split", "points")


def run_search(engine, task: str = "sentiment", candidates: int = CANDIDATES, rounds: int = ROUNDS,
               dev_size: int = DEV, test_size: int = 0, seed: int = 0, progress=None) -> ApeResult:
    """One search on the bundled data of ``task`` against its first zero-shot template; ``result.elapsed_s``
    is the time taken."""
    config = ApeConfig(task=task, candidates=candidates, rounds=rounds, dev_size=dev_size, test_size=test_size,
                       seed=seed)
    baseline = baseline_template(TemplateLibrary.load().templates, task)
    return search_instructions(engine, config, load_bundled(task), baseline, progress=progress)


def _logger(every: int = 25):
    """A progress callback that logs each time another ``every`` generations are done (counts may jump)."""
    shown = [0]

    def heard(step) -> None:
        if step.done // every > shown[0] or step.finished:
            shown[0] = step.done // every
            log(f"prompt search: {step.stage}, round {step.round}, {step.done} of {step.planned} generations, "
                f"{step.elapsed_s:.0f} s")

    return heard


def bench_prompt_search(provider, options: BenchOptions) -> list[Figure]:
    """The search's wall time and its winner against the baseline (quick: 4 candidates on 10 examples)."""
    candidates, dev = (4, 10) if options.quick else (CANDIDATES, DEV)
    time_measure = replace(SEARCH_TIME, name=f"Prompt search: APE {candidates} candidates x {ROUNDS} rounds on "
                                              f"{dev} dev examples")
    try:
        engine = provider.get(options.model, "llama.cpp")
        result = run_search(engine, candidates=candidates, dev_size=dev, progress=_logger())
    except Exception as exc:
        return [time_measure.failed(exc), WINNER_GAIN.failed(exc)]
    scored = sum(1 for c in result.candidates if c.dev_score is not None)
    figures = [time_measure.measured(
        result.elapsed_s, f"sentiment, {options.model} on llama.cpp: {scored} candidates scored "
                          f"({result.duplicates} repeats dropped), {result.generations} generations; best dev "
                          f"accuracy per round " + ", ".join(f"{so_far:.2f}" for _, so_far, _ in
                                                            result.best_per_round))]
    if result.winner_test is None or result.baseline_test is None:
        figures.append(WINNER_GAIN.not_measured("the search scored no candidate"))
        return figures
    winner, baseline = result.winner_test.metrics["accuracy"], result.baseline_test.metrics["accuracy"]
    figures.append(WINNER_GAIN.measured(
        100 * (winner - baseline), f"test accuracy on {result.test_size} examples: winner {winner:.2f} "
                                   f"({result.winner.text[:120]!r}, dev {result.winner.dev_score:.2f}) vs "
                                   f"hand-written {result.baseline} {baseline:.2f}"))
    return figures
