"""What the Architectures tab shows of a report (tiny models, every family): escaped text, tables that fit,
everything in the reader's language, and help that names what each chosen model does."""

from __future__ import annotations

import pytest

from playground.architectures import CompareOptions
from playground.ui.i18n import Texts
from playground.ui.render import md_escape, role_chips_html, table_html
from playground.ui.tabs.architectures import column_values, does_text, facts_table, objective_html, task_outputs

TEXT = "The capital of France is Paris."


@pytest.fixture(scope="module")
def reports(lab):
    comparison = lab.run_all(TEXT, ["tiny-bert", "tiny-t5", "tiny-gpt2"], CompareOptions(top_k=3))
    return {r.family: r for r in comparison.reports}


def test_markdown_shows_special_tokens_and_stars_as_they_are():
    shown = md_escape("([CLS], </s>, <|im_start|>) **not bold** a_b")
    assert "&lt;/s&gt;" in shown and "&lt;\\|im\\_start\\|&gt;" in shown
    assert "\\*\\*not bold\\*\\*" in shown and "</s>" not in shown


def test_a_small_table_escapes_its_cells_and_keeps_numbers_on_one_line():
    html = table_html(["#", "cosine", "sentence"], [["1", "0.95", "<b>x</b>"]], "arch-table", numeric=(0, 1))
    assert '<td class="num">0.95</td>' in html and "&lt;b&gt;x&lt;/b&gt;" in html and 'class="arch-table"' in html


@pytest.mark.parametrize("language, architecture, parameters", [
    ("en", "architecture", "parameters"), ("pt", "arquitetura", "parâmetros"), ("fr", "architecture", "paramètres")])
def test_facts_are_translated_and_the_class_and_type_sit_on_their_own_rows(reports, language, architecture,
                                                                           parameters):
    frame = facts_table(reports["encoder"], Texts(language))
    facts = dict(zip(frame.iloc[:, 0], frame.iloc[:, 1]))
    assert facts[architecture] == "BertForMaskedLM"  # the model type is a row of its own, not "(bert)" after it
    assert facts[parameters].replace(",", "").isdigit()
    assert len(frame.columns) == 2


@pytest.mark.parametrize("language, read, objective, legend", [
    ("en", "Read:", "Masked language modelling", "read by the model, not predicted"),
    ("pt", "Leu:", "Modelagem de linguagem mascarada", "lido pelo modelo, não previsto"),
    ("fr", "Lu :", "Modélisation du langage masqué", "lu par le modèle, pas prédit")])
def test_the_encoder_column_reads_in_the_readers_language(reports, language, read, objective, legend):
    texts = Texts(language)
    _, task = task_outputs(reports["encoder"], texts)
    assert task.startswith(f"**{read}**")
    shown = objective_html(reports["encoder"], texts)
    assert objective in shown and legend in shown


def test_the_decoder_and_encoder_decoder_columns_translate_their_labels(reports):
    _, decoder = task_outputs(reports["decoder"], Texts("fr"))
    assert decoder.startswith("**Texte jusqu'ici :**")
    _, span = task_outputs(reports["encoder-decoder"], Texts("pt"))
    assert "**O encoder lê:**" in span and "<table" in span and "sentinela" in span


def test_every_column_value_is_there_for_each_family(reports):
    for report in reports.values():
        title, facts, label, task, tokens, objective = column_values(report, Texts("pt"))
        assert title.startswith("### ") and len(facts) > 5 and "tok-id" in tokens and "<b>" in objective


def test_role_legends_name_the_roles_given():
    shown = role_chips_html([("a", "masked", "b")], {"masked": "à prédire"}, {"masked": "masqué"})
    assert "<b>masqué</b>: à prédire" in shown


@pytest.mark.parametrize("language, minilm", [
    ("en", "ranks the sentences in the options"), ("pt", "ordena as frases das opções"),
    ("fr", "classe les phrases des options")])
def test_the_help_says_what_each_chosen_model_does(lab, language, minilm):
    help_text = does_text(lab.tasks_for(["all-minilm-l6-v2", "flan-t5-small", "tiny-gpt2", "", "no-such-model"]),
                          Texts(language))
    lines = help_text.splitlines()
    assert len(lines) == 3  # empty choices and unknown ids are left out
    assert minilm in lines[0] and "[MASK]" in lines[0]  # MiniLM has no mask to fill: the help says so
    assert "python -m playground download" in lines[1]  # FLAN-T5 is Hub-only offline
    assert "python -m playground download" not in lines[2]
    bert = does_text(lab.tasks_for(["tiny-bert"]), Texts(language))
    assert "[MASK]" in bert
