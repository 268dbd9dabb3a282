"""Quantization ladder tab: one model in every GGUF type from F32 to Q2_K, with size, speed and quality.

The table and the chart put each type's file size, bits per weight, decode
speed, perplexity, top-1 agreement with F32 and KL divergence from F32 side by
side, so the lesson's curve (size falls with bits, speed rises on a CPU, quality
holds to about 4-5 bits, then falls off) is measured, not told. The tab is
layout and wiring over :class:`playground.models.ladder.QuantizationLadder`;
a build counts as a generation for the room's rate limits, holds one of the
app's generation slots per type, and is kept, so a second click reads it.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from playground.backends.base import CancelFlag
from playground.errors import PlaygroundError
from playground.models.ladder import LadderCancelled, LadderResult, LadderStep, QuantizationLadder
from playground.models.quantize import QUANT_TYPE_NAMES
from playground.services import Services
from playground.ui.csv_downloads import csv_download
from playground.ui.i18n import Texts, t
from playground.ui.identity import generating
from playground.ui.soft_errors import wire
from playground.ui.widgets import enable_when_filled, generation_event_options, user_errors

LADDER_SLOT = "quantization-ladder"
COLUMNS = ("type", "file_mb", "bits", "speed", "speed_ratio", "perplexity", "agreement", "kl")
MEASURES = ("size", "speed", "perplexity", "agreement")


def _model_choices(services: Services, controller: QuantizationLadder) -> list[tuple[str, str]]:
    resolver = services.engines.resolver
    return [(spec.picker_label(resolver.is_available_offline(spec, "gguf")), spec.id) for spec in controller.models()]


def _headers(texts: Texts) -> list[str]:
    return [texts(f"ladder.col.{column}") for column in COLUMNS]


def table_frame(result: LadderResult, texts: Texts) -> pd.DataFrame:
    """One row per type; a speed measured while other programs used the CPU is marked with *."""
    f32_reliable = result.rung("F32").speed_reliable
    rows = []
    for r in result.rungs:
        mark = "" if r.speed_reliable else " *"
        ratio_mark = "" if r.speed_reliable and f32_reliable else " *"  # a ratio is as good as its two speeds
        rows.append([r.type, f"{r.file_mb:,.1f}", f"{r.bits_per_weight:.2f}", f"{r.decode_tokens_per_s:.1f}{mark}",
                     f"{r.speed_vs_f32:.2f}×{ratio_mark}", f"{r.perplexity:.2f}", f"{r.top1_agreement_pct:.1f}",
                     f"{r.kl_to_f32:.4f}"])
    return pd.DataFrame(rows, columns=_headers(texts))


def chart_frame(result: LadderResult, texts: Texts) -> pd.DataFrame:
    """Every measure as a percentage of F32's, one line per measure across the types.

    A speed timed while other programs used the CPU is left out (it is marked in the table): one such
    figure can be ten times off and would flatten every other line.
    """
    f32 = result.rung("F32")
    rows = []
    for r in result.rungs:
        values = {
            "size": 100.0 * r.file_mb / f32.file_mb if f32.file_mb else 0.0,
            "speed": 100.0 * r.speed_vs_f32 if r.speed_reliable and f32.speed_reliable else None,
            "perplexity": 100.0 * r.perplexity / f32.perplexity if f32.perplexity else 0.0,
            "agreement": r.top1_agreement_pct,
        }
        rows += [[r.type, texts(f"ladder.measure.{m}"), round(values[m], 1)] for m in MEASURES
                 if values[m] is not None]
    x, color, y = _chart_columns(texts)
    return pd.DataFrame(rows, columns=[x, color, y]).astype({y: "float64"})


def _chart_columns(texts: Texts) -> tuple[str, str, str]:
    """The chart's (x, colour, y) columns, named in the reader's language: the plot shows them as axis titles
    (a plot's own titles do not take translation keys)."""
    return texts("ladder.col.type"), texts("ladder.measure"), texts("ladder.chart_y")


def chart_update(result: LadderResult | None, texts: Texts) -> dict:
    if result is None:
        return gr.update(value=None)
    x, color, y = _chart_columns(texts)
    return gr.update(value=chart_frame(result, texts), x=x, y=y, color=color)


def status_text(result: LadderResult, texts: Texts) -> str:
    origin = texts(f"ladder.origin.{result.source_origin}") if result.source_origin in ("packaged", "local", "hub") \
        else result.source_origin or "?"
    source = texts("ladder.source.requantized" if result.requantized else "ladder.source.clean",
                   model=result.source_label or result.source_name, type=result.source_type, origin=origin)
    figures = dict(seconds=result.seconds, count=len(result.rungs), tokens=result.tokens, threads=result.threads)
    lines = [texts("ladder.status.cached" if result.cached else "ladder.status.built", **figures), source]
    if result.k_quants_fall_back:
        lines.append(texts("ladder.k_fallback", model=result.source_label or result.source_name,
                           width=result.hidden_size))
    busy = [r.type for r in result.rungs if not r.speed_reliable]
    if busy:
        lines.append(texts("ladder.busy", types=", ".join(busy)))
    return "\n\n".join(lines)


def step_text(step: LadderStep, texts: Texts) -> str:
    return texts(f"ladder.stage.{step.stage}", type=step.type_name, index=step.index, total=step.total)


def csv_name(result: LadderResult) -> str:
    """The download's file name: the source model and the ladder's key (two ladders never share a name)."""
    return f"quantization-ladder-{result.source_label or result.source_name}-{result.key[:8]}.csv"


def ladder_outputs(result: LadderResult | None, texts: Texts, request: gr.Request | None = None) -> tuple:
    """(table, chart, status, CSV download) for a result, or empty widgets and the hint when there is none."""
    if result is None:
        return pd.DataFrame(columns=_headers(texts)), chart_update(None, texts), texts("ladder.status.none"), None
    # The CSV file's path as it is (a script's result); the page makes the button clickable (enable_when_filled).
    download = csv_download(csv_name(result), result.csv())
    return table_frame(result, texts), chart_update(result, texts), status_text(result, texts), download


def build(services: Services, owner: gr.BrowserState) -> None:
    """The tab; ``owner`` is the browser's identity token, which a build is counted against."""
    settings = services.settings
    controller = QuantizationLadder(services.engines, settings.data_dir / "ladder", services.hardware.cpu_threads,
                                    slot=services.generation_slots, make_room=services.jobs.make_room)
    choices = _model_choices(services, controller)
    ids = [value for _, value in choices]
    default_model = settings.default_model if settings.default_model in ids else (ids[0] if ids else None)

    gr.Markdown(t("ladder.intro"), elem_classes=["tab-intro"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            model = gr.Dropdown(choices, value=default_model, label=t("ladder.model"), info=t("ladder.model_info"),
                                elem_id="ladder-model")
        with gr.Column(scale=3, min_width=280):
            types = gr.CheckboxGroup(list(QUANT_TYPE_NAMES), value=list(QUANT_TYPE_NAMES),
                                     label=t("ladder.types"), info=t("ladder.types_info"), elem_id="ladder-types")
    with gr.Row():
        build_button = gr.Button(t("ladder.build"), variant="primary", elem_id="ladder-build", scale=3)
        stop = gr.Button(t("ladder.stop"), variant="stop", elem_id="ladder-stop", scale=1)
    status = gr.Markdown(elem_id="ladder-status")
    table = gr.Dataframe(label=t("ladder.table"), interactive=False, wrap=True, elem_id="ladder-table")
    download = gr.DownloadButton(t("ladder.download_csv"), value=None, interactive=False, size="sm",
                                 elem_id="ladder-csv")
    # x, y and colour are set with each result, in the reader's language; a height would hide the legend.
    chart = gr.LinePlot(None, x="type", y="percent", color="measure", sort=list(QUANT_TYPE_NAMES),
                        x_title="GGUF", y_title="%", label=t("ladder.chart"), x_label_angle=-35, elem_id="ladder-chart")  # fits a phone
    gr.Markdown(t("ladder.source_notice"), elem_classes=["notice"])
    gr.Markdown(t("ladder.how"), elem_classes=["notice"])

    # --- handlers: widget values in, logic called, widget values out ---------
    def build_ladder(model_id, type_names, identity, request: gr.Request, progress=gr.Progress()):
        texts = Texts.for_request(request)
        with user_errors(settings):
            result = controller.cached(model_id, type_names) if model_id else None
        if result is not None:  # reading a kept ladder costs nothing: no rate limit, no slot
            return ladder_outputs(result, texts, request)
        generating(services, identity, request)
        session = request.session_hash or "anonymous"
        stop_flag = CancelFlag()
        services.generations.start(session, LADDER_SLOT, stop_flag)
        try:
            with user_errors(settings):
                try:
                    result = controller.build(model_id, type_names, cancel=stop_flag,
                                              progress=lambda fraction, step: progress(fraction,
                                                                                       desc=step_text(step, texts)))
                except LadderCancelled:
                    return (pd.DataFrame(columns=_headers(texts)), chart_update(None, texts),
                            texts("ladder.status.cancelled"), None)
        finally:
            services.generations.finish(session, LADDER_SLOT, stop_flag)
        return ladder_outputs(result, texts, request)

    def show_kept(model_id, type_names, request: gr.Request):
        """The kept ladder of this model and these types, if any (nothing is built)."""
        texts = Texts.for_request(request)
        try:
            result = controller.cached(model_id, type_names) if model_id and type_names else None
        except PlaygroundError:  # a model that cannot be found shows the hint; Build gives the message
            result = None
        return ladder_outputs(result, texts, request)

    def stop_build(request: gr.Request):
        services.generations.cancel(request.session_hash or "anonymous", LADDER_SLOT)

    outputs = [table, chart, status, download]
    # In the browser a bad choice is one warning and the page as it was; the API name keeps the exception.
    built = wire([build_button.click], build_ladder, [model, types, owner], outputs, settings=settings,
                 api_name="quantization_ladder", elem_id="ladder-build-api", show_progress_on=[table],
                 **generation_event_options(settings))
    enable_when_filled(built, [download])
    stop.click(stop_build, None, None, api_name="quantization_stop", queue=False)
    # When the page opens and whenever the choice changes: the kept ladder of that choice, if there is one.
    kept = gr.on(None, show_kept, [model, types], outputs, api_name=False, queue=False, show_progress="hidden")
    enable_when_filled([kept], [download])
