"""Prompt Lab tab: build prompts with each strategy, see the exact text the model gets, compare and measure.

Top: task, model, strategy and template controls, a live preview of the final
prompt (chat template applied) with its token count, and "show the code".
Run streams one answer (self-consistency: the vote histogram and every path).
Side by side runs up to four (strategy, model) columns on the same input.
Evaluate scores chosen strategies on a bundled or uploaded labelled set, with a
progress bar, a Cancel button, a chart and a per-example table. The logic is
``playground.prompting``; this module turns widget values into its dataclasses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable

import gradio as gr
import pandas as pd

from playground.backends.base import CancelFlag, GenerationParams
from playground.backends.selection import ENGINE_NAMES
from playground.errors import InvalidParameterError, PlaygroundError
from playground.finetune.finetuned import FinetunedModel, finetuned_model, finetuned_models, is_finetuned_id
from playground.prompting.columns import CANCELLED, DONE, FAILED, LOADING, MAX_COLUMNS, RUNNING, Column, \
    ColumnState, choose_template, run_columns
from playground.prompting.data import ColumnMapping, LabelledSet, file_columns, labelled_set_from_upload, \
    load_bundled
from playground.prompting.evaluation import EvaluationReport, evaluate
from playground.prompting.snippet import SNIPPET_ENGINES, code_snippet
from playground.prompting.strategies import TRIGGER_POSITIONS, BuiltPrompt, PromptSetup, StrategyConfig, StrategyRun, \
    build_prompt, effective_params, suggested_params
from playground.prompting.tasks import (
    FEW_SHOT,
    FEW_SHOT_COT,
    SELECTIONS,
    SELF_CONSISTENCY,
    STRATEGIES,
    STRATEGY_NAMES,
    TASKS,
    ZERO_SHOT,
    get_task,
)
from playground.prompting.templates import PromptTemplate, TemplateLibrary, parse_template
from playground.services import Services
from playground.ui.i18n import Texts, t
from playground.ui.identity import generating, owner_of
from playground.ui.widgets import generation_event_options, parameter_widgets, params_from_widgets, user_errors, \
    warning_text

RUN_SLOT = "prompt-lab-run"
EVAL_SLOT = "prompt-lab-eval"
OFF = "off"  # a side-by-side column that is not used
DEFAULT_COLUMNS = (ZERO_SHOT, FEW_SHOT, FEW_SHOT_COT, SELF_CONSISTENCY)
MAX_EVAL_LIMIT = 200
MAX_TRIGGER_CHARS = 500
SUMMARY_HEADERS = ("strategy", "examples", "score", "unanswered", "mean_latency_s", "total_latency_s")
EXAMPLE_HEADERS = ("strategy", "#", "input", "target", "answer", "correct", "output", "prompt")
DEFAULT_TASK = "sentiment"


@dataclass(frozen=True)
class PromptForm:
    """The values of the prompt controls, in the order of the widgets that feed every handler."""

    task: str
    template_id: str
    template_text: str
    system: str
    strategy: str
    k: float
    selection: str
    selection_seed: float
    cot_trigger: str
    trigger_position: str
    samples: float
    model_id: str
    engine: str  # auto, llama.cpp or transformers
    text: str
    max_new_tokens: float
    temperature: float
    top_p: float
    top_k: float
    repetition_penalty: float
    seed: float
    stop: str
    owner: str  # the browser's identity token; after checking, the owner id of the runs (run:<id>) one may use

    @classmethod
    def size(cls) -> int:
        return len(fields(cls))

    def config(self, strategy: str | None = None) -> StrategyConfig:
        return StrategyConfig(strategy=strategy or self.strategy, k=int(self.k or 0), selection=self.selection,
                              selection_seed=int(self.selection_seed or 0), cot_trigger=self.cot_trigger or "",
                              trigger_position=self.trigger_position, samples=int(self.samples or 0)).validated()

    def engine_for(self, services: Services):
        """A function model id -> loaded engine, with this form's engine choice (and the owner's runs)."""
        return lambda model_id: services.engine(model_id, self.engine or "auto", self.owner or "")

    def check_lengths(self, max_chars: int) -> "PromptForm":
        """Self; InvalidParameterError when the input, system message or trigger is longer than allowed."""
        for name, value, limit in (("input", self.text, max_chars), ("system message", self.system, max_chars),
                                   ("chain-of-thought trigger", self.cot_trigger, MAX_TRIGGER_CHARS)):
            if len(value or "") > limit:
                raise InvalidParameterError(f"The {name} has {len(value):,} characters; the limit is {limit:,} "
                                            f"(PLAYGROUND_MAX_PROMPT_CHARS for the input and system message).")
        return self

    def params(self, token_limit: int) -> GenerationParams:
        return params_from_widgets(self.max_new_tokens, self.temperature, self.top_p, self.top_k,
                                   self.repetition_penalty, self.seed, self.stop, token_limit=token_limit)

    def setup(self, library: TemplateLibrary, strategy: str | None = None) -> tuple[PromptSetup, PromptTemplate]:
        """The setup for ``strategy`` (default: the form's): the edited template when it suits, else the library's."""
        get_task(self.task)
        strategy = strategy or self.strategy
        chosen = library.get(self.template_id)
        if chosen.task != self.task:
            raise InvalidParameterError(f"The template {chosen.id!r} is for the task {chosen.task!r}, not "
                                        f"{self.task!r}.")
        template = choose_template(library, self.task, strategy, chosen)
        setup = PromptSetup.from_template(template, self.config(strategy))
        if template is chosen:  # the text in the editor, possibly edited, is what runs
            setup = replace(setup, template=self.template_text or "", system=self.system or "")
        return setup, template


def _split(values: tuple) -> tuple[PromptForm, tuple]:
    n = PromptForm.size()
    return PromptForm(*values[:n]), values[n:]


# --------------------------------------------------------------------------- text for the page


def _model_choices(services: Services, owner: str = "") -> list[tuple[str, str]]:
    """The catalog's decoders, then the owner's finished fine-tuning runs (newest first)."""
    resolver = services.engines.resolver
    catalog = [(f"{s.name} · {s.parameters_label} · {'offline' if resolver.is_available_offline(s) else 'Hub'}", s.id)
               for s in services.catalog.by_family("decoder")]
    return catalog + [(model.label, model.model_id) for model in finetuned_models(services.runs, owner)]


@dataclass(frozen=True)
class ModelPickers:
    """The Prompt Lab's model controls, which other parts of the app refresh or preset.

    The main model and each side-by-side column's model list the owner's finished fine-tuning runs too,
    so they are refreshed when a run finishes; the Fine-tune tab presets a base-against-tuned comparison.
    """

    task: gr.Dropdown
    model: gr.Dropdown
    column_strategies: tuple
    column_models: tuple
    choices: Callable[[str], list[tuple[str, str]]]  # identity token -> (label, model id)

    @property
    def dropdowns(self) -> list:
        return [self.model, *self.column_models]

    def refresh(self, token: str) -> list:
        """Updates for ``dropdowns``: the choices of the token's owner, each dropdown keeping its value."""
        choices = self.choices(token or "")
        return [gr.update(choices=choices) for _ in self.dropdowns]  # one dict each: Gradio consumes them

    @property
    def comparison_outputs(self) -> list:
        return [self.task, self.model, *self.column_strategies, *self.column_models]

    def comparison(self, token: str, tuned: FinetunedModel, catalog_ids: list[str]) -> list:
        """Updates for ``comparison_outputs``: the tuned model selected, and columns base | tuned (zero-shot)."""
        choices = self.choices(token or "")
        task = gr.update(value="summarization") if tuned.task == "summarization" else gr.update()
        base = tuned.base_model if tuned.base_model in catalog_ids else None
        strategies = [gr.update(value=ZERO_SHOT if i < 2 else OFF) for i in range(len(self.column_strategies))]
        models = [gr.update(choices=choices, value=base) if base else gr.update(choices=choices),
                  gr.update(choices=choices, value=tuned.model_id)] + \
            [gr.update(choices=choices) for _ in self.column_models[2:]]
        return [task, gr.update(choices=choices, value=tuned.model_id), *strategies, *models]


def _strategy_choices(task_id: str) -> list[tuple[str, str]]:
    task = get_task(task_id)
    allowed = STRATEGIES if task.supports_reasoning else (ZERO_SHOT, FEW_SHOT)
    return [(STRATEGY_NAMES[s], s) for s in allowed]


def _template_choices(library: TemplateLibrary, task_id: str, strategy: str) -> list[tuple[str, str]]:
    return [(f"{tpl.name} ({tpl.id})", tpl.id) for tpl in library.for_task(task_id, strategy)]


def token_summary(built: BuiltPrompt, max_new_tokens: int, texts: Texts) -> str:
    line = texts("lab.tokens", prompt=built.token_count, new=max_new_tokens, window=built.context_window)
    template = texts("lab.chat_template_yes" if built.chat_template_applied else "lab.chat_template_no")
    demos = texts("lab.demos_used", count=len(built.demos)) if built.demos else ""
    parts = [line, template] + ([demos] if demos else [])
    if not built.fits(max_new_tokens):
        parts.append("⚠ " + texts("lab.too_long"))
    return " · ".join(parts)


def run_summary(run: StrategyRun, texts: Texts) -> str:
    answer = run.answer if run.answer is not None else texts("lab.no_answer")
    lines = [f"{texts('lab.answer')}: **{answer}**"]
    if run.vote is not None:
        lines.append(texts("lab.vote", votes=run.vote.histogram.get(run.vote.winner, 0) if run.vote.winner else 0,
                           total=run.vote.total, unparsed=run.vote.unparsed))
    lines.append(f"{run.latency_s:.2f} s · {run.prompt_tokens} {texts('stats.prompt_tokens')} · "
                 f"{run.completion_tokens} {texts('stats.completion_tokens')} · {run.tokens_per_s:.1f} "
                 f"{texts('stats.speed')}" + (f" · {texts('status.cancelled')}" if run.cancelled else ""))
    return "  \n".join(lines)


def vote_label(run: StrategyRun | None) -> dict | None:
    """Self-consistency's vote shares for a gr.Label (answer -> share of paths)."""
    if run is None or run.vote is None or not run.vote.total:
        return None
    shares = {answer: count / run.vote.total for answer, count in run.vote.counts}
    if run.vote.unparsed:
        shares["(no answer)"] = run.vote.unparsed / run.vote.total
    return shares


def path_rows(run: StrategyRun | None) -> list[list]:
    if run is None:
        return []
    return [[i + 1, p.answer if p.answer is not None else "—", p.result.completion_tokens, p.text.strip()]
            for i, p in enumerate(run.paths)]


def column_view(state: ColumnState, texts: Texts, model_names: dict[str, str] | None = None) -> tuple[str, str, str]:
    """(header, text, status line) of one side-by-side column; ``model_names`` names fine-tuned runs."""
    column = state.column
    model_name = (model_names or {}).get(column.model_id, column.model_id)
    header = (f"**{state.column.setup.label}**  \n{model_name} · _{column.template_name}_")
    if state.status == FAILED:
        return header, state.text, f"⚠ {state.error}"
    if state.status in (DONE, CANCELLED) and state.run is not None:
        return header, state.text, run_summary(state.run, texts)
    status = {LOADING: "lab.loading", RUNNING: "status.generating", CANCELLED: "status.cancelled"}.get(
        state.status, "lab.waiting")
    return header, state.text, f"_{texts(status)}_"


def report_chart(report: EvaluationReport) -> pd.DataFrame:
    """One bar per strategy: accuracy / exact match, or ROUGE-L for free text, in percent."""
    rows = []
    for score in report.scores:
        metric = "rougeL" if "rougeL" in score.metrics else next(iter(score.metrics))
        rows.append({"strategy": score.strategy, "score": round(100 * score.metrics[metric], 1), "metric": metric})
    return pd.DataFrame(rows, columns=["strategy", "score", "metric"]).astype({"score": "float64"})


def report_tables(report: EvaluationReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    summary = pd.DataFrame(report.summary_rows())
    per_example = []
    for result in report.results:
        correct = "—" if result.correct is None else ("✓" if result.correct else "✗")
        row = {"strategy": result.strategy, "#": result.index + 1, "input": result.input, "target": result.target,
               "answer": result.answer if result.answer is not None else "(none)", "correct": correct}
        row.update({name: round(value, 3) for name, value in result.scores.items()})
        row.update(output=result.output.strip(), prompt=result.prompt)
        per_example.append(row)
    return summary, pd.DataFrame(per_example)


def report_status(report: EvaluationReport, texts: Texts) -> str:
    done = len(report.results)
    key = "lab.eval_cancelled" if report.cancelled else "lab.eval_done"
    return texts(key, done=done, planned=report.planned, seconds=report.elapsed_s, source=report.source)


# --------------------------------------------------------------------------- the tab


def build(services: Services, owner: gr.BrowserState) -> ModelPickers:
    """The tab; ``owner`` is the browser's identity token (shared with the Fine-tune tab): it unlocks one's runs."""
    settings = services.settings
    library = TemplateLibrary.load()
    bundled: dict[str, LabelledSet] = {task_id: load_bundled(task_id) for task_id in TASKS}
    models = _model_choices(services)
    model_ids = [m for _, m in models]
    default_model = settings.default_model if settings.default_model in model_ids else model_ids[0]
    token_limit = settings.request_token_limit
    first_template = library.for_task(DEFAULT_TASK, ZERO_SHOT)[0]
    default_params = suggested_params(DEFAULT_TASK, StrategyConfig(strategy=ZERO_SHOT))

    gr.Markdown(t("lab.intro"), elem_classes=["tab-intro"])
    saved_templates = gr.State({})  # template id -> {"template", "system"} edited and saved in this session

    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                task = gr.Dropdown([(spec.name, spec.id) for spec in TASKS.values()], value=DEFAULT_TASK,
                                   label=t("lab.task"), info=t("lab.task_info"), elem_id="lab-task")
                # Custom values: a fine-tuned run (run:<id>) joins the list per browser, after the page loads.
                model = gr.Dropdown(models, value=default_model, label=t("lab.model"), info=t("lab.model_info"),
                                    allow_custom_value=True, elem_id="lab-model", scale=2)
                engine = gr.Radio(["auto", *ENGINE_NAMES], value="auto", label=t("lab.engine"),
                                  info=t("lab.engine_info"), elem_id="lab-engine", scale=1)
            strategy = gr.Radio(_strategy_choices(DEFAULT_TASK), value=ZERO_SHOT, label=t("lab.strategy"),
                                info=t("lab.strategy_info"), elem_id="lab-strategy")
            with gr.Row(visible=False) as demo_row:
                k = gr.Slider(0, len(bundled[DEFAULT_TASK].demos), value=3, step=1, label=t("lab.k"),
                              info=StrategyConfig.help("k"), elem_id="lab-k")
                selection = gr.Radio(list(SELECTIONS), value="fixed", label=t("lab.selection"),
                                     info=StrategyConfig.help("selection"), elem_id="lab-selection")
                selection_seed = gr.Number(0, precision=0, minimum=0, label=t("lab.selection_seed"),
                                           info=StrategyConfig.help("selection_seed"), elem_id="lab-selection-seed")
            with gr.Row(visible=False) as cot_row:
                cot_trigger = gr.Textbox(StrategyConfig().cot_trigger, label=t("lab.trigger"),
                                         info=StrategyConfig.help("cot_trigger"), elem_id="lab-trigger")
                trigger_position = gr.Radio(list(TRIGGER_POSITIONS), value="user", label=t("lab.trigger_position"),
                                            info=StrategyConfig.help("trigger_position"),
                                            elem_id="lab-trigger-position")
                samples = gr.Slider(2, 20, value=5, step=1, label=t("lab.samples"),
                                    info=StrategyConfig.help("samples"), elem_id="lab-samples", visible=False)
            with gr.Row():
                text = gr.Textbox(bundled[DEFAULT_TASK].examples[0].input, label=t("lab.input"), lines=3,
                                  max_lines=12, scale=5, elem_id="lab-input")
                example = gr.Button(t("lab.example"), scale=1, elem_id="lab-example")
            with gr.Row():
                run = gr.Button(t("lab.run"), variant="primary", elem_id="lab-run")
                stop = gr.Button(t("lab.stop"), variant="stop", elem_id="lab-stop")
        with gr.Column(scale=2):
            with gr.Accordion(t("lab.template_section"), open=True):
                # Every template is a valid value for API callers; the page narrows the list to the task's, and a
                # template of another task is refused by the logic (the list changes as the task does).
                template_id = gr.Dropdown([(f"{tpl.name} ({tpl.id})", tpl.id) for tpl in library.templates],
                                          value=first_template.id, label=t("lab.template"), allow_custom_value=True,
                                          info=t("lab.template_info"), elem_id="lab-template")
                template_text = gr.Code(first_template.template, language="jinja2", lines=10, max_lines=24,
                                        label=t("lab.template_text"), interactive=True, elem_id="lab-template-text")
                system = gr.Textbox(first_template.system, label=t("lab.system"), info=t("lab.system_info"),
                                    lines=1, max_lines=4, elem_id="lab-system")
                with gr.Row():
                    save = gr.Button(t("lab.save_template"), size="sm", elem_id="lab-save-template")
                    reset = gr.Button(t("lab.reset_template"), size="sm", elem_id="lab-reset-template")
            with gr.Accordion(t("lab.params"), open=False):
                params = parameter_widgets(settings, "lab", max_new_tokens=default_params.max_new_tokens)

    gr.Markdown(t("lab.preview_title"), elem_classes=["section-title"])
    token_line = gr.Markdown(elem_id="lab-token-count")
    preview = gr.Textbox(label=t("lab.preview"), lines=8, max_lines=30, interactive=False, buttons=["copy"],
                         elem_id="lab-preview", elem_classes=["mono"])
    with gr.Accordion(t("lab.code"), open=False):
        code_engine = gr.Radio(list(SNIPPET_ENGINES), value=SNIPPET_ENGINES[0], label=t("lab.code_engine"),
                               elem_id="lab-code-engine")
        code = gr.Code(language="python", interactive=False, label=t("lab.code"), elem_id="lab-code")

    gr.Markdown(t("lab.result_title"), elem_classes=["section-title"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            output = gr.Textbox(label=t("lab.output"), lines=6, max_lines=20, interactive=False, elem_id="lab-output")
            result_line = gr.Markdown(elem_id="lab-result")
        with gr.Column(scale=2):
            votes = gr.Label(label=t("lab.votes"), elem_id="lab-votes", show_heading=False, visible=False)
    paths = gr.Dataframe(headers=["path", "answer", "tokens", "text"], label=t("lab.paths"), interactive=False,
                         wrap=True, elem_id="lab-paths", column_widths=["6%", "12%", "8%", "74%"], visible=False)

    gr.Markdown(t("lab.compare_title"), elem_classes=["section-title"])
    gr.Markdown(t("lab.compare_intro"))
    column_strategy, column_model, column_header, column_text, column_stats = [], [], [], [], []
    with gr.Row(equal_height=False):
        for i in range(MAX_COLUMNS):
            with gr.Column(min_width=220, elem_classes=["lab-column"]):
                column_strategy.append(gr.Dropdown([(t("lab.off"), OFF)] + [(STRATEGY_NAMES[s], s) for s in STRATEGIES],
                                                   value=DEFAULT_COLUMNS[i], label=t("lab.column_strategy"),
                                                   elem_id=f"lab-col{i}-strategy"))
                column_model.append(gr.Dropdown(models, value=default_model, label=t("lab.column_model"),
                                                allow_custom_value=True, elem_id=f"lab-col{i}-model"))
                column_header.append(gr.Markdown(elem_id=f"lab-col{i}-header"))
                column_text.append(gr.Textbox(lines=6, max_lines=16, show_label=False, interactive=False,
                                              elem_id=f"lab-col{i}-text"))
                column_stats.append(gr.Markdown(elem_id=f"lab-col{i}-stats"))
    with gr.Row():
        compare = gr.Button(t("lab.compare_run"), variant="primary", elem_id="lab-compare")
        compare_stop = gr.Button(t("lab.stop"), variant="stop", elem_id="lab-compare-stop")

    gr.Markdown(t("lab.eval_title"), elem_classes=["section-title"])
    gr.Markdown(t("lab.eval_intro"))
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            eval_strategies = gr.CheckboxGroup([(STRATEGY_NAMES[s], s) for s in STRATEGIES],
                                               value=[ZERO_SHOT, FEW_SHOT], label=t("lab.eval_strategies"),
                                               elem_id="lab-eval-strategies")
            eval_limit = gr.Slider(1, MAX_EVAL_LIMIT, value=20, step=1, label=t("lab.eval_limit"),
                                   info=t("lab.eval_limit_info"), elem_id="lab-eval-limit")
        with gr.Column(scale=2):
            eval_source = gr.Radio([(t("lab.source_bundled"), "bundled"), (t("lab.source_upload"), "upload")],
                                   value="bundled", label=t("lab.eval_source"), elem_id="lab-eval-source")
            upload = gr.File(label=t("lab.upload"), file_types=[".jsonl", ".csv", ".tsv"], type="filepath",
                             elem_id="lab-upload")
            with gr.Row():
                input_column = gr.Dropdown([], label=t("lab.input_column"), allow_custom_value=True,
                                           elem_id="lab-input-column")
                label_column = gr.Dropdown([], label=t("lab.label_column"), allow_custom_value=True,
                                           elem_id="lab-label-column")
                rationale_column = gr.Dropdown([], label=t("lab.rationale_column"), allow_custom_value=True,
                                               elem_id="lab-rationale-column")
                demo_rows = gr.Number(0, precision=0, minimum=0, label=t("lab.demo_rows"),
                                      info=t("lab.demo_rows_info"), elem_id="lab-demo-rows")
    with gr.Row():
        evaluate_button = gr.Button(t("lab.eval_run"), variant="primary", elem_id="lab-eval-run")
        cancel_button = gr.Button(t("lab.eval_cancel"), variant="stop", elem_id="lab-eval-cancel")
    eval_status = gr.Markdown(elem_id="lab-eval-status")
    with gr.Row(equal_height=False):
        chart = gr.BarPlot(None, x="strategy", y="score", y_lim=[0, 100], y_title="%", sort=None,
                           label=t("lab.eval_chart"), height=320,
                           elem_id="lab-eval-chart", scale=2)
        summary = gr.Dataframe(headers=list(SUMMARY_HEADERS), label=t("lab.eval_summary"), interactive=False,
                               wrap=True, elem_id="lab-eval-summary", scale=3)
    per_example = gr.Dataframe(headers=list(EXAMPLE_HEADERS), label=t("lab.eval_rows"), interactive=False, wrap=True,
                               max_height=520, elem_id="lab-eval-rows")
    gr.Markdown(t("lab.notice"), elem_classes=["notice"])

    form = [task, template_id, template_text, system, strategy, k, selection, selection_seed, cot_trigger,
            trigger_position, samples, model, engine, text, *params.as_list(), owner]
    assert len(form) == PromptForm.size()
    param_outputs = [params.max_new_tokens, params.temperature, params.top_p, params.top_k, params.seed]

    # --- helpers ---------------------------------------------------------------
    def template_values(template_id_value: str, saved: dict) -> tuple[str, str]:
        edited = (saved or {}).get(template_id_value)
        if edited:
            return edited["template"], edited["system"]
        chosen = library.get(template_id_value)
        return chosen.template, chosen.system

    def param_values(task_id: str, strategy_id: str) -> list:
        suggested = suggested_params(task_id, StrategyConfig(strategy=strategy_id))
        return [min(suggested.max_new_tokens, token_limit), suggested.temperature, suggested.top_p,
                suggested.top_k, -1 if suggested.seed is None else suggested.seed]

    def pool_for(task_id: str) -> tuple:
        return bundled[task_id].demos

    def for_preview(form_values: PromptForm) -> PromptForm:
        """The form with its token replaced by the owner id it stands for ("" when not valid: no runs)."""
        return replace(form_values, owner=owner_of(services, form_values.owner)).check_lengths(
            settings.max_prompt_chars)

    def for_generation(form_values: PromptForm, request: gr.Request) -> PromptForm:
        """The form of someone who may generate now (rate limits), its token replaced by their owner id."""
        identity = generating(services, form_values.owner, request)
        with user_errors(settings):
            return replace(form_values, owner=identity.id).check_lengths(settings.max_prompt_chars)

    # --- handlers: widget values in, logic called, widget values out ---------
    def on_task(task_id, strategy_id, saved):
        with user_errors(settings):
            choices = _strategy_choices(task_id)
            if strategy_id not in [value for _, value in choices]:
                strategy_id = ZERO_SHOT
            templates = _template_choices(library, task_id, strategy_id)
            template_text_value, system_value = template_values(templates[0][1], saved)
            pool_size = len(pool_for(task_id))
            return [gr.update(choices=choices, value=strategy_id),
                    gr.update(choices=templates, value=templates[0][1]), template_text_value, system_value,
                    bundled[task_id].examples[0].input, gr.update(maximum=pool_size, value=min(3, pool_size)),
                    *param_values(task_id, strategy_id)]

    def on_strategy(task_id, strategy_id, template_id_value, saved):
        with user_errors(settings):
            templates = _template_choices(library, task_id, strategy_id)
            ids = [value for _, value in templates]
            chosen = template_id_value if template_id_value in ids else ids[0]
            template_text_value, system_value = template_values(chosen, saved)
            config = StrategyConfig(strategy=strategy_id)
            demos_shown = strategy_id in (FEW_SHOT, FEW_SHOT_COT, SELF_CONSISTENCY)
            return [gr.update(choices=templates, value=chosen), template_text_value, system_value,
                    gr.update(visible=demos_shown), gr.update(visible=config.uses_cot),
                    gr.update(visible=strategy_id == SELF_CONSISTENCY), *param_values(task_id, strategy_id),
                    gr.update(visible=strategy_id == SELF_CONSISTENCY), gr.update(visible=strategy_id == SELF_CONSISTENCY)]

    def on_template(template_id_value, saved):
        if not template_id_value:
            return gr.update(), gr.update()
        with user_errors(settings):
            return template_values(template_id_value, saved)

    def save_template(template_id_value, template_text_value, system_value, saved, request: gr.Request):
        texts = Texts.for_request(request)
        with user_errors(settings):
            parse_template(template_text_value or "")
            library.get(template_id_value)
        saved = dict(saved or {})
        saved[template_id_value] = {"template": template_text_value, "system": system_value or ""}
        gr.Info(texts("lab.saved", template=template_id_value))
        return saved

    def reset_template(template_id_value, saved):
        saved = {key: value for key, value in (saved or {}).items() if key != template_id_value}
        chosen = library.get(template_id_value)
        return saved, chosen.template, chosen.system

    def snippet_source(form_values: PromptForm, engine_name: str) -> dict:
        """Where the code takes the model from: the catalog's source, or a run's base plus its adapter."""
        if not is_finetuned_id(form_values.model_id):
            return dict(engine=engine_name, spec=services.catalog.get(form_values.model_id))
        tuned = finetuned_model(services.runs, form_values.model_id, form_values.owner or "")
        base_spec = services.catalog.get(tuned.base_model) if tuned.base_model in services.catalog.ids else None
        if not tuned.is_adapter:  # a full fine-tune: the downloaded model folder is the model
            return dict(engine="transformers", model_ref=tuned.result_dir.name)
        return dict(engine="transformers", spec=base_spec, model_ref=None if base_spec else tuned.base_model,
                    adapter=tuned.result_dir.name)

    def random_example(task_id):
        return random.choice(bundled[task_id].examples).input

    def show_preview(request: gr.Request, *values):
        form_values, (engine_name,) = _split(values)
        texts = Texts.for_request(request)
        try:
            form_values = for_preview(form_values)
            setup, _ = form_values.setup(library)
            generation = effective_params(setup, form_values.params(token_limit))
            engine = form_values.engine_for(services)(form_values.model_id)
            built = build_prompt(engine, setup, form_values.text, pool_for(form_values.task),
                                 embedder=services.embedder)
            snippet = code_snippet(built, generation, samples=setup.strategy.paths, threads=settings.threads or None,
                                   **snippet_source(form_values, engine_name))
        except PlaygroundError as exc:
            return warning_text(exc, settings), "", ""
        return token_summary(built, generation.max_new_tokens, texts), built.text, snippet

    def run_prompt_lab(request: gr.Request, *values, progress=gr.Progress()):
        form_values, _ = _split(values)
        texts = Texts.for_request(request)
        session_key = request.session_hash or "anonymous"
        form_values = for_generation(form_values, request)
        with user_errors(settings):
            setup, template = form_values.setup(library)
            column = Column(setup, form_values.model_id, form_values.params(token_limit), template.name)
            cancel = CancelFlag()
            services.generations.start(session_key, RUN_SLOT, cancel)
            progress(0.0, desc=texts("lab.loading"))
            try:
                for states in run_columns([column], form_values.text, pool_for(form_values.task),
                                          form_values.engine_for(services), embedder=services.embedder,
                                          cancel=cancel, slot=services.generation_slots.hold):
                    state = states[0]
                    if state.status == FAILED:
                        raise gr.Error(state.error, print_exception=False)
                    if state.run is None:
                        status = texts("lab.sampling", n=setup.strategy.samples) \
                            if setup.strategy.strategy == SELF_CONSISTENCY and state.status == RUNNING else ""
                        yield state.text, f"_{status}_" if status else "", None, []
                    else:
                        yield (state.text, run_summary(state.run, texts), vote_label(state.run),
                               path_rows(state.run))
            finally:
                services.generations.finish(session_key, RUN_SLOT, cancel)

    def stop_run(request: gr.Request):
        services.generations.cancel(request.session_hash or "anonymous", RUN_SLOT)

    def run_compare(request: gr.Request, *values):
        form_values, rest = _split(values)
        strategies, model_ids = rest[:MAX_COLUMNS], rest[MAX_COLUMNS:2 * MAX_COLUMNS]
        texts = Texts.for_request(request)
        session_key = request.session_hash or "anonymous"
        form_values = for_generation(form_values, request)
        with user_errors(settings):
            base = form_values.params(token_limit)
        columns, slots = [], []
        with user_errors(settings):
            for i, (strategy_id, model_id) in enumerate(zip(strategies, model_ids)):
                if not strategy_id or strategy_id == OFF:
                    continue
                setup, template = form_values.setup(library, strategy_id)
                params_for = base if strategy_id == form_values.strategy else \
                    suggested_params(form_values.task, setup.strategy, base)
                columns.append(Column(setup, model_id, params_for, template.name))
                slots.append(i)
            if not columns:
                raise InvalidParameterError(texts("lab.no_columns"))
        run_names = {tuned.model_id: tuned.label for tuned in finetuned_models(services.runs, form_values.owner or "")}
        cancel = CancelFlag()
        services.generations.start(session_key, RUN_SLOT, cancel)
        empty = ["", "", ""]
        try:
            for states in run_columns(columns, form_values.text, pool_for(form_values.task),
                                      form_values.engine_for(services), embedder=services.embedder, cancel=cancel,
                                      slot=services.generation_slots.hold):
                views = [empty] * MAX_COLUMNS
                for slot, state in zip(slots, states):
                    views[slot] = list(column_view(state, texts, run_names))
                yield [view[j] for j in range(3) for view in views]
        finally:
            services.generations.finish(session_key, RUN_SLOT, cancel)

    def read_upload_columns(path):
        if not path:
            return [gr.update(choices=[], value=None)] * 3
        with user_errors(settings):
            names = file_columns(Path(path).read_bytes(), Path(path).name)
        guess = lambda *candidates: next((n for n in names if n.lower() in candidates), None)  # noqa: E731
        return [gr.update(choices=names, value=guess("text", "input", "question", "dialogue", "sentence")),
                gr.update(choices=names, value=guess("label", "answer", "summary", "target", "translation")),
                gr.update(choices=[""] + names, value=guess("rationale", "reasoning", "explanation") or "")]

    def run_evaluation(request: gr.Request, *values, progress=gr.Progress()):
        form_values, rest = _split(values)
        chosen, source, path, input_col, label_col, rationale_col, demo_count, limit = rest
        texts = Texts.for_request(request)
        session_key = request.session_hash or "anonymous"
        form_values = for_generation(form_values, request)
        with user_errors(settings):
            if source == "upload":
                if not path:
                    raise InvalidParameterError(texts("lab.upload_missing"))
                data = labelled_set_from_upload(
                    Path(path), ColumnMapping(input_col or "", label_col or "", rationale_col or None),
                    form_values.task, filename=Path(path).name, demo_rows=int(demo_count or 0))
            else:
                data = bundled[form_values.task]
            base = form_values.params(token_limit)
            setups, per_setup = [], []
            for strategy_id in [s for s in STRATEGIES if s in (chosen or [])]:
                setup, _ = form_values.setup(library, strategy_id)
                setups.append(setup)
                per_setup.append(base if strategy_id == form_values.strategy
                                 else suggested_params(form_values.task, setup.strategy, base))
            if not setups:
                raise InvalidParameterError(texts("lab.no_strategies"))
            cancel = CancelFlag()
            services.generations.start(session_key, EVAL_SLOT, cancel)
            try:
                progress(0.0, desc=texts("lab.loading"))
                engine = form_values.engine_for(services)(form_values.model_id)
                report = evaluate(engine, setups, data, per_setup, limit=int(limit), embedder=services.embedder,
                                  progress=lambda fraction, message: progress(fraction, desc=message),
                                  cancel=cancel, slot=services.generation_slots.hold)
            finally:
                services.generations.finish(session_key, EVAL_SLOT, cancel)
        summary_table, rows = report_tables(report)
        return report_status(report, texts), report_chart(report), summary_table, rows

    def cancel_evaluation(request: gr.Request):
        services.generations.cancel(request.session_hash or "anonymous", EVAL_SLOT)

    # --- wiring ---------------------------------------------------------------
    limits = generation_event_options(settings)
    task.change(on_task, [task, strategy, saved_templates],
                [strategy, template_id, template_text, system, text, k, *param_outputs], api_name=False,
                queue=False)
    strategy.change(on_strategy, [task, strategy, template_id, saved_templates],
                    [template_id, template_text, system, demo_row, cot_row, samples, *param_outputs, votes, paths],
                    api_name=False, queue=False)
    template_id.input(on_template, [template_id, saved_templates], [template_text, system], api_name=False,
                      queue=False)
    save.click(save_template, [template_id, template_text, system, saved_templates], saved_templates,
               api_name=False)
    reset.click(reset_template, [template_id, saved_templates], [saved_templates, template_text, system],
                api_name=False, queue=False)
    example.click(random_example, task, text, api_name=False, queue=False)
    gr.on(triggers=None, fn=show_preview, inputs=[*form, code_engine], outputs=[token_line, preview, code],
          api_name="prompt_lab_preview", show_progress="hidden", trigger_mode="always_last")
    run.click(run_prompt_lab, form, [output, result_line, votes, paths], api_name="prompt_lab_run",
              show_progress_on=[output], **limits)
    stop.click(stop_run, None, None, api_name="prompt_lab_stop", queue=False)
    compare.click(run_compare, [*form, *column_strategy, *column_model],
                  [*column_header, *column_text, *column_stats], api_name="prompt_lab_compare",
                  show_progress_on=column_text, **limits)
    compare_stop.click(stop_run, None, None, api_name=False, queue=False)
    upload.upload(read_upload_columns, upload, [input_column, label_column, rationale_column],
                  api_name="prompt_lab_columns")
    evaluate_button.click(run_evaluation,
                          [*form, eval_strategies, eval_source, upload, input_column, label_column, rationale_column,
                           demo_rows, eval_limit],
                          [eval_status, chart, summary, per_example], api_name="prompt_lab_evaluate",
                          show_progress_on=[eval_status, per_example], **limits)
    cancel_button.click(cancel_evaluation, None, None, api_name="prompt_lab_cancel", queue=False)
    return ModelPickers(task, model, tuple(column_strategy), tuple(column_model),
                        lambda token: _model_choices(services, owner_of(services, token)))
