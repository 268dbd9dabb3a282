"""Fine-tuning templates: Jinja text that turns a data row into a prompt and a completion.

The templates live in ``examples/finetune/templates.yaml``: several phrasings
of dialogue summarisation (FLAN-style: training on a mix of wordings teaches
the task, not one sentence), one for sentiment and a ``plain`` one that passes
the input through. They render with the Prompt Lab's sandbox
(:func:`playground.prompting.templates.render_template`): no Python internals,
an unknown variable is an error naming the defined ones, sizes are capped.

A template sees ``input`` and ``target`` (the mapped columns) and every column
of the row under its own name (``dialogue``, ``summary``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from playground.errors import TemplateError
from playground.prompting.tasks import EXAMPLES_DIR
from playground.prompting.templates import (
    check_entry_keys,
    check_unique_ids,
    parse_template,
    read_template_entries,
    render_template,
)

TEMPLATES_FILE = EXAMPLES_DIR / "finetune" / "templates.yaml"
TEMPLATE_TASKS = ("summarization", "classification", "any")
_KEYS = {"id", "name", "task", "description", "prompt", "completion"}
_REQUIRED = {"id", "name", "prompt"}


@dataclass(frozen=True)
class FinetuneTemplate:
    """One phrasing: Jinja for the prompt and for the completion."""

    id: str
    name: str
    prompt: str
    completion: str = "{{ target }}"
    task: str = "any"
    description: str = ""

    def render(self, input: str, target: str, row: Mapping[str, Any] | None = None) -> tuple[str, str]:
        """(prompt, completion) for one row; raises TemplateError naming the template."""
        variables = {str(k): v for k, v in (row or {}).items()}
        variables.update(input=input, target=target)
        try:
            return render_template(self.prompt, variables), render_template(self.completion, variables)
        except TemplateError as exc:
            raise TemplateError(f"Template {self.id!r}: {exc}", line=exc.line) from None


@dataclass(frozen=True)
class TemplateSet:
    """The templates of one YAML file, by id."""

    templates: tuple[FinetuneTemplate, ...]
    source: str = ""

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.templates]

    def get(self, template_id: str) -> FinetuneTemplate:
        for template in self.templates:
            if template.id == template_id:
                return template
        raise TemplateError(f"Unknown fine-tuning template {template_id!r}. Choose one of: {', '.join(self.ids)} "
                            f"(or auto).")

    def for_task(self, task: str) -> list[FinetuneTemplate]:
        return [t for t in self.templates if t.task in (task, "any")]


def _template(entry: Any, where: str) -> FinetuneTemplate:
    check_entry_keys(entry, where, _KEYS, _REQUIRED)
    task = str(entry.get("task") or "any")
    if task not in TEMPLATE_TASKS:
        raise TemplateError(f"{where}: task must be one of {list(TEMPLATE_TASKS)}, not {task!r}.")
    template = FinetuneTemplate(id=str(entry["id"]), name=str(entry["name"]), prompt=str(entry["prompt"]),
                                completion=str(entry.get("completion") or "{{ target }}"), task=task,
                                description=str(entry.get("description") or ""))
    for part in (template.prompt, template.completion):
        try:
            parse_template(part)
        except TemplateError as exc:
            raise TemplateError(f"{where} ({template.id}): {exc}", line=exc.line) from None
    return template


def load_templates(path: str | Path = TEMPLATES_FILE) -> TemplateSet:
    """Every template of a YAML file; raises TemplateError for a malformed file or a duplicate id."""
    path = Path(path)
    templates = tuple(_template(entry, where) for where, entry in read_template_entries(path))
    check_unique_ids([t.id for t in templates], path.name)
    return TemplateSet(templates, path.name)
