"""Prompt templates: Jinja text rendered in a sandbox, and the template library in ``examples/prompts/``.

A template is Jinja text that the Prompt Lab fills with named variables: the
input (as ``input`` and under the task's field name, e.g. ``text``), the chosen
demonstrations (``demos``, each with ``input``, ``target``, the task's field
names such as ``text`` and ``label``, and ``rationale``, which is filled only
for chain-of-thought strategies), the chain-of-thought trigger
(``cot_trigger``, empty unless the strategy reasons), ``cot`` (whether it
does), ``task`` (its id), the task's ``labels`` and any extra variables the
template declares (for example ``target_language``).

Templates come from users (the Prompt Lab lets them edit one live), so they
render in the bounded sandbox of :mod:`playground.prompting.sandbox` with
``StrictUndefined``: reaching for Python internals (``''.__class__``) or
calling methods that change data is refused, an unknown variable is an error
rather than an empty string, and the output, the values a template builds, its
work and its time have budgets enforced while it renders, so no template can
stall the server or grow its memory. Every failure is a ``TemplateError``
whose message says what went wrong, on which line, and which budget was hit.

The library is a folder of YAML files, one per task, each holding several
phrasings of the task (as instruction-tuning collections do), with the
strategies each phrasing suits and the kind of answer it asks for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml
from jinja2 import TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError

from playground.errors import TemplateError
from playground.prompting.sandbox import DEFAULT_BUDGET, BoundedTemplate, BudgetExceeded, RenderBudget, compile_bounded
from playground.prompting.tasks import ANSWER_KINDS, PROMPTS_DIR, STRATEGIES, TASKS

MAX_TEMPLATE_CHARS = 20_000  # a template longer than this is refused before parsing
MAX_OUTPUT_CHARS = DEFAULT_BUDGET.output_chars  # a rendered prompt longer than this is refused while it renders
MAX_LOOP_DEPTH = 2  # for-loops written inside each other (loops reached through macros count as work)
MAX_TEMPLATE_STOPS = 4  # stop sequences a library template may bring
NOT_TEMPLATES = frozenset({"rubrics.yaml"})  # the judge's rubrics (playground.prompting.judge) live beside the templates


def _line_text(source: str, line: int | None) -> str:
    if not line:
        return ""
    lines = source.splitlines()
    if 1 <= line <= len(lines):
        text = lines[line - 1].strip()
        return f' ("{text[:80]}{"..." if len(text) > 80 else ""}")' if text else ""
    return ""


def _loop_depth(node: nodes.Node, depth: int = 0) -> int:
    here = depth + 1 if isinstance(node, nodes.For) else depth
    return max([here] + [_loop_depth(child, here) for child in node.iter_child_nodes()])


def _compile(source: str, budget: RenderBudget = DEFAULT_BUDGET) -> BoundedTemplate:
    """The template compiled in the bounded sandbox; raises TemplateError for anything refused before rendering."""
    if not isinstance(source, str) or not source.strip():
        raise TemplateError("The template is empty: write the prompt text, with variables such as {{ input }}.")
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"The template has {len(source):,} characters; the limit is {MAX_TEMPLATE_CHARS:,}.")
    try:
        compiled = compile_bounded(source, budget)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"Template syntax error on line {exc.lineno}{_line_text(source, exc.lineno)}: {exc.message}",
            line=exc.lineno) from None
    except SecurityError as exc:  # a construct the sandbox refuses outright, or a constant over a budget
        raise _sandbox_error(source, exc, "the variables it is given") from None
    except ValueError as exc:  # Python refuses a number literal of thousands of digits
        detail = "a number in it has too many digits" if "digits" in str(exc) else str(exc)[:200]
        raise TemplateError(f"The template cannot be compiled: {detail}.") from None
    except (OverflowError, RecursionError, MemoryError) as exc:
        raise TemplateError(f"The template cannot be compiled: {type(exc).__name__}.") from None
    if _loop_depth(compiled.tree) > MAX_LOOP_DEPTH:
        raise TemplateError(f"The template nests for-loops more than {MAX_LOOP_DEPTH} deep; flatten it.")
    return compiled


def parse_template(source: str, budget: RenderBudget = DEFAULT_BUDGET) -> "CheckedTemplate":
    """The template checked and compiled once; raises TemplateError (with the line of a syntax error)."""
    return CheckedTemplate(source, _compile(source, budget))


def template_variables(source: str) -> frozenset[str]:
    """The names a template reads from its context (``input``, ``demos``, ...); raises TemplateError."""
    return parse_template(source).variables


def _error_line(exc: BaseException) -> int | None:
    """The template line a render error happened on (Jinja rewrites tracebacks to point at it)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _sandbox_error(source: str, exc: SecurityError, available: str) -> TemplateError:
    line = _error_line(exc)
    where = f" on line {line}{_line_text(source, line)}" if line else ""
    if isinstance(exc, BudgetExceeded):
        return TemplateError(
            f"The template went over {exc.limit_text}{where}: {exc.detail}. Make it shorter or "
            f"loop over fewer items.", line=line)
    return TemplateError(
        f"The sandbox refused the template{where}: {str(exc).rstrip('.')}. Templates may read the variables they "
        f"are given ({available}) but not Python internals, and may not call methods that change data.", line=line)


_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")


@dataclass(frozen=True)
class CheckedTemplate:
    """A template that passed every check needing no variables, compiled once; render it as often as needed.

    It holds its own sandbox and meter, so it belongs to one request (not shared between threads).
    """

    source: str
    compiled: BoundedTemplate

    @property
    def variables(self) -> frozenset[str]:
        """The names the template reads from its context."""
        return frozenset(meta.find_undeclared_variables(self.compiled.tree))

    def render(self, variables: Mapping[str, Any]) -> str:
        """The template filled with ``variables``, stripped of surrounding blank space.

        Renders through the bounded sandbox (:mod:`playground.prompting.sandbox`): the output, every value
        the template builds, its work and its time have budgets that hold while it renders. Raises
        TemplateError for a variable that is not defined (naming it and the ones that are), anything the
        sandbox refuses, and a budget that is hit (naming the budget).
        """
        source = self.source
        available = ", ".join(sorted(variables)) or "none"
        try:
            text = self.compiled.render(variables)
        except SecurityError as exc:  # budgets (BudgetExceeded) and the sandbox's refusals
            raise _sandbox_error(source, exc, available) from None
        except UndefinedError as exc:
            line = _error_line(exc)
            where = f"Line {line}{_line_text(source, line)}: " if line else ""
            match = _UNDEFINED_NAME.match(str(exc))
            if match:
                message = (f"{where}the template uses the variable '{match.group(1)}', which is not defined. "
                           f"Defined variables: {available}.")
            else:
                message = (f"{where}the template asks for something undefined: {exc}. Defined variables: "
                           f"{available}.")
            raise TemplateError(message, line=line) from None
        except RecursionError:
            raise TemplateError("The template calls itself without end (a recursive macro or loop).") from None
        except MemoryError:
            raise TemplateError("The template needed more memory than a prompt may use.") from None
        except Exception as exc:  # a filter given the wrong type, a division by zero, ...
            line = _error_line(exc)
            where = f" on line {line}{_line_text(source, line)}" if line else ""
            raise TemplateError(f"The template failed{where}: {type(exc).__name__}: {str(exc)[:300]}",
                                line=line) from None
        return text.strip()


def render_template(source: str, variables: Mapping[str, Any], budget: RenderBudget = DEFAULT_BUDGET) -> str:
    """Check ``source`` and render it once with ``variables`` (see :meth:`CheckedTemplate.render`)."""
    return parse_template(source, budget).render(variables)


# --------------------------------------------------------------------------- the library


@dataclass(frozen=True)
class PromptTemplate:
    """One phrasing of a task from the template library."""

    id: str
    task: str  # a key of tasks.TASKS
    name: str
    strategies: tuple[str, ...]  # the strategies this phrasing suits
    answer: str  # answer-extraction kind, one of tasks.ANSWER_KINDS ("label", "number", "text", "date", ...)
    template: str  # Jinja text
    system: str = ""  # optional system message
    description: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)  # extra variables and their defaults
    stop: tuple[str, ...] = ()  # stop sequences that suit the layout (e.g. "\nQ:": the model starts a new question)
    source: str = ""  # the YAML file it came from

    def suits(self, strategy: str) -> bool:
        return strategy in self.strategies


def check_entry_keys(entry: Any, where: str, allowed: set[str], required: set[str]) -> dict:
    """``entry`` if it is a mapping with only ``allowed`` keys and every ``required`` one; else TemplateError."""
    if not isinstance(entry, dict):
        raise TemplateError(f"{where}: each template must be a mapping of keys, not {type(entry).__name__}.")
    unknown = set(entry) - allowed
    if unknown:
        raise TemplateError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}.")
    missing = required - set(entry)
    if missing:
        raise TemplateError(f"{where}: missing keys {sorted(missing)}.")
    return entry


def read_template_entries(path: Path) -> list[tuple[str, Any]]:
    """(where, entry) for each entry of a template YAML file holding one key, ``templates``.

    A file that cannot be read or parsed, or has another shape, raises TemplateError (with the
    YAML line where there is one); ``where`` names the file and entry for later messages.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise TemplateError(f"Cannot read {path.name}: {exc.strerror or exc}.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise TemplateError(f"{path.name}: not valid YAML" + (f" (line {line})" if line else "")
                            + f": {getattr(exc, 'problem', exc)}", line=line) from None
    if not isinstance(data, dict) or set(data) - {"templates"}:
        raise TemplateError(f"{path.name}: the file must hold one key, 'templates', with a list.")
    return [(f"{path.name} template {i + 1}", entry) for i, entry in enumerate(data.get("templates") or [])]


def check_unique_ids(ids: list[str], where: str) -> None:
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise TemplateError(f"Duplicate template ids in {where}: {', '.join(duplicates)}.")


_TEMPLATE_KEYS = {f.name for f in fields(PromptTemplate)} - {"source"}
_REQUIRED_KEYS = {"id", "task", "name", "strategies", "answer", "template"}


def _template_from_dict(entry: Any, where: str) -> PromptTemplate:
    check_entry_keys(entry, where, _TEMPLATE_KEYS, _REQUIRED_KEYS)
    if entry["task"] not in TASKS:
        raise TemplateError(f"{where}: task must be one of {sorted(TASKS)}, not {entry['task']!r}.")
    strategies = tuple(entry["strategies"] or ())
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise TemplateError(f"{where}: strategies must be a non-empty list drawn from {list(STRATEGIES)}.")
    if entry["answer"] not in ANSWER_KINDS:
        raise TemplateError(f"{where}: answer must be one of {list(ANSWER_KINDS)}, not {entry['answer']!r}.")
    variables = entry.get("variables") or {}
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise TemplateError(f"{where}: variables must map names to default text.")
    stop = entry.get("stop") or []
    if not isinstance(stop, list) or len(stop) > MAX_TEMPLATE_STOPS or \
            not all(isinstance(x, str) and 0 < len(x) <= 100 for x in stop):
        raise TemplateError(f"{where}: stop must be a list of at most {MAX_TEMPLATE_STOPS} strings of 1 to 100 "
                            f"characters.")
    try:
        parse_template(entry["template"])
    except TemplateError as exc:
        raise TemplateError(f"{where} ({entry['id']}): {exc}", line=exc.line) from None
    return PromptTemplate(
        id=str(entry["id"]), task=entry["task"], name=str(entry["name"]), strategies=strategies,
        answer=entry["answer"], template=entry["template"], system=str(entry.get("system") or ""),
        description=str(entry.get("description") or ""), variables=dict(variables), stop=tuple(stop), source=where,
    )


@dataclass(frozen=True)
class TemplateLibrary:
    """Every template from the YAML files of one folder (``examples/prompts/`` by default)."""

    templates: tuple[PromptTemplate, ...]

    @classmethod
    def load(cls, folder: Path = PROMPTS_DIR) -> "TemplateLibrary":
        """Read every ``*.yaml`` in ``folder``; raises TemplateError for a malformed file or duplicate id."""
        templates = [_template_from_dict(entry, where) for path in sorted(Path(folder).glob("*.yaml"))
                     if path.name not in NOT_TEMPLATES for where, entry in read_template_entries(path)]
        check_unique_ids([t.id for t in templates], str(folder))
        return cls(tuple(templates))

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.templates]

    def get(self, template_id: str) -> PromptTemplate:
        for template in self.templates:
            if template.id == template_id:
                return template
        raise TemplateError(f"Unknown template {template_id!r}. Choose one of: {', '.join(self.ids)}.")

    def for_task(self, task: str, strategy: str | None = None) -> list[PromptTemplate]:
        """The templates of a task, optionally only those that suit a strategy."""
        return [t for t in self.templates if t.task == task and (strategy is None or t.suits(strategy))]
