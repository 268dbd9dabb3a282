"""Prompt Lab tab: layout and wiring over the Prompt Lab's controller (``playground.prompting.lab``).

Top: task, model, strategy and template controls, a live preview of the final
prompt (chat template applied) with its token count, and "show the code".
Run streams one answer (self-consistency: the vote histogram and every path).
Side by side runs up to four (strategy, model) columns on the same input.
Evaluate scores chosen strategies on a bundled or uploaded labelled set, with a
progress bar, a Cancel button, a chart and a per-example table.

The prompt controls' order is written once (:data:`PROMPT_CONTROLS`); each
handler of :class:`PromptLabHandlers` turns widget values into a
``LabRequest``, calls :class:`~playground.prompting.lab.PromptLab` and turns the
result into widget values, so the handlers run (and are tested) without a live
app.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr
import pandas as pd

from playground.backends.base import GenerationParams
from playground.backends.selection import ENGINE_NAMES, OPENAI
from playground.errors import PlaygroundError
from playground.finetune.finetuned import FinetunedModel
from playground.prompting.columns import CANCELLED, DONE, FAILED, LOADING, MAX_COLUMNS, RUNNING, ColumnState
from playground.prompting.data import ColumnMapping
from playground.prompting.evaluation import EvaluationProgress, EvaluationReport
from playground.prompting.exports import TableFiles
from playground.prompting.lab import BUNDLED, MAX_EVAL_LIMIT, OFF, UPLOAD, EvaluationRequest, LabRequest, \
    PromptLab, request_from_controls
from playground.prompting.snippet import SNIPPET_ENGINES
from playground.prompting.strategies import TRIGGER_POSITIONS, BuiltPrompt, SamplingProgress, StrategyConfig, \
    StrategyRun
from playground.prompting.tasks import (
    FEW_SHOT,
    FEW_SHOT_COT,
    FIXED,
    RANDOM,
    SELECTIONS,
    SELF_CONSISTENCY,
    STRATEGIES,
    TASKS,
    ZERO_SHOT,
)
from playground.prompting.templates import TemplateLibrary
from playground.services import Services
from playground.ui.downloads import PrivateDownloads
from playground.ui.i18n import DEFAULT_LANGUAGE, Texts, load_locales, t
from playground.ui.identity import generating
from playground.ui.widgets import generation_event_options, parameter_widgets, params_from_widgets, queue_status, \
    reveal_when_filled, user_errors, user_message, warning_text

RUN_SLOT = "prompt-lab-run"
EVAL_SLOT = "prompt-lab-eval"
DEFAULT_COLUMNS = (ZERO_SHOT, FEW_SHOT, FEW_SHOT_COT, SELF_CONSISTENCY)
# The tables' columns: the fields of the evaluation's rows, each shown under a translated header (lab.col.*).
SUMMARY_COLUMNS = ("strategy", "examples", "accuracy", "exact_match", "rouge1", "rouge2", "rougeL", "unanswered",
                   "mean_latency_s", "total_latency_s")
EXAMPLE_COLUMNS = ("strategy", "#", "input", "target", "answer", "correct", "rouge1", "rouge2", "rougeL", "output",
                   "prompt")
PERCENT_COLUMNS = frozenset({"accuracy", "exact_match", "rouge1", "rouge2", "rougeL"})  # 0-1 shown as 0-100
HEADER_KEYS = {"#": "number", "mean_latency_s": "mean_latency", "total_latency_s": "total_latency"}
PATH_COLUMNS = ("path", "answer", "tokens", "text")
COMPARE_COLUMNS = ("column", "strategy", "model", "template", "status", "answer", "seconds", "completion_tokens",
                   "output")
DEFAULT_TASK = "sentiment"
PARAM_CONTROLS = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed", "stop")
# The prompt controls every Prompt Lab endpoint starts with, in widget (and API argument) order; the
# browser's identity token follows them.
PROMPT_CONTROLS = ("task", "template_id", "template_text", "system", "strategy", "k", "selection", "selection_seed",
                   "cot_trigger", "trigger_position", "samples", "model_id", "engine", "text", *PARAM_CONTROLS)


def split_controls(values: tuple) -> tuple[dict, str, tuple]:
    """(the prompt controls by name, the identity token, the values after them) from a handler's values."""
    n = len(PROMPT_CONTROLS)
    return dict(zip(PROMPT_CONTROLS, values[:n])), values[n], values[n + 1:]


# --------------------------------------------------------------------------- text for the page


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
    # The session's library of edited templates (template id -> template, system): the Prompt search tab's
    # "Use the winner" saves into it.
    saved_templates: gr.State | None = None

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


def named(key: str, texts: Texts | None = None):
    """A label: translated here for a handler's update (``texts``), else a key the browser translates."""
    return texts(key) if texts is not None else t(key)


def strategy_choices(lab: PromptLab, task_id: str, texts: Texts | None = None) -> list[tuple]:
    return [(named(f"strategy.{s}", texts), s) for s in lab.strategies_for(task_id)]


def template_name(template, texts: Texts | None = None):
    """A library template's translated name (template.<id>); a template without a key keeps its own name."""
    key = f"template.{template.id}"
    return named(key, texts) if key in load_locales()[DEFAULT_LANGUAGE] else template.name


def setup_name(setup, texts: Texts | None = None):
    """A bundled setup's translated name (setup.<id>); one without a key keeps its own name."""
    key = f"setup.{setup.id}"
    return named(key, texts) if key in load_locales()[DEFAULT_LANGUAGE] else setup.name


def template_choices(lab: PromptLab, task_id: str, strategy: str, texts: Texts | None = None) -> list[tuple]:
    return [(template_name(tpl, texts), tpl.id) for tpl in lab.templates_for(task_id, strategy)]


def strategy_label(config: StrategyConfig, texts: Texts) -> str:
    """A strategy's settings in the page's language, as tables name them: "few-shot CoT (k=3, fixed)"."""
    details = [f"N={config.samples}"] if config.strategy == SELF_CONSISTENCY else []
    if config.uses_demos:
        seed = f", seed={config.selection_seed}" if config.selection == RANDOM else ""
        details.append(f"k={config.k}, {texts(f'selection.{config.selection}.short')}{seed}")
    short = texts(f"strategy.{config.strategy}.short")
    return short + (f" ({', '.join(details)})" if details else "")


def header(column: str, texts: Texts) -> str:
    return texts(f"lab.col.{HEADER_KEYS.get(column, column)}")


def translated_table(rows: list[dict], columns: tuple[str, ...], texts: Texts) -> pd.DataFrame:
    """The rows' known columns in ``columns`` order, under translated headers (scores in percent)."""
    present = [c for c in columns if any(c in row for row in rows)] if rows else list(columns[:1])
    data = [[round(100 * row[c], 1) if c in PERCENT_COLUMNS and row.get(c) is not None else row.get(c)
             for c in present] for row in rows]
    return pd.DataFrame(data, columns=[header(c, texts) for c in present])


def param_values(params: GenerationParams) -> list:
    """The parameter widgets a strategy's suggestion fills: max new tokens, temperature, top p, top k, seed."""
    return [params.max_new_tokens, params.temperature, params.top_p, params.top_k,
            -1 if params.seed is None else params.seed]


def token_summary(built: BuiltPrompt, max_new_tokens: int, texts: Texts) -> str:
    if built.encoder_decoder:  # the encoder reads the prompt; the decoder writes the answer, in its own window
        line = texts("lab.tokens_encdec", prompt=built.token_count, new=max_new_tokens, window=built.context_window)
        template = texts("lab.text_to_text")
    else:
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


def vote_label(run: StrategyRun | None, texts: Texts = Texts()) -> dict | None:
    """Self-consistency's vote shares for a gr.Label (answer -> share of paths)."""
    if run is None or run.vote is None or not run.vote.total:
        return None
    shares = {answer: count / run.vote.total for answer, count in run.vote.counts}
    if run.vote.unparsed:
        shares[texts("lab.no_answer_short")] = run.vote.unparsed / run.vote.total
    return shares


def path_rows(run: StrategyRun | None, texts: Texts = Texts()) -> pd.DataFrame:
    """Self-consistency's paths under translated headers (empty before a run)."""
    rows = [] if run is None else [
        [i + 1, p.answer if p.answer is not None else "—", p.result.completion_tokens, p.text.strip()]
        for i, p in enumerate(run.paths)]
    return pd.DataFrame(rows, columns=[header(c, texts) for c in PATH_COLUMNS])


def sampling_status(progress: SamplingProgress, texts: Texts) -> str:
    """Self-consistency's progress line: paths done of N, tokens so far, time, and time left at most."""
    line = texts("lab.sc_progress", done=progress.done, total=progress.total, tokens=progress.tokens,
                 elapsed=progress.elapsed_s)
    if progress.eta_s is not None:
        line += " · " + texts("lab.eta", seconds=progress.eta_s)
    return line


def evaluation_status(progress: EvaluationProgress, names: dict[str, str], texts: Texts) -> str:
    """An evaluation's progress line: the strategy, its examples done, runs done of planned, tokens, time left."""
    line = texts("lab.eval_progress", strategy=names.get(progress.strategy, progress.strategy),
                 example=progress.strategy_done, examples=progress.examples, done=progress.done,
                 planned=progress.planned, tokens=progress.tokens, elapsed=progress.elapsed_s)
    if progress.eta_s is not None:
        line += " · " + texts("lab.eval_eta", seconds=progress.eta_s)
    return line


def column_view(state: ColumnState | None, texts: Texts, label: Callable[[str], str] = str,
                template: Callable[[str], str] = str) -> tuple[str, str, str]:
    """(header, text, status line) of one side-by-side column ("" for a column that is off); ``label`` names
    the models (fine-tuned runs by their labels), ``template`` the templates (by their translated names)."""
    if state is None:
        return "", "", ""
    column = state.column
    title = f"**{strategy_label(column.setup.strategy, texts)}**  \n{label(column.model_id)} · " \
            f"_{template(column.template_name)}_"
    if state.status == FAILED:
        return title, state.text, f"⚠ {state.error}"
    if state.status in (DONE, CANCELLED) and state.run is not None:
        return title, state.text, run_summary(state.run, texts)
    status = {LOADING: "lab.loading", RUNNING: "status.generating", CANCELLED: "status.cancelled"}.get(
        state.status, "lab.waiting")
    return title, state.text, f"_{texts(status)}_"


COLUMN_STATUS = {DONE: "status.done", CANCELLED: "status.cancelled", RUNNING: "status.generating",
                 LOADING: "status.loading"}


def compare_rows(states: list[ColumnState | None], texts: Texts, label: Callable[[str], str] = str,
                 template: Callable[[str], str] = str) -> list[list]:
    """One CSV row per used column: its strategy, model, template, status, answer, time, tokens and output."""
    rows = []
    for i, state in enumerate(states):
        if state is None:
            continue
        run = state.run
        rows.append([i + 1, strategy_label(state.column.setup.strategy, texts), label(state.column.model_id),
                     template(state.column.template_name),
                     state.error if state.status == FAILED else texts(COLUMN_STATUS.get(state.status, "lab.waiting")),
                     run.answer if run is not None else None, round(run.latency_s, 2) if run is not None else None,
                     run.completion_tokens if run is not None else None, state.text.strip()])
    return rows


def report_chart(report: EvaluationReport, short: dict[str, str] | None = None) -> pd.DataFrame:
    """One bar per strategy: accuracy / exact match, or ROUGE-L for free text, in percent; ``short`` gives the
    bars their short (translated) names, so the axis labels stay readable."""
    rows = []
    for score in report.scores:
        metric = "rougeL" if "rougeL" in score.metrics else next(iter(score.metrics))
        rows.append({"strategy": (short or {}).get(score.strategy, score.strategy),
                     "score": round(100 * score.metrics[metric], 1), "metric": metric})
    return pd.DataFrame(rows, columns=["strategy", "score", "metric"]).astype({"score": "float64"})


def report_tables(report: EvaluationReport, texts: Texts = Texts(), names: dict[str, str] | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The score table and the per-example table (answers, ✓/✗, output, prompt) under translated headers, every
    score in percent like the chart; ``names`` translates the strategies' labels."""
    names = names or {}
    summary = [dict(row, strategy=names.get(row["strategy"], row["strategy"])) for row in report.summary_rows()]
    per_example = []
    for row in report.rows():
        correct = row["correct"]
        per_example.append(dict(row, strategy=names.get(row["strategy"], row["strategy"]),
                                answer=row["answer"] if row["answer"] is not None else texts("lab.none"),
                                correct="—" if correct is None else ("✓" if correct else "✗"),
                                output=row["output"].strip()))
    return translated_table(summary, SUMMARY_COLUMNS, texts), translated_table(per_example, EXAMPLE_COLUMNS, texts)


def report_status(report: EvaluationReport, texts: Texts) -> str:
    done = len(report.results)
    key = "lab.eval_cancelled" if report.cancelled else "lab.eval_done"
    return texts(key, done=done, planned=report.planned, seconds=report.elapsed_s, source=report.source)


# --------------------------------------------------------------------------- the handlers


class PromptLabHandlers:
    """The tab's handlers: widget values in, one controller call, widget values out.

    They need a live app for nothing: a test builds one over a ``PromptLab`` with fake engines and calls
    them with the values a page would send.
    """

    def __init__(self, services: Services, lab: PromptLab, downloads: PrivateDownloads | None = None) -> None:
        self.services = services
        self.lab = lab
        self.settings = services.settings
        self.tables = TableFiles(services.settings.data_dir, services.jobs.make_room)
        self.downloads = downloads or PrivateDownloads()

    # -- turning values into requests -----------------------------------------------------
    def request(self, controls: dict) -> LabRequest:
        with user_errors(self.settings):
            params = params_from_widgets(*(controls[name] for name in PARAM_CONTROLS),
                                         token_limit=self.settings.request_token_limit)
            return request_from_controls(controls, params)

    @contextlib.contextmanager
    def cancellable(self, request: gr.Request, slot: str):
        """A cancel flag that this browser session's Stop (or Cancel) button reaches while the block runs."""
        with self.services.generations.running(request.session_hash or "anonymous", slot) as cancel:
            yield cancel

    def generating(self, token: str, request: gr.Request):
        """The models of someone who may generate now (after the rate limits)."""
        return self.services.models_for(generating(self.services, token, request).id)

    def models_of(self, token: str):
        """The models of the token's owner, for work that does not generate (no valid token: no runs)."""
        return self.services.models_for(self.services.identities.owner_of(token))

    @contextlib.contextmanager
    def bad_input(self, texts: Texts):
        """One clear toast for a bad input, titled "Check the input": the checks before Run, Compare and
        Evaluate raise it from an event with no outputs, so no output gets Gradio's error badge and the last
        results stay on the page."""
        try:
            yield
        except PlaygroundError as exc:
            raise gr.Error(user_message(exc, self.settings), title=texts("lab.check_title"),
                           print_exception=False) from None
        except gr.Error as exc:
            raise gr.Error(exc.message, title=texts("lab.check_title"), print_exception=False) from None

    def table_file(self, token: str, kind: str, table: pd.DataFrame) -> str:
        """A CSV of the table for the token's owner, served to them alone (see playground.ui.downloads)."""
        with user_errors(self.settings):
            path = self.tables.write(self.services.identities.owner_of(token), kind, list(table.columns),
                                     table.values.tolist())
        return self.downloads.serve(path)

    # -- the controls ----------------------------------------------------------------------
    def on_task(self, task_id, strategy_id, saved, request: gr.Request = None, setup_id: str = ""):
        """A new task: its strategies, first template, first example and settings; when the chosen bundled setup
        (``setup_id``) is of this task, its strategy, template, k and input instead (choosing a setup changes the
        task, and this runs after it)."""
        texts = Texts.for_request(request)
        with user_errors(self.settings):
            setup = self.setup_for(setup_id, task_id)
            choices = strategy_choices(self.lab, task_id, texts)
            if setup is not None:
                strategy_id = setup.strategy
            if strategy_id not in [value for _, value in choices]:
                strategy_id = ZERO_SHOT
            templates = template_choices(self.lab, task_id, strategy_id, texts)
            chosen = setup.template if setup is not None else templates[0][1]
            template_text_value, system_value = self.lab.template_text(chosen, saved)
            pool_size = len(self.lab.demos(task_id))
            k_value = min(setup.k if setup is not None and setup.k else 3, pool_size)
            text_value = self.lab.apply_setup(setup.id, ()).text if setup is not None else \
                self.lab.first_example(task_id)
            return [gr.update(choices=choices, value=strategy_id),
                    gr.update(choices=templates, value=chosen), template_text_value, system_value,
                    text_value, gr.update(maximum=pool_size, value=k_value),
                    *param_values(self.lab.suggested(task_id, strategy_id))]

    def setup_for(self, setup_id, task_id):
        """The bundled setup ``setup_id`` if it is one of ``task_id``; else None."""
        setup = next((s for s in self.lab.setups if s.id == setup_id), None) if setup_id else None
        return setup if setup is not None and setup.task == task_id else None

    def on_setup(self, setup_id, token, saved=None, request: gr.Request = None):
        """A bundled setup chosen: every prompt control at once (task, strategy, template, k, model, input,
        settings, the strategies to evaluate), and a line saying what it shows, or which download it needs."""
        texts = Texts.for_request(request)
        if not setup_id:
            return [gr.update()] * 15 + [""]
        with user_errors(self.settings):
            available = [model_id for _, model_id in self.models_of(token).choices()]
            applied = self.lab.apply_setup(setup_id, available)
            setup = applied.setup
            templates = template_choices(self.lab, setup.task, setup.strategy, texts)
            template_text_value, system_value = self.lab.template_text(setup.template, saved)  # an edit saved here
            pool_size = len(self.lab.demos(setup.task))
        line = texts(f"setup.{setup.id}.info") if f"setup.{setup.id}.info" in load_locales()[DEFAULT_LANGUAGE] \
            else setup.description
        if applied.missing_models:
            line = "⚠ " + texts("lab.setup_missing", models=", ".join(applied.missing_models),
                                command=f"python -m playground download {applied.missing_models[0]}")
        return [setup.task, gr.update(choices=strategy_choices(self.lab, setup.task, texts), value=setup.strategy),
                gr.update(choices=templates, value=setup.template), template_text_value, system_value,
                gr.update(maximum=pool_size, value=min(setup.k or 3, pool_size)), FIXED,
                gr.update(value=applied.model_id) if applied.model_id else gr.update(), applied.text,
                *param_values(applied.params), list(setup.evaluate), line]

    def on_strategy(self, task_id, strategy_id, template_id_value, saved, request: gr.Request = None):
        texts = Texts.for_request(request)
        with user_errors(self.settings):
            templates = template_choices(self.lab, task_id, strategy_id, texts)
            ids = [value for _, value in templates]
            chosen = template_id_value if template_id_value in ids else ids[0]
            template_text_value, system_value = self.lab.template_text(chosen, saved)
            config = StrategyConfig(strategy=strategy_id)
            demos_shown = strategy_id in (FEW_SHOT, FEW_SHOT_COT, SELF_CONSISTENCY)
            sampling = strategy_id == SELF_CONSISTENCY
            return [gr.update(choices=templates, value=chosen), template_text_value, system_value,
                    gr.update(visible=demos_shown), gr.update(visible=config.uses_cot), gr.update(visible=sampling),
                    *param_values(self.lab.suggested(task_id, strategy_id)), gr.update(visible=sampling),
                    gr.update(visible=sampling), texts(f"strategy.{strategy_id}.help")]

    def on_template(self, template_id_value, saved):
        if not template_id_value:
            return gr.update(), gr.update()
        with user_errors(self.settings):
            return self.lab.template_text(template_id_value, saved)

    def save_template(self, template_id_value, template_text_value, system_value, saved, request: gr.Request):
        texts = Texts.for_request(request)
        with user_errors(self.settings):
            self.lab.check_template(template_id_value, template_text_value)
        saved = dict(saved or {})
        saved[template_id_value] = {"template": template_text_value, "system": system_value or ""}
        gr.Info(texts("lab.saved", template=template_id_value))
        return saved

    def reset_template(self, template_id_value, saved):
        saved = {key: value for key, value in (saved or {}).items() if key != template_id_value}
        with user_errors(self.settings):
            template_text_value, system_value = self.lab.template_text(template_id_value)
        return saved, template_text_value, system_value

    def random_example(self, task_id):
        return self.lab.example(task_id)

    def upload_columns(self, path):
        if not path:
            return [gr.update(choices=[], value=None)] * 3
        with user_errors(self.settings):
            names = self.lab.upload_columns(Path(path))
        guess = lambda *candidates: next((n for n in names if n.lower() in candidates), None)  # noqa: E731
        return [gr.update(choices=names, value=guess("text", "input", "question", "dialogue", "sentence")),
                gr.update(choices=names, value=guess("label", "answer", "summary", "target", "translation")),
                gr.update(choices=[""] + names, value=guess("rationale", "reasoning", "explanation") or "")]

    def preview(self, request: gr.Request, *values):
        controls, token, (code_engine,) = split_controls(values)
        texts = Texts.for_request(request)
        try:
            lab_request = self.request(controls)
            shown = self.lab.preview(lab_request, self.models_of(token), code_engine)
        except (PlaygroundError, gr.Error) as exc:
            return warning_text(exc, self.settings), "", ""
        return token_summary(shown.prompt, shown.params.max_new_tokens, texts), shown.prompt.text, shown.code

    # -- the checks before the work (no outputs: a bad input leaves the page as it was) ----------
    def check_run(self, request: gr.Request, *values):
        controls, token, _ = split_controls(values)
        with self.bad_input(Texts.for_request(request)):
            self.lab.check_run(self.request(controls), self.models_of(token))

    def check_compare(self, request: gr.Request, *values):
        controls, _, rest = split_controls(values)
        texts = Texts.for_request(request)
        strategies, model_ids = rest[:MAX_COLUMNS], rest[MAX_COLUMNS:2 * MAX_COLUMNS]
        with self.bad_input(texts):
            if not any(strategy and strategy != OFF for strategy in strategies):
                raise gr.Error(texts("lab.no_columns"), print_exception=False)
            self.lab.check_compare(self.request(controls), list(zip(strategies, model_ids)))

    def check_evaluation(self, request: gr.Request, *values):
        controls, token, rest = split_controls(values)
        texts = Texts.for_request(request)
        with self.bad_input(texts):
            evaluation = self.evaluation_request(rest, texts)
            self.lab.check_evaluation(self.request(controls), evaluation, self.models_of(token))

    def evaluation_request(self, rest: tuple, texts: Texts) -> EvaluationRequest:
        chosen, source, path, input_col, label_col, rationale_col, demo_count, limit = rest
        if source == UPLOAD and not path:
            raise gr.Error(texts("lab.upload_missing"), print_exception=False)
        if not chosen:
            raise gr.Error(texts("lab.no_strategies"), print_exception=False)
        return EvaluationRequest(
            strategies=tuple(chosen), source=UPLOAD if source == UPLOAD else BUNDLED,
            upload=Path(path) if path else None,
            mapping=ColumnMapping(input_col or "", label_col or "", rationale_col or None),
            demo_rows=int(demo_count or 0), limit=int(limit or 0))

    def template_label(self, texts: Texts) -> Callable[[str], str]:
        """Library template names in the page's language (by name: a column knows its template's name)."""
        names = {tpl.name: template_name(tpl, texts) for tpl in self.lab.library.templates}
        return lambda name: names.get(name, name)

    # -- the four actions ------------------------------------------------------------------
    def run(self, request: gr.Request, *values, progress=gr.Progress()):
        controls, token, _ = split_controls(values)
        texts = Texts.for_request(request)
        models = self.generating(token, request)
        lab_request = self.request(controls)
        with self.cancellable(request, RUN_SLOT) as cancel, user_errors(self.settings):
            for update in self.lab.run(lab_request, models, cancel):
                if update.loading:
                    progress(0.0, desc=texts("lab.loading"))
                elif update.run is not None:
                    yield (update.text, run_summary(update.run, texts), vote_label(update.run, texts),
                           path_rows(update.run, texts))
                else:
                    if update.queue_position is not None:  # waiting for its turn: say where it is in line
                        status = f"_{queue_status(update.queue_position, texts)}_"
                    elif update.progress is not None:  # self-consistency: paths done, tokens, time left
                        status = sampling_status(update.progress, texts)
                        progress(update.progress.fraction, desc=status)
                        status = f"_{status}_"
                    else:
                        status = f"_{texts('lab.sc_starting', total=update.sampling)}_" if update.sampling else ""
                    yield update.text, status, None, path_rows(None, texts)

    def stop(self, request: gr.Request):
        self.services.generations.cancel(request.session_hash or "anonymous", RUN_SLOT)

    def stop_evaluation(self, request: gr.Request):
        self.services.generations.cancel(request.session_hash or "anonymous", EVAL_SLOT)

    def compare(self, request: gr.Request, *values):
        controls, token, rest = split_controls(values)
        strategies, model_ids = rest[:MAX_COLUMNS], rest[MAX_COLUMNS:2 * MAX_COLUMNS]
        texts = Texts.for_request(request)
        if not any(strategy and strategy != OFF for strategy in strategies):
            raise gr.Error(texts("lab.no_columns"), print_exception=False)
        models = self.generating(token, request)
        lab_request = self.request(controls)
        template = self.template_label(texts)
        states: list = []
        columns: list = [gr.update()] * (3 * MAX_COLUMNS)
        with self.cancellable(request, RUN_SLOT) as cancel, user_errors(self.settings):
            for states in self.lab.compare(lab_request, list(zip(strategies, model_ids)), models, cancel):
                views = [column_view(state, texts, models.label, template) for state in states]
                columns = [view[j] for j in range(3) for view in views]
                yield columns + [gr.skip()]
        table = pd.DataFrame(compare_rows(states, texts, models.label, template),
                             columns=[header(c, texts) for c in COMPARE_COLUMNS])
        # The last message repeats the finished columns with the CSV file: a script reads its result from it.
        yield columns + [self.table_file(token, "columns", table)]

    def evaluate(self, request: gr.Request, *values, progress=gr.Progress()):
        controls, token, rest = split_controls(values)
        texts = Texts.for_request(request)
        evaluation = self.evaluation_request(rest, texts)
        models = self.generating(token, request)
        lab_request = self.request(controls)
        with user_errors(self.settings):
            configs = [self.lab.setup(lab_request, s)[0] for s in STRATEGIES if s in evaluation.strategies]
        names = {setup.label: strategy_label(setup.strategy, texts) for setup in configs}
        short = {setup.label: texts(f"strategy.{setup.strategy.strategy}.short") for setup in configs}
        progress(0.0, desc=texts("lab.loading"))
        report_progress = lambda step: progress(step.fraction, desc=evaluation_status(step, names, texts))  # noqa: E731
        with self.cancellable(request, EVAL_SLOT) as cancel, user_errors(self.settings):
            report = self.lab.evaluate(lab_request, evaluation, models, cancel=cancel, progress=report_progress)
        summary_table, rows = report_tables(report, texts, names)
        # Plain values (a script's result); the page shows the hidden tables and buttons after (reveal_when_filled).
        return (report_status(report, texts), report_chart(report, short), summary_table, rows,
                self.table_file(token, "scores", summary_table), self.table_file(token, "examples", rows))


# --------------------------------------------------------------------------- the tab


def build(services: Services, owner: gr.BrowserState, lab: PromptLab | None = None) -> ModelPickers:
    """The tab; ``owner`` is the browser's identity token (shared with the Fine-tune tab): it unlocks one's runs."""
    settings = services.settings
    lab = lab or PromptLab(TemplateLibrary.load(), embedder=services.embedder, slot=services.generation_slots,
                           max_chars=settings.max_prompt_chars, token_limit=settings.request_token_limit)
    handlers = PromptLabHandlers(services, lab)
    models = services.models_for().choices()
    model_ids = [m for _, m in models]
    default_model = settings.default_model if settings.default_model in model_ids else model_ids[0]
    first_template = lab.templates_for(DEFAULT_TASK, ZERO_SHOT)[0]
    default_params = lab.suggested(DEFAULT_TASK, ZERO_SHOT)

    gr.Markdown(t("lab.intro"), elem_classes=["tab-intro"])
    saved_templates = gr.State({})  # template id -> {"template", "system"} edited and saved in this session
    # Bundled setups (examples/setups/prompt_lab.yaml): one choice fills the controls, e.g. the classic lab's
    # zero-, one- and few-shot FLAN-T5 on dialogue summaries.
    with gr.Row(equal_height=False):
        setup = gr.Dropdown([(t("lab.setup_none"), "")] + [(setup_name(s), s.id) for s in lab.setups], value="",
                            label=t("lab.setup"), info=t("lab.setup_info"), elem_id="lab-setup", scale=2)
        setup_line = gr.Markdown(elem_id="lab-setup-info")

    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                task = gr.Dropdown([(t(f"task.{task_id}"), task_id) for task_id in TASKS], value=DEFAULT_TASK,
                                   label=t("lab.task"), info=t("lab.task_info"), elem_id="lab-task", scale=2,
                                   min_width=220)
                # Custom values: a fine-tuned run (run:<id>) joins the list per browser, after the page loads.
                model = gr.Dropdown(models, value=default_model, label=t("lab.model"), info=t("lab.model_info"),
                                    allow_custom_value=True, elem_id="lab-model", scale=2, min_width=260)
                # "openai" only where an OpenAI-compatible server is configured (PLAYGROUND_OPENAI_BASE_URL).
                engines = [name for name in ENGINE_NAMES if name != OPENAI or settings.openai_base_url]
                engine = gr.Radio(["auto", *engines], value="auto", label=t("lab.engine"),
                                  info=t("lab.engine_info"), elem_id="lab-engine", scale=1)
            strategy = gr.Radio(strategy_choices(lab, DEFAULT_TASK), value=ZERO_SHOT, label=t("lab.strategy"),
                                info=t("lab.strategy_info"), elem_id="lab-strategy")
            strategy_help = gr.Markdown(t(f"strategy.{ZERO_SHOT}.help"), elem_id="lab-strategy-help",
                                        elem_classes=["lab-strategy-help"])
            with gr.Row(visible=False) as demo_row:
                k = gr.Slider(0, len(lab.demos(DEFAULT_TASK)), value=3, step=1, label=t("lab.k"),
                              info=t("lab.k_info"), elem_id="lab-k")
                selection = gr.Radio([(t(f"selection.{name}"), name) for name in SELECTIONS], value="fixed",
                                     label=t("lab.selection"), info=t("lab.selection_info"), elem_id="lab-selection")
                selection_seed = gr.Number(0, precision=0, minimum=0, label=t("lab.selection_seed"),
                                           info=t("lab.selection_seed_info"), elem_id="lab-selection-seed")
            with gr.Row(visible=False) as cot_row:
                cot_trigger = gr.Textbox(StrategyConfig().cot_trigger, label=t("lab.trigger"),
                                         info=t("lab.trigger_info"), elem_id="lab-trigger")
                trigger_position = gr.Radio([(t(f"trigger_position.{name}"), name) for name in TRIGGER_POSITIONS],
                                            value="user", label=t("lab.trigger_position"),
                                            info=t("lab.trigger_position_info"), elem_id="lab-trigger-position")
                samples = gr.Slider(2, 20, value=5, step=1, label=t("lab.samples"),
                                    info=t("lab.samples_info"), elem_id="lab-samples", visible=False)
            with gr.Row():
                text = gr.Textbox(lab.first_example(DEFAULT_TASK), label=t("lab.input"), lines=3,
                                  max_lines=12, scale=5, elem_id="lab-input")
                example = gr.Button(t("lab.example"), scale=1, elem_id="lab-example")
            with gr.Row():
                run = gr.Button(t("lab.run"), variant="primary", elem_id="lab-run")
                stop = gr.Button(t("lab.stop"), variant="stop", elem_id="lab-stop")
        with gr.Column(scale=2):
            with gr.Accordion(t("lab.template_section"), open=True):
                # Every template is a valid value for API callers; the page narrows the list to the task's, and a
                # template of another task is refused by the logic (the list changes as the task does).
                template_id = gr.Dropdown([(template_name(tpl), tpl.id) for tpl in lab.library.templates],
                                          value=first_template.id, label=t("lab.template"), allow_custom_value=True,
                                          info=t("lab.template_info"), elem_id="lab-template")
                template_text = gr.Code(first_template.template, language="jinja2", lines=10, max_lines=24,
                                        label=t("lab.template_text"), interactive=True, elem_id="lab-template-text")
                system = gr.Textbox(first_template.system, label=t("lab.system"), info=t("lab.system_info"),
                                    lines=1, max_lines=4, elem_id="lab-system")
                with gr.Row():
                    save = gr.Button(t("lab.save_template"), size="sm", elem_id="lab-save-template")
                    reset = gr.Button(t("lab.reset_template"), size="sm", elem_id="lab-reset-template")
            with gr.Accordion(t("lab.params"), open=False, elem_id="lab-params"):
                # Greedy with a fixed seed, as the default strategy suggests: the lesson is the prompt, not chance.
                params = parameter_widgets(settings, "lab", max_new_tokens=default_params.max_new_tokens,
                                           temperature=default_params.temperature, seed=default_params.seed)

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
    paths = gr.Dataframe(label=t("lab.paths"), interactive=False, wrap=True, elem_id="lab-paths",
                         column_widths=["6%", "12%", "8%", "74%"], visible=False)

    gr.Markdown(t("lab.compare_title"), elem_classes=["section-title"])
    gr.Markdown(t("lab.compare_intro"))
    column_strategy, column_model, column_header, column_text, column_stats = [], [], [], [], []
    with gr.Row(equal_height=False):
        for i in range(MAX_COLUMNS):
            with gr.Column(min_width=220, elem_classes=["lab-column"]):
                # Short names: four columns side by side leave a narrow box for each.
                every_strategy = [(t(f"strategy.{s}.short"), s) for s in STRATEGIES]
                column_strategy.append(gr.Dropdown([(t("lab.off"), OFF)] + every_strategy,
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
    compare_download = gr.DownloadButton(t("lab.download_compare"), visible=False, size="sm",
                                         elem_id="lab-compare-download")

    gr.Markdown(t("lab.eval_title"), elem_classes=["section-title"])
    gr.Markdown(t("lab.eval_intro"))
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            eval_strategies = gr.CheckboxGroup([(t(f"strategy.{s}"), s) for s in STRATEGIES],
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
        # Short strategy names under the bars, tilted, so they stay readable in a narrow column.
        chart = gr.BarPlot(None, x="strategy", y="score", y_lim=[0, 100], y_title="%", x_title=" ", sort=None,
                           x_label_angle=-20, label=t("lab.eval_chart"), height=320,
                           elem_id="lab-eval-chart", scale=2)
        # Shown with the first results, under headers in the page's language.
        summary = gr.Dataframe(label=t("lab.eval_summary"), interactive=False, wrap=True, visible=False,
                               elem_id="lab-eval-summary", scale=3)
    per_example = gr.Dataframe(label=t("lab.eval_rows"), interactive=False, wrap=True, visible=False,
                               max_height=520, elem_id="lab-eval-rows")
    with gr.Row():
        summary_download = gr.DownloadButton(t("lab.download_summary"), visible=False, size="sm",
                                             elem_id="lab-eval-download-scores")
        rows_download = gr.DownloadButton(t("lab.download_rows"), visible=False, size="sm",
                                          elem_id="lab-eval-download-rows")
    gr.Markdown(t("lab.notice"), elem_classes=["notice"])

    controls = dict(task=task, template_id=template_id, template_text=template_text, system=system,
                    strategy=strategy, k=k, selection=selection, selection_seed=selection_seed,
                    cot_trigger=cot_trigger, trigger_position=trigger_position, samples=samples, model_id=model,
                    engine=engine, text=text, **{name: getattr(params, name) for name in PARAM_CONTROLS})
    form = [controls[name] for name in PROMPT_CONTROLS] + [owner]
    param_outputs = [params.max_new_tokens, params.temperature, params.top_p, params.top_k, params.seed]

    # --- wiring ---------------------------------------------------------------
    limits = generation_event_options(settings)
    # A setup sets the task (whose change then keeps the setup's template, k and input: on_task reads the setup).
    setup.input(handlers.on_setup, [setup, owner, saved_templates],
                [task, strategy, template_id, template_text, system, k, selection, model, text, *param_outputs,
                 eval_strategies, setup_line], api_name="prompt_lab_setup", queue=False)
    task.change(handlers.on_task, [task, strategy, saved_templates, setup],
                [strategy, template_id, template_text, system, text, k, *param_outputs], api_name=False,
                queue=False)
    strategy.change(handlers.on_strategy, [task, strategy, template_id, saved_templates],
                    [template_id, template_text, system, demo_row, cot_row, samples, *param_outputs, votes, paths,
                     strategy_help], api_name=False, queue=False)
    template_id.input(handlers.on_template, [template_id, saved_templates], [template_text, system], api_name=False,
                      queue=False)
    save.click(handlers.save_template, [template_id, template_text, system, saved_templates], saved_templates,
               api_name=False)
    reset.click(handlers.reset_template, [template_id, saved_templates], [saved_templates, template_text, system],
                api_name=False, queue=False)
    example.click(handlers.random_example, task, text, api_name=False, queue=False)
    gr.on(triggers=None, fn=handlers.preview, inputs=[*form, code_engine], outputs=[token_line, preview, code],
          api_name="prompt_lab_preview", show_progress="hidden", trigger_mode="always_last")
    # Each action checks its input first, in an event with no outputs: a bad input is one toast and the page
    # keeps its last results (no output gets Gradio's error badge). API callers call the actions directly and
    # get the same message as an error.
    checks = dict(api_name=False, show_progress="hidden")
    run.click(handlers.check_run, form, None, **checks).success(
        handlers.run, form, [output, result_line, votes, paths], api_name="prompt_lab_run",
        show_progress_on=[output], **limits)
    stop.click(handlers.stop, None, None, api_name="prompt_lab_stop", queue=False)
    compare_form = [*form, *column_strategy, *column_model]
    compared = compare.click(handlers.check_compare, compare_form, None, **checks).success(
        handlers.compare, compare_form, [*column_header, *column_text, *column_stats, compare_download],
        api_name="prompt_lab_compare", show_progress_on=column_text, **limits)
    reveal_when_filled([compared], [compare_download])
    compare_stop.click(handlers.stop, None, None, api_name=False, queue=False)
    upload.upload(handlers.upload_columns, upload, [input_column, label_column, rationale_column],
                  api_name="prompt_lab_columns")
    eval_form = [*form, eval_strategies, eval_source, upload, input_column, label_column, rationale_column, demo_rows,
                 eval_limit]
    evaluated = evaluate_button.click(handlers.check_evaluation, eval_form, None, **checks).success(
        handlers.evaluate, eval_form, [eval_status, chart, summary, per_example, summary_download, rows_download],
        api_name="prompt_lab_evaluate", show_progress_on=[eval_status], **limits)
    reveal_when_filled([evaluated], [summary, per_example, summary_download, rows_download])
    cancel_button.click(handlers.stop_evaluation, None, None, api_name="prompt_lab_cancel", queue=False)
    return ModelPickers(task, model, tuple(column_strategy), tuple(column_model),
                        lambda token: services.models_for(services.identities.owner_of(token)).choices(),
                        saved_templates)
