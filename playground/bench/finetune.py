"""Fine-tuning: the app's trainer against a textbook peft + ``Trainer`` script, same model, rows and settings.

The app's trainer (``playground.finetune.train``, behind the Fine-tune tab and ``python -m playground
finetune``) and the plain script (:mod:`playground.bench.plain_trainer`) train LoRA on the bench's model
and the bundled dialogues. Both are measured by the same callback: non-padding tokens per second of the
training steps after the first. The two alternate and their medians are compared (target: the app is at
least as fast). ``--skip-finetune`` leaves the figure out.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from playground.bench.core import (
    BenchOptions,
    CpuWatch,
    Figure,
    Measure,
    alternate,
    log,
    median_speed,
    per_round,
    speeds,
)

FINETUNE_FIGURE = "fine-tune trainer: app / plain peft+Trainer"
APP_OVER_PLAIN = Measure(FINETUNE_FIGURE, "x", ">= 1.0")
FINETUNE_DATA = "dialogues"  # the bundled set the Fine-tune tab offers first
FINETUNE_BATCH = 4


@dataclass(frozen=True)
class TrainRun:
    """One timed training run: what the steps after the first read, how long they took, and their padding."""

    steps: int  # optimizer steps timed (the first, which carries one-off set-up, is not)
    tokens: int  # non-padding tokens the timed steps' forward passes read
    seconds: float
    padding_share: float  # padding tokens / all tokens, over every step's batches
    first_loss: float | None = None  # the first forward pass's loss: equal when both read the same first batch

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def step_clock():
    """A ``TrainerCallback`` that times each optimizer step and counts the tokens of its training batches.

    The same clock goes into both trainers, so they are measured the same way: a forward pre-hook on
    the model counts the real (attention-mask) and all (padded) tokens of every forward pass made in
    training mode (evaluation and generation run in eval mode and are not counted), and each
    ``on_step_end`` notes the time and the running counts. :meth:`result` leaves out the first step.
    A forward hook keeps the first training loss (detached, so no device sync is added; the token
    count does sync on a GPU, once per forward pass, in both trainers alike).
    """
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.real = 0
            self.total = 0
            self.marks: list[tuple[float, int, int]] = []  # (time at step end, real tokens, all tokens) so far
            self._hooks: list = []
            self.first_loss = None

        def _count(self, module, args, kwargs):
            if module.training:
                ids = kwargs.get("input_ids", args[0] if args else None)
                mask = kwargs.get("attention_mask")
                if ids is not None:
                    self.total += int(ids.numel())
                    self.real += int(mask.sum()) if mask is not None else int(ids.numel())

        def _loss(self, module, args, output):
            if module.training and self.first_loss is None and getattr(output, "loss", None) is not None:
                self.first_loss = output.loss.detach()

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._hooks = [model.register_forward_pre_hook(self._count, with_kwargs=True),
                           model.register_forward_hook(self._loss)]
            self.marks = [(time.perf_counter(), 0, 0)]

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), self.real, self.total))

        def on_train_end(self, args, state, control, **kwargs):
            for hook in self._hooks:
                hook.remove()
            self._hooks = []

        def result(self) -> TrainRun:
            steps = len(self.marks) - 1
            if steps < 2:
                raise RuntimeError(f"training made {steps} step(s); the first is warm-up, so at least 2 are needed")
            (t1, real1, _), (tn, realn, _) = self.marks[1], self.marks[-1]
            share = 1.0 - self.real / self.total if self.total else 0.0
            loss = None if self.first_loss is None else float(self.first_loss)
            return TrainRun(steps - 1, realn - real1, tn - t1, share, loss)

    return StepClock()


def finetune_config(options: BenchOptions, steps: int | None = None):
    """The run both trainers make: LoRA on the bench's model, the bundled dialogues, no evaluation during training.

    Validation is off (so the train split is the whole of the set's train rows for both), nothing is
    generated and the app scores a single test example before and after, outside the timed steps.
    """
    from playground.finetune.config import LORA, FinetuneConfig

    return FinetuneConfig(model=options.model, method=LORA, data=FINETUNE_DATA, batch_size=FINETUNE_BATCH,
                          grad_accum=1, max_length=384, learning_rate=2e-4,
                          max_steps=steps or options.finetune_steps, validation_fraction=0.0, eval_every=0,
                          sample_count=0, test_limit=1, seed=0)


def train_pairs(config) -> list[tuple[str, str]]:
    """The (prompt, completion) pairs of the config's train split, through its template, as the app makes them."""
    from playground.finetune.data import format_pairs, load_splits, template_for

    return [(p.prompt, p.completion) for p in format_pairs(load_splits(config).train, template_for(config))]


def _clocked(start) -> TrainRun:
    """Run ``start(clock)`` with a fresh step clock, its prints sent to stderr (the bench's stdout is its table
    or JSON), and return what the clock measured."""
    import contextlib

    clock = step_clock()
    with contextlib.redirect_stdout(sys.stderr):
        start(clock)
    return clock.result()


def app_training_run(config, run_dir: Path, data_dir: Path, resolver, catalog) -> TrainRun:
    """One run of the app's trainer (``playground.finetune.train.train``), its steps timed by a step clock."""
    from playground.finetune.train import train

    def start(clock) -> None:
        outcome = train(config, run_dir, None, data_dir, resolver=resolver, catalog=catalog, callbacks=[clock])
        if outcome.cancelled:
            raise RuntimeError("the app's run was cancelled")

    return _clocked(start)


def plain_training_run(config, model_folder: Path, targets, pairs, output_dir: Path) -> TrainRun:
    """One run of the plain peft + Trainer script on the same folder, pairs and settings."""
    from playground.bench.plain_trainer import PlainSettings, build_trainer

    return _clocked(lambda clock: build_trainer(model_folder, pairs, PlainSettings.from_config(config, targets),
                                                output_dir, callbacks=[clock]).train())


def _losses(runs: list[TrainRun]) -> str:
    return ", ".join("-" if r.first_loss is None else f"{r.first_loss:.4f}" for r in runs)


@dataclass(frozen=True)
class FinetuneMeasurement:
    """The fine-tune figure and what its runs measured, for the figures that build on them (training MFU)."""

    figure: Figure
    app_runs: tuple[TrainRun, ...]
    config: object  # the FinetuneConfig both trainers ran
    model_folder: Path  # the transformers folder they trained
    targets: tuple[str, ...]  # the LoRA target modules

    @property
    def rows_per_step(self) -> int:
        return self.config.batch_size * self.config.grad_accum


def bench_finetune(settings, hardware, catalog, options: BenchOptions, scratch: Path, config=None) -> Figure:
    """Training speed of the app's trainer over a plain peft + Trainer script: same model, data, settings.

    ``config`` (default :func:`finetune_config`) lets a test run the figure on a tiny model and data file.
    """
    config = config or finetune_config(options)
    measurement = measure_finetune(settings, hardware, catalog, options, scratch, config)
    return measurement.figure if measurement else not_a_decoder(config.model)


def not_a_decoder(model: str) -> Figure:
    return APP_OVER_PLAIN.skipped(f"skipped: {model} is not a decoder")


def measure_finetune(settings, hardware, catalog, options: BenchOptions, scratch: Path,
                     config=None) -> FinetuneMeasurement | None:
    """The fine-tune figure with the runs behind it; None when the model is not a decoder (nothing trains)."""
    import gc
    import statistics

    import torch

    from playground.finetune.config import model_family
    from playground.finetune.methods import locate_model
    from playground.models.sources import SourceResolver

    config = config or finetune_config(options)
    if model_family(config.model, catalog) != "decoder":
        return None
    torch.set_num_threads(hardware.cpu_threads)  # both trainers run in this process, on the same threads
    resolver = SourceResolver(settings.models_dir, settings.offline)
    data_dir = scratch / "transformers-data"  # the transformers figures' converted copy, when they made one
    work = scratch / "finetune"
    work.mkdir(parents=True, exist_ok=True)
    log(f"fine-tuning: locating {config.model} (converts the GGUF once if no copy exists yet)")
    source = locate_model(config, resolver, data_dir, catalog)
    pairs = train_pairs(config)
    targets = tuple(config.target_modules or source.lora_targets)

    def announced(label: str, run: Callable[[int], TrainRun]) -> Callable[[int], TrainRun]:
        def go(i: int) -> TrainRun:
            log(f"fine-tuning: {label} run {i + 1}")
            result = run(i)
            gc.collect()  # the finished run's model goes before the next one loads
            return result

        return go

    app = announced("app", lambda i: app_training_run(config, work / f"app-{i}", data_dir, resolver, catalog))
    plain = announced("plain", lambda i: plain_training_run(config, source.folder, targets, pairs,
                                                             work / f"plain-{i}"))
    rounds = options.finetune_rounds
    log(f"fine-tuning: {rounds} round(s) of app and plain runs, {config.max_steps} steps of batch "
        f"{config.batch_size} each")
    watch = CpuWatch()
    app_runs, plain_runs = alternate(rounds, app, plain)
    cpu_note = watch.note()
    app_speed = median_speed(app_runs)
    plain_speed = median_speed(plain_runs)
    app_padding = statistics.median(r.padding_share for r in app_runs)
    plain_padding = statistics.median(r.padding_share for r in plain_runs)
    detail = (f"app {app_speed:.1f} tok/s (runs {speeds(app_runs)}), plain {plain_speed:.1f} tok/s "
              f"(runs {speeds(plain_runs)}); padding share app {app_padding:.1%}, plain {plain_padding:.1%}; "
              f"per round {per_round(app_runs, plain_runs)}; {config.max_steps} steps of batch "
              f"{config.batch_size} (x{config.grad_accum} accumulation) per run, the first not timed; "
              f"{len(pairs)} {config.data} train rows, max_length {config.max_length}, LoRA r={config.lora_r} "
              f"alpha={config.lora_alpha:g} on {','.join(targets) or 'peft default'}, lr {config.learning_rate:g}, "
              f"seed {config.seed}, {hardware.cpu_threads} threads; "
              f"first-step loss app {_losses(app_runs)}, plain {_losses(plain_runs)}{cpu_note}")
    figure = APP_OVER_PLAIN.measured(app_speed / plain_speed if plain_speed > 0 else None, detail)
    return FinetuneMeasurement(figure, tuple(app_runs), config, source.folder, targets)


# ------------------------------------------------------------------ the PEFT methods against LoRA

PEFT_METHODS_BENCHED = ("dora", "rslora", "ia3", "prompt_tuning", "prefix_tuning")
PEFT_FIGURES = {m: Measure(f"fine-tune tokens/s: {m} / lora", "x") for m in PEFT_METHODS_BENCHED}  # informational


def bench_peft_methods(settings, hardware, catalog, options: BenchOptions, scratch: Path, config=None,
                       methods: tuple[str, ...] = PEFT_METHODS_BENCHED) -> list[Figure]:
    """Training speed of each PEFT method over LoRA's: the app's trainer, the same model, rows and settings.

    Each round trains LoRA and every method once (the order reversed every other round, so none always goes
    first), timed by the same step clock (non-padding tokens of the rows per second of the steps after the
    first: prompt and prefix tuning's virtual tokens are not counted, they are the method's cost). One figure
    per method: its median tokens/s over LoRA's, informational (no target).
    """
    import gc

    import torch

    from playground.finetune.config import model_family
    from playground.finetune.methods import LORA
    from playground.models.sources import SourceResolver

    config = config or finetune_config(options)
    if model_family(config.model, catalog) != "decoder":
        return [PEFT_FIGURES[m].skipped(f"skipped: {config.model} is not a decoder") for m in methods]
    torch.set_num_threads(hardware.cpu_threads)
    resolver = SourceResolver(settings.models_dir, settings.offline)
    data_dir = scratch / "transformers-data"
    work = scratch / "peft-methods"
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[TrainRun]] = {m: [] for m in (LORA, *methods)}
    order = [LORA, *methods]
    watch = CpuWatch()
    for round_ in range(options.finetune_rounds):
        for method in order if round_ % 2 == 0 else reversed(order):
            log(f"fine-tuning methods: {method} run {round_ + 1}")
            runs[method].append(app_training_run(config.replace(method=method), work / f"{method}-{round_}",
                                                 data_dir, resolver, catalog))
            gc.collect()
    cpu_note = watch.note()
    lora = median_speed(runs[LORA])
    figures = []
    for method in methods:
        speed = median_speed(runs[method])
        detail = (f"{method} {speed:.1f} tok/s (runs {speeds(runs[method])}), lora {lora:.1f} tok/s (runs "
                  f"{speeds(runs[LORA])}); the app's trainer, {config.max_steps} steps of batch {config.batch_size} "
                  f"per run, the first not timed; {config.data} train rows, max_length {config.max_length}, LoRA "
                  f"r={config.lora_r}, {config.num_virtual_tokens} virtual tokens, {hardware.cpu_threads} "
                  f"threads{cpu_note}")
        figures.append(PEFT_FIGURES[method].measured(speed / lora if lora > 0 else None, detail))
    return figures
