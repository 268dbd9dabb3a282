"""Fine-tune tab: choose a model, data and method, see the cost, start a run, watch it, compare before and after.

Layout and wiring only. Each handler turns the widgets' values into a
:class:`~playground.finetune.session.FinetuneForm` (or takes the identity token
and the chosen run), calls the app's
:class:`~playground.finetune.session.FinetuneSession` and turns its answer into
widget values; the handlers are plain functions of the session (``on_*``), so a
test drives them without a running app. Runs are jobs in child processes; the
page polls with a timer, reading only the progress lines added since its last
poll (a :class:`~playground.finetune.session.PollCursor` kept per browser), so a
run keeps going when the browser closes and the page reattaches to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from playground.errors import PlaygroundError
from playground.finetune.gguf_samples import BASE, QUANTIZED, TUNED
from playground.finetune.gguf_export import DEFAULT_TYPE
from playground.finetune.config import FinetuneConfig
from playground.finetune.methods import KNOBS, METHODS, get_method
from playground.finetune.progress import RUN_SECTIONS
from playground.finetune.result import (
    CHART_METRICS,
    GAIN_AND_FORGETTING,
    MARGIN_COLUMN,
    QUANTIZATION_COLUMN,
    RUN_COLUMNS,
    SYSTEM_NAMES,
    chart_rows,
    shown_rows,
)
from playground.finetune.session import (
    INTEGER_FIELDS,
    UPLOAD,
    FinetuneForm,
    FinetuneSession,
    NoGGUFBase,
    NoRunChosen,
    NotAnAdapter,
    NothingSaved,
    NotMergeable,
    PollCursor,
    RunNotFinished,
    RunView,
    SessionRefusal,
)
from playground.models.quantize import QUANT_TYPE_NAMES
from playground.services import Services
from playground.ui.downloads import PrivateDownloads
from playground.ui.i18n import Texts, t
from playground.ui.identity import request_address
from playground.ui.render import histogram_html, line_chart_html
from playground.ui.tabs.prompt_lab import ModelPickers
from playground.ui.widgets import empty_table, user_errors, warning_text

POLL_S = 2.0
# Widgets made from FinetuneConfig fields, in the order of the hyperparameter panel.
NUMBER_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "learning_rate", "max_steps", "epochs", "batch_size",
                 "grad_accum", "max_length", "eval_every", "validation_fraction", "test_limit", "sample_count",
                 "max_new_tokens", "forgetting_examples", "seed")
NUMBER_FIELDS += ("dpo_beta",)  # method dpo's knob (the other methods ignore it)
SCORE_COLUMNS = ["bar", "metric", "model", "score"]
RUNS_CHART_COLUMNS = ["run", "series", "value"]  # and "bar": the x axis
# Config fields with a widget in the tab: each has a label (ft.field.<name>) and help (ft.help.<name>) in every
# language; the English help is the config dataclass's own (tests/ui/test_finetune_texts.py holds them together).
TEXT_FIELDS = ("model", "method", "template", "input_column", "target_column", "target_modules")
# More fields, after the numbers among the handlers' inputs: the other PEFT methods' knobs (under the method, shown
# when it is chosen) and the learning-rate schedule (with the hyperparameters). Choices are dropdowns, lists and
# text are textboxes, numbers are numbers.
METHOD_FIELDS = ("num_virtual_tokens", "prompt_tuning_init", "prompt_tuning_init_text", "ia3_target_modules",
                 "ia3_feedforward_modules")
SCHEDULE_FIELDS = ("lr_scheduler_type", "warmup_ratio", "warmup_steps")
EXTRA_FIELDS = METHOD_FIELDS + SCHEDULE_FIELDS
SHOWN_FIELDS = TEXT_FIELDS + NUMBER_FIELDS + EXTRA_FIELDS
# The before/after table's columns (besides the systems, named with their engines) and the data preview's.
COMPARISON_HEADERS = {"#": "ft.col.index", "reference": "ft.col.reference", "ROUGE-L gain": "ft.col.gain",
                      "input": "ft.col.input", "base correct": "ft.col.base_correct",
                      "tuned correct": "ft.col.tuned_correct", "improvement": "ft.col.improvement",
                      "rejected": "ft.col.rejected", MARGIN_COLUMN: "ft.col.margin"}
EXAMPLE_HEADERS = ("ft.col.line", "ft.col.prompt", "ft.col.completion")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def form_from_values(model, method, data, upload, input_column, target_column, template, target_modules,
                     *numbers) -> FinetuneForm:
    """The form from the widgets, in the order of ``config_inputs`` (numbers in NUMBER_FIELDS order, then the
    EXTRA_FIELDS; a caller that leaves those out gets the config's defaults)."""
    values = dict(zip(NUMBER_FIELDS + EXTRA_FIELDS, numbers))
    values = {name: value for name, value in values.items() if not (name in EXTRA_FIELDS and value is None)}
    return FinetuneForm(model=model, method=method, data=data, upload=upload, input_column=input_column or "",
                        target_column=target_column or "", template=template or "auto",
                        target_modules=target_modules or "", numbers=values)


def knob_visibility(method: str) -> dict[str, bool]:
    """Which method knobs the tab shows for ``method`` (its entry's knobs); every knob with a widget is listed."""
    try:
        chosen = set(get_method(method).knobs)
    except PlaygroundError:
        chosen = set()
    return {name: name in chosen for name in KNOBS}


def extra_widget(name: str, value, label, info, elem_id: str, visible: bool = True):
    """The widget of one EXTRA_FIELDS config field: a dropdown of its choices, a number, or a textbox."""
    choices = FinetuneConfig.bounds(name).get("choices")
    if choices:
        return gr.Dropdown([(t(f"ft.choice.{name}.{c}"), c) for c in choices], value=value, label=label, info=info,
                           elem_id=elem_id, visible=visible)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return gr.Number(value, label=label, info=info, precision=0 if name in INTEGER_FIELDS else None,
                         elem_id=elem_id, visible=visible)
    text = ", ".join(value) if isinstance(value, tuple) else value
    return gr.Textbox(text, label=label, info=info, elem_id=elem_id, visible=visible)


@contextlib.contextmanager
def shown_errors(texts: Texts, settings):
    """A refusal of the session as a toast in the page's language; any other PlaygroundError with its message."""
    with user_errors(settings):
        try:
            yield
        except SessionRefusal as exc:  # worded here, in the page's language
            raise gr.Error(refusal_text(exc, texts), print_exception=False) from None


def step(progress, fraction: float, text: str):
    """A callback that moves the handler's progress bar (None without one)."""
    return None if progress is None else (lambda: progress(fraction, desc=text))


def refusal_text(exc: SessionRefusal, texts: Texts) -> str:
    if isinstance(exc, RunNotFinished):
        return texts("ft.not_finished", status=status_word(exc.status, texts))
    if isinstance(exc, NoGGUFBase):
        return texts("ft.no_gguf_base", base=exc.base)
    if isinstance(exc, NotMergeable):
        return texts("ft.merge_prompts", kind=exc.kind)
    key = {NoRunChosen: "ft.no_run", NothingSaved: "ft.nothing_saved", NotAnAdapter: "ft.merge_full"}
    return texts(key[type(exc)]) if type(exc) in key else str(exc)


# ------------------------------------------------------------------------------ answers as widget values


def status_word(status: str, texts: Texts) -> str:
    return texts(f"ft.status.{status}") if status in STATUSES else status


def duration_text(seconds: float, texts: Texts) -> str:
    """"3 min 05 s" or "40 s"."""
    seconds = max(0, int(round(seconds)))
    minutes, rest = divmod(seconds, 60)
    return texts("ft.minutes", minutes=minutes, seconds=rest) if minutes else texts("ft.seconds", seconds=rest)


def phase_text(record, texts: Texts) -> str:
    """The running phase with its counts, e.g. "Base model: generating 3 of 12", in the page's language; the
    trainer's own (English) stage message for a stage without counts."""
    if record.phase and record.phase_total:
        return texts(f"ft.phase.{record.phase}", done=record.phase_done or 0, total=record.phase_total)
    return texts(f"ft.stage.{record.stage}") if record.stage in ("loading", "saving") else record.stage_message


def progress_bar(done: int, total: int, label: str) -> str:
    """A bar with the counts written in it (HTML; crisp on a projector, read by screen readers)."""
    share = max(0.0, min(1.0, done / total)) if total else 0.0
    return (f'<div class="ft-progress" role="progressbar" aria-valuenow="{done}" aria-valuemin="0" '
            f'aria-valuemax="{total}" aria-label="{label}" style="background:#e5e7eb;border-radius:6px;'
            f'height:14px;margin:6px 0;overflow:hidden"><div class="ft-progress-fill" style="width:{100 * share:.1f}%;'
            f'height:100%;background:#4f46e5"></div></div>')


def progress_text(record, texts: Texts) -> str:
    if record is None:
        return texts("ft.no_run")
    parts = [f"**{record.name or record.id}** · {status_word(record.status, texts)}"]
    if record.queue_position:
        parts.append(texts("ft.queued", position=record.queue_position))
    phase = phase_text(record, texts) if not record.terminal else ""
    if phase:
        parts.append(phase)
    if record.total_steps and record.phase != "training":
        parts.append(texts("ft.steps", step=record.step or 0, total=record.total_steps))
    if record.loss is not None:
        parts.append(texts("ft.loss_value", loss=record.loss))
    if record.eta_s is not None and not record.terminal:
        parts.append(texts("ft.eta_all", time=duration_text(record.eta_s, texts)))
    if record.message and record.terminal:
        parts.append(record.message)
    line = " · ".join(parts)
    if not record.terminal and record.phase and record.phase_total:
        line += "\n\n" + progress_bar(record.phase_done or 0, record.phase_total, phase)
    return line


def engine_text(engine, texts: Texts) -> str:
    """What answered for one system, e.g. "llama.cpp Q4_1 + adapter" (the adapter in the page's language)."""
    text = " ".join(part for part in (engine.engine, engine.weights) if part)
    return texts("ft.engine_adapter", engine=text) if engine.adapter else text


def system_labels(metrics, texts: Texts) -> dict[str, str]:
    """The before/after table's and chart's system names ("base", "fine-tuned", ...) as the page shows them:
    translated, with the engine that answered ("base · llama.cpp Q4_1")."""
    labels = {}
    if metrics is None:
        return labels
    for system, key in ((BASE, "ft.system_base"), (TUNED, "ft.system_tuned"), (QUANTIZED, "ft.system_quantized")):
        engine = metrics.engine_of(system)
        if engine is not None:
            labels[SYSTEM_NAMES[system]] = texts(key, engine=engine_text(engine, texts))
    return labels


def preference_text(figures, texts: Texts) -> str:
    """A preference run's held-out figures (preference.PreferenceMetrics as JSON), accuracies in percent."""
    return texts("ft.gain_preference", pairs=int(figures.get("pairs") or 0),
                 before=100 * float(figures.get("accuracy_before") or 0.0),
                 after=100 * float(figures.get("accuracy_after") or 0.0),
                 margin_before=float(figures.get("margin_before") or 0.0),
                 margin_after=float(figures.get("margin_after") or 0.0),
                 reward_accuracy=100 * float(figures.get("reward_accuracy") or 0.0),
                 reward_margin=float(figures.get("reward_margin") or 0.0))


def gain_text(metrics, texts: Texts) -> str:
    if metrics is None:
        return ""
    if metrics.preference:  # first the preference figures, then the answers' ROUGE against the chosen ones
        rest = gain_text(dataclasses.replace(metrics, preference=None, quantized_unavailable=""), texts)
        return "\n\n".join(part for part in (preference_text(metrics.preference, texts), rest) if part)
    if metrics.rouge_after and metrics.rouge_before:
        before, after = metrics.rouge_before["rougeL"], metrics.rouge_after["rougeL"]
        lines = [texts("ft.gain", before=100 * before, after=100 * after, gain=100 * (after - before),
                       examples=metrics.sample_count, seconds=metrics.duration_s)]
        forgetting = forgetting_text(metrics, texts)
        if forgetting:
            lines.append(forgetting)
        quantized = metrics.engine_of(QUANTIZED)
        if metrics.rouge_quantized and quantized is not None:
            lines.append(texts("ft.quantized_gain", engine=engine_text(quantized, texts),
                               quantized=100 * metrics.rouge_quantized["rougeL"], points=metrics.quantization_points))
        elif metrics.quantized_unavailable:
            lines.append(texts("ft.no_quantized", reason=metrics.quantized_unavailable))
        if metrics.phase_seconds:
            lines.append(phase_times_text(metrics.phase_seconds, texts))
        return "\n\n".join(lines)
    if metrics.accuracy_after is not None:
        return texts("ft.gain_accuracy", before=100 * (metrics.accuracy_before or 0),
                     after=100 * metrics.accuracy_after)
    return ""


def forgetting_text(metrics, texts: Texts) -> str:
    """The forgetting check next to the run's own gain: each other task's score, base -> fine-tuned, and the mean
    change in points ("" when the run had no check)."""
    report = metrics.forgetting_report if metrics is not None else None
    if report is None:
        return ""
    if report.unavailable:
        return texts("ft.forgetting_unavailable", reason=report.unavailable)
    parts = []
    for task in report.tasks:
        if task.before is None or task.after is None:
            continue
        parts.append(texts("ft.forgetting_task", task=texts(f"ft.task.{task.task}"),
                           metric=texts(f"ft.metric.{task.metric}"), before=100 * task.before,
                           after=100 * task.after, change=100 * task.change))
    if not parts or report.mean_change is None:
        return texts("ft.forgetting_unavailable", reason=texts("ft.forgetting_stopped"))
    gain = None
    if metrics.rouge_before and metrics.rouge_after:
        gain = 100 * (metrics.rouge_after["rougeL"] - metrics.rouge_before["rougeL"])
    return texts("ft.forgetting", examples=report.examples, tasks="; ".join(parts), mean=report.mean_change,
                 gain=gain if gain is not None else 0.0)


def phase_times_text(phase_seconds, texts: Texts) -> str:
    """'Time per phase: loading 12 s, base model scored 30 s, ...' of a finished run (sections it knows)."""
    parts = [texts(f"ft.section.{name}", seconds=seconds) for name, seconds in phase_seconds.items()
             if name in RUN_SECTIONS]
    return texts("ft.phase_times", phases=", ".join(parts)) if parts else ""


def cost_text(report, texts: Texts) -> str:
    data = report.as_dict()
    rows = [f"| | {texts('ft.chosen_method', method=report.method)} | {texts('ft.full')} |", "|---|---:|---:|"]
    for name in ("weights_gib", "gradients_gib", "optimizer_gib", "activations_gib", "total_gib"):
        rows.append(f"| {texts('ft.mem.' + name)} | {data['memory'][name]:.2f} GiB | "
                    f"{data['full_finetune_memory'][name]:.2f} GiB |")
    lines = [texts("ft.trainable", trainable=report.trainable_parameters, total=report.total_parameters,
                   share=100 * report.trainable_share),
             texts("ft.adapter_size", mb=report.adapter_bytes / 1e6) if report.adapter_bytes else "",
             "\n".join(rows),
             texts("ft.budget", gib=data["budget_gib"], where=report.budget_where,
                   verdict=texts("ft.fits" if report.fits else "ft.does_not_fit"))]
    if report.duration_s is not None:
        lines.append(texts("ft.duration", step=report.step_seconds, steps=report.total_steps,
                           minutes=report.duration_s / 60))
    estimate = getattr(report, "run_estimate", None)
    if estimate is not None:
        lines.append(texts("ft.run_estimate", minutes=estimate.total_s / 60, load=estimate.load_s,
                           base=estimate.base_scoring_s, training=estimate.training_s, tuned=estimate.tuned_scoring_s))
    return "\n\n".join(line for line in lines if line)


def run_choices(runs, texts: Texts | None = None) -> list[tuple[str, str]]:
    """(label, id) of each run: its short name, status and config; the id stays the value."""
    texts = texts or Texts()
    return [(f"{r.name or r.id} · {status_word(r.status, texts)} · {r.config_summary}", r.id) for r in runs]


def loss_chart(points, texts: Texts) -> str:
    """The loss curve: train and validation losses by step, each point a dot, whole-number step ticks."""
    series = {texts("ft.loss_train"): [(p.step, p.loss) for p in points if p.kind == "train"],
              texts("ft.loss_validation"): [(p.step, p.loss) for p in points if p.kind == "validation"]}
    return line_chart_html(series, x_title=texts("ft.axis_step"), y_title=texts("ft.axis_loss"),
                           empty=texts("ft.loss_empty"))


def lengths_chart(report, texts: Texts) -> str:
    """The token lengths of the training examples as a histogram, max_length as a dashed line."""
    bins = []
    for row in report.histogram():
        start, _, end = str(row["tokens"]).partition("-")
        group = texts("ft.over_max_length" if row["cut"] != "fits" else "ft.fits_max_length")
        bins.append((int(start), int(end or start), int(row["examples"]), group))
    return histogram_html(bins, x_title=texts("ft.axis_tokens"), y_title=texts("ft.axis_examples"),
                          marker=report.max_length, marker_label=texts("ft.max_length_marker", max_length=report.max_length),
                          empty=texts("ft.lengths_empty"))


def comparison_frame(rows, labels: dict[str, str], texts: Texts) -> pd.DataFrame:
    """The before/after rows with headers in the page's language (systems named with their engines)."""
    headers = {**{name: texts(key) for name, key in COMPARISON_HEADERS.items()}, **labels,
               QUANTIZATION_COLUMN: texts("ft.quantization_column")}
    return pd.DataFrame(list(rows)).rename(columns=headers)


def runs_frame(rows, texts: Texts) -> pd.DataFrame | None:
    """The person's runs side by side (session.run_rows), headers and statuses in the page's language, a figure a
    run lacks shown as "—"."""
    if not rows:
        return None
    frame = pd.DataFrame(shown_rows(rows))
    frame["status"] = frame["status"].map(lambda status: status_word(status, texts))
    return frame.rename(columns={name: texts(f"ft.runcol.{name}") for name in frame.columns})


def runs_chart_frame(rows, metric: str, texts: Texts) -> pd.DataFrame | None:
    """The runs chart: one bar per run (oldest first) for ``metric``, or the gain and the forgetting side by side;
    series named as the table's columns are."""
    bars = chart_rows(rows, metric if metric in CHART_METRICS else GAIN_AND_FORGETTING)
    if not bars:
        return None
    frame = pd.DataFrame(bars, columns=RUNS_CHART_COLUMNS)
    several = frame["series"].nunique() > 1
    # One bar per run and series, side by side (a bar plot stacks the series of one x value otherwise).
    frame["bar"] = [f"{run} · {texts(f'ft.chart_bar.{series}')}" if several else run
                    for run, series in zip(frame["run"], frame["series"])]
    frame["series"] = frame["series"].map(lambda name: texts(f"ft.runcol.{name}"))
    return frame


def compare_choices(runs, texts: Texts) -> list[tuple[str, str]]:
    """(label, id) of each run for the comparison picker: its short name and method (no status, so the choices
    stay the same while runs progress)."""
    return [(f"{r.name or r.id} · {r.config.get('method', '')}", r.id) for r in runs]


def sweep_text(sweep, texts: Texts) -> str:
    """What a sweep preset runs: its description and one line per run."""
    name = texts(f"ft.sweep.{sweep.id}") if texts.has(f"ft.sweep.{sweep.id}") else sweep.name
    about = texts(f"ft.sweep_about.{sweep.id}") if texts.has(f"ft.sweep_about.{sweep.id}") else sweep.description
    head = f"**{name}**" + (f" — {about}" if about else "")
    runs = "\n".join(f"{number}. `{label}`" for number, label in enumerate(sweep.labels(), start=1))
    return "\n\n".join([head, texts("ft.sweep_runs", count=len(sweep.configs)), runs])


def poll_values(view: RunView, token: str, texts: Texts, settings=None, compared=None,
                metric: str = GAIN_AND_FORGETTING) -> tuple:
    """(token, run picker, status, loss, scores, gain, comparison, runs table, cursor, comparison picker, runs
    chart) for one poll; ``compared`` are the run ids picked for the comparison (none: the newest runs)."""
    choices = run_choices(view.runs, texts)
    known = {r.id for r in view.runs}
    picked = [run_id for run_id in (compared or []) if run_id in known]
    rows = view.compared(picked or None)
    runs = runs_frame(rows, texts)
    compare = gr.update(choices=compare_choices(view.runs, texts), value=picked)
    frame = runs_chart_frame(rows, metric, texts)
    # The bars in the order the runs ran (a bar plot would sort its x values by name otherwise).
    chart = gr.update(value=frame, sort=list(frame["bar"]) if frame is not None else None)
    if view.record is None:
        status = warning_text(view.error, settings) if view.error is not None else texts("ft.no_run")
        # No run shown: the picker is emptied too, so a run of another identity (before a carry code) never stays.
        return (token, gr.update(choices=choices, value=None), status, loss_chart((), texts), None, "", None, runs,
                view.cursor, compare, chart)
    labels = system_labels(view.metrics, texts)
    scores = pd.DataFrame(view.scores, columns=SCORE_COLUMNS)
    scores["model"] = scores["model"].map(lambda name: labels.get(name, name))
    comparison = comparison_frame(view.comparison, labels, texts) if view.comparison else None
    return (token, gr.update(choices=choices, value=view.record.id), progress_text(view.record, texts),
            loss_chart(view.points, texts), scores if len(scores) else None, gain_text(view.metrics, texts),
            comparison, runs, view.cursor, compare, chart)


# ------------------------------------------------------------------------------ the handlers, as plain functions


def on_inspect(session: FinetuneSession, texts: Texts, form: FinetuneForm, progress=None) -> tuple:
    with shown_errors(texts, session.settings):
        report = session.inspect(form, progress=step(progress, 0.1, texts("ft.reading")))
    summary = texts("ft.data_summary", train=report.counts["train"], validation=report.counts["validation"],
                    test=report.counts["test"], source=report.source, template=report.template,
                    truncated=report.truncated, max_length=report.max_length)
    examples = pd.DataFrame(list(report.examples), columns=["line", "prompt", "completion"])
    examples.columns = [texts(key) for key in EXAMPLE_HEADERS]
    return summary, examples, lengths_chart(report, texts)


def on_estimate(session: FinetuneSession, texts: Texts, form: FinetuneForm, progress=None) -> str:
    with shown_errors(texts, session.settings):
        report = session.estimate(form, progress=step(progress, 0.1, texts("ft.measuring")))
    return cost_text(report, texts)


def on_start(session: FinetuneSession, texts: Texts, token: str, address: str, form: FinetuneForm) -> tuple:
    with shown_errors(texts, session.settings):
        started = session.start(form, token, address)
    name = next((r.name for r in started.runs if r.id == started.run_id), "") or started.run_id
    gr.Info(texts("ft.started", run=name))
    return token, gr.update(choices=run_choices(started.runs, texts), value=started.run_id)


def on_poll(session: FinetuneSession, texts: Texts, token: str, run_id: str | None,
            cursor: PollCursor | None, compared=None, metric: str | None = None) -> tuple:
    return poll_values(session.poll(token, run_id, cursor), token, texts, session.settings, compared,
                       metric or GAIN_AND_FORGETTING)


def on_start_sweep(session: FinetuneSession, texts: Texts, token: str, address: str, preset: str) -> tuple:
    """Queue a sweep preset's runs; the run picker shows its first run."""
    with shown_errors(texts, session.settings):
        started = session.start_sweep(preset, token, address)
    gr.Info(texts("ft.sweep_started", count=len(started.sweep_runs), sweep=started.sweep))
    return token, gr.update(choices=run_choices(started.runs, texts), value=started.run_id)


def on_sweep_info(session: FinetuneSession, texts: Texts, preset: str | None) -> str:
    """What the chosen sweep preset runs (or why it cannot)."""
    if not preset:
        return ""
    try:
        return sweep_text(session.sweep(preset), texts)
    except PlaygroundError as exc:  # answered unqueued (on the page's load): a line on the page, not a toast
        return warning_text(exc, session.settings)


def on_cancel(session: FinetuneSession, texts: Texts, token: str, run_id: str | None) -> None:
    with shown_errors(texts, session.settings):
        outcome = session.cancel(token, run_id)
    if not outcome.stopping:
        gr.Warning(texts("ft.already_ended", run=outcome.run_id, status=outcome.status))
    elif outcome.sweep:
        gr.Info(texts("ft.cancelled_sweep", sweep=outcome.sweep, stopped=outcome.stopped))
    elif outcome.status == "cancelled":  # it was still waiting in the queue
        gr.Info(texts("ft.cancelled_queued", run=outcome.run_id))
    else:
        gr.Info(texts("ft.cancelling", run=outcome.run_id))


def on_download(session: FinetuneSession, downloads: PrivateDownloads, texts: Texts, token: str,
                run_id: str | None) -> str:
    with shown_errors(texts, session.settings):
        return downloads.serve(session.download(token, run_id))


def on_merge(session: FinetuneSession, downloads: PrivateDownloads, texts: Texts, token: str, run_id: str | None,
             progress=None) -> str:
    with shown_errors(texts, session.settings):
        archive = session.merge(token, run_id, progress=step(progress, 0.2, texts("ft.merging")))
        return downloads.serve(archive)


def on_adapter_gguf(session: FinetuneSession, downloads: PrivateDownloads, texts: Texts, token: str,
                    run_id: str | None, progress=None) -> str:
    with shown_errors(texts, session.settings):
        adapter = session.adapter_gguf(token, run_id, progress=step(progress, 0.2, texts("ft.converting_adapter")))
        return downloads.serve(adapter)


def on_merged_gguf(session: FinetuneSession, downloads: PrivateDownloads, texts: Texts, token: str,
                   run_id: str | None, type_name: str, progress=None) -> str:
    with shown_errors(texts, session.settings):
        merged = session.merged_gguf(token, run_id, type_name or DEFAULT_TYPE,
                                     progress=step(progress, 0.2, texts("ft.merging_gguf", type=type_name)))
        return downloads.serve(merged)


def on_upload(session: FinetuneSession, texts: Texts, path: str | None) -> tuple:
    """An uploaded file, read at once: the data choice becomes the upload, and the page says what it holds
    (its own name, rows and columns) or, in a toast, why it cannot be used."""
    if not path:
        return gr.update(), ""
    with shown_errors(texts, session.settings):
        found = session.check_upload(path)
    return (gr.update(value=UPLOAD), texts("ft.upload_ok", name=found.name, rows=found.rows,
                                           columns=", ".join(f"`{c}`" for c in found.columns)))


def table_headers(texts: Texts, rows_kind: str) -> dict[str, str]:
    """The CSV headers in the page's language: the before/after table's, or the run comparison's."""
    if rows_kind == "runs":
        return {name: texts(f"ft.runcol.{name}") for name in RUN_COLUMNS}
    return {**{name: texts(key) for name, key in COMPARISON_HEADERS.items()},
            SYSTEM_NAMES[BASE]: texts("ft.col.base"), SYSTEM_NAMES[TUNED]: texts("ft.col.tuned"),
            SYSTEM_NAMES[QUANTIZED]: texts("ft.col.quantized"), QUANTIZATION_COLUMN: texts("ft.quantization_column")}


def on_comparison_csv(session: FinetuneSession, downloads: PrivateDownloads, texts: Texts, token: str,
                      run_id: str | None) -> str:
    with shown_errors(texts, session.settings):
        return downloads.serve(session.comparison_csv(token, run_id, table_headers(texts, "comparison"),
                                                      texts.language))


def on_runs_csv(session: FinetuneSession, downloads: PrivateDownloads, texts: Texts, token: str,
                compared=None) -> str:
    with shown_errors(texts, session.settings):
        return downloads.serve(session.runs_csv(token, table_headers(texts, "runs"), texts.language,
                                                list(compared or []) or None))


def on_use_in_lab(session: FinetuneSession, links: "FinetuneLinks", texts: Texts, token: str,
                  run_id: str | None) -> list:
    with shown_errors(texts, session.settings):
        tuned = session.use_in_lab(token, run_id)
    gr.Info(texts("ft.in_lab", name=tuned.label))
    return [gr.Tabs(selected=links.prompt_lab_tab_id), *links.lab_models.comparison(token, tuned, session.catalog.ids)]


# ------------------------------------------------------------------------------ layout and wiring


@dataclass(frozen=True)
class FinetuneLinks:
    """What the Fine-tune tab reaches outside itself: the app's tabs, to open the Prompt Lab on a tuned model."""

    tabs: gr.Tabs
    prompt_lab_tab_id: str
    lab_models: ModelPickers


def make_session(services: Services) -> FinetuneSession:
    """The app's fine-tuning session, over its shared run store, job manager and identities."""
    return FinetuneSession(runs=services.runs, jobs=services.jobs, identities=services.identities,
                           catalog=services.catalog, resolver=services.engines.resolver, settings=services.settings)


def build(services: Services, owner: gr.BrowserState, links: FinetuneLinks) -> tuple:
    """The tab; ``owner`` is the browser's identity token (shared with the Prompt Lab), issued when the page opens.
    Returns ``(handler, inputs, outputs)`` that lists the runs of a new identity (after a carry code)."""
    session = make_session(services)
    limits = session.limits
    defaults = session.defaults()  # starting values a workshop user can submit unchanged

    gr.Markdown(t("ft.intro"), elem_classes=["tab-intro"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                model = gr.Dropdown(session.model_choices(), value=defaults.model, label=t("ft.model"),
                                    info=t("ft.help.model"), elem_id="ft-model", min_width=280)
                method = gr.Radio([(t(f"ft.method.{m}"), m) for m in METHODS], value=defaults.method, label=t("ft.method"),
                                  info=t("ft.help.method"), elem_id="ft-method")
            shown_knobs = knob_visibility(defaults.method)
            extras = {}
            with gr.Row(elem_id="ft-method-knobs"):  # the chosen method's own settings
                for name in METHOD_FIELDS:
                    cap = limits.maximum(name)
                    label = t(f"ft.field.{name}") if cap is None else t(f"ft.field.{name}") + f" ≤ {cap}"
                    extras[name] = extra_widget(name, getattr(defaults, name), label, t(f"ft.help.{name}"),
                                                f"ft-{name.replace('_', '-')}", visible=shown_knobs[name])
            with gr.Row():
                data = gr.Dropdown([(t(f"ft.data.{name}"), name) for _, name in session.data_choices()]
                                   + [(t("ft.upload_choice"), UPLOAD)], value=defaults.data,
                                   label=t("ft.data"), info=t("ft.data_info"), elem_id="ft-data", min_width=300,
                                   allow_custom_value=True)
                template = gr.Dropdown([(t("ft.template.plain"), name) if name == "plain" else name
                                        for name in session.template_choices()], value=defaults.template, label=t("ft.template"),
                                       info=t("ft.help.template"), elem_id="ft-template", min_width=260)
            with gr.Row():
                upload = gr.File(label=t("ft.upload"), file_types=[".jsonl", ".csv", ".tsv"], type="filepath",
                                 elem_id="ft-upload", height=120)
                input_column = gr.Textbox(label=t("ft.input_column"), info=t("ft.help.input_column"),
                                          elem_id="ft-input-column")
                target_column = gr.Textbox(label=t("ft.target_column"), info=t("ft.help.target_column"),
                                           elem_id="ft-target-column")
        with gr.Column(scale=2):
            with gr.Accordion(t("ft.hyperparameters"), open=False):
                target_modules = gr.Textbox(", ".join(defaults.target_modules), label=t("ft.field.target_modules"),
                                            info=t("ft.help.target_modules"), elem_id="ft-target-modules",
                                            visible=shown_knobs["target_modules"])
                numbers = {}
                # No widget bounds: the config and the limits refuse a bad value with a message naming the field
                # and its range, where Gradio's own bound check would not name it. A cap shows in the label.
                for name in NUMBER_FIELDS:
                    cap = limits.maximum(name)
                    label = t(f"ft.field.{name}") if cap is None else t(f"ft.field.{name}") + f" ≤ {cap}"
                    numbers[name] = gr.Number(getattr(defaults, name), label=label, info=t(f"ft.help.{name}"),
                                              precision=0 if name in INTEGER_FIELDS else None,
                                              elem_id=f"ft-{name.replace('_', '-')}",
                                              visible=shown_knobs.get(name, True))
                for name in SCHEDULE_FIELDS:
                    extras[name] = extra_widget(name, getattr(defaults, name), t(f"ft.field.{name}"),
                                                t(f"ft.help.{name}"), f"ft-{name.replace('_', '-')}")
    with gr.Row():
        inspect_button = gr.Button(t("ft.inspect"), elem_id="ft-inspect")
        preflight_button = gr.Button(t("ft.preflight"), elem_id="ft-preflight")
        start = gr.Button(t("ft.start"), variant="primary", elem_id="ft-start")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            data_summary = gr.Markdown(elem_id="ft-data-summary")
            # No headers until the data is inspected: the handler names the columns in the page's language.
            examples = gr.Dataframe(empty_table(), label=t("ft.examples"), wrap=True,
                                    interactive=False, max_height=360, elem_id="ft-examples",
                                    column_widths=["7%", "60%", "33%"])
        with gr.Column(scale=2):
            lengths = gr.HTML(label=t("ft.lengths"), show_label=True, container=True, elem_id="ft-lengths")
    costs = gr.Markdown(elem_id="ft-costs")

    gr.Markdown(t("ft.runs_title"), elem_classes=["section-title"])
    with gr.Row():
        run_picker = gr.Dropdown([], label=t("ft.run"), info=t("ft.run_info"), elem_id="ft-run", scale=4,
                                 allow_custom_value=True)
        cancel = gr.Button(t("ft.cancel"), variant="stop", elem_id="ft-cancel", scale=1)
    status = gr.Markdown(elem_id="ft-status")
    with gr.Row(equal_height=False):
        compare_runs = gr.Dropdown([], value=[], multiselect=True, label=t("ft.compare_runs"),
                                   info=t("ft.compare_runs_info"), elem_id="ft-compare-runs", scale=3, min_width=280)
        chart_metric = gr.Dropdown([(t(f"ft.chart.{m}"), m) for m in CHART_METRICS], value=GAIN_AND_FORGETTING,
                                   label=t("ft.chart_metric"), info=t("ft.chart_metric_info"),
                                   elem_id="ft-chart-metric", scale=1, min_width=280)
    runs_table = gr.Dataframe(label=t("ft.runs_table"), wrap=True, interactive=False, max_height=520,
                              elem_id="ft-runs")
    runs_chart = gr.BarPlot(None, x="bar", y="value", color="series", sort=None, x_title=" ", y_title=" ",
                            color_title=" ", label=t("ft.runs_chart"), height=340, elem_id="ft-runs-chart")
    # A shipped preset's name is a locale key (ft.sweep.<id>); a deployer's own preset shows the name its file gives.
    sweep_choices = [(t(f"ft.sweep.{preset}") if Texts().has(f"ft.sweep.{preset}") else name, preset)
                     for name, preset in session.sweep_choices()]
    with gr.Row(equal_height=False):
        sweep_preset = gr.Dropdown(sweep_choices, value=sweep_choices[0][1] if sweep_choices else None,
                                   label=t("ft.sweep_preset"), info=t("ft.sweep_preset_info"),
                                   elem_id="ft-sweep-preset", scale=2, min_width=280)
        sweep_start = gr.Button(t("ft.sweep_start"), elem_id="ft-sweep-start", scale=1)
    sweep_info = gr.Markdown(elem_id="ft-sweep-info")
    with gr.Row(equal_height=False):
        loss_plot = gr.HTML(label=t("ft.loss"), show_label=True, container=True, elem_id="ft-loss", scale=3,
                            min_width=320)
        scores = gr.BarPlot(None, x="bar", y="score", color="model", y_lim=[0, 100], sort=None, x_title=" ",
                            y_title="%", label=t("ft.scores"), height=300, elem_id="ft-scores", scale=2)
    gain = gr.Markdown(elem_id="ft-gain")
    comparison = gr.Dataframe(empty_table(), label=t("ft.comparison"), wrap=True, interactive=False, max_height=560,
                              elem_id="ft-comparison")
    with gr.Row():
        download_adapter = gr.Button(t("ft.download_adapter"), elem_id="ft-download-adapter")
        merge = gr.Button(t("ft.merge"), elem_id="ft-merge")
        use_in_lab = gr.Button(t("ft.use_in_lab"), variant="primary", elem_id="ft-use-in-lab")
        download_file = gr.File(label=t("ft.download"), interactive=False, elem_id="ft-download", height=90)
    with gr.Row():
        comparison_csv = gr.Button(t("ft.comparison_csv"), elem_id="ft-comparison-csv")
        runs_csv = gr.Button(t("ft.runs_csv"), elem_id="ft-runs-csv")
    with gr.Row(equal_height=False):
        download_adapter_gguf = gr.Button(t("ft.download_adapter_gguf"), elem_id="ft-download-adapter-gguf")
        gguf_type = gr.Dropdown(list(QUANT_TYPE_NAMES), value=DEFAULT_TYPE, label=t("ft.gguf_type"),
                                info=t("ft.gguf_type_info"), elem_id="ft-gguf-type")
        download_gguf = gr.Button(t("ft.download_gguf"), elem_id="ft-download-gguf")
    gr.Markdown(t("ft.notice"), elem_classes=["notice"])
    timer = gr.Timer(POLL_S)
    cursor = gr.State(None)  # how far this browser has read the chosen run's progress (a PollCursor)

    config_inputs = [model, method, data, upload, input_column, target_column, template, target_modules,
                     *(numbers[name] for name in NUMBER_FIELDS), *(extras[name] for name in EXTRA_FIELDS)]
    knob_widgets = {**numbers, **extras, "target_modules": target_modules}
    knob_outputs = [knob_widgets[name] for name in KNOBS]
    # Archives are built once per run in its downloads/ folder and linked (not copied) into Gradio's cache
    # under an unguessable name, so repeated clicks cost no disk and nobody else can fetch them.
    downloads = PrivateDownloads()

    # --- handlers: the request's language (and address), then the plain functions above ------------------
    def inspect_data(request: gr.Request, *values, progress=gr.Progress()):
        return on_inspect(session, Texts.for_request(request), form_from_values(*values), progress)

    def estimate(request: gr.Request, *values, progress=gr.Progress()):
        return on_estimate(session, Texts.for_request(request), form_from_values(*values), progress)

    def start_run(request: gr.Request, token, *values):
        return on_start(session, Texts.for_request(request), token, request_address(request, services),
                        form_from_values(*values))

    def poll(request: gr.Request, token, run_id, read_so_far, compared=None, metric=GAIN_AND_FORGETTING):
        return on_poll(session, Texts.for_request(request), token, run_id, read_so_far, compared, metric)

    def start_sweep(request: gr.Request, token, preset):
        return on_start_sweep(session, Texts.for_request(request), token, request_address(request, services), preset)

    def sweep_described(request: gr.Request, preset):
        return on_sweep_info(session, Texts.for_request(request), preset)

    def cancel_run(request: gr.Request, token, run_id):
        on_cancel(session, Texts.for_request(request), token, run_id)

    def download(request: gr.Request, token, run_id):
        return on_download(session, downloads, Texts.for_request(request), token, run_id)

    def merge_and_download(request: gr.Request, token, run_id, progress=gr.Progress()):
        return on_merge(session, downloads, Texts.for_request(request), token, run_id, progress)

    def adapter_gguf_download(request: gr.Request, token, run_id, progress=gr.Progress()):
        return on_adapter_gguf(session, downloads, Texts.for_request(request), token, run_id, progress)

    def merged_gguf_download(request: gr.Request, token, run_id, type_name, progress=gr.Progress()):
        return on_merged_gguf(session, downloads, Texts.for_request(request), token, run_id, type_name, progress)

    def comparison_csv_download(request: gr.Request, token, run_id):
        return on_comparison_csv(session, downloads, Texts.for_request(request), token, run_id)

    def runs_csv_download(request: gr.Request, token, compared=None):
        return on_runs_csv(session, downloads, Texts.for_request(request), token, compared)

    def show_knobs(chosen):
        shown = knob_visibility(chosen)
        return [gr.update(visible=shown[name]) for name in KNOBS]

    def uploaded(request: gr.Request, path):
        return on_upload(session, Texts.for_request(request), path)

    def open_in_prompt_lab(request: gr.Request, token, run_id):
        return on_use_in_lab(session, links, Texts.for_request(request), token, run_id)

    # --- wiring -------------------------------------------------------------------
    inspect_button.click(inspect_data, config_inputs, [data_summary, examples, lengths], api_name="finetune_inspect",
                         show_progress_on=[data_summary])
    preflight_button.click(estimate, config_inputs, costs, api_name="finetune_preflight", show_progress_on=[costs],
                           concurrency_limit=1, concurrency_id="finetune-preflight")
    start.click(start_run, [owner, *config_inputs], [owner, run_picker], api_name="finetune_start")
    poll_outputs = [owner, run_picker, status, loss_plot, scores, gain, comparison, runs_table, cursor, compare_runs,
                    runs_chart]
    poll_inputs = [owner, run_picker, cursor, compare_runs, chart_metric]
    timer.tick(poll, poll_inputs, poll_outputs, api_name="finetune_poll", show_progress="hidden", queue=False)
    run_picker.input(poll, poll_inputs, poll_outputs, api_name=False, queue=False)
    # Picking runs to compare, or what the chart shows, answers at once (the next poll keeps the choice).
    compare_runs.input(poll, poll_inputs, poll_outputs, api_name=False, queue=False)
    chart_metric.input(poll, poll_inputs, poll_outputs, api_name=False, queue=False)
    sweep_start.click(start_sweep, [owner, sweep_preset], [owner, run_picker], api_name="finetune_sweep")
    # On the page's load (in its language) and whenever the preset changes: what the sweep runs.
    gr.on(None, sweep_described, sweep_preset, sweep_info, api_name="finetune_sweep_info", queue=False)
    # Queued, in groups of their own without a limit, so they never wait behind other work: an unqueued
    # event's gr.Error never reaches the page as a toast (Gradio 6's client drops the error's "visible" flag
    # for queue=False calls, and its toasts default to hidden), and gr.Info/gr.Warning need the queue too.
    cancel.click(cancel_run, [owner, run_picker], None, api_name="finetune_cancel", concurrency_limit=None,
                 concurrency_id="finetune-cancel")
    download_adapter.click(download, [owner, run_picker], download_file, api_name="finetune_download")
    merge.click(merge_and_download, [owner, run_picker], download_file, api_name="finetune_merge",
                concurrency_limit=1, concurrency_id="finetune-merge")
    # The GGUF builds share the merge's group: one merge or quantization at a time, app-wide.
    download_adapter_gguf.click(adapter_gguf_download, [owner, run_picker], download_file,
                                api_name="finetune_adapter_gguf", concurrency_limit=1, concurrency_id="finetune-merge")
    download_gguf.click(merged_gguf_download, [owner, run_picker, gguf_type], download_file,
                        api_name="finetune_merged_gguf", concurrency_limit=1, concurrency_id="finetune-merge")
    # An upload is read at once: a file that cannot be used says why under its own name, before any column.
    upload.upload(uploaded, upload, [data, data_summary], api_name="finetune_upload")
    # The chosen method's knobs show, the others hide (the entry of methods.TABLE says which).
    method.change(show_knobs, method, knob_outputs, api_name=False, queue=False, show_progress="hidden")
    comparison_csv.click(comparison_csv_download, [owner, run_picker], download_file, api_name="finetune_comparison_csv",
                         concurrency_limit=None, concurrency_id="finetune-csv")
    runs_csv.click(runs_csv_download, [owner, compare_runs], download_file, api_name="finetune_runs_csv",
                   concurrency_limit=None, concurrency_id="finetune-csv")
    use_in_lab.click(open_in_prompt_lab, [owner, run_picker], [links.tabs, *links.lab_models.comparison_outputs],
                     api_name="finetune_use_in_lab", concurrency_limit=None, concurrency_id="finetune-use-in-lab")

    def runs_of_new_identity(request: gr.Request, token):
        return poll(request, token, None, None, None, GAIN_AND_FORGETTING)

    return runs_of_new_identity, [owner], poll_outputs
