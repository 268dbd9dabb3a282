"""The one bounded renderer for templates people write: a Jinja sandbox whose budgets hold while it renders.

Every template a person can send (the Prompt Lab's editor, its runs, columns
and evaluations, the fine-tuning templates) renders here. On top of
``jinja2.sandbox.ImmutableSandboxedEnvironment`` (no Python internals, no
methods that change data) a render has a :class:`RenderBudget`:

- **output**: the rendered text is produced as a stream and stopped as soon as
  it passes ``output_chars``;
- **value**: no single value a template builds (a string, a list printed as
  text, a number's digits) may pass ``value_chars``; the size is worked out
  *before* the value is made (``'x' * n``, ``a ~ b``, ``join``, ``replace``,
  ``center``, ``format`` widths, ...), so a doubling loop is refused at the step
  that would cross the line, not after memory has grown;
- **built**: everything the template's operations build, all values together
  (the text collected inside macros and ``set`` blocks included), is capped by
  ``built_chars``, which bounds the memory one render can use;
- **work**: loop iterations, calls (macros, filters, methods) and operators are
  counted across every level of nesting, macros included;
- **time**: a render stops after ``seconds`` of wall time, checked at every
  counted step.

Constructs that only make sense with a template loader (``extends``,
``include``, ``import``, ``block``) and recursive loops are refused when the
template is parsed. A budget that is hit raises :class:`BudgetExceeded`, which
names the budget; :mod:`playground.prompting.templates` turns it into the
user's message.
"""

from __future__ import annotations

import re
import string
import time
import types
from collections import abc
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterable, Mapping

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace, generate_lorem_ipsum, pass_context

MAX_RANGE = 1_000  # range() inside a template
MAX_INT_BITS = 20_000  # about 6,000 decimal digits: the largest number a template may compute
MAX_LIPSUM_PARAGRAPHS = 10
MAX_LIPSUM_WORDS = 100
MAX_JSON_INDENT = 8


@dataclass(frozen=True)
class RenderBudget:
    """What one render may use. The defaults leave room for any prompt a person would write."""

    output_chars: int = 100_000  # characters of rendered text
    value_chars: int = 100_000  # characters of any one value the template builds (as it would print)
    built_chars: int = 2_000_000  # characters of all values the template builds, together
    work: int = 100_000  # loop iterations, calls and operators
    seconds: float = 2.0  # wall time

    def describe(self, budget: str) -> str:
        """The budget's name and limit, in the words its message uses."""
        return {
            "output": f"the output budget of {self.output_chars:,} characters",
            "value": f"the value budget of {self.value_chars:,} characters for any one value",
            "built": f"the building budget of {self.built_chars:,} characters for all the values it makes",
            "work": f"the work budget of {self.work:,} loop iterations, calls and operations",
            "time": f"the time budget of {self.seconds:g} s",
        }[budget]


DEFAULT_BUDGET = RenderBudget()


class BudgetExceeded(SecurityError):
    """A render went over one of its budgets; ``budget`` is output, value, built, work or time."""

    def __init__(self, budget: str, detail: str, limits: RenderBudget = DEFAULT_BUDGET) -> None:
        super().__init__(detail)
        self.budget = budget
        self.detail = detail
        self.limits = limits

    @property
    def limit_text(self) -> str:
        """The budget that was hit, in words: "the work budget of 100,000 loop iterations, ..."."""
        return self.limits.describe(self.budget)


# --------------------------------------------------------------------------- sizes


def printed_size(value: Any, limit: int) -> int:
    """About how many characters ``str(value)`` has, without building it; stops counting past ``limit``.

    Lists and mappings count what their items would print, so a list holding the same long string many
    times counts it each time, as printing it would.
    """
    if isinstance(value, str):
        return len(value)
    return _item_size(value, limit, top=True)


def _item_size(value: Any, limit: int, top: bool = False) -> int:
    if isinstance(value, str):
        # Inside a container a string prints as its repr: quotes, and escapes for unusual characters.
        return len(value) + 2 if (value.isascii() and value.isprintable()) else 10 * len(value) + 2
    if isinstance(value, (bytes, bytearray)):
        return 4 * len(value) + 3
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return value.bit_length() * 30103 // 100000 + 2  # decimal digits: bits x log10(2)
    if isinstance(value, float):
        return 24
    if isinstance(value, Namespace):
        value = value._Namespace__attrs  # what its repr prints
    if isinstance(value, (abc.Mapping, abc.Set, list, tuple, abc.KeysView, abc.ValuesView, abc.ItemsView)):
        total = 2
        items: Iterable[Any] = value.items() if isinstance(value, abc.Mapping) else value
        for item in items:
            total += _item_size(item, limit - total) + 2
            if total > limit:
                return total
        return total
    return 64  # a macro, a loop, a cycler: a short repr


def _number(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


# --------------------------------------------------------------------------- the meter


class _Meter:
    """Counts one render's work, building and time, and raises BudgetExceeded when one runs out."""

    def __init__(self, budget: RenderBudget, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self.clock = clock
        self.restart()

    def restart(self) -> None:
        """Full budgets from now on (compiling a template counts, then each render starts afresh)."""
        self.deadline = self.clock() + self.budget.seconds
        self.work = 0
        self.built = 0

    def step(self, count: int = 1) -> None:
        self.work += count
        if self.work > self.budget.work:
            raise BudgetExceeded("work", "its loops and calls did not end within it (loops inside macros count "
                                         "too)", self.budget)
        if self.clock() > self.deadline:
            raise BudgetExceeded("time", f"it was still rendering after {self.budget.seconds:g} s", self.budget)

    def building(self, size: int, what: str = "a value") -> None:
        """Called before a value of about ``size`` characters is made."""
        if size > self.budget.value_chars:
            raise BudgetExceeded("value", f"{what} would have {size:,} characters", self.budget)
        self.built += size
        if self.built > self.budget.built_chars:
            raise BudgetExceeded("built", "all the text and lists it made added up to more than that", self.budget)

    def size(self, value: Any) -> int:
        return printed_size(value, self.budget.value_chars)

    def result(self, value: Any, what: str = "a value") -> Any:
        """Count a value that has just been made (by a call whose size cannot be known beforehand)."""
        if not isinstance(value, (abc.Iterator, abc.Generator)):  # lazy results count as they are used
            self.building(self.size(value), what)
        return value

    def iterate(self, iterable: Any) -> Iterable[Any]:
        """A for-loop's items, one work step each."""
        for item in iterable:
            self.step()
            yield item


# --------------------------------------------------------------------------- size estimates


_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _format_width(spec: str) -> int:
    """The widths and precisions of a str.format spec such as ``>20.3f``, added up (0 when none)."""
    return sum(int(part) for part in re.findall(r"\d+", spec))


def _percent_widths(fmt: str) -> int:
    """The widths and precisions of a printf-style format, added up; a ``*`` width is refused."""
    total = 0
    for width, precision in _PERCENT_FIELD.findall(fmt):
        if "*" in (width, precision):
            raise SecurityError("a '*' width in a % format is not allowed in templates")
        total += int(width or 0) + int(precision or 0)
    return total


def _sequence(value: Any, limit: int) -> list:
    """An iterable as a list of at most ``limit + 1`` items (enough to know it is too long)."""
    return list(islice(iter(value), limit + 1))


def _join_size(meter: _Meter, items: list, separator: str) -> int:
    total = len(separator) * max(len(items) - 1, 0)
    for item in items:
        total += meter.size(item)
        if total > meter.budget.value_chars:
            break
    return total


def _replace_size(text: str, old: Any, new: Any, count: Any = -1) -> int:
    old, new = str(old), str(new)
    found = len(text) + 1 if old == "" else text.count(old)
    count = _number(count, -1)
    if count is not None and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def _str_method_size(meter: _Meter, method: Any, args: tuple, kwargs: dict) -> int | None:
    """The size of what a str or bytes method will return, for the methods that can grow text."""
    owner = method.__self__
    name = method.__name__
    width = _number(args[0] if args else kwargs.get("width", kwargs.get("tabsize", 0)))
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(len(owner), width)
    if name == "expandtabs":
        tab = _number(args[0] if args else kwargs.get("tabsize", 8), 8)
        return len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * max(tab, 0)
    if name == "join":
        items = _sequence(args[0] if args else (), meter.budget.value_chars)
        return _join_size(meter, items, owner if isinstance(owner, str) else owner.decode("latin-1"))
    if name == "replace" and len(args) >= 2 and isinstance(owner, str):
        return _replace_size(owner, *args[:3])
    if name == "replace" and len(args) >= 2:
        return len(owner) + len(owner) * max(len(args[1]) - len(args[0]), 0) + len(args[1])
    if name in ("translate", "maketrans"):
        raise SecurityError(f"{name}() is not allowed in templates")
    return None


# --------------------------------------------------------------------------- filters


def _filter_estimate(name: str, meter: _Meter, args: tuple, kwargs: dict) -> int | None:
    """Before a filter runs: the size of what it will make, for the filters that can grow their input."""
    if not args:
        return None
    value, rest = args[0], args[1:]

    def arg(position: int, key: str, default: Any = None) -> Any:
        return rest[position] if len(rest) > position else kwargs.get(key, default)

    if name == "center":
        return max(meter.size(value), _number(arg(0, "width", 80), 80))
    if name == "indent":
        width = arg(0, "width", 4)
        pad = len(width) if isinstance(width, str) else _number(width, 4)
        text = str(value) if isinstance(value, str) else ""
        return meter.size(value) + (text.count("\n") + 1) * max(pad, 0)
    if name == "wordwrap":
        width = max(_number(arg(0, "width", 79), 79), 1)
        wrap = arg(2, "wrapstring", None) or "\n"
        size = meter.size(value)
        return size + (size // width + 1) * len(str(wrap))
    if name == "join":
        items = _sequence(value, meter.budget.value_chars)
        return _join_size(meter, items, str(arg(0, "d", "")))
    if name == "replace":
        return _replace_size(str(value), arg(0, "old", ""), arg(1, "new", ""), arg(2, "count", -1))
    if name == "format":
        extra = sum(meter.size(a) for a in rest) + sum(meter.size(v) for v in kwargs.values())
        return meter.size(value) + extra + _percent_widths(str(value))
    if name == "batch":
        items = len(_sequence(value, meter.budget.value_chars))
        size = max(_number(arg(0, "linecount", 1), 1), 1)
        filled = -(-items // size) * size if arg(1, "fill_with", None) is not None else items
        return meter.size(value) + filled * (meter.size(arg(1, "fill_with", None)) + 2)
    if name == "slice":
        slices = _number(arg(0, "slices", 1), 1)
        if slices > MAX_RANGE:
            raise SecurityError(f"slice() into {slices:,} parts; templates may use at most {MAX_RANGE:,}")
        return meter.size(value) + slices * (meter.size(arg(1, "fill_with", None)) + 4)
    if name == "sum":
        items = _sequence(value, meter.budget.value_chars)
        if any(isinstance(item, (str, list, tuple)) for item in items) or not isinstance(arg(1, "start", 0), int):
            return sum(meter.size(item) for item in items) + meter.size(arg(1, "start", 0))
        return None
    if name == "tojson":
        indent = _number(arg(0, "indent", 0))
        if indent > MAX_JSON_INDENT:
            raise SecurityError(f"tojson(indent={indent}); templates may indent JSON by at most {MAX_JSON_INDENT}")
        return meter.size(value) * (2 + indent)
    if name in ("pprint", "string", "list", "urlencode", "e", "escape", "forceescape"):
        return meter.size(value) * (6 if name in ("urlencode", "e", "escape", "forceescape") else 2)
    return None


def _metered_filter(name: str, function: Callable, meter: _Meter) -> Callable:
    def metered(*args: Any, **kwargs: Any) -> Any:
        meter.step()
        # Filters that take the context or environment first get it as their first argument.
        offset = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0
        estimate = _filter_estimate(name, meter, args[offset:], kwargs)
        if estimate is not None:
            meter.building(estimate, f"the {name} filter's result")
            return function(*args, **kwargs)
        return meter.result(function(*args, **kwargs), f"the {name} filter's result")

    metered.__name__ = name
    if hasattr(function, "jinja_pass_arg"):
        metered.jinja_pass_arg = function.jinja_pass_arg  # type: ignore[attr-defined]
    return metered


UNAVAILABLE_FILTERS = frozenset({"urlize"})  # can add long markup per word; no use in a prompt


# --------------------------------------------------------------------------- the compiled code's hooks


class _MeteredCodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``~``, for-loops and text collected in buffers going through the meter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metered_iterables: set[int] = set()  # ids of the for-loop iterables still to be written

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.metered_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        # A for-loop's iterable is wrapped so that each item it hands out is one step of work.
        # (Jinja forbids new node types, so the iterable is recognised by identity.)
        if id(node) in self._metered_iterables:
            self._metered_iterables.discard(id(node))
            self.write("environment.meter.iterate(")
            super().visit(node, *args, **kwargs)
            self.write(")")
            return None
        return super().visit(node, *args, **kwargs)

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._metered_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def visit_Output(self, node: nodes.Output, frame: Frame) -> None:
        # Text collected in a buffer (a macro's body, a set block) is joined into one value later:
        # count its literal parts each time they are collected. Expressions count in finalize.
        if frame.buffer is not None:
            literal = sum(len(child.data) for child in node.nodes if isinstance(child, nodes.TemplateData))
            if literal:
                self.writeline(f"environment.meter.building({literal}, 'the text collected in a block')")
        super().visit_Output(node, frame)


# --------------------------------------------------------------------------- the environment


REFUSED_NODES = {
    nodes.Extends: "extends", nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from ... import",
    nodes.Block: "block",
}


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """An immutable Jinja sandbox whose operations, loops, calls and output are metered for one render."""

    code_generator_class = _MeteredCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%", "-", "/", "//"})

    def __init__(self, budget: RenderBudget = DEFAULT_BUDGET, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True,
                         keep_trailing_newline=False, cache_size=0, finalize=_finalize_output)
        self.budget = budget
        self.meter = _Meter(budget, clock)
        self.globals = {"range": self._range, "dict": dict, "cycler": Cycler, "joiner": Joiner,
                        "namespace": Namespace, "lipsum": self._lipsum}
        self.filters = {name: _metered_filter(name, function, self.meter) for name, function in self.filters.items()
                        if name not in UNAVAILABLE_FILTERS}

    # -- parsing ------------------------------------------------------------------
    def check_constructs(self, tree: nodes.Template) -> None:
        """Refuse what needs a loader, and recursive loops (whose items the meter cannot see)."""
        for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport, nodes.Block,
                                   nodes.For)):
            if isinstance(node, nodes.For):
                if node.recursive:
                    raise SecurityError("recursive for-loops are not allowed in templates; write a macro")
                continue
            raise SecurityError(f"'{REFUSED_NODES[type(node)]}' is not available in a prompt template (there are "
                                f"no other templates to reach)")

    # -- globals ------------------------------------------------------------------
    def _range(self, *args: int) -> range:
        self.meter.step()
        result = range(*args)
        if len(result) > MAX_RANGE:
            raise SecurityError(f"range() of {len(result):,} numbers; templates may use at most {MAX_RANGE:,}")
        return result

    def _lipsum(self, n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
        self.meter.step()
        n, max = _number(n, 5), _number(max, 100)
        if n > MAX_LIPSUM_PARAGRAPHS or max > MAX_LIPSUM_WORDS:
            raise SecurityError(f"lipsum() may make at most {MAX_LIPSUM_PARAGRAPHS} paragraphs of at most "
                                f"{MAX_LIPSUM_WORDS} words")
        return self.meter.result(generate_lorem_ipsum(n, html, min, max), "lipsum()")

    # -- operators, calls, items ----------------------------------------------------
    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        meter = self.meter
        meter.step()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and not isinstance(times, bool):
                    size = meter.size(seq) * max(times, 0)
                    if size > self.budget.value_chars:
                        raise BudgetExceeded("value", f"repeating a value {times:,} times would make {size:,} "
                                                      f"characters", self.budget)
                    meter.building(size)
            if _is_int(left) and _is_int(right):
                self._check_bits(left.bit_length() + right.bit_length(), operator, left, right)
        elif operator == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
            if abs(left) > 1 and right > 0:
                bits = (abs(int(left)).bit_length() or 1) * right
                if isinstance(left, float) or isinstance(right, float):
                    bits = 0 if bits < 1100 else bits  # floats overflow to an error on their own
                self._check_bits(bits, operator, left, right)
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                meter.building(meter.size(left) + meter.size(right), "the sum")
        elif operator == "%" and isinstance(left, str):
            args = right if isinstance(right, tuple) else (right,)
            meter.building(len(left) + sum(meter.size(a) for a in args) + _percent_widths(left), "the % format")
        return super().call_binop(context, operator, left, right)

    def _check_bits(self, bits: float, operator: str, left: Any, right: Any) -> None:
        if bits > MAX_INT_BITS:
            raise SecurityError(f"the power {left!r} ** {right!r} is too large for a template" if operator == "**"
                                else f"the product would have about {int(bits * 0.30103):,} digits; templates may "
                                     f"compute numbers of up to {int(MAX_INT_BITS * 0.30103):,}")

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        meter = __self.meter
        meter.step()
        estimate = None
        if isinstance(__obj, (types.BuiltinMethodType, types.MethodWrapperType)) and \
                isinstance(getattr(__obj, "__self__", None), (str, bytes)):
            estimate = _str_method_size(meter, __obj, args, kwargs)
        if estimate is not None:
            meter.building(estimate, f"the result of {__obj.__name__}()")
            return super().call(__context, __obj, *args, **kwargs)
        return meter.result(super().call(__context, __obj, *args, **kwargs), "a call's result")

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.meter.step()
        if isinstance(argument, slice):
            return self.meter.result(super().getitem(obj, argument), "a slice")
        return super().getitem(obj, argument)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.meter.step()
        return super().getattr(obj, attribute)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        meter, text = self.meter, value.__self__

        def metered_format(*args: Any, **kwargs: Any) -> str:
            meter.step()
            widest = 0
            for _, field, spec, _ in string.Formatter().parse(text):
                if spec and "{" in spec:
                    raise SecurityError("nested replacement fields in a format spec are not allowed in templates")
                widest += _format_width(spec or "") if field is not None else 0
            values = list(args) + list(kwargs.values())
            if value.__name__ == "format_map" and args:
                values = list(args[0].values()) if isinstance(args[0], abc.Mapping) else values
            meter.building(len(text) + widest + sum(meter.size(v) for v in values), "the formatted text")
            return wrapped(*args, **kwargs)

        return metered_format

    def metered_concat(self, parts: tuple) -> str:
        meter = self.meter
        meter.step()
        meter.building(sum(meter.size(part) for part in parts), "the joined text (~)")
        return "".join([str(part) for part in parts])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@pass_context
def _finalize_output(context, value: Any) -> Any:
    """Every ``{{ expression }}`` on its way out: its printed size counts before it becomes text."""
    environment = context.environment
    environment.meter.step()
    environment.meter.building(environment.meter.size(value), "an expression's text")
    return value


# --------------------------------------------------------------------------- rendering


@dataclass
class BoundedTemplate:
    """A template compiled in its own bounded sandbox; each ``render`` starts with the full budgets."""

    environment: BoundedSandbox
    tree: nodes.Template
    template: Any  # jinja2.Template

    def render(self, variables: Mapping[str, Any]) -> str:
        """The template filled with ``variables``, rendered as a stream and stopped at the first budget hit.

        Raises BudgetExceeded naming the budget, or the error Jinja or the sandbox raised.
        """
        budget = self.environment.budget
        meter = self.environment.meter
        meter.restart()
        pieces: list[str] = []
        total = 0
        stream = self.template.generate(**variables)
        try:
            for piece in stream:
                total += len(piece)
                if total > budget.output_chars:
                    raise BudgetExceeded("output", "the prompt reached that length before it ended", budget)
                meter.step()
                pieces.append(piece)
        finally:
            stream.close()
        return "".join(pieces)


def compile_bounded(source: str, budget: RenderBudget = DEFAULT_BUDGET,
                    clock: Callable[[], float] = time.monotonic) -> BoundedTemplate:
    """``source`` parsed, checked and compiled in a bounded sandbox; raises Jinja's errors and SecurityError."""
    env = BoundedSandbox(budget, clock)
    tree = env.parse(source)
    env.check_constructs(tree)
    return BoundedTemplate(env, tree, env.from_string(tree))


def render_bounded(source: str, variables: Mapping[str, Any], budget: RenderBudget = DEFAULT_BUDGET,
                   clock: Callable[[], float] = time.monotonic) -> str:
    """Compile ``source`` and render it once with ``variables`` (see :meth:`BoundedTemplate.render`)."""
    return compile_bounded(source, budget, clock).render(variables)
