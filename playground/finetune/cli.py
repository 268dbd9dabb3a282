"""``python -m playground finetune CONFIG.yaml``: train a preset from the command line, in this process.

The same :func:`playground.finetune.train.train` the job worker runs, with a
console control that prints one line per event. Ctrl-C once asks the trainer
to stop after the current step (the run ends as cancelled, nothing is saved);
twice interrupts at once. Under ``accelerate launch -m playground finetune ...``
the Trainer spreads the work over the devices and only the main process prints
and writes.

The workshop limits of :mod:`playground.finetune.limits` do not apply, even with
``PLAYGROUND_MODE=workshop``: they protect the app's shared training slot from
many attendees, while this command trains in its caller's own process, run by
someone who already has a shell on the machine.

Exit status: 0 done, 130 cancelled, 2 a bad config or argument, 1 any other
problem (its message is printed, never a traceback).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from playground.errors import FinetuneConfigError, PlaygroundError
from playground.finetune.methods import ADAPTER_DIR, MODEL_DIR
from playground.finetune.progress import sections_text
from playground.finetune.result import METRICS_FILE, RunMetrics

EXIT_CANCELLED = 130


class ConsoleControl:
    """Prints each event as a line; ``should_stop`` turns true after the first Ctrl-C."""

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout
        self._stop = threading.Event()
        self._started = time.perf_counter()

    def request_stop(self) -> None:
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def emit(self, event: dict) -> None:
        line = format_event(event)
        if line and event.get("event") == "stage":  # stage lines carry the time since the start
            line = f"{line} (+{_duration(time.perf_counter() - self._started)})"
        if line:
            print(line, file=self.out, flush=True)


def _duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_event(event: dict) -> str:
    """One console line for a training event ("" for none)."""
    kind = event.get("event")
    if kind == "stage":
        return f"[{event['stage']}] {event['message']}"
    if kind == "start":
        return f"[training] {event['total_steps']} steps"
    if kind == "step":
        return (f"step {event['step']:>4}/{event['total_steps']}  loss {event['loss']:.4f}  "
                f"lr {event['learning_rate']:.2e}  epoch {event['epoch']:.2f}  "
                f"{event['tokens_per_s']:.0f} tok/s  eta {_duration(event['eta_s'])}")
    if kind == "eval":
        return f"step {event['step']:>4}  validation loss {event['eval_loss']:.4f}"
    if kind == "cancelled":
        return f"[cancelled] stopped at step {event['step']}; nothing was saved"
    if kind == "done":
        return summarize_metrics(RunMetrics.from_json(event.get("metrics") or {}))
    return ""


def summarize_metrics(metrics: RunMetrics) -> str:
    """A few lines: loss, before/after scores, speed."""
    lines = ["[done]"]
    if metrics.train_loss_first is not None:
        lines.append(f"  train loss {metrics.train_loss_first:.4f} -> {metrics.train_loss_last:.4f} "
                     f"over {metrics.steps} steps")
    if metrics.test_loss_before is not None and metrics.test_loss_after is not None:
        lines.append(f"  test loss  {metrics.test_loss_before:.4f} -> {metrics.test_loss_after:.4f}")
    if metrics.rouge_before and metrics.rouge_after:
        before, after = metrics.rouge_before, metrics.rouge_after
        lines.append("  ROUGE (base -> tuned, " + f"{metrics.sample_count} test examples): " + ", ".join(
            f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in before))
        engines = [(side, metrics.engine_of(side)) for side in ("base", "tuned", "quantized")]
        lines.append("  answered on " + ", ".join(f"{side}: {engine.label}" for side, engine in engines if engine))
        if metrics.rouge_quantized:
            quantized = metrics.rouge_quantized
            lines.append("  ROUGE fine-tuned, quantized: " + ", ".join(f"{k} {quantized[k]:.3f}" for k in quantized)
                         + f" ({metrics.quantization_points:+.1f} ROUGE-L points against the fine-tuned model)")
        elif metrics.quantized_unavailable:
            lines.append(f"  no quantized answers: {metrics.quantized_unavailable}")
    if metrics.accuracy_before is not None and metrics.accuracy_after is not None:
        lines.append(f"  accuracy {metrics.accuracy_before:.3f} -> {metrics.accuracy_after:.3f}")
    if metrics.tokens_per_s:
        lines.append(f"  {metrics.tokens_per_s:.0f} tokens/s, training {_duration(metrics.train_duration_s)}, "
                     f"whole run {_duration(metrics.duration_s)}")
    if metrics.phase_seconds:
        lines.append(f"  time per phase: {sections_text(dict(metrics.phase_seconds))}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m playground finetune",
        description="Fine-tune a model from a YAML config (presets: examples/finetune/*.yaml).")
    parser.add_argument("config", type=Path, help="the YAML config (FinetuneConfig keys)")
    parser.add_argument("--max-steps", type=int, default=None, help="override max_steps")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where converted models are cached (default: PLAYGROUND_DATA_DIR or the user cache)")
    parser.add_argument("--output", type=Path, default=None,
                        help="the run directory for config.yaml, adapter/, samples.jsonl, metrics.json "
                             "(default: runs/<config name>-<time>)")
    parser.add_argument("--estimate", action="store_true",
                        help="print the pre-flight estimate (parameters, memory, one timed step) and stop")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from playground.config import Settings
    from playground.finetune.config import FinetuneConfig

    if args.config.name.startswith("sweep-"):  # examples/finetune/sweep-*.yaml: several runs, not one config
        print(f"playground finetune: {args.config.name} is a sweep preset (several runs queued one after another); "
              f"start it from the Fine-tune tab (Run the sweep), or give one run's config.", file=sys.stderr)
        return 2
    try:
        settings = Settings.load()
        config = FinetuneConfig.from_yaml(args.config, check=False)
        if args.max_steps is not None:
            config = config.replace(max_steps=args.max_steps)
        config.check()
    except PlaygroundError as exc:
        print(f"playground finetune: {exc}", file=sys.stderr)
        return 2
    data_dir = args.data_dir or settings.data_dir
    from playground.models.sources import SourceResolver

    resolver = SourceResolver(settings.models_dir, settings.offline)
    if args.estimate:
        return _estimate(config, data_dir, resolver)
    run_dir = args.output or Path("runs") / f"{args.config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if any((run_dir / name).exists() for name in (METRICS_FILE, ADAPTER_DIR, MODEL_DIR)):
        print(f"playground finetune: {run_dir} already holds a finished run; choose another --output.",
              file=sys.stderr)
        return 2
    control = ConsoleControl()
    previous = _install_interrupt(control)
    from playground.finetune.train import train

    try:
        outcome = train(config, run_dir, control, data_dir, resolver=resolver)
    except FinetuneConfigError as exc:
        print(f"playground finetune: {exc}", file=sys.stderr)
        return 2
    except PlaygroundError as exc:
        print(f"playground finetune: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if outcome.cancelled:
        return EXIT_CANCELLED
    if _is_main_process():
        print(f"results in {run_dir.resolve()}", flush=True)
    return 0


def _estimate(config, data_dir: Path, resolver) -> int:
    from playground.finetune.preflight import preflight

    try:
        report = preflight(config, data_dir, resolver=resolver)
    except PlaygroundError as exc:
        print(f"playground finetune: {exc}", file=sys.stderr)
        return 1
    figures = report.as_dict()
    print(f"{config.method} on {config.model}: {report.trainable_parameters:,} of {report.total_parameters:,} "
          f"parameters train ({100 * report.trainable_share:.2f}%), adapter {figures['adapter_mb']} MB")
    print(f"memory: {report.memory.describe()}; full fine-tuning: {report.full_memory.describe()}; "
          f"available: {figures['budget_gib']} GiB ({report.budget_where})")
    if report.step_seconds is not None:
        print(f"one step: {report.step_seconds:.2f} s; {report.total_steps} steps: about "
              f"{_duration(report.duration_s or 0)}")
    if report.run_estimate is not None:
        print(f"the whole run: about {_duration(report.run_estimate.total_s)} ({report.run_estimate.describe()})")
    return 0


def _install_interrupt(control: ConsoleControl):
    """First Ctrl-C: stop after this step. Second: the usual KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if control.should_stop():
            raise KeyboardInterrupt
        control.request_stop()
        print("\n[stopping] after the current step; Ctrl-C again to abort at once", file=sys.stderr, flush=True)

    return signal.signal(signal.SIGINT, handler)


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
