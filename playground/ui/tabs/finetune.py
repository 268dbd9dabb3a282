"""Fine-tune tab: choose a model, data and method, see the cost, start a run, watch it, compare before and after.

Runs are jobs in child processes (``services.jobs``); the page only submits,
polls the run's progress file with a timer and reads back its results, so a
run keeps going when the browser closes and the page reattaches to it. Who
owns a run is the identity behind the signed token the server gave this
browser (``playground.identity``), checked on every call. The logic is
``playground.finetune``; this module turns widget values into a
``FinetuneConfig`` and run files into charts and tables.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import gradio as gr
import pandas as pd

from playground.errors import PlaygroundError
from playground.finetune.config import ADAPTER_METHODS, HUB_PREFIX, METHODS, FinetuneConfig
from playground.finetune.data import BUNDLED_DATA, data_file_columns
from playground.finetune.export import merged_archive, result_archive, saved_result
from playground.finetune.finetuned import usable_result
from playground.finetune.limits import FinetuneLimits
from playground.finetune.planning import data_report
from playground.finetune.results import aggregate_rows, comparison_rows, loss_points, read_metrics, read_samples
from playground.finetune.templates import load_templates
from playground.finetune.train import preflight
from playground.services import Services
from playground.ui.downloads import PrivateDownloads
from playground.ui.i18n import Texts, t
from playground.ui.identity import owner_of, person, request_address
from playground.ui.tabs.prompt_lab import ModelPickers
from playground.ui.widgets import user_errors, warning_text

TRAIN_ENTRY = "playground.finetune.train:run_job"
POLL_S = 2.0
UPLOAD = "upload"
# Widgets made from FinetuneConfig fields, in the order of the hyperparameter panel.
NUMBER_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "learning_rate", "max_steps", "epochs", "batch_size",
                 "grad_accum", "max_length", "eval_every", "validation_fraction", "test_limit", "sample_count",
                 "max_new_tokens", "seed")
INTEGER_FIELDS = {f.name for f in fields(FinetuneConfig) if f.type in ("int", int)}


def _model_choices(services: Services) -> list[tuple[str, str]]:
    resolver = services.engines.resolver
    return [(f"{s.name} · {s.family} · {s.parameters_label} · "
             f"{'offline' if resolver.is_available_offline(s) else 'Hub'}", s.id) for s in services.catalog.models]


def config_from_values(model: str, method: str, data: str, upload_path, input_column: str, target_column: str,
                       template: str, target_modules: str, numbers: dict) -> FinetuneConfig:
    """A FinetuneConfig from the widgets; the dataclass refuses bad values with the field's name.

    An upload is read first, so a file that is not usable says so under its own name (never the
    server's temporary path); a missing column mapping lists the file's columns.
    """
    data = str(data or "").strip()
    source = data
    if data == UPLOAD:
        if not upload_path:
            raise PlaygroundError("Upload a JSONL or CSV file first, or choose a bundled data set.")
        source = str(upload_path)
        file_name = Path(source).name
        columns = data_file_columns(source)
        chosen = (("input", str(input_column or "").strip()), ("target", str(target_column or "").strip()))
        missing = [role for role, column in chosen if not column]
        if missing:
            raise PlaygroundError(f"Name the columns of {file_name}: choose the {' and the '.join(missing)} column "
                                  f"(its columns: {', '.join(columns)}).")
        for role, column in chosen:
            if column not in columns:
                raise PlaygroundError(f"{file_name} has no column {column!r} (the {role} column); its columns: "
                                      f"{', '.join(columns)}.")
    # A path typed into the page would read files of the server: only bundled sets, uploads and Hub ids here.
    elif data not in BUNDLED_DATA and not data.startswith(HUB_PREFIX):
        raise PlaygroundError(f"Data {data!r} is not available here: choose a bundled set "
                              f"({', '.join(BUNDLED_DATA)}), upload a file, or give hub:owner/name.")
    values = {name: (int(value) if name in INTEGER_FIELDS and value is not None else value)
              for name, value in numbers.items()}
    modules = tuple(m.strip() for m in (target_modules or "").split(",") if m.strip())
    return FinetuneConfig(model=model, method=method, data=source, input_column=input_column or "",
                          target_column=target_column or "", template=template or "auto", target_modules=modules,
                          **values)


def progress_text(record, texts: Texts) -> str:
    if record is None:
        return texts("ft.no_run")
    parts = [f"**{record.id}** · {record.status}"]
    if record.queue_position:
        parts.append(texts("ft.queued", position=record.queue_position))
    if record.stage_message:
        parts.append(record.stage_message)
    if record.total_steps:
        parts.append(texts("ft.steps", step=record.step or 0, total=record.total_steps))
    if record.loss is not None:
        parts.append(f"loss {record.loss:.3f}")
    if record.eta_s:
        parts.append(texts("ft.eta", seconds=record.eta_s))
    if record.message and record.terminal:
        parts.append(record.message)
    return " · ".join(parts)


def gain_text(metrics: dict, texts: Texts) -> str:
    if metrics.get("rouge_after") and metrics.get("rouge_before"):
        before, after = metrics["rouge_before"]["rougeL"], metrics["rouge_after"]["rougeL"]
        return texts("ft.gain", before=100 * before, after=100 * after, gain=100 * (after - before),
                     examples=metrics.get("sample_count", 0), seconds=metrics.get("duration_s", 0))
    if metrics.get("accuracy_after") is not None:
        return texts("ft.gain_accuracy", before=100 * (metrics.get("accuracy_before") or 0),
                     after=100 * metrics["accuracy_after"])
    return ""


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
    return "\n\n".join(line for line in lines if line)


@dataclass(frozen=True)
class FinetuneLinks:
    """What the Fine-tune tab reaches outside itself: the app's tabs, to open the Prompt Lab on a tuned model."""

    tabs: gr.Tabs
    prompt_lab_tab_id: str
    lab_models: ModelPickers


def build(services: Services, owner: gr.BrowserState, links: FinetuneLinks) -> None:
    """The tab; ``owner`` is the browser's identity token (shared with the Prompt Lab), issued when the page opens."""
    settings = services.settings
    templates = load_templates()
    models = _model_choices(services)
    limits = FinetuneLimits.from_settings(settings)
    defaults = limits.fit(FinetuneConfig())  # starting values a workshop user can submit unchanged

    gr.Markdown(t("ft.intro"), elem_classes=["tab-intro"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                model = gr.Dropdown(models, value=defaults.model, label=t("ft.model"),
                                    info=FinetuneConfig.help("model"), elem_id="ft-model")
                method = gr.Radio(list(METHODS), value=defaults.method, label=t("ft.method"),
                                  info=FinetuneConfig.help("method"), elem_id="ft-method")
            with gr.Row():
                data = gr.Dropdown([(f"{d.name} — {d.description}", d.name) for d in BUNDLED_DATA.values()]
                                   + [(t("ft.upload_choice"), UPLOAD)], value=defaults.data, label=t("ft.data"),
                                   info=t("ft.data_info"), elem_id="ft-data", allow_custom_value=True)
                template = gr.Dropdown(["auto"] + [tpl.id for tpl in templates.templates], value="auto",
                                       label=t("ft.template"), info=FinetuneConfig.help("template"),
                                       elem_id="ft-template")
            with gr.Row():
                upload = gr.File(label=t("ft.upload"), file_types=[".jsonl", ".csv", ".tsv"], type="filepath",
                                 elem_id="ft-upload", height=120)
                input_column = gr.Textbox(label=t("ft.input_column"), info=FinetuneConfig.help("input_column"),
                                          elem_id="ft-input-column")
                target_column = gr.Textbox(label=t("ft.target_column"), info=FinetuneConfig.help("target_column"),
                                           elem_id="ft-target-column")
        with gr.Column(scale=2):
            with gr.Accordion(t("ft.hyperparameters"), open=False):
                target_modules = gr.Textbox(", ".join(defaults.target_modules), label="target_modules",
                                            info=FinetuneConfig.help("target_modules"), elem_id="ft-target-modules")
                numbers = {}
                # No widget bounds: the config and the limits refuse a bad value with a message naming the field
                # and its range, where Gradio's own bound check would not name it. A cap shows in the label.
                for name in NUMBER_FIELDS:
                    cap = limits.maximum(name)
                    label = name if cap is None else f"{name} ≤ {cap}"
                    numbers[name] = gr.Number(getattr(defaults, name), label=label, info=FinetuneConfig.help(name),
                                              precision=0 if name in INTEGER_FIELDS else None,
                                              elem_id=f"ft-{name.replace('_', '-')}")
    with gr.Row():
        inspect_button = gr.Button(t("ft.inspect"), elem_id="ft-inspect")
        preflight_button = gr.Button(t("ft.preflight"), elem_id="ft-preflight")
        start = gr.Button(t("ft.start"), variant="primary", elem_id="ft-start")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            data_summary = gr.Markdown(elem_id="ft-data-summary")
            examples = gr.Dataframe(headers=["line", "prompt", "completion"], label=t("ft.examples"), wrap=True,
                                    interactive=False, max_height=360, elem_id="ft-examples",
                                    column_widths=["7%", "60%", "33%"])
        with gr.Column(scale=2):
            lengths = gr.BarPlot(None, x="tokens", y="examples", color="cut", sort=None, label=t("ft.lengths"),
                                 height=260, elem_id="ft-lengths")
    costs = gr.Markdown(elem_id="ft-costs")

    gr.Markdown(t("ft.runs_title"), elem_classes=["section-title"])
    with gr.Row():
        run_picker = gr.Dropdown([], label=t("ft.run"), info=t("ft.run_info"), elem_id="ft-run", scale=4,
                                 allow_custom_value=True)
        cancel = gr.Button(t("ft.cancel"), variant="stop", elem_id="ft-cancel", scale=1)
    status = gr.Markdown(elem_id="ft-status")
    with gr.Row(equal_height=False):
        loss_plot = gr.LinePlot(None, x="step", y="loss", color="kind", label=t("ft.loss"), height=300,
                                elem_id="ft-loss", scale=3)
        scores = gr.BarPlot(None, x="bar", y="score", color="model", y_lim=[0, 100], sort=None, x_title="",
                            label=t("ft.scores"), height=300, elem_id="ft-scores", scale=2)
    gain = gr.Markdown(elem_id="ft-gain")
    comparison = gr.Dataframe(headers=["#", "reference", "base", "fine-tuned", "ROUGE-L gain", "input"],
                              label=t("ft.comparison"), wrap=True, interactive=False, max_height=560,
                              elem_id="ft-comparison")
    with gr.Row():
        download_adapter = gr.Button(t("ft.download_adapter"), elem_id="ft-download-adapter")
        merge = gr.Button(t("ft.merge"), elem_id="ft-merge")
        use_in_lab = gr.Button(t("ft.use_in_lab"), variant="primary", elem_id="ft-use-in-lab")
        download_file = gr.File(label=t("ft.download"), interactive=False, elem_id="ft-download", height=90)
    gr.Markdown(t("ft.notice"), elem_classes=["notice"])
    timer = gr.Timer(POLL_S)

    number_widgets = [numbers[name] for name in NUMBER_FIELDS]
    config_inputs = [model, method, data, upload, input_column, target_column, template, target_modules,
                     *number_widgets]

    def read_config(values) -> FinetuneConfig:
        model_id, method_id, data_id, path, input_col, target_col, template_id, modules, *number_values = values
        return config_from_values(model_id, method_id, data_id, path, input_col, target_col, template_id, modules,
                                  dict(zip(NUMBER_FIELDS, number_values)))

    # --- handlers ----------------------------------------------------------------
    def inspect_data(request: gr.Request, *values, progress=gr.Progress()):
        texts = Texts.for_request(request)
        with user_errors():
            config = read_config(values)
            progress(0.1, desc=texts("ft.reading"))
            report = data_report(config, services.engines.resolver, settings.data_dir, services.catalog)
        summary = texts("ft.data_summary", train=report.counts["train"], validation=report.counts["validation"],
                        test=report.counts["test"], source=report.source, template=report.template,
                        truncated=report.truncated, max_length=report.max_length)
        return (summary, pd.DataFrame(list(report.examples), columns=["line", "prompt", "completion"]),
                pd.DataFrame(report.histogram(), columns=["tokens", "examples", "cut"]))

    def estimate(request: gr.Request, *values, progress=gr.Progress()):
        texts = Texts.for_request(request)
        with user_errors():
            config = limits.check(read_config(values), services.catalog)  # before the model loads
            progress(0.1, desc=texts("ft.measuring"))
            report = preflight(config, settings.data_dir, resolver=services.engines.resolver,
                               catalog=services.catalog)
        return cost_text(report, texts)

    def start_run(request: gr.Request, token, *values):
        texts = Texts.for_request(request)
        with user_errors():
            config = limits.check(read_config(values), services.catalog)  # first: it touches no file or model
            config.check(services.catalog)
            with services.identities.starting_run(token, request_address(request, services),
                                                  is_active=lambda run: not services.runs.status(run).terminal
                                                  ) as admission:
                owner_key = admission.identity.id
                # An upload lives in Gradio's cache, which is cleaned: the run keeps its own copy.
                run_id = services.jobs.submit(owner_key, config.to_dict(), entry=TRAIN_ENTRY,
                                              admit=limits.check_active,
                                              keep_files=("data",) if values[2] == UPLOAD else ())
                admission.started(run_id)
        gr.Info(texts("ft.started", run=run_id))
        return token, gr.update(choices=run_choices(owner_key), value=run_id)

    def run_choices(owner_key: str) -> list[tuple[str, str]]:
        if not owner_key:
            return []
        return [(f"{r.id} · {r.status} · {r.config_summary}", r.id) for r in services.jobs.list_runs(owner_key)]

    def poll(request: gr.Request, token, run_id):
        texts = Texts.for_request(request)
        owner_key = owner_of(services, token)  # a token that is not valid sees no runs
        choices = run_choices(owner_key)
        if not run_id and choices:
            run_id = choices[0][1]
        if not run_id:
            return token, gr.update(choices=choices), texts("ft.no_run"), None, None, "", None
        try:
            record = services.jobs.get(run_id, owner_key)
            events = services.runs.read_events(run_id, 0, owner=owner_key).events
        except PlaygroundError as exc:
            return token, gr.update(choices=choices), warning_text(exc, settings), None, None, "", None
        points = pd.DataFrame([p.__dict__ for p in loss_points(events)], columns=["step", "loss", "kind"])
        metrics = read_metrics(record.path)
        aggregate = pd.DataFrame(aggregate_rows(metrics), columns=["bar", "metric", "model", "score"])
        rows = comparison_rows(read_samples(record.path))
        return (token, gr.update(choices=choices, value=run_id), progress_text(record, texts),
                points if len(points) else None, aggregate if len(aggregate) else None, gain_text(metrics, texts),
                pd.DataFrame(rows) if rows else None)

    def cancel_run(request: gr.Request, token, run_id):
        texts = Texts.for_request(request)
        owner_key = person(services, token).id
        if not run_id:
            raise gr.Error(texts("ft.no_run"), print_exception=False)
        with user_errors():
            stopping = services.jobs.cancel(run_id, owner_key)
            status = services.jobs.get(run_id, owner_key).status
        if not stopping:
            gr.Warning(texts("ft.already_ended", run=run_id, status=status))
        elif status == "cancelled":  # it was still waiting in the queue
            gr.Info(texts("ft.cancelled_queued", run=run_id))
        else:
            gr.Info(texts("ft.cancelling", run=run_id))

    def finished_run(token, run_id, texts: Texts):
        owner_key = person(services, token).id
        if not run_id:
            raise gr.Error(texts("ft.no_run"), print_exception=False)
        with user_errors():
            record = services.jobs.get(run_id, owner_key)
        if record.status != "succeeded":
            raise gr.Error(texts("ft.not_finished", status=record.status), print_exception=False)
        return record

    # Archives are built once per run in its downloads/ folder and linked (not copied) into Gradio's cache
    # under an unguessable name, so repeated clicks cost no disk and nobody else can fetch them.
    downloads = PrivateDownloads()

    def room_for(run_id: str):
        return lambda needed: services.jobs.make_room(needed, keep=(run_id,))

    def download(request: gr.Request, token, run_id):
        texts = Texts.for_request(request)
        record = finished_run(token, run_id, texts)
        if saved_result(record.path) is None:
            raise gr.Error(texts("ft.nothing_saved"), print_exception=False)
        with user_errors():
            return downloads.serve(result_archive(record.path, make_room=room_for(run_id)))

    def merge_and_download(request: gr.Request, token, run_id, progress=gr.Progress()):
        texts = Texts.for_request(request)
        record = finished_run(token, run_id, texts)
        if record.config.get("method") not in ADAPTER_METHODS:
            raise gr.Error(texts("ft.merge_full"), print_exception=False)
        progress(0.2, desc=texts("ft.merging"))
        with user_errors():
            archive = merged_archive(record.path, settings.data_dir, resolver=services.engines.resolver,
                                     catalog=services.catalog, make_room=room_for(run_id))
            return downloads.serve(archive)

    def open_in_prompt_lab(request: gr.Request, token, run_id):
        texts = Texts.for_request(request)
        record = finished_run(token, run_id, texts)
        with user_errors():
            tuned = usable_result(record)
        gr.Info(texts("ft.in_lab", name=tuned.label))
        return [gr.Tabs(selected=links.prompt_lab_tab_id),
                *links.lab_models.comparison(token, tuned, services.catalog.ids)]

    # --- wiring -------------------------------------------------------------------
    inspect_button.click(inspect_data, config_inputs, [data_summary, examples, lengths], api_name="finetune_inspect",
                         show_progress_on=[data_summary])
    preflight_button.click(estimate, config_inputs, costs, api_name="finetune_preflight", show_progress_on=[costs],
                           concurrency_limit=1, concurrency_id="finetune-preflight")
    start.click(start_run, [owner, *config_inputs], [owner, run_picker], api_name="finetune_start")
    poll_outputs = [owner, run_picker, status, loss_plot, scores, gain, comparison]
    timer.tick(poll, [owner, run_picker], poll_outputs, api_name="finetune_poll", show_progress="hidden",
               queue=False)
    run_picker.input(poll, [owner, run_picker], poll_outputs, api_name=False, queue=False)
    # Queued, in groups of their own without a limit, so they never wait behind other work: an unqueued
    # event's gr.Error never reaches the page as a toast (Gradio 6's client drops the error's "visible" flag
    # for queue=False calls, and its toasts default to hidden), and gr.Info/gr.Warning need the queue too.
    cancel.click(cancel_run, [owner, run_picker], None, api_name="finetune_cancel", concurrency_limit=None,
                 concurrency_id="finetune-cancel")
    download_adapter.click(download, [owner, run_picker], download_file, api_name="finetune_download")
    merge.click(merge_and_download, [owner, run_picker], download_file, api_name="finetune_merge",
                concurrency_limit=1, concurrency_id="finetune-merge")
    use_in_lab.click(open_in_prompt_lab, [owner, run_picker], [links.tabs, *links.lab_models.comparison_outputs],
                     api_name="finetune_use_in_lab", concurrency_limit=None, concurrency_id="finetune-use-in-lab")
