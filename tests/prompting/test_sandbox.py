"""The bounded renderer: budgets on output, values, building, work and time that hold while a template renders.

Each hostile template below was written to grow memory, work or time in its own way; each must end with a
message naming the budget it hit, quickly and without the process's memory growing (measured with tracemalloc).
"""

from __future__ import annotations

import itertools
import tracemalloc

import pytest

from playground.errors import TemplateError
from playground.prompting.sandbox import BudgetExceeded, RenderBudget, printed_size, render_bounded
from playground.prompting.templates import render_template

PEAK_MB = 30  # a render may allocate at most this much, whatever the template (the budgets allow ~10 MB)
LONG = "x" * 10_000


def _refused(source: str, variables: dict | None = None, budget: RenderBudget | None = None) -> str:
    """The message of the TemplateError the render raises; fails if memory peaked above PEAK_MB."""
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError) as info:
            if budget is None:
                render_template(source, variables or {})
            else:
                render_template(source, variables or {}, budget)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_MB * 1e6, f"{peak / 1e6:.0f} MB for {source[:60]!r}"
    return str(info.value)


# ---------------------------------------------------------------- output: stopped while it streams


@pytest.mark.parametrize("source", [
    "{% set s = 'x' * 10000 %}{% for a in range(1000) %}{% for b in range(1000) %}{{ s }}{% endfor %}{% endfor %}",
    "{% for a in range(1000) %}{% for b in range(1000) %}" + "y" * 500 + "{% endfor %}{% endfor %}",
    "{% for a in range(1000) %}{{ long }}{{ long }}{% endfor %}",
    "{% macro m() %}{{ long }}{% endmacro %}{% for a in range(1000) %}{{ m() }}{% endfor %}",
])
def test_output_is_cut_at_the_output_budget_while_rendering(source):
    message = _refused(source, {"long": LONG})
    assert "output budget of 100,000 characters" in message


# ---------------------------------------------------------------- values: refused before they are built


@pytest.mark.parametrize("source", [
    # doubling through a namespace, with ~ and with +
    "{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set ns = namespace(l=['ab']) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
    "{{ 'ab' * 100000 }}",
    "{{ [long] * 20 }}",
    "{{ ([long] * 1000) | join }}",
    "{{ ([long] * 100) | string }}",
    "{{ 'a' | center(1000000000) }}",
    "{{ 'a'.ljust(1000000000) }}",
    "{{ 'a'.zfill(10 ** 9) }}",
    "{{ '{:>1000000000}'.format(1) }}",
    "{{ '{:.1000000000f}'.format(1.5) }}",
    "{{ '%1000000000d' % 1 }}",
    "{{ '%1000000000d' | format(1) }}",
    "{{ ('a' * 10000).replace('a', 'b' * 100) }}",
    "{{ ('a' * 10000) | replace('a', 'b' * 5000) }}",
    "{{ ('\\t' * 5000).expandtabs(100000) }}",
    "{{ ('a\\n' * 5000) | indent(100000) }}",
    "{{ ('a' * 100000) | wordwrap(1, wrapstring='-' * 1000) }}",
    "{{ [1] | batch(1000000000, 'x') | list }}",
    "{{ ([[0] * 10000] * 10000) | sum(start=[]) | length }}",
    "{{ long ~ long ~ long ~ long ~ long ~ long ~ long ~ long ~ long ~ long ~ long }}",
    "{{ ' '.join([long] * 11) }}",
])
def test_a_value_over_the_value_budget_is_refused_before_it_is_built(source):
    message = _refused(source, {"long": LONG})
    assert "value budget of 100,000 characters" in message
    assert "line 1" in message


# ---------------------------------------------------------------- work: counted across macros and nesting


@pytest.mark.parametrize("source", [
    # loops nested through a macro get past the two-loop nesting rule; their iterations still count
    "{% macro m() %}{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}{% endmacro %}"
    "{% for a in range(1000) %}{% for b in range(1000) %}{{ m() }}{% endfor %}{% endfor %}",
    "{% macro m() %}{% for i in range(1000) %}{% endfor %}{% endmacro %}"
    "{% for a in range(1000) %}{% for b in range(1000) %}{% set x = m() %}{% endfor %}{% endfor %}",
    "{% macro m() %}{% for i in range(1000) %}{{ caller() }}{% endfor %}{% endmacro %}"
    "{% for a in range(1000) %}{% call m() %}{% for b in range(1000) %}{% endfor %}{% endcall %}{% endfor %}",
    "{% filter upper %}{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}{% endfilter %}",
    "{% for a in range(1000) %}{% for b in range(1000) if b > 2000 %}{% endfor %}{% endfor %}",
    "{% macro a() %}{% for i in range(1000) %}{% endfor %}{% endmacro %}{% macro b() %}{% for i in range(1000) %}"
    "{{ a() }}{% endfor %}{% endmacro %}{% macro c() %}{% for i in range(1000) %}{{ b() }}{% endfor %}{% endmacro %}"
    "{{ c() }}",
])
def test_work_is_counted_across_nesting_and_macros(source):
    message = _refused(source)
    assert "work budget of 100,000 loop iterations, calls and operations" in message


# ---------------------------------------------------------------- building: all values together


@pytest.mark.parametrize("source", [
    "{% macro m() %}{% for i in range(1000) %}" + "A" * 15000 + "{% endfor %}{% endmacro %}{% set x = m() %}",
    "{% set ns = namespace(l=[]) %}{% for a in range(1000) %}{% for b in range(100) %}"
    "{% set ns.l = ns.l + [a ~ ('z' * 1000)] %}{% endfor %}{% endfor %}",
    "{% set l = ['ab'] * 1000 %}{% for i in range(1000) %}{% set x = l | map('center', 1000) | list %}{% endfor %}",
    "{% set d = dict(a=long) %}{% for i in range(1000) %}{% set x = d.items() | list %}{% endfor %}",
    "{% for a in range(1000) %}{% set x %}{{ long }}{{ long }}{% endset %}{% endfor %}",
])
def test_everything_a_template_builds_counts_against_the_building_budget(source):
    message = _refused(source, {"long": LONG})
    assert "building budget of 2,000,000 characters" in message


# ---------------------------------------------------------------- time


def test_the_time_budget_is_checked_at_every_step():
    ticks = itertools.count()
    clock = lambda: next(ticks) * 0.001  # noqa: E731: one millisecond per look at the clock
    source = "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}"
    with pytest.raises(BudgetExceeded) as info:
        render_bounded(source, {}, RenderBudget(work=10**9, seconds=2.0), clock=clock)
    assert info.value.budget == "time"
    assert 1900 <= next(ticks) <= 2100  # it stopped as soon as two seconds had passed


def test_a_slow_template_stops_at_the_time_budget_with_a_message_naming_it():
    source = ("{% macro m() %}{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
              "{% endmacro %}{% for a in range(1000) %}{{ m() }}{% endfor %}")
    message = _refused(source, budget=RenderBudget(work=10**9, seconds=0.05))
    assert "time budget of 0.05 s" in message


# ---------------------------------------------------------------- refused outright


@pytest.mark.parametrize("source, fragment", [
    ("{% for x in [[1]] recursive %}{{ loop(x) }}{% endfor %}", "recursive for-loops"),
    ("{% include 'other' %}", "'include' is not available"),
    ("{% extends 'base' %}", "'extends' is not available"),
    ("{% import 'macros' as m %}", "'import' is not available"),
    ("{% from 'macros' import m %}", "'from ... import' is not available"),
    ("{% block body %}x{% endblock %}", "'block' is not available"),
    ("{{ 'aaaa'.translate({97: 'x' * 1000}) }}", "translate() is not allowed"),
    ("{{ '%*d' % (10, 1) }}", "'*' width"),
    ("{{ '{:{}}'.format(1, 10) }}", "nested replacement fields"),
    ("{{ [1] | tojson(indent=100000000) }}", "indent JSON by at most 8"),
    ("{{ lipsum(1000000) }}", "lipsum() may make at most"),
    ("{{ [1, 2] | slice(10 ** 9) | list }}", "slice() into"),
    ("{{ range(10 ** 7) | list | length }}", "range()"),
    ("{{ ((10 ** 64) ** 64) ** 64 }}", "power"),
    ("{% set ns = namespace(x=10) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}", "digits"),
    ("{{ " + "9" * 5000 + " }}", "too many digits"),
    ("{{ 'x' | urlize }}", "No filter named 'urlize'"),
])
def test_constructs_that_cannot_be_bounded_are_refused_with_a_reason(source, fragment):
    assert fragment in _refused(source)


# ---------------------------------------------------------------- ordinary templates are unaffected


def test_ordinary_templates_render_as_before():
    source = ("{% macro shot(d) %}Text: {{ d.text | trim }}\nLabel: {{ d.label | upper }}{% endmacro %}"
              "{% for d in demos %}{{ loop.index }}. {{ shot(d) }}\n{% endfor %}"
              "{% set intro %}Classify {{ labels | join(', ') }}.{% endset %}{{ intro }}\n"
              "{{ '%s => %d' % ('total', demos | length) }} {{ '{:>4}'.format(7) }} {{ text.replace('!', '.') }}")
    demos = [{"text": f" example {i} ", "label": "positive"} for i in range(32)]
    text = render_template(source, {"demos": demos, "labels": ["positive", "negative"], "text": "Nice!"})
    assert text.startswith("1. Text: example 0\nLabel: POSITIVE")
    assert "32. Text: example 31" in text
    assert text.endswith("Classify positive, negative.\ntotal => 32    7 Nice.")


def test_a_long_input_within_the_budgets_renders():
    text = render_template("{{ input }}\n{% for d in demos %}{{ d }}\n{% endfor %}",
                           {"input": "y" * 50_000, "demos": ["z" * 1000] * 40})
    assert len(text) == 50_000 + 40 * 1001


@pytest.mark.parametrize("value", [
    "abc", "é", 12345, 2 ** 200, -7, 3.25, None, True, [1, 2], {"a": "b"}, ["x" * 10] * 3, ("a", ["b", {"c": 1}]),
    ["\x00\x01"], ["é"], {1, 2, 3}, b"bytes",
])
def test_printed_size_never_underestimates_what_printing_makes(value):
    size = printed_size(value, 10_000)
    assert len(str(value)) <= size <= 10 * len(str(value)) + 64


def test_printed_size_stops_counting_past_the_limit():
    huge = [LONG] * 10_000_000
    assert 100 < printed_size(huge, 100) < 100 + 2 * len(LONG)
