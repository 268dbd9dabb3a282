"""The training entry: data, model, baseline, Trainer, comparison and saved results of one run.

Two ways in, one code path:

- :func:`run_job` ``(run_dir, control)`` is what the job worker calls in its
  child process: it reads ``run_dir/config.yaml`` and the app's settings from
  the environment (``PLAYGROUND_DATA_DIR``, ``PLAYGROUND_MODELS_DIR``, offline);
- :func:`train` ``(config, run_dir, control, data_dir)`` is what the CLI calls in
  its own process (``python -m playground finetune``, also under
  ``accelerate launch``: the transformers Trainer handles the devices).

``control`` has ``should_stop() -> bool`` (checked between steps, between
evaluation batches, between generated examples, at every generated token and
between stages, so a cancel while the base model is scored ends the run within
a token or a batch) and ``emit(event)``. Events are plain
JSON-ready dicts, in this order::

    {"event": "stage", "stage": "loading" | "baseline" | "training" | "evaluating" | "saving", "message": str}
    {"event": "start", "total_steps": int}
    {"event": "step", "step": int, "total_steps": int, "loss": float, "learning_rate": float,
     "epoch": float, "tokens_per_s": float, "eta_s": float}
    {"event": "eval", "step": int, "eval_loss": float}
    {"event": "done", "metrics": {...}}          # or, on cancel:
    {"event": "cancelled", "step": int}

Errors raise (PlaygroundError subclasses carry a message for people). A cancelled
run saves nothing. A finished one saves its result through
:class:`~playground.finetune.result.RunResult`, each file atomically, in this
order: the weights (``adapter/``, or ``model/`` when every weight trained, with the
tokenizer and ``playground.json`` naming the base and, for a classifier, the
labels), ``samples.jsonl`` (base and tuned outputs of ``sample_count`` test
examples with per-example ROUGE, or correctness for a classifier) and
``metrics.json`` (:class:`~playground.finetune.result.RunMetrics`).

The answers come from the engine ``sample_engine`` names
(:mod:`~playground.finetune.gguf_samples`): transformers, or llama.cpp on the
base's GGUF (alone before training, with the run's adapter after). A LoRA or
QLoRA run of a decoder whose base has a GGUF saves its adapter and converts it
for llama.cpp (``gguf/adapter.gguf``) right after training; when the answers
came from transformers it then answers a third time on the quantised base with
that adapter (``quantized_*`` fields, ``rouge_quantized``). Without llama.cpp,
``quantized_unavailable`` in the metrics says why. While answering, stage events
count the examples ("Base model: generating 3 of 12 on llama.cpp Q4_1.").
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from playground.atomic import atomic_write_text, save_error
from playground.finetune.config import FinetuneConfig
from playground.finetune.costs import FP32_BYTES, machine_memory_budget
from playground.finetune.data import DataSplits, PromptPair, load_splits
from playground.finetune.encoding import EncodedSplit, causal_prompt_ids, data_collator, encode_pairs, encode_splits
from playground.finetune.forgetting import ForgettingCheck
from playground.finetune.gguf_adapter import AdapterConversionError, adapter_gguf_path, run_adapter_gguf
from playground.finetune.gguf_samples import (
    BASE,
    LLAMA_CPP,
    QUANTIZED,
    TRANSFORMERS,
    TUNED,
    GgufAnswers,
    GgufPlan,
    SampleEngine,
    gguf_plan,
    sample_engine_for,
)
from playground.finetune.hub_data import hub_source_for
from playground.finetune.methods import TrainableModel, build_trainable, check_memory, cost_report, get_method
from playground.finetune import progress as phases
from playground.finetune.progress import RunClock, SectionTimer, batches, validation_passes
from playground.finetune.result import RunMetrics, RunResult
from playground.finetune.runs import CONFIG_FILE, scratch_dir
from playground.finetune.usage import peak_memory
from playground.finetune.weights import DECODER, ENCODER, ENCODER_DECODER, default_resolver, locate_model


class Control(Protocol):
    def should_stop(self) -> bool: ...

    def emit(self, event: dict) -> None: ...


class NullControl:
    """A control that never stops and drops every event (scripts, notebooks)."""

    def should_stop(self) -> bool:
        return False

    def emit(self, event: dict) -> None:
        pass


@dataclass(frozen=True)
class TrainOutcome:
    """How a run ended: ``done`` with its metrics, or ``cancelled`` at a step."""

    status: str  # "done" | "cancelled"
    step: int
    metrics: RunMetrics | None = None  # what metrics.json holds (None when cancelled)

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"


# The stage (of the module docstring) each progress phase belongs to.
STAGE_OF = {phases.LOADING: "loading", phases.BASELINE_LOSS: "baseline", phases.BASELINE: "baseline",
            phases.TRAINING: "training", phases.VALIDATION: "training", phases.TUNED_LOSS: "evaluating",
            phases.TUNED: "evaluating", phases.QUANTIZED: "evaluating", phases.SAVING: "saving"}


class _Cancelled(Exception):
    """Raised inside a run when control.should_stop() turns true outside the Trainer's loop."""


# ------------------------------------------------------------------------------ entries


def run_job(run_dir: Path, control: Control) -> TrainOutcome:
    """The job worker's entry: train the config saved in ``run_dir/config.yaml``."""
    from playground.config import Settings
    from playground.models.sources import SourceResolver

    run_dir = Path(run_dir)
    settings = Settings.load()
    config = FinetuneConfig.from_yaml(run_dir / CONFIG_FILE, check=False)  # train() checks it against the world
    resolver = SourceResolver(settings.models_dir, settings.offline)
    return train(config, run_dir, control, settings.data_dir, resolver=resolver)


def train(config: FinetuneConfig, run_dir: Path, control: Control | None, data_dir: Path, *, resolver=None,
          catalog=None, memory_budget_bytes: int | None = None, callbacks: Sequence = ()) -> TrainOutcome:
    """Fine-tune as ``config`` says, writing results into ``run_dir``; see the module's docstring.

    ``resolver`` and ``catalog`` default to the app's (settings from the environment);
    ``memory_budget_bytes`` overrides the memory the run may use (default: GPU memory, else free RAM);
    ``callbacks`` are extra transformers ``TrainerCallback``s for the training loop (a script's own
    logging, the bench's step clock), added after the run's progress callback.
    """
    run = _Run(config, Path(run_dir), control or NullControl(), Path(data_dir), resolver, catalog,
               memory_budget_bytes, tuple(callbacks))
    return run.execute()


# ------------------------------------------------------------------------------ one run


class _Run:
    """The state of one run while it executes (not shared; one per call of :func:`train`)."""

    def __init__(self, config: FinetuneConfig, run_dir: Path, control: Control, data_dir: Path, resolver, catalog,
                 memory_budget_bytes: int | None, callbacks: tuple = ()):
        self.config = config
        self.callbacks = callbacks
        self.run_dir = run_dir
        self.control = control
        self.data_dir = data_dir
        self.resolver = resolver
        self.catalog = catalog
        self.memory_budget_bytes = memory_budget_bytes
        self.started = time.perf_counter()
        self.main_process = True
        self.step = 0
        # The Trainer's output_dir (it saves nothing there), inside the run directory: removed when the run ends,
        # and by the job manager when a killed worker could not remove it.
        self.scratch_dir: Path | None = None
        # What the run wrote before its results (the adapter, converted for llama.cpp): removed when it does
        # not finish, since a cancelled or failed run saves nothing.
        self.written: list[Path] = []
        # The engines of the before/after answers (decided by _plan_samples once the base is located).
        self.plan = GgufPlan(reason="not planned")
        self.sample_engine = TRANSFORMERS
        self.engines: dict[str, SampleEngine] = {}  # system (base, tuned, quantized) -> what answered for it
        self.saved_weights: Path | None = None  # the adapter, when it was saved early to be converted
        self.gguf_problem = ""  # why llama.cpp could not answer after training (the conversion refused)
        # Units planned and done per phase, and the time left in all of them (the ETA of every event).
        self.clock = RunClock(grad_accum=config.grad_accum)
        # Wall-clock seconds per section (load, base scoring, training, tuned scoring, save): metrics.phase_seconds.
        self.sections = SectionTimer()
        self.sections.enter("load")
        self.eval_phase = phases.BASELINE_LOSS  # what the Trainer's evaluation batches are counted as
        self._last_batch_event = 0.0

    # -- events ----------------------------------------------------------------
    def emit(self, event: dict) -> None:
        if self.main_process:
            self.control.emit(event)

    def stage(self, stage: str, message: str) -> None:
        self.emit({"event": "stage", "stage": stage, "message": message})

    def progress(self, phase: str, finished: int, shown: int | None = None, message: str = "",
                 throttle_s: float = 0.0) -> None:
        """``finished`` units of ``phase`` are done (``shown``: the unit the page names, e.g. the example being
        generated); a stage event with the counts and the ETA of every phase left. ``throttle_s`` skips events
        closer together than that (evaluation batches), except the phase's last one."""
        self.clock.advance(phase, finished)
        entry = self.clock.phases[phase]
        shown = finished if shown is None else shown
        now = time.perf_counter()
        if throttle_s and shown < entry.total and now - self._last_batch_event < throttle_s:
            return
        self._last_batch_event = now
        self.emit({"event": "stage", "stage": STAGE_OF[phase], "phase": phase, "done": shown, "total": entry.total,
                   "eta_s": self.clock.remaining_s(), "message": message})

    def begin(self, phase: str, message: str, total: int | None = None) -> None:
        """``phase`` starts: a stage event with its counts (0 done) and the ETA."""
        self.clock.begin(phase, total)
        entry = self.clock.phases[phase]
        self.emit({"event": "stage", "stage": STAGE_OF[phase], "phase": phase, "done": 0, "total": entry.total,
                   "eta_s": self.clock.remaining_s(), "message": message})

    def plan_phases(self, encoded: dict, answers: int, total_steps: int) -> None:
        """Every phase's units, known once the data is encoded: the ETA then counts all of them."""
        config, clock = self.config, self.clock
        test_batches = batches(len(encoded["test"].features), config.batch_size)
        validation_batches = batches(len(encoded["validation"].features), config.batch_size)
        clock.plan(phases.BASELINE_LOSS, test_batches)
        clock.plan(phases.BASELINE, answers)
        clock.plan(phases.TRAINING, total_steps)
        clock.plan(phases.VALIDATION, validation_batches * validation_passes(
            total_steps, config.eval_every, bool(validation_batches)))
        clock.plan(phases.TUNED_LOSS, test_batches)
        clock.plan(phases.TUNED, answers)
        quantized = self.sample_engine == TRANSFORMERS and self.plan.available and get_method(config.method).adapter
        clock.plan(phases.QUANTIZED, answers if quantized else 0)
        clock.plan(phases.SAVING, 1)

    def evaluation_batch(self) -> None:
        """One batch of an evaluation (test loss, or a validation pass) is done."""
        entry = self.clock.phases.get(self.eval_phase)
        done = (entry.done if entry else 0) + 1
        self.progress(self.eval_phase, done, throttle_s=1.0)

    def check_stop(self) -> None:
        if self.control.should_stop():
            raise _Cancelled()

    # -- what a run of another trainer (preference.execute_preference) shares with this one --------------
    def progress_callback(self):
        """The TrainerCallback of this run's events and cancel (for any transformers-based trainer)."""
        return _progress_callback(self)

    def cancelled(self) -> None:
        """End the run as cancelled (nothing saved)."""
        raise _Cancelled()

    def finished(self, metrics: RunMetrics) -> TrainOutcome:
        return TrainOutcome("done", self.step, metrics)

    @staticmethod
    def sample_rows(trainable: TrainableModel, pairs: Sequence[PromptPair], base: list[str],
                    tuned: list[str]) -> list[dict[str, Any]]:
        return _sample_rows(trainable, pairs, base, tuned)

    # -- the run ---------------------------------------------------------------
    def execute(self) -> TrainOutcome:
        try:
            return self._execute()
        except _Cancelled:
            self._discard_written()
            self.emit({"event": "cancelled", "step": self.step})
            return TrainOutcome("cancelled", self.step)
        except BaseException:
            self._discard_written()
            raise
        finally:
            if self.scratch_dir is not None:
                shutil.rmtree(self.scratch_dir, ignore_errors=True)

    def _execute(self) -> TrainOutcome:
        import torch
        from accelerate import PartialState

        config = self.config
        if get_method(config.method).preference:  # preference pairs through TRL (same events, cancel and result)
            from playground.finetune.preference import execute_preference

            return execute_preference(self)
        state = PartialState()
        self.main_process = state.is_main_process
        device = state.device
        cuda = device.type == "cuda"
        bf16 = cuda and torch.cuda.is_bf16_supported()
        dtype_name = "bfloat16" if bf16 else "float32"

        self.stage("loading", f"Checking the config and reading the data ({config.data}).")
        config.check(self.catalog)
        self._prepare_run_dir()
        splits = load_splits(config, hub=hub_source_for(self.data_dir, self.resolver))
        self.check_stop()
        resolver = self.resolver or default_resolver()
        self.stage("loading", f"Loading {config.model} for {config.method} "
                              f"({'CUDA ' + dtype_name if cuda else 'CPU fp32'}).")
        source = locate_model(config, resolver, self.data_dir, self.catalog)
        self._plan_samples(source.family, resolver, cuda, dtype_name)
        budget, where = self._memory_budget()
        estimate, full_estimate = check_memory(config, source, budget, where, 2 if bf16 else FP32_BYTES,
                                               len(splits.labels))
        self.check_stop()
        trainable = build_trainable(config, source, "cuda" if cuda else "cpu", dtype_name, splits.labels)
        encoded = encode_splits(config, splits, trainable)
        self.stage("loading", f"{trainable.describe()}. Data: {len(encoded['train'].features)} train, "
                              f"{len(encoded['validation'].features)} validation, {len(splits.test)} test examples; "
                              f"{encoded['train'].stats.truncated} training examples cut at {config.max_length} "
                              f"tokens.")
        callback = _progress_callback(self)
        try:
            self.scratch_dir = scratch_dir(self.run_dir, "trainer")
        except OSError as exc:
            raise save_error("the trainer's scratch folder", self.run_dir, exc) from None
        trainer = _make_trainer(config, trainable, encoded, [callback, *self.callbacks], cuda, bf16,
                                self.scratch_dir)
        self.check_stop()

        answers = min(config.sample_count, len(encoded["test"].pairs))
        self.plan_phases(encoded, answers, config.planned_steps(len(encoded["train"].features)))
        self.begin(phases.BASELINE_LOSS, f"Scoring the base model: test loss on {len(encoded['test'].features)} "
                                         f"examples, answers to {answers}.")
        test_pairs = list(encoded["test"].pairs)
        self.sections.enter("base_scoring")
        with trainable.base_view():  # the base itself, even where an untrained adapter changes answers (prompts)
            before = _evaluate_test(trainer, encoded["test"])
            base_outputs = self._answers(BASE, "baseline", "Base model", trainable, test_pairs)
        forgetting = self._forgetting_check(trainable)  # the base on the Prompt Lab's other tasks

        self.begin(phases.TRAINING, f"Training for {config.planned_steps(len(encoded['train'].features))} steps.")
        self.eval_phase = phases.VALIDATION
        self.sections.enter("training")
        train_output = trainer.train()
        self.step = trainer.state.global_step
        if callback.cancelled:
            raise _Cancelled()

        if encoded["validation"].features:
            if callback.last_eval[0] == self.step:  # the Trainer has just measured it at this step
                last_eval_loss = callback.last_eval[1]
            else:
                last_eval_loss = trainer.evaluate().get("eval_loss")  # the callback emits the eval event
        else:
            last_eval_loss = None
        validation = self.clock.phases.get(phases.VALIDATION)
        if validation is not None:  # the passes are over: none is left for the ETA
            validation.total = validation.done
        self.begin(phases.TUNED_LOSS, f"Scoring the fine-tuned model: test loss on {len(encoded['test'].features)} "
                                      f"examples, answers to {answers}.")
        self.eval_phase = phases.TUNED_LOSS
        self.sections.enter("tuned_scoring")
        after = _evaluate_test(trainer, encoded["test"])
        self.sections.enter("save")  # the adapter, saved and converted for llama.cpp
        adapter_gguf = self._adapter_gguf(trainable, test_pairs)
        self.sections.enter("tuned_scoring")
        tuned_outputs = self._answers(TUNED, "evaluating", "Fine-tuned model", trainable, test_pairs, adapter_gguf)
        quantized_outputs = None
        if self.sample_engine == TRANSFORMERS and adapter_gguf is not None:
            quantized_outputs = self._answers(QUANTIZED, "evaluating", "Fine-tuned model, quantized", trainable,
                                              test_pairs, adapter_gguf)

        forgetting.tuned(trainable.model, trainable.tokenizer)
        self.check_stop()
        for left in (phases.TUNED, phases.QUANTIZED):  # answers that were planned but not given
            entry = self.clock.phases.get(left)
            if entry is not None:
                entry.total = entry.done
        self.begin(phases.SAVING, f"Writing the {get_method(config.method).saves}, samples and metrics.")
        self.sections.enter("save")
        samples = _sample_rows(trainable, test_pairs, base_outputs, tuned_outputs, quantized_outputs)
        costs = cost_report(config, trainable=trainable.trainable_parameters, total=trainable.total_parameters,
                            memory=estimate, full_memory=full_estimate, budget=(budget, where),
                            total_steps=trainer.state.max_steps, step_seconds=callback.mean_step_seconds)
        metrics = self._metrics(trainable, splits, encoded, callback, train_output, before, after, samples,
                                last_eval_loss, costs)
        peak, peak_kind = peak_memory(cuda)
        report = forgetting.report()
        metrics = dataclasses.replace(metrics, peak_memory_bytes=peak, peak_memory_kind=peak_kind,
                                      forgetting=report.to_json() if report else {})
        self.check_stop()
        if self.main_process:
            result = RunResult(self.run_dir)
            if self.saved_weights is None:  # the weights first, so that metrics.json counts their time
                self.written.append(self.run_dir / get_method(config.method).saves)
                self.saved_weights = result.save_weights(trainable, config)
            self.sections.stop()
            metrics = dataclasses.replace(metrics, phase_seconds=self.sections.as_dict(),
                                          duration_s=round(time.perf_counter() - self.started, 2))
            metrics = result.save(trainable, config, samples, metrics, weights=False)
        self.written = []  # the run finished: what it wrote is its result
        self.emit({"event": "done", "metrics": metrics.to_json()})
        return TrainOutcome("done", self.step, metrics)

    # -- helpers -----------------------------------------------------------------
    def _forgetting_check(self, trainable: TrainableModel) -> ForgettingCheck:
        """The catastrophic forgetting check (forgetting.py), its base side scored now, before training."""
        stages = {"base": "baseline", "tuned": "evaluating"}
        check = ForgettingCheck(self.config, trainable.family, should_stop=self.control.should_stop,
                                stage=lambda side, message: self.stage(stages[side], message),
                                active=self.main_process)
        check.base(trainable.model, trainable.tokenizer)
        self.check_stop()
        return check

    def _prepare_run_dir(self) -> None:
        if not self.main_process:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise save_error("the run directory", self.run_dir, exc) from None
        config_file = self.run_dir / CONFIG_FILE
        if not config_file.exists():  # the job manager writes it first; the CLI leaves it to us
            atomic_write_text(config_file, self.config.to_yaml(), "the resolved config")

    def _discard_written(self) -> None:
        for path in reversed(self.written):
            shutil.rmtree(path, ignore_errors=True)
        self.written = []

    # -- the engines of the before/after answers ------------------------------------------------------------
    def _plan_samples(self, family: str, resolver, cuda: bool, dtype_name: str) -> None:
        """Decide which engine answers (sample_engine, auto resolved) and whether llama.cpp can serve the run."""
        from playground.models.catalog import Catalog

        config = self.config
        self.plan = gguf_plan(config, family, self.catalog or Catalog.load(), resolver)
        self.sample_engine = sample_engine_for(config.sample_engine, cuda, self.plan)
        precision = "NF4" if get_method(config.method).quantized else {"float32": "fp32", "bfloat16": "bf16"}.get(
            dtype_name, dtype_name)
        self._transformers_engine = SampleEngine(TRANSFORMERS, precision)
        self._llama_engine = SampleEngine(LLAMA_CPP, self.plan.file_type)

    def _answers(self, system: str, stage: str, who: str, trainable: TrainableModel, pairs: Sequence[PromptPair],
                 adapter: Path | None = None) -> list[str]:
        """One system's answers to the first ``sample_count`` pairs, on the engine the run chose for it."""
        on_llama = system == QUANTIZED or (self.sample_engine == LLAMA_CPP and (system == BASE or adapter))
        engine = self._llama_engine if on_llama else self._transformers_engine
        if on_llama and system != BASE:
            engine = dataclasses.replace(engine, adapter=True)
        count = min(self.config.sample_count, len(pairs))
        if count:
            self.engines[system] = engine

        phase = {BASE: phases.BASELINE, TUNED: phases.TUNED, QUANTIZED: phases.QUANTIZED}[system]
        if count:
            self.clock.begin(phase, count)

        def progress(done: int, finished: int | None = None) -> None:  # as answers up to the done-th start
            self.progress(phase, done - 1 if finished is None else finished, shown=done,
                          message=f"{who}: generating {done} of {count} on {engine.label}.")

        if on_llama:
            outputs = self._gguf_outputs(trainable, pairs[:count], adapter, progress)
        else:
            outputs = self._outputs(trainable, pairs, progress)
        if count:
            self.clock.advance(phase, count)
        return outputs

    def _adapter_gguf(self, trainable: TrainableModel, pairs: Sequence[PromptPair]) -> Path | None:
        """After training: the adapter saved and converted for llama.cpp, when llama.cpp answers for this run."""
        if not (self.plan.available and self.main_process and min(self.config.sample_count, len(pairs))):
            return None
        result = RunResult(self.run_dir)
        target = self.run_dir / get_method(self.config.method).saves
        self.written.append(target)
        self.saved_weights = result.save_weights(trainable, self.config)
        gguf_dir = adapter_gguf_path(self.run_dir).parent
        if not gguf_dir.exists():
            self.written.append(gguf_dir)
        try:
            return run_adapter_gguf(self.run_dir, self.saved_weights, self.plan.weights.path,
                                    name=f"{trainable.source.name} {self.run_dir.name}")
        except AdapterConversionError as exc:
            self.gguf_problem = str(exc).rstrip(".")
            return None

    def _gguf_outputs(self, trainable: TrainableModel, pairs: Sequence[PromptPair], adapter: Path | None,
                      progress: Callable[[int], None]) -> list[str]:
        """Greedy answers on the base GGUF (with ``adapter``), to the same token ids transformers reads."""
        if not pairs or not self.main_process:  # only the main process saves answers
            return []
        import torch

        config = self.config
        tokenizer = trainable.tokenizer
        outputs: list[str] = []
        with GgufAnswers(config.model, self.plan, max(1, torch.get_num_threads()),
                         n_ctx=config.max_length + config.max_new_tokens) as answers:
            for index, pair in enumerate(pairs):
                self.check_stop()
                progress(index + 1)
                ids = causal_prompt_ids(tokenizer, pair.prompt)[-config.max_length:]
                outputs.append(answers.answer(pair.prompt, ids, config.max_new_tokens, adapter,
                                              self.control.should_stop))
                self.check_stop()  # an answer cut short by a cancel is not one to keep
        return outputs

    def _memory_budget(self) -> tuple[int, str]:
        if self.memory_budget_bytes is not None:
            return int(self.memory_budget_bytes), "the memory budget given to this run"
        from playground.hardware import detect

        return machine_memory_budget(detect())

    def _outputs(self, trainable: TrainableModel, pairs: Sequence[PromptPair],
                 progress: Callable[..., None] | None = None) -> list[str]:
        count = min(self.config.sample_count, len(pairs))
        if not count:
            return []
        chosen = list(pairs[:count])
        if trainable.family == ENCODER:
            return _predict_labels(trainable, chosen, self.config.max_length, self.config.batch_size,
                                   self.check_stop)
        outputs: list[str] = []
        for start in range(0, count, self.config.batch_size):
            self.check_stop()
            batch = chosen[start:start + self.config.batch_size]
            if progress is not None:
                progress(start + len(batch), start)
            outputs += generate(trainable.model, trainable.tokenizer, trainable.family, [p.prompt for p in batch],
                                self.config.max_new_tokens, self.config.max_length,
                                should_stop=self.control.should_stop)
            self.check_stop()  # a generation cut short by a cancel gives no answer to keep
        return outputs

    def _metrics(self, trainable, splits: DataSplits, encoded, callback, train_output, before, after, samples,
                 last_eval_loss, costs) -> RunMetrics:
        config = self.config
        train_stats = encoded["train"].stats
        runtime = float(train_output.metrics.get("train_runtime") or 0.0)
        metrics = RunMetrics(
            model=config.model, method=config.method, family=trainable.family,
            trainable_parameters=trainable.trainable_parameters, total_parameters=trainable.total_parameters,
            trainable_share=round(trainable.trainable_share, 6),
            steps=self.step, epochs=round(float(_epoch_of(train_output)), 3),
            train_losses=tuple(callback.losses), eval_loss=_round(last_eval_loss),
            test_loss_before=_round(before.get("loss")), test_loss_after=_round(after.get("loss")),
            tokens_per_s=round(callback.tokens_seen / runtime, 1) if runtime else None,
            tokens_seen=callback.tokens_seen, padding_share=round(train_stats.padding_share, 4),
            truncated=train_stats.truncated,
            data={"source": splits.source, "train": encoded["train"].stats.summary(),
                  "validation": encoded["validation"].stats.summary(), "test": encoded["test"].stats.summary(),
                  "train_token_lengths": list(train_stats.lengths)},
            train_duration_s=round(runtime, 2), duration_s=round(time.perf_counter() - self.started, 2),
            costs=costs.as_dict(), output_dir=get_method(config.method).saves, sample_count=len(samples),
            sample_engine=self.sample_engine, engines={k: v.to_json() for k, v in self.engines.items()},
            quantized_unavailable=self._quantized_unavailable(samples))
        if trainable.family == ENCODER:
            return dataclasses.replace(metrics, labels=tuple(trainable.labels),
                                       accuracy_before=_round(before.get("accuracy")),
                                       accuracy_after=_round(after.get("accuracy")))
        if not samples:
            return metrics
        from playground.prompting.evaluation import ROUGE_TYPES

        sides = (BASE, TUNED, QUANTIZED) if "quantized_rougeL" in samples[0] else (BASE, TUNED)
        rouge = {side: {name: round(_mean([s[f"{side}_{name}"] for s in samples]), 4) for name in ROUGE_TYPES}
                 for side in sides}
        return dataclasses.replace(metrics, rouge_before=rouge["base"], rouge_after=rouge["tuned"],
                                   rougeL_improvement=round(rouge["tuned"]["rougeL"] - rouge["base"]["rougeL"], 4),
                                   rouge_quantized=rouge.get(QUANTIZED))

    def _quantized_unavailable(self, samples) -> str:
        """Why the run has no "fine-tuned, quantized" answers ("" when it has them)."""
        if samples and "quantized_output" in samples[0]:
            return ""
        if not self.plan.available:
            return self.plan.reason
        if self.gguf_problem:
            return self.gguf_problem
        if not samples:
            return "the run answered no test examples (sample_count 0, or no test data)"
        if self.sample_engine == LLAMA_CPP:
            return ("the samples ran on llama.cpp: the fine-tuned answers are already the quantised base with the "
                    "run's adapter")
        return "only the main process answers the test examples"


def _epoch_of(train_output) -> float:
    return train_output.metrics.get("epoch", 0.0) or 0.0


def _round(value: Any, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _make_trainer(config: FinetuneConfig, trainable: TrainableModel, encoded: dict[str, EncodedSplit],
                  callbacks: Sequence, cuda: bool, bf16: bool, output_dir: Path):
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    seq2seq = trainable.family == ENCODER_DECODER
    has_validation = bool(encoded["validation"].features)
    common = dict(
        output_dir=str(output_dir),  # checkpoints are off, but the Trainer wants a folder
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate, max_steps=config.max_steps or -1, num_train_epochs=config.epochs,
        # The schedule and its warmup (steps, or a share of the steps below 1, as transformers 5 reads warmup_steps).
        lr_scheduler_type=config.lr_scheduler_type, warmup_steps=config.warmup, weight_decay=0.0, max_grad_norm=1.0,
        # Fused AdamW (transformers' own default on torch >= 2.8): one kernel for all parameters instead of a
        # loop over them; on a 2-core CPU a full fine-tune of SmolLM2-135M steps ~20 % faster, LoRA ~0.4 %.
        optim="adamw_torch_fused",
        logging_strategy="steps", logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        eval_strategy="steps" if (config.eval_every and has_validation) else "no",
        eval_steps=config.eval_every if (config.eval_every and has_validation) else None,
        # Similar lengths in one batch: dynamic padding then pads little (transformers' LengthGroupedSampler,
        # shuffled in megabatches, so the order stays random at the scale of the epoch).
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        seed=config.seed, data_seed=config.seed, bf16=bf16, use_cpu=not cuda, dataloader_pin_memory=cuda,
        include_num_input_tokens_seen="non_padding", remove_unused_columns=False, label_names=["labels"],
    )
    args = Seq2SeqTrainingArguments(**common, predict_with_generate=False) if seq2seq else TrainingArguments(**common)
    trainer_class = Seq2SeqTrainer if seq2seq else Trainer
    compute_metrics = _accuracy if trainable.family == ENCODER else None
    trainer = trainer_class(
        model=trainable.model, args=args, data_collator=data_collator(trainable),
        train_dataset=encoded["train"].dataset(),
        eval_dataset=encoded["validation"].dataset() if has_validation else None,
        processing_class=trainable.tokenizer, callbacks=list(callbacks), compute_metrics=compute_metrics)
    trainer.remove_callback(PrinterCallback)  # progress goes out as events, not as printed dicts
    return trainer


def _accuracy(prediction) -> dict[str, float]:
    import numpy as np

    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())}


def _evaluate_test(trainer, test: EncodedSplit) -> dict[str, float]:
    """Loss (and accuracy for a classifier) on the test split; empty when it has no usable example."""
    if not test.features:
        return {}
    metrics = trainer.evaluate(eval_dataset=test.dataset(), metric_key_prefix="test")
    return {k[len("test_"):]: float(v) for k, v in metrics.items() if k in ("test_loss", "test_accuracy")}


# ------------------------------------------------------------------------------ progress events


class _ProgressState:
    """What the progress callback learns during training (read by the run afterwards)."""

    def __init__(self, run: _Run):
        self.run = run
        self.cancelled = False
        self.losses: list[float] = []
        self.tokens_seen = 0
        self._started = 0.0
        self._step_times: list[float] = []
        self._last = 0.0
        self.last_eval: tuple[int, float | None] = (-1, None)  # (step, validation loss)

    @property
    def mean_step_seconds(self) -> float | None:
        times = self._step_times[1:] or self._step_times  # the first step carries warm-up
        return sum(times) / len(times) if times else None

    # The TrainerCallback hooks (transformers is imported only when a run starts: see _progress_callback).
    def on_train_begin(self, args, state, control, **kwargs):
        self._started = self._last = time.perf_counter()
        self.run.clock.plan(phases.TRAINING, int(state.max_steps))
        self.run.clock.begin(phases.TRAINING)
        self.run.emit({"event": "start", "total_steps": int(state.max_steps)})

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self._step_times.append(now - self._last)
        self._last = now
        self.run.step = state.global_step
        if self.run.control.should_stop():
            self.cancelled = True
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return control
        step = int(state.global_step)
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self.tokens_seen = int(state.num_input_tokens_seen or 0)
        loss = float(logs["loss"])
        self.losses.append(round(loss, 5))
        remaining = max(int(state.max_steps) - step, 0)
        self.run.clock.advance(phases.TRAINING, step)
        eta = self.run.clock.remaining_s()  # every phase left: training, validation passes, scoring, saving
        self.run.emit({"event": "step", "step": step, "total_steps": int(state.max_steps), "loss": loss,
                       "learning_rate": float(logs.get("learning_rate", 0.0)), "epoch": float(state.epoch or 0.0),
                       "tokens_per_s": round(self.tokens_seen / elapsed, 2),
                       "eta_s": eta if eta is not None else round(elapsed / max(step, 1) * remaining, 2)})
        return control

    def on_prediction_step(self, args, state, control, **kwargs):
        # Evaluation (the test loss before and after, validation during training) has no stop flag of its
        # own: a cancel ends it between batches.
        if self.run.control.should_stop():
            self.cancelled = True
            raise _Cancelled()
        self.run.evaluation_batch()
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._last = time.perf_counter()  # a validation pass is not part of the next step's time
        if metrics and "eval_loss" in metrics and not self.cancelled and state.global_step:
            self.last_eval = (int(state.global_step), float(metrics["eval_loss"]))
            self.run.emit({"event": "eval", "step": int(state.global_step), "eval_loss": float(metrics["eval_loss"])})
        return control


def _progress_callback(run: _Run):
    """A TrainerCallback that turns the Trainer's hooks into the run's events and honours a cancel."""
    from transformers import TrainerCallback

    class ProgressCallback(_ProgressState, TrainerCallback):
        pass

    return ProgressCallback(run)


# ------------------------------------------------------------------------------ generation and samples


def generate(model, tokenizer, family: str, prompts: Sequence[str], max_new_tokens: int, max_length: int,
             should_stop: Callable[[], bool] | None = None) -> list[str]:
    """Greedy answers to ``prompts`` (a decoder reads them as training did: chat template and all).

    ``should_stop`` is asked before every new token; once it says yes, generation ends there (the
    answers are cut short, and the caller decides what a stopped answer is worth).
    """
    import torch

    stopping = _stopping_criteria(should_stop)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if family == DECODER:
                rows = [causal_prompt_ids(tokenizer, p)[-max_length:] for p in prompts]
                width = max(len(r) for r in rows)
                input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
                attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
                output = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                                        do_sample=False, pad_token_id=pad_id, temperature=None, top_p=None,
                                        top_k=None, stopping_criteria=stopping)
                new_tokens = output[:, width:]
            else:
                inputs = tokenizer(list(prompts), return_tensors="pt", padding=True, truncation=True,
                                   max_length=max_length).to(device)
                new_tokens = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                            pad_token_id=pad_id, temperature=None, top_p=None, top_k=None,
                                            stopping_criteria=stopping)
    finally:
        model.train(was_training)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]


def _stopping_criteria(should_stop: Callable[[], bool] | None):
    """A transformers StoppingCriteriaList that ends generation once ``should_stop()`` is true (None: none)."""
    if should_stop is None:
        return None
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopRequested(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), bool(should_stop()), dtype=torch.bool,
                              device=input_ids.device)

    return StoppingCriteriaList([StopRequested()])


def _predict_labels(trainable: TrainableModel, pairs: Sequence[PromptPair], max_length: int,
                    batch_size: int, check_stop: Callable[[], None] | None = None) -> list[str]:
    """The classifier's label for each pair, in order (``trainer.predict`` would follow a length-grouped order)."""
    import torch

    label2id = {label: i for i, label in enumerate(trainable.labels)}
    features = encode_pairs(pairs, trainable.tokenizer, ENCODER, max_length, 1, label2id).features
    collate = data_collator(trainable)
    model = trainable.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predicted: list[int] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(features), batch_size):
                if check_stop is not None:
                    check_stop()
                batch = collate([{k: v for k, v in f.items() if k != "labels"} for f in
                                 features[start:start + batch_size]])
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
                predicted += logits.argmax(dim=-1).tolist()
    finally:
        model.train(was_training)
    return [trainable.labels[i] for i in predicted]


def _sample_rows(trainable: TrainableModel, pairs: Sequence[PromptPair], base: list[str], tuned: list[str],
                 quantized: list[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for index, (pair, before, after) in enumerate(zip(pairs, base, tuned)):
        reference = pair.record.target
        row: dict[str, Any] = {"index": index, "line": pair.record.line, "input": pair.record.input,
                               "prompt": pair.prompt, "reference": reference, "base_output": before,
                               "tuned_output": after}
        if trainable.family == ENCODER:
            row.update(base_correct=before == reference, tuned_correct=after == reference,
                       improvement=int(after == reference) - int(before == reference))
        else:
            from playground.prompting.evaluation import rouge_scores

            base_scores, tuned_scores = rouge_scores(before, reference), rouge_scores(after, reference)
            row.update({f"base_{k}": round(v, 4) for k, v in base_scores.items()})
            row.update({f"tuned_{k}": round(v, 4) for k, v in tuned_scores.items()})
            row["improvement"] = round(tuned_scores["rougeL"] - base_scores["rougeL"], 4)
            if quantized is not None and index < len(quantized):  # the fine-tuned model on the quantised base
                row["quantized_output"] = quantized[index]
                row.update({f"quantized_{k}": round(v, 4)
                            for k, v in rouge_scores(quantized[index], reference).items()})
        rows.append(row)
    return rows
