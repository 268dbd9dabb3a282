"""Prompt search tab: automatic prompt engineering (APE) over the controller in ``playground.prompting.ape``.

The model proposes instructions from a task's demonstrations (APE's prompt, editable), each is scored on a
development split, the best are varied (paraphrase, critique) for some rounds; the page shows every
candidate with its round and score, the best score per round, and the winner against the hand-written
baseline on a test split the search never saw. Search shows counted progress with the time left and Cancel
really stops it (between generations). "Use the winner" puts the winning template into the session's library
of edited templates, the Prompt Lab's ``saved_templates``.

:class:`PromptSearchHandlers` turns widget values into a ``SearchRequest`` and the result into widget values,
so the handlers run (and are tested) without a live app.
"""

from __future__ import annotations

import contextlib

import gradio as gr
import pandas as pd

from playground.errors import InvalidParameterError, PlaygroundError
from playground.prompting.ape import (
    DEFAULT_CRITIQUE_PROMPT,
    DEFAULT_PARAPHRASE_PROMPT,
    DEFAULT_PROPOSAL_PROMPT,
    PROPOSE,
    SCORE,
    ApeConfig,
    ApeLimits,
    ApeResult,
    PromptSearch,
    SearchProgress,
    SearchRequest,
)
from playground.prompting.tasks import TASKS
from playground.prompting.templates import TemplateLibrary
from playground.services import Services
from playground.ui.i18n import Texts, t
from playground.ui.identity import generating
from playground.ui.tabs.prompt_lab import template_name
from playground.ui.widgets import empty_table, generation_event_options, reveal_when_filled, user_errors, \
    user_message

SEARCH_SLOT = "prompt-search"
DEFAULT_TASK = "sentiment"
# The search's controls, in widget (and API argument) order; the browser's identity token follows them.
CONTROLS = ("task", "baseline", "model_id", "candidates", "rounds", "keep", "dev_size", "test_size", "seed",
            "proposal_prompt", "paraphrase_prompt", "critique_prompt")
CANDIDATE_COLUMNS = ("#", "round", "origin", "parent", "instruction", "dev_score", "unanswered", "critique")
TEST_COLUMNS = ("prompt", "examples", "score", "unanswered")
SERIES = {"best so far": "ape.series.so_far", "best of the round": "ape.series.round"}


def _header(column: str, texts: Texts) -> str:
    return texts("ape.col.number" if column == "#" else f"ape.col.{column}")


def candidate_table(result: ApeResult, texts: Texts) -> pd.DataFrame:
    """Every candidate, best first, under translated headers; scores in percent like the Prompt Lab's."""
    rows = []
    for row in result.rows():
        score = row["dev_score"]
        rows.append([row["#"], row["round"], texts(f"ape.origin.{row['origin']}"), row["parent"], row["instruction"],
                     None if score is None else round(100 * score, 1), row["unanswered"], row["critique"]])
    return pd.DataFrame(rows, columns=[_header(c, texts) for c in CANDIDATE_COLUMNS])


def test_table(result: ApeResult, texts: Texts) -> pd.DataFrame:
    rows = [[texts(f"ape.prompt.{row['prompt']}"), row["examples"], round(100 * row["score"], 1), row["unanswered"]]
            for row in result.test_rows()]
    return pd.DataFrame(rows, columns=[_header(c, texts) for c in TEST_COLUMNS])


def round_chart(result: ApeResult, texts: Texts) -> pd.DataFrame:
    """The best development score per round (in percent): the best so far, and the best of each round's own."""
    rows = [{"round": row["round"], "score": round(100 * row["score"], 1), "series": texts(SERIES[row["series"]])}
            for row in result.chart_rows()]
    return pd.DataFrame(rows, columns=["round", "score", "series"]).astype({"score": "float64"})


def progress_text(step: SearchProgress, texts: Texts) -> str:
    """One progress line: the round, what is being done (writing or scoring candidate i of n, example j of m, the
    test), the generations done of planned, the time, and the time left at the pace so far."""
    if step.stage == PROPOSE:
        doing = texts("ape.progress.propose", candidate=step.candidate, candidates=step.candidates)
    elif step.stage == SCORE:
        doing = texts("ape.progress.score", candidate=step.candidate, candidates=step.candidates,
                      example=step.example, examples=step.examples)
    else:
        which = texts("ape.prompt.baseline" if step.candidate == 1 else "ape.prompt.winner")
        doing = texts("ape.progress.test", prompt=which, example=step.example, examples=step.examples)
    line = texts("ape.progress.line", round=step.round, rounds=step.rounds, doing=doing, done=step.done,
                 planned=step.planned, elapsed=step.elapsed_s)
    if step.eta_s is not None:
        line += " · " + texts("ape.progress.eta", seconds=step.eta_s)
    return line


def result_text(result: ApeResult, texts: Texts) -> str:
    """What the search found, in a sentence or two: the winner's development score, and the test split's verdict."""
    if result.winner is None:
        return texts("ape.nothing_scored")
    head = texts("ape.cancelled" if result.cancelled else "ape.done", candidates=len(result.candidates),
                 duplicates=result.duplicates, generations=result.generations, seconds=result.elapsed_s,
                 dev=result.dev_size)
    if result.winner_test is None or result.baseline_test is None:
        return head
    metric = result.metric
    return head + "  \n" + texts("ape.verdict", test=result.test_size,
                                 winner=100 * result.winner_test.metrics[metric],
                                 baseline=100 * result.baseline_test.metrics[metric],
                                 metric=texts(f"ape.metric.{metric}"), template=result.baseline)


class PromptSearchHandlers:
    """The tab's handlers: widget values in, one controller call, widget values out."""

    def __init__(self, services: Services, search: PromptSearch) -> None:
        self.services = services
        self.search = search
        self.settings = services.settings

    def request(self, values: tuple) -> tuple[SearchRequest, str]:
        controls = dict(zip(CONTROLS, values[:len(CONTROLS)]))
        token = values[len(CONTROLS)] if len(values) > len(CONTROLS) else ""
        with user_errors(self.settings):
            try:
                numbers = {name: int(controls[name] or 0) for name in ("candidates", "rounds", "keep", "dev_size",
                                                                          "test_size", "seed")}
            except (TypeError, ValueError):
                raise InvalidParameterError("The counts and the seed must be whole numbers.") from None
            config = ApeConfig(task=str(controls["task"] or ""), baseline=str(controls["baseline"] or ""),
                               proposal_prompt=str(controls["proposal_prompt"] or ""),
                               paraphrase_prompt=str(controls["paraphrase_prompt"] or ""),
                               critique_prompt=str(controls["critique_prompt"] or ""), **numbers)
        return SearchRequest(config, str(controls["model_id"] or "")), token

    @contextlib.contextmanager
    def cancellable(self, request: gr.Request):
        with self.services.generations.running(request.session_hash or "anonymous", SEARCH_SLOT) as cancel:
            yield cancel

    def on_task(self, task_id, request: gr.Request = None):
        with user_errors(self.settings):
            baselines = self.search.baselines(task_id)
        texts = Texts.for_request(request)
        return gr.update(choices=[(template_name(tpl, texts), tpl.id) for tpl in baselines], value=baselines[0].id)

    def check(self, request: gr.Request, *values):
        """The search's problems before its first generation, as one toast (no outputs: the page keeps its last
        results)."""
        texts = Texts.for_request(request)
        search_request, token = self.request(values)
        try:
            self.search.check(search_request, self.services.models_for(self.services.identities.owner_of(token)))
        except PlaygroundError as exc:
            raise gr.Error(user_message(exc, self.settings), title=texts("lab.check_title"),
                           print_exception=False) from None

    def run(self, request: gr.Request, *values, progress=gr.Progress()):
        texts = Texts.for_request(request)
        search_request, token = self.request(values)
        models = self.services.models_for(generating(self.services, token, request).id)
        progress(0.0, desc=texts("lab.loading"))
        heard = lambda step: progress(step.fraction, desc=progress_text(step, texts))  # noqa: E731
        with self.cancellable(request) as cancel, user_errors(self.settings):
            result = self.search.search(search_request, models, progress=heard, cancel=cancel)
            winner = {}
            if result.winner is not None:
                template_id, entry = self.search.saved_entry(result)
                winner = {"template_id": template_id, "task": result.task, **entry}
        # Plain values (a script's result); the page shows the hidden tables after (reveal_when_filled).
        return (result_text(result, texts), round_chart(result, texts), test_table(result, texts),
                candidate_table(result, texts), winner.get("template", ""), winner)

    def stop(self, request: gr.Request):
        self.services.generations.cancel(request.session_hash or "anonymous", SEARCH_SLOT)

    def use_winner(self, winner, saved, request: gr.Request = None):
        """The winner saved into the session's library (as the baseline template's edit), and a line saying so."""
        texts = Texts.for_request(request)
        if not winner or not winner.get("template"):
            raise gr.Error(texts("ape.no_winner"), print_exception=False)
        saved = dict(saved or {})
        saved[winner["template_id"]] = {"template": winner["template"], "system": winner.get("system", "")}
        return saved, texts("ape.used", template=winner["template_id"], task=texts(f"task.{winner['task']}"))


def build(services: Services, owner: gr.BrowserState, saved_templates: gr.State | None = None,
          search: PromptSearch | None = None) -> None:
    """The tab; ``saved_templates`` is the Prompt Lab's session library of edited templates ("Use the winner"
    writes into it; a State of its own when the tab is built alone)."""
    settings = services.settings
    limits = ApeLimits.from_settings(settings)
    search = search or PromptSearch(TemplateLibrary.load(), limits=limits, slot=services.generation_slots)
    limits = search.limits
    handlers = PromptSearchHandlers(services, search)
    saved_templates = saved_templates if saved_templates is not None else gr.State({})
    models = services.models_for().choices()
    model_ids = [m for _, m in models]
    default_model = settings.default_model if settings.default_model in model_ids else model_ids[0]
    baselines = search.baselines(DEFAULT_TASK)
    defaults = ApeConfig()

    gr.Markdown(t("ape.intro"), elem_classes=["tab-intro"], elem_id="ape-intro")
    with gr.Row(equal_height=False):
        task = gr.Dropdown([(t(f"task.{task_id}"), task_id) for task_id in TASKS], value=DEFAULT_TASK,
                           label=t("lab.task"), elem_id="ape-task", scale=2, min_width=220)
        # Every baseline is a valid value for API callers; the logic refuses one of another task.
        baseline = gr.Dropdown([(template_name(tpl), tpl.id) for tpl in baselines], value=baselines[0].id,
                               label=t("ape.baseline"), info=t("ape.baseline_info"), allow_custom_value=True,
                               elem_id="ape-baseline", scale=2, min_width=240)
        model = gr.Dropdown(models, value=default_model, label=t("lab.model"), allow_custom_value=True,
                            elem_id="ape-model", scale=2, min_width=240)
    with gr.Row():
        candidates = gr.Slider(1, limits.max_candidates, value=min(defaults.candidates, limits.max_candidates),
                               step=1, label=t("ape.candidates"), info=t("ape.candidates_info"),
                               elem_id="ape-candidates")
        rounds = gr.Slider(1, limits.max_rounds, value=min(defaults.rounds, limits.max_rounds), step=1,
                           label=t("ape.rounds"), info=t("ape.rounds_info"), elem_id="ape-rounds")
        keep = gr.Slider(1, limits.max_candidates, value=defaults.keep, step=1, label=t("ape.keep"),
                         info=t("ape.keep_info"), elem_id="ape-keep")
    with gr.Row():
        dev_size = gr.Slider(1, limits.max_dev, value=min(defaults.dev_size, limits.max_dev), step=1,
                             label=t("ape.dev_size"), info=t("ape.dev_size_info"), elem_id="ape-dev")
        test_size = gr.Slider(0, limits.max_test, value=0, step=1, label=t("ape.test_size"),
                              info=t("ape.test_size_info"), elem_id="ape-test")
        seed = gr.Number(0, precision=0, minimum=0, label=t("ape.seed"), info=t("ape.seed_info"), elem_id="ape-seed")
    with gr.Accordion(t("ape.prompts"), open=False, elem_id="ape-prompts"):
        gr.Markdown(t("ape.prompts_intro"))
        proposal = gr.Code(DEFAULT_PROPOSAL_PROMPT, language="jinja2", lines=8, max_lines=20, interactive=True,
                           label=t("ape.proposal_prompt"), elem_id="ape-proposal-prompt")
        paraphrase = gr.Code(DEFAULT_PARAPHRASE_PROMPT, language="jinja2", lines=4, max_lines=12, interactive=True,
                             label=t("ape.paraphrase_prompt"), elem_id="ape-paraphrase-prompt")
        critique = gr.Code(DEFAULT_CRITIQUE_PROMPT, language="jinja2", lines=8, max_lines=20, interactive=True,
                           label=t("ape.critique_prompt"), elem_id="ape-critique-prompt")
    with gr.Row():
        run = gr.Button(t("ape.run"), variant="primary", elem_id="ape-run")
        cancel = gr.Button(t("ape.cancel"), variant="stop", elem_id="ape-cancel")
    status = gr.Markdown(elem_id="ape-status")
    with gr.Row(equal_height=False):
        chart = gr.LinePlot(None, x="round", y="score", color="series", y_lim=[0, 100], y_title="%",
                            x_title=" ", label=t("ape.chart"), height=300, elem_id="ape-chart",
                            scale=3)
        tested = gr.Dataframe(label=t("ape.test_scores"), interactive=False, wrap=True, visible=False,
                              elem_id="ape-test-scores", scale=2)
    table = gr.Dataframe(empty_table(), label=t("ape.table"), interactive=False, wrap=True, visible=False,
                         max_height=520, elem_id="ape-table")
    winner_text = gr.Code(language="jinja2", interactive=False, lines=6, label=t("ape.winner"), visible=False,
                          elem_id="ape-winner")
    winner = gr.State({})  # the last search's winner: template id, task, template and system
    use = gr.Button(t("ape.use"), elem_id="ape-use")
    used = gr.Markdown(elem_id="ape-used")

    form = [task, baseline, model, candidates, rounds, keep, dev_size, test_size, seed, proposal, paraphrase,
            critique, owner]
    task.change(handlers.on_task, task, baseline, api_name=False, queue=False)
    searched = run.click(handlers.check, form, None, api_name=False, show_progress="hidden").success(
        handlers.run, form, [status, chart, tested, table, winner_text, winner], api_name="prompt_search",
        show_progress_on=[status], **generation_event_options(settings))
    reveal_when_filled([searched], [tested, table, winner_text])
    cancel.click(handlers.stop, None, None, api_name="prompt_search_cancel", queue=False)
    # Queued (in a group of its own) so that its "run a search first" error shows as a toast.
    use.click(handlers.use_winner, [winner, saved_templates], [saved_templates, used], api_name="prompt_search_use",
              concurrency_limit=None)
