"""Templates: sandboxed rendering, clear errors with line numbers, and the bundled template library."""

from __future__ import annotations

import pytest

from playground.errors import PlaygroundError, TemplateError
from playground.prompting.data import load_bundled
from playground.prompting.strategies import PromptSetup, StrategyConfig, build_prompt
from playground.prompting.tasks import STRATEGIES, TASKS
from playground.prompting.templates import TemplateLibrary, parse_template, render_template, template_variables
from tests.prompting.fakes import ScriptedEngine


def test_render_fills_named_variables_and_loops_over_demos():
    source = "Task: {{ task }}\n{% for d in demos %}{{ d.text }} => {{ d.label }}\n{% endfor %}{{ text }} =>"
    text = render_template(source, {"task": "sentiment", "text": "Nice.", "demos": [
        {"text": "Great!", "label": "positive"}, {"text": "Awful.", "label": "negative"}]})
    assert text == "Task: sentiment\nGreat! => positive\nAwful. => negative\nNice. =>"


def test_blocks_leave_no_blank_lines_and_output_is_stripped():
    source = "\nA\n{% if flag %}\nB\n{% endif %}\nC\n\n"
    assert render_template(source, {"flag": True}) == "A\nB\nC"
    assert render_template(source, {"flag": False}) == "A\nC"


def test_template_variables_lists_what_the_template_reads():
    assert template_variables("{{ input }} {% for d in demos %}{{ d.x }}{% endfor %}{% set y = 1 %}{{ y }}") == \
        {"input", "demos"}


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ demos.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ demos.append(1) }}",
    "{{ text['__class__'] }}",
])
def test_sandbox_refuses_python_internals(source):
    with pytest.raises(TemplateError) as info:
        render_template("Hello\n" + source, {"text": "x", "demos": []})
    message = str(info.value)
    assert "sandbox refused" in message and "unsafe" in message
    assert "line 2" in message and info.value.line == 2
    assert isinstance(info.value, PlaygroundError)


@pytest.mark.parametrize("source, line", [
    ("Hello {{ text }\nmore", 1),
    ("line one\nline two\n{% for d in demos %}\n{{ d }}", 4),
    ("a\nb\n{% if %}c{% endif %}", 3),
    ("{{ text }}\n\n{% endfor %}", 3),
])
def test_syntax_error_names_the_line(source, line):
    with pytest.raises(TemplateError) as info:
        render_template(source, {"text": "x", "demos": []})
    assert f"line {line}" in str(info.value)
    assert info.value.line == line


def test_undefined_variable_is_named_with_the_defined_ones():
    with pytest.raises(TemplateError) as info:
        render_template("Intro\n\nSentence: {{ sentence }}", {"text": "x", "demos": []})
    message = str(info.value)
    assert "'sentence'" in message and "not defined" in message
    assert "Line 3" in message and "demos, text" in message


def test_undefined_attribute_of_a_demo_is_an_error_not_an_empty_string():
    with pytest.raises(TemplateError, match="no attribute 'answer'"):
        render_template("{% for d in demos %}{{ d.answer }}{% endfor %}", {"demos": [{"text": "a"}]})


@pytest.mark.parametrize("source, fragment", [
    ("{{ 'ab' * 100000 }}", "repeating"),
    ("{{ range(10**7) | list | length }}", "range()"),
    ("{{ 9 ** 99999 }}", "power"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "calls itself"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
])
def test_resource_limits_and_runtime_errors_are_clear(source, fragment):
    with pytest.raises(TemplateError, match=None) as info:
        render_template(source, {})
    assert fragment in str(info.value)


def test_nesting_and_size_limits():
    with pytest.raises(TemplateError, match="nests for-loops"):
        parse_template("{% for a in x %}{% for b in x %}{% for c in x %}{% endfor %}{% endfor %}{% endfor %}")
    with pytest.raises(TemplateError, match="characters"):
        parse_template("x" * 30_000)
    with pytest.raises(TemplateError, match="empty"):
        parse_template("   ")


# ---------------------------------------------------------------- the library


def test_library_has_several_phrasings_per_task(library):
    for task in TASKS:
        templates = library.for_task(task)
        assert len(templates) >= 3, task
        assert all(t.answer == TASKS[task].answer_kind for t in templates)
    assert len(set(library.ids)) == len(library.ids)
    assert library.get("sentiment-classify").task == "sentiment"
    with pytest.raises(TemplateError, match="Unknown template"):
        library.get("nope")


def test_every_reasoning_task_has_templates_for_every_strategy(library):
    for task in ("sentiment", "arithmetic"):
        for strategy in STRATEGIES:
            assert library.for_task(task, strategy), (task, strategy)
    for task in ("summarization", "translation"):
        assert not library.for_task(task, "self_consistency")


def test_every_template_builds_for_every_strategy_it_suits(library):
    engine = ScriptedEngine()
    for template in library.templates:
        data = load_bundled(template.task)
        for strategy in template.strategies:
            setup = PromptSetup.from_template(template, StrategyConfig(strategy=strategy, k=2))
            built = build_prompt(engine, setup, data.examples[0].input, data.demos)
            assert data.examples[0].input in built.rendered, (template.id, strategy)
            if setup.strategy.uses_demos:
                assert all(d.input in built.rendered for d in built.demos) and len(built.demos) == 2
                if setup.strategy.needs_rationales:
                    assert built.demos[0].rationale in built.rendered, (template.id, strategy)
            else:
                assert data.demos[0].input not in built.rendered, (template.id, strategy)
            if setup.strategy.uses_cot:
                assert "Let's think step by step." in built.rendered, (template.id, strategy)
            else:
                assert "step by step" not in built.rendered


def test_library_file_errors_are_clear(tmp_path):
    (tmp_path / "bad.yaml").write_text("templates:\n  - id: x\n    task: sentiment\n    name: X\n"
                                       "    strategies: [zero_shot]\n    answer: label\n"
                                       "    template: \"{{ text }\"\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"bad.yaml template 1 \(x\): Template syntax error on line 1"):
        TemplateLibrary.load(tmp_path)
    (tmp_path / "bad.yaml").write_text("templates:\n  - id: x\n    task: sentiment\n    colour: red\n", encoding="utf-8")
    with pytest.raises(TemplateError, match="unknown keys"):
        TemplateLibrary.load(tmp_path)
    (tmp_path / "bad.yaml").write_text("templates:\n  - id: x\n    task: sentiment\n    name: X\n"
                                       "    strategies: [zero_shot]\n    answer: label\n    stop: [1, 2]\n"
                                       "    template: \"{{ text }}\"\n", encoding="utf-8")
    with pytest.raises(TemplateError, match="stop must be a list"):
        TemplateLibrary.load(tmp_path)
    (tmp_path / "bad.yaml").write_text("templates: [\n", encoding="utf-8")
    with pytest.raises(TemplateError, match="not valid YAML"):
        TemplateLibrary.load(tmp_path)
