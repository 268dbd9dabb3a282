"""Catastrophic forgetting: what a decoder run lost on the Prompt Lab's other tasks, next to what it gained.

After a fine-tune on one task (dialogue summaries), the model may get worse at
everything else. :class:`ForgettingCheck` measures it cheaply with the Prompt
Lab's own evaluation (:func:`playground.prompting.evaluation.evaluate`): the
first ``forgetting_examples`` test examples of each of the lab's bundled tasks
other than the run's own (sentiment accuracy, arithmetic exact match,
translation ROUGE-L; summarisation too when the run trained on something else),
few-shot with the lab's first template of the task, greedy, with the lab's
short answer lengths (:func:`~playground.prompting.strategies.suggested_params`,
at most :data:`MAX_NEW_TOKENS`). Nothing is scored here: answers are extracted
and scored by the Prompt Lab's code.

The model that trains answers, wrapped in the Prompt Lab's
:class:`~playground.backends.transformers_engine.TransformersEngine` (no second
copy is loaded): :meth:`ForgettingCheck.base` before training (an adapter is
switched off while it answers, so a method whose fresh adapter changes the
output still scores the true base), :meth:`ForgettingCheck.tuned` after it.
:meth:`ForgettingCheck.report` is the :class:`ForgettingReport` the run's
metrics keep (``metrics.json``: ``forgetting``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from playground.errors import PlaygroundError
from playground.finetune.data_ids import BUNDLED_DATA
from playground.finetune.weights import DECODER

# The longest answer of the check: labels and numbers come from suggested_params (8 and 16 tokens); free text
# (80 there) is cut to this, since a few words of a translation already tell whether it still translates.
MAX_NEW_TOKENS = 32
DEMOS = 2  # few-shot demonstrations (the lab's fixed first k): small models need the answer's shape
# The metric each task's change is told in (the Prompt Lab's metric names; ROUGE-L for free text).
HEADLINE = {"accuracy": "accuracy", "exact_match": "exact_match", "rouge": "rougeL"}


@dataclass(frozen=True)
class TaskForgetting:
    """One task of the check: its headline metric (0 to 1) for the base and the fine-tuned model."""

    task: str
    metric: str  # accuracy | exact_match | rougeL
    examples: int
    before: float | None = None
    after: float | None = None
    problem: str = ""  # why it has no score (a prompt longer than the model's context, ...)

    @property
    def change(self) -> float | None:
        """after - before (negative: forgotten), or None until both are known."""
        if self.before is None or self.after is None:
            return None
        return round(self.after - self.before, 4)

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "examples": self.examples, "before": self.before,
                "after": self.after, "change": self.change, "problem": self.problem}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TaskForgetting":
        def number(name):
            value = data.get(name)
            return None if value is None else float(value)

        return cls(task=str(data.get("task", "")), metric=str(data.get("metric", "")),
                   examples=int(data.get("examples") or 0), before=number("before"), after=number("after"),
                   problem=str(data.get("problem") or ""))


@dataclass(frozen=True)
class ForgettingReport:
    """The check of one run: per task, base and fine-tuned scores; or why there is none (``unavailable``)."""

    examples: int = 0  # per task
    tasks: tuple[TaskForgetting, ...] = ()
    target_task: str = ""  # the Prompt Lab task the run trained on ("" for data that is none of them)
    unavailable: str = ""

    @property
    def mean_change(self) -> float | None:
        """The tasks' changes averaged, in points (100 x), or None when no task has both scores."""
        changes = [t.change for t in self.tasks if t.change is not None]
        return round(100 * sum(changes) / len(changes), 1) if changes else None

    def change_of(self, task: str) -> float | None:
        """One task's change in points, or None."""
        found = next((t for t in self.tasks if t.task == task), None)
        return None if found is None or found.change is None else round(100 * found.change, 1)

    def to_json(self) -> dict[str, Any]:
        return {"examples": self.examples, "target_task": self.target_task,
                "tasks": [t.to_json() for t in self.tasks], "mean_change": self.mean_change,
                "unavailable": self.unavailable}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "ForgettingReport | None":
        """The report a metrics file holds, or None (older runs, runs with the check off)."""
        if not isinstance(data, Mapping) or not data:
            return None
        tasks = tuple(TaskForgetting.from_json(t) for t in data.get("tasks") or () if isinstance(t, Mapping))
        return cls(examples=int(data.get("examples") or 0), tasks=tasks,
                   target_task=str(data.get("target_task") or ""), unavailable=str(data.get("unavailable") or ""))


# The Prompt Lab's tasks the check can score: the course's classic four (the reasoning sets test a skill
# that a summary fine-tune is not expected to touch, and would make the check several times longer).
FORGETTING_TASKS = ("sentiment", "arithmetic", "translation", "summarization")


def target_task(data: str) -> str:
    """The Prompt Lab task whose examples a run's data are ("" for an upload, a Hub set or another file)."""
    from playground.prompting.tasks import TASKS

    bundled = BUNDLED_DATA.get(data)
    if bundled is None:
        return ""
    return next((task.id for task in TASKS.values() if task.data_path.name == bundled.path.name), "")


def other_tasks(data: str) -> list[str]:
    """The Prompt Lab's tasks the check scores for a run on ``data``: FORGETTING_TASKS but the run's own."""
    from playground.prompting.tasks import TASKS

    own = target_task(data)
    return [task for task in TASKS if task in FORGETTING_TASKS and task != own]


def unavailable_reason(config, family: str) -> str:
    """Why a run gets no forgetting check ("" when it does)."""
    if not config.forgetting_examples:
        return "the check is off (forgetting_examples 0)"
    if family != DECODER:
        return "the check answers the Prompt Lab's tasks as a chat model does: decoder runs only"
    return ""


@dataclass(frozen=True)
class _TaskPlan:
    task: str
    metric: str
    setup: Any  # PromptSetup
    data: Any  # LabelledSet
    params: Any  # GenerationParams


class ForgettingCheck:
    """The base and the fine-tuned model on the Prompt Lab's other tasks, answered by the model that trains.

    ``should_stop`` is asked between examples (a cancel ends the check there, and the run's own cancel follows);
    ``stage(side, message)`` hears one line per task (side: "base" or "tuned"). ``active`` False (a process of a
    multi-process run other than the main one) checks nothing and reports nothing.
    """

    def __init__(self, config, family: str, *, should_stop: Callable[[], bool] | None = None,
                 stage: Callable[[str, str], None] | None = None, active: bool = True):
        self.examples = int(config.forgetting_examples) if active else 0
        self.target = target_task(config.data)
        self.unavailable = unavailable_reason(config, family) if self.examples else "off"
        self.should_stop = should_stop or (lambda: False)
        self.stage = stage or (lambda side, message: None)
        self._plans: list[_TaskPlan] = [] if self.unavailable else self._plan(other_tasks(config.data))
        self._before: dict[str, float] = {}
        self._after: dict[str, float] = {}
        self.problems: dict[str, str] = {}  # task -> why it has no score

    @property
    def enabled(self) -> bool:
        return not self.unavailable and bool(self._plans)

    def _plan(self, tasks: Sequence[str]) -> list[_TaskPlan]:
        from playground.prompting.data import load_bundled
        from playground.prompting.strategies import PromptSetup, StrategyConfig, suggested_params
        from playground.prompting.tasks import FEW_SHOT, get_task
        from playground.prompting.templates import TemplateLibrary

        library = TemplateLibrary.load()
        strategy = StrategyConfig(strategy=FEW_SHOT, k=DEMOS)
        plans = []
        for task_id in tasks:
            spec = get_task(task_id)
            templates = library.for_task(task_id, FEW_SHOT)
            if not templates:
                continue
            params = suggested_params(spec, strategy)
            params = dataclasses.replace(params, max_new_tokens=min(params.max_new_tokens, MAX_NEW_TOKENS))
            plans.append(_TaskPlan(task_id, HEADLINE[spec.metric], PromptSetup.from_template(templates[0], strategy),
                                   load_bundled(spec).limited(self.examples), params))
        return plans

    # -- the two passes ------------------------------------------------------------------------------------
    def base(self, model, tokenizer) -> None:
        """Score the base: ``model`` before training (its adapter, if any, switched off while it answers)."""
        if self.enabled:
            with _adapter_off(model):
                self._before = self._score(model, tokenizer, "base")

    def tuned(self, model, tokenizer) -> None:
        """Score the fine-tuned model: ``model`` after training."""
        if self.enabled and self._before:
            self._after = self._score(model, tokenizer, "tuned")

    def report(self) -> ForgettingReport | None:
        """The check's report (None when it is off); a task not scored on both sides has no change."""
        if not self.examples:
            return None
        if self.unavailable:
            return ForgettingReport(self.examples, target_task=self.target, unavailable=self.unavailable)
        tasks = tuple(TaskForgetting(p.task, p.metric, len(p.data.examples), self._before.get(p.task),
                                     self._after.get(p.task), self.problems.get(p.task, "")[:300])
                      for p in self._plans)
        return ForgettingReport(self.examples, tasks, self.target)

    def _score(self, model, tokenizer, side: str) -> dict[str, float]:
        from playground.prompting.evaluation import evaluate

        engine = _engine(model, tokenizer)
        scores: dict[str, float] = {}
        cancel = threading.Event()
        was_training = model.training
        model.eval()
        try:
            for number, plan in enumerate(self._plans, start=1):
                if self.should_stop():
                    break
                who = "base model" if side == "base" else "fine-tuned model"
                self.stage(side, f"Forgetting check, {who}: {plan.task} ({number} of {len(self._plans)} tasks, "
                                 f"{len(plan.data.examples)} examples).")

                def heard(progress, cancel=cancel) -> None:  # after every example: a cancel stops the check
                    if self.should_stop():
                        cancel.set()

                try:
                    report = evaluate(engine, [plan.setup], plan.data, plan.params, progress=heard, cancel=cancel)
                except PlaygroundError as exc:  # e.g. a prompt longer than the model's context: that task has no score
                    self.problems[plan.task] = str(exc)
                    continue
                if report.cancelled or not report.scores:
                    break
                scores[plan.task] = round(float(report.scores[0].metrics[plan.metric]), 4)
        finally:
            model.train(was_training)
        return scores


def _engine(model, tokenizer):
    """The Prompt Lab's transformers engine over the model that trains (no copy, no new load)."""
    from playground.backends.transformers_engine import DeviceChoice, TransformersEngine

    parameter = next(model.parameters())
    device = DeviceChoice(parameter.device.type, str(parameter.dtype).removeprefix("torch."))
    return TransformersEngine("fine-tuning run", model, tokenizer, device)


@contextlib.contextmanager
def _adapter_off(model) -> Iterator[None]:
    """The peft adapter switched off for the block (peft's ``disable_adapter``); nothing for a whole model."""
    disable = getattr(model, "disable_adapter", None)
    if callable(disable):
        with disable():
            yield
    else:
        yield
