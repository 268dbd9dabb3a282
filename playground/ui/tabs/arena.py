"""Arena tab: a blind vote between two answers, the room's leaderboard, one's votes as preference pairs, and a
judge model scoring free-text answers beside ROUGE.

Layout and wiring only, over :class:`~playground.prompting.arena.Arena` (one controller; its ``judge`` method
reaches ``playground.prompting.judge``). The hidden origin of A and B never reaches the page before the vote:
the page holds a match id the server made, and the vote hangs on the verified owner of the identity token.
:class:`ArenaHandlers` turns widget values into controller calls and results into widget values, so the
handlers run (and are tested) without a live app.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Callable

import gradio as gr
import pandas as pd

from playground.prompting.arena import Arena, Contender, Reveal
from playground.prompting.judge import JUDGE_TOKENS, MAX_JUDGE_TOKENS, JudgedReport, Rubric, get_rubric, load_rubrics
from playground.prompting.lab import BUNDLED, EvaluationRequest, LabRequest, PromptLab
from playground.prompting.tasks import FEW_SHOT, TASKS, ZERO_SHOT
from playground.prompting.templates import TemplateLibrary
from playground.services import Services
from playground.ui.i18n import DEFAULT_LANGUAGE, Texts, load_locales, t
from playground.ui.identity import generating
from playground.ui.downloads import PrivateDownloads
from playground.ui.widgets import generation_event_options, reveal_when_filled, user_errors

MATCH_SLOT = "arena-match"
JUDGE_SLOT = "arena-judge"
DEFAULT_TASK = "summarization"
JUDGE_TASKS = tuple(task for task, spec in TASKS.items() if spec.answer_kind == "text")
MAX_JUDGE_EXAMPLES = 10
LEADERBOARD_COLUMNS = ("strategy", "model", "rating", "votes", "wins", "losses", "ties")
JUDGE_SUMMARY_COLUMNS = ("strategy", "examples", "rougeL", "judge", "unjudged")
JUDGE_ROW_COLUMNS = ("strategy", "#", "rougeL", "judge", "reasons", "output", "target")


def table(rows: list[dict], columns: tuple[str, ...], texts: Texts) -> pd.DataFrame:
    """Rows under translated headers (arena.col.*), ROUGE in percent."""
    data = [[round(100 * row[c], 1) if c == "rougeL" and row.get(c) is not None else row.get(c) for c in columns]
            for row in rows]
    return pd.DataFrame(data, columns=[texts(f"arena.col.{'number' if c == '#' else c}") for c in columns])


def rubric_name(rubric: Rubric, texts: Texts | None = None):
    """A bundled rubric's translated name (arena.rubric.<id>); a rubric without a key keeps its own name."""
    key = f"arena.rubric.{rubric.id}"
    if key not in load_locales()[DEFAULT_LANGUAGE]:
        return rubric.name
    return texts(key) if texts is not None else t(key)


def reveal_text(reveal: Reveal, texts: Texts, count: int) -> str:
    def side(contender: Contender) -> str:
        return f"{texts(f'strategy.{contender.strategy}.short')} · `{contender.model_id}`"

    verdict = {"a": texts("arena.voted_a"), "b": texts("arena.voted_b"), "tie": texts("arena.voted_tie")}[reveal.vote]
    return "  \n".join([f"**{verdict}**", f"A = {side(reveal.a)}", f"B = {side(reveal.b)}",
                        texts("arena.vote_count", count=count)])


def agreement_text(judged: JudgedReport, texts: Texts) -> str:
    agreement = judged.agreement
    rate = "—" if agreement.rate is None else f"{100 * agreement.rate:.0f} %"
    rho = "—" if agreement.spearman is None else f"{agreement.spearman:+.2f}"
    line = texts("arena.agreement", rate=rate, agree=agreement.agree, pairs=agreement.pairs, tied=agreement.tied,
                 rho=rho)
    if judged.cancelled:
        line += " · " + texts("status.cancelled")
    return line


@dataclass
class ArenaHandlers:
    services: Services
    arena: Arena
    rubrics: tuple[Rubric, ...]
    downloads: PrivateDownloads

    @contextlib.contextmanager
    def cancellable(self, request: gr.Request, slot: str):
        with self.services.generations.running(request.session_hash or "anonymous", slot) as cancel:
            yield cancel

    def owner(self, token: str) -> str:
        return self.services.identities.owner_of(token or "")

    def on_task(self, task_id, request: gr.Request = None):
        texts = Texts.for_request(request)
        with user_errors(self.services.settings):
            choices = [(texts(f"strategy.{s}.short"), s) for s in self.arena.strategies_for(task_id)]
            example = self.arena.lab.example(task_id)
        second = choices[1][1] if len(choices) > 1 else choices[0][1]
        return gr.update(choices=choices, value=choices[0][1]), gr.update(choices=choices, value=second), example

    def random_example(self, task_id):
        with user_errors(self.services.settings):
            return self.arena.lab.example(task_id)

    def match(self, task_id, text, strategy_1, model_1, strategy_2, model_2, token, request: gr.Request):
        """Both answers as they come (A and B in an order only the server knows), then the match id."""
        texts = Texts.for_request(request)
        identity = generating(self.services, token, request)
        models = self.services.models_for(identity.id)
        with self.cancellable(request, MATCH_SLOT) as cancel, user_errors(self.services.settings):
            for update in self.arena.match(identity.id, task_id, text, Contender(strategy_1, model_1),
                                           Contender(strategy_2, model_2), models, cancel):
                if update.match_id:
                    yield update.text_a, update.text_b, update.match_id, texts("arena.vote_now")
                else:
                    yield update.text_a, update.text_b, "", ""

    def stop(self, request: gr.Request):
        self.services.generations.cancel(request.session_hash or "anonymous", MATCH_SLOT)
        self.services.generations.cancel(request.session_hash or "anonymous", JUDGE_SLOT)

    def vote(self, match_id, choice, token, request: gr.Request):
        """The vote, then who A and B were; the match id is spent (an empty one comes back)."""
        texts = Texts.for_request(request)
        owner = self.owner(token)
        with user_errors(self.services.settings):
            reveal = self.arena.vote(owner, match_id or "", choice or "")
            count = self.arena.vote_count(owner)
        return reveal_text(reveal, texts, count), "", self.leaderboard(request)

    def vote_a(self, match_id, token, request: gr.Request):
        return self.vote(match_id, "a", token, request)

    def vote_b(self, match_id, token, request: gr.Request):
        return self.vote(match_id, "b", token, request)

    def vote_tie(self, match_id, token, request: gr.Request):
        return self.vote(match_id, "tie", token, request)

    def leaderboard(self, request: gr.Request = None):
        texts = Texts.for_request(request)
        rows = [dict(s.as_row(), strategy=texts(f"strategy.{s.strategy}.short") if texts.has(
            f"strategy.{s.strategy}.short") else s.strategy) for s in self.arena.leaderboard()]
        return table(rows, LEADERBOARD_COLUMNS, texts)

    def export(self, token, request: gr.Request):
        """One's votes as preference pairs (JSONL), served to them alone."""
        texts = Texts.for_request(request)
        with user_errors(self.services.settings):
            path, count = self.arena.export(self.owner(token))
        return texts("arena.exported", count=count), self.downloads.serve(path)

    def rubric_text(self, rubric_id):
        with user_errors(self.services.settings):
            return get_rubric(self.rubrics, rubric_id).template

    def on_judge_task(self, task_id, request: gr.Request = None):
        texts = Texts.for_request(request)
        ids = [r.id for r in self.rubrics if task_id in r.tasks]
        chosen = ids[0] if ids else None
        return gr.update(choices=[(rubric_name(r, texts), r.id) for r in self.rubrics if r.id in ids], value=chosen), \
            (self.rubric_text(chosen) if chosen else "")

    def judge(self, task_id, model_id, strategies, limit, judge_model, rubric_id, rubric_text, tokens, token,
              request: gr.Request, progress=gr.Progress()):
        """Evaluate the strategies on the bundled examples (ROUGE), then let the judge score every answer."""
        texts = Texts.for_request(request)
        identity = generating(self.services, token, request)
        models = self.services.models_for(identity.id)
        with user_errors(self.services.settings):
            rubric = get_rubric(self.rubrics, rubric_id)
            lab_request = self.lab_request(task_id, model_id)
            evaluation = EvaluationRequest(strategies=tuple(strategies or ()), source=BUNDLED,
                                           limit=max(1, min(int(limit or 1), MAX_JUDGE_EXAMPLES)))
        progress(0.0, desc=texts("arena.judging"))
        with self.cancellable(request, JUDGE_SLOT) as cancel, user_errors(self.services.settings):
            judged = self.arena.judge(lab_request, evaluation, models, judge_model, rubric_text, low=rubric.low,
                                      high=rubric.high, system=rubric.system, cancel=cancel,
                                      max_new_tokens=int(tokens or JUDGE_TOKENS), answer_tokens=int(tokens or JUDGE_TOKENS),
                                      progress=lambda done, total: progress(done / max(total, 1),
                                                                            desc=texts("arena.judging")))
        names = {s.label: texts(f"strategy.{s.strategy.strategy}.short")
                 for s in (self.arena.lab.setup(lab_request, x)[0] for x in evaluation.strategies)}
        summary = [dict(row, strategy=names.get(row["strategy"], row["strategy"])) for row in judged.summary_rows()]
        rows = [dict(row.as_row(), strategy=names.get(row.strategy, row.strategy)) for row in judged.rows]
        return (agreement_text(judged, texts), table(summary, JUDGE_SUMMARY_COLUMNS, texts),
                table(rows, JUDGE_ROW_COLUMNS, texts))

    def lab_request(self, task_id: str, model_id: str) -> LabRequest:
        return replace(self.arena.request(task_id, "-", ZERO_SHOT), model_id=model_id or "")


@dataclass(frozen=True)
class ArenaTab:
    """What the app builder wires: the leaderboard, filled in the reader's language when the tab opens."""

    leaderboard: gr.Dataframe
    refresh: Callable


def build(services: Services, owner: gr.BrowserState, lab: PromptLab | None = None) -> ArenaTab:
    settings = services.settings
    lab = lab or PromptLab(TemplateLibrary.load(), embedder=services.embedder, slot=services.generation_slots,
                           max_chars=settings.max_prompt_chars, token_limit=settings.request_token_limit)
    catalog = [(s.id, s.id) for s in services.catalog.by_family("decoder")]
    catalog_ids = [m for _, m in catalog]
    arena = Arena(lab, settings.data_dir, catalog_ids=catalog_ids, make_room=services.jobs.make_room)
    rubrics = load_rubrics()
    handlers = ArenaHandlers(services, arena, rubrics, PrivateDownloads())
    default_model = settings.default_model if settings.default_model in catalog_ids else catalog_ids[0]
    strategies = [(t(f"strategy.{s}.short"), s) for s in lab.strategies_for(DEFAULT_TASK)]
    # Both sides start on the default model (one model to load on a laptop) with two strategies; pick another
    # model for a side to pit models against each other.

    gr.Markdown(t("arena.intro"), elem_classes=["tab-intro"], elem_id="arena-intro")
    with gr.Row(equal_height=False):
        task = gr.Dropdown([(t(f"task.{task_id}"), task_id) for task_id in TASKS], value=DEFAULT_TASK,
                           label=t("lab.task"), elem_id="arena-task", scale=1, min_width=220)
        text = gr.Textbox(lab.first_example(DEFAULT_TASK), label=t("lab.input"), lines=3, max_lines=10, scale=4,
                          elem_id="arena-input")
        example = gr.Button(t("lab.example"), scale=0, min_width=120, elem_id="arena-example")
    with gr.Row():
        with gr.Column(min_width=240):
            strategy_1 = gr.Dropdown(strategies, value=ZERO_SHOT, label=t("arena.strategy_1"),
                                     elem_id="arena-strategy-1")
            model_1 = gr.Dropdown(catalog, value=default_model, label=t("arena.model_1"), elem_id="arena-model-1")
        with gr.Column(min_width=240):
            strategy_2 = gr.Dropdown(strategies, value=FEW_SHOT, label=t("arena.strategy_2"),
                                     elem_id="arena-strategy-2")
            model_2 = gr.Dropdown(catalog, value=default_model, label=t("arena.model_2"), elem_id="arena-model-2")
    with gr.Row():
        make = gr.Button(t("arena.match"), variant="primary", elem_id="arena-match")
        stop = gr.Button(t("lab.stop"), variant="stop", elem_id="arena-stop")
    with gr.Row(equal_height=True):
        answer_a = gr.Textbox(label=t("arena.answer_a"), lines=6, max_lines=16, interactive=False,
                              elem_id="arena-answer-a")
        answer_b = gr.Textbox(label=t("arena.answer_b"), lines=6, max_lines=16, interactive=False,
                              elem_id="arena-answer-b")
    with gr.Row():
        vote_a = gr.Button(t("arena.vote_a"), elem_id="arena-vote-a")
        vote_tie = gr.Button(t("arena.vote_tie"), elem_id="arena-vote-tie")
        vote_b = gr.Button(t("arena.vote_b"), elem_id="arena-vote-b")
    reveal = gr.Markdown(elem_id="arena-reveal")
    # The server's match id (opaque): what a vote names. Hidden; a script reads it from arena_match's result.
    match_id = gr.Textbox("", visible=False, elem_id="arena-match-id")
    choice = gr.Textbox("", visible=False, elem_id="arena-choice")
    vote_api = gr.Button("", visible=False, elem_id="arena-vote-api")

    gr.Markdown(t("arena.leaderboard_title"), elem_classes=["section-title"])
    gr.Markdown(t("arena.leaderboard_intro"))
    leaderboard = gr.Dataframe(interactive=False, wrap=True, elem_id="arena-leaderboard")
    with gr.Row():
        refresh = gr.Button(t("arena.refresh"), size="sm", elem_id="arena-refresh")
        export = gr.Button(t("arena.export"), size="sm", elem_id="arena-export")
        download = gr.DownloadButton(t("arena.download"), visible=False, size="sm", elem_id="arena-download")
    exported = gr.Markdown(elem_id="arena-exported")

    gr.Markdown(t("arena.judge_title"), elem_classes=["section-title"])
    gr.Markdown(t("arena.judge_intro"))
    first_rubrics = [r for r in rubrics if JUDGE_TASKS[0] in r.tasks]
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            judge_task = gr.Dropdown([(t(f"task.{task_id}"), task_id) for task_id in JUDGE_TASKS],
                                     value=JUDGE_TASKS[0], label=t("lab.task"), elem_id="arena-judge-task")
            judge_answerer = gr.Dropdown(catalog, value=default_model, label=t("arena.judge_answerer"),
                                         elem_id="arena-judge-answerer")
            judge_strategies = gr.CheckboxGroup([(t(f"strategy.{s}.short"), s) for s in (ZERO_SHOT, FEW_SHOT)],
                                                value=[ZERO_SHOT, FEW_SHOT], label=t("lab.eval_strategies"),
                                                elem_id="arena-judge-strategies")
            judge_limit = gr.Slider(1, MAX_JUDGE_EXAMPLES, value=3, step=1, label=t("lab.eval_limit"),
                                    elem_id="arena-judge-limit")
            judge_tokens = gr.Slider(8, MAX_JUDGE_TOKENS, value=JUDGE_TOKENS, step=8, label=t("arena.judge_tokens"),
                                     info=t("arena.judge_tokens_info"), elem_id="arena-judge-tokens")
            judge_model = gr.Dropdown(catalog, value=default_model, label=t("arena.judge_model"),
                                      info=t("arena.judge_model_info"), elem_id="arena-judge-model")
        with gr.Column(scale=3):
            # Custom values: every bundled rubric is a valid value for API callers; the page lists the task's.
            rubric = gr.Dropdown([(rubric_name(r), r.id) for r in first_rubrics], value=first_rubrics[0].id,
                                 label=t("arena.rubric"), allow_custom_value=True, elem_id="arena-rubric")
            rubric_text = gr.Code(first_rubrics[0].template, language="jinja2", lines=10, max_lines=24,
                                  label=t("arena.rubric_text"), interactive=True, elem_id="arena-rubric-text")
    with gr.Row():
        judge_run = gr.Button(t("arena.judge_run"), variant="primary", elem_id="arena-judge-run")
        judge_stop = gr.Button(t("lab.stop"), variant="stop", elem_id="arena-judge-stop")
    judge_status = gr.Markdown(elem_id="arena-judge-status")
    judge_summary = gr.Dataframe(interactive=False, wrap=True, elem_id="arena-judge-summary")
    judge_rows = gr.Dataframe(interactive=False, wrap=True, max_height=480, elem_id="arena-judge-rows")
    gr.Markdown(t("arena.notice"), elem_classes=["notice"])

    # --- wiring ---------------------------------------------------------------
    limits = generation_event_options(settings)
    quick = dict(queue=False, show_progress="hidden")
    task.change(handlers.on_task, task, [strategy_1, strategy_2, text], api_name=False, **quick)
    example.click(handlers.random_example, task, text, api_name=False, **quick)
    make.click(handlers.match, [task, text, strategy_1, model_1, strategy_2, model_2, owner],
               [answer_a, answer_b, match_id, reveal], api_name="arena_match", show_progress_on=[answer_a, answer_b],
               **limits)
    stop.click(handlers.stop, None, None, api_name="arena_stop", queue=False)
    judge_stop.click(handlers.stop, None, None, api_name=False, queue=False)
    vote_outputs = [reveal, match_id, leaderboard]
    voting = dict(concurrency_id="arena-vote", concurrency_limit=None, show_progress="hidden")
    vote_a.click(handlers.vote_a, [match_id, owner], vote_outputs, api_name=False, **voting)
    vote_b.click(handlers.vote_b, [match_id, owner], vote_outputs, api_name=False, **voting)
    vote_tie.click(handlers.vote_tie, [match_id, owner], vote_outputs, api_name=False, **voting)
    vote_api.click(handlers.vote, [match_id, choice, owner], vote_outputs, api_name="arena_vote", **voting)
    refresh.click(handlers.leaderboard, None, leaderboard, api_name="arena_leaderboard", **voting)
    exporting = export.click(handlers.export, owner, [exported, download], api_name="arena_export", **voting)
    reveal_when_filled([exporting], [download])
    judge_task.change(handlers.on_judge_task, judge_task, [rubric, rubric_text], api_name=False, **quick)
    rubric.input(handlers.rubric_text, rubric, rubric_text, api_name="arena_rubric", **quick)
    judge_run.click(handlers.judge, [judge_task, judge_answerer, judge_strategies, judge_limit, judge_model, rubric,
                                     rubric_text, judge_tokens, owner],
                    [judge_status, judge_summary, judge_rows], api_name="arena_judge",
                    show_progress_on=[judge_status], **limits)
    return ArenaTab(leaderboard, handlers.leaderboard)
