"""Bundled Prompt Lab setups: one choice that fills the task, template, strategy, demonstrations, model and input.

A setup is a lesson's starting point, written once in ``examples/setups/prompt_lab.yaml``: the classic lab's
first part (zero-, one- and few-shot FLAN-T5 on the project's dialogue summaries) is three of them. Choosing one
in the Prompt Lab sets every prompt control at once; the model is the first of the setup's models whose weights
are on this machine (FLAN-T5 is Hub-only: ``python -m playground download flan-t5-base`` fetches it ahead), and
when none is, the rest still applies and the page says which download is missing.

The file is read strictly: unknown keys, unknown tasks, strategies or templates, a template that does not suit
the strategy, and a ``k`` the strategy cannot use are errors that name the setup.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

import yaml

from playground.backends.base import GenerationParams
from playground.errors import InvalidParameterError, PlaygroundError
from playground.prompting.tasks import EXAMPLES_DIR, FEW_SHOT, FIXED, STRATEGIES, TASKS, ZERO_SHOT
from playground.prompting.templates import TemplateLibrary

SETUPS_FILE = EXAMPLES_DIR / "setups" / "prompt_lab.yaml"
MAX_SETUPS = 50


def _help(default, text: str):
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class LabSetup:
    """One bundled setup of the Prompt Lab's controls (an entry of ``examples/setups/prompt_lab.yaml``)."""

    id: str = _help("", "Unique id; the Setup list and the API pass it.")
    name: str = _help("", "How the Setup list names it.")
    description: str = _help("", "One sentence on what the setup shows.")
    task: str = _help("", "The task (a key of the task list: sentiment, arithmetic, summarization, translation).")
    template: str = _help("", "The library template's id (examples/prompts/); it must suit the strategy.")
    strategy: str = _help(ZERO_SHOT, "zero_shot or few_shot (the strategies that need no reasoning).")
    k: int = _help(0, "Demonstrations before the input (few-shot: 1 is one-shot); zero-shot takes 0.")
    models: tuple[str, ...] = _help((), "Catalog ids in order of preference; the first present one is chosen.")
    evaluate: tuple[str, ...] = _help((ZERO_SHOT, FEW_SHOT), "The strategies Evaluate scores.")
    example: int = _help(0, "Which bundled example (0: the first) becomes the input.")


@dataclass(frozen=True)
class AppliedSetup:
    """What choosing a setup sets: the controls' values, and the model (None when none of its models is here)."""

    setup: LabSetup
    model_id: str | None
    text: str
    params: GenerationParams
    selection: str = FIXED

    @property
    def missing_models(self) -> tuple[str, ...]:
        """The setup's models, when none of them is on this machine (to name the download); else ()."""
        return () if self.model_id is not None else self.setup.models


def _setup_from_dict(entry, where: str) -> LabSetup:
    if not isinstance(entry, dict):
        raise PlaygroundError(f"{where}: each setup must be a mapping of keys.")
    known = {f.name for f in fields(LabSetup)}
    unknown = set(entry) - known
    if unknown:
        raise PlaygroundError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}.")
    missing = {"id", "name", "task", "template"} - set(entry)
    if missing:
        raise PlaygroundError(f"{where}: missing keys {sorted(missing)}.")
    values = dict(entry)
    for name in ("models", "evaluate"):
        if name in values:
            values[name] = tuple(str(v) for v in values[name] or ())
    return LabSetup(**values)


def check_setup(setup: LabSetup, library: TemplateLibrary, where: str = "") -> LabSetup:
    """The setup, after checking it against the tasks and the template library; PlaygroundError otherwise."""
    where = where or f"setup {setup.id!r}"
    if setup.task not in TASKS:
        raise PlaygroundError(f"{where}: unknown task {setup.task!r}; choose one of {', '.join(TASKS)}.")
    if setup.strategy not in (ZERO_SHOT, FEW_SHOT):
        raise PlaygroundError(f"{where}: strategy must be zero_shot or few_shot, not {setup.strategy!r}.")
    template = library.get(setup.template)
    if template.task != setup.task or not template.suits(setup.strategy):
        raise PlaygroundError(f"{where}: the template {setup.template!r} is not a {setup.task} template for "
                              f"{setup.strategy}.")
    if isinstance(setup.k, bool) or not isinstance(setup.k, int) or setup.k < 0 or \
            (setup.strategy == ZERO_SHOT and setup.k != 0) or (setup.strategy == FEW_SHOT and setup.k < 1):
        raise PlaygroundError(f"{where}: k={setup.k!r} does not suit {setup.strategy} (zero-shot: 0; few-shot: 1 "
                              f"or more).")
    bad = [s for s in setup.evaluate if s not in STRATEGIES]
    if bad or not setup.evaluate:
        raise PlaygroundError(f"{where}: evaluate must list strategies among {', '.join(STRATEGIES)}.")
    if isinstance(setup.example, bool) or not isinstance(setup.example, int) or setup.example < 0:
        raise PlaygroundError(f"{where}: example must be 0 or more.")
    return setup


def load_setups(library: TemplateLibrary, path: Path = SETUPS_FILE) -> tuple[LabSetup, ...]:
    """The bundled setups, checked (a missing file: none)."""
    path = Path(path)
    if not path.is_file():
        return ()
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or set(data) - {"setups"}:
        raise PlaygroundError(f"{path.name}: the file must hold one key, 'setups', with a list.")
    entries = data.get("setups") or []
    if len(entries) > MAX_SETUPS:
        raise PlaygroundError(f"{path.name}: {len(entries)} setups; at most {MAX_SETUPS}.")
    setups = [check_setup(_setup_from_dict(e, f"{path.name} setup {i + 1}"), library, f"{path.name} setup {i + 1}")
              for i, e in enumerate(entries)]
    ids = [s.id for s in setups]
    if len(ids) != len(set(ids)):
        raise PlaygroundError(f"{path.name}: duplicate setup ids.")
    return tuple(setups)


def get_setup(setups: Sequence[LabSetup], setup_id: str) -> LabSetup:
    for setup in setups:
        if setup.id == setup_id:
            return setup
    raise InvalidParameterError(f"There is no setup {setup_id!r}; choose one of: "
                                f"{', '.join(s.id for s in setups) or 'none'}.")


def choose_model(setup: LabSetup, available: Sequence[str]) -> str | None:
    """The first of the setup's models among ``available`` (the model ids of the pickers); None if none is."""
    return next((model for model in setup.models if model in available), None)
