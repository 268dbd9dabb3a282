"""Fine-tuning data: sources, column mapping, splits, templates, tokenisation and its statistics."""

from __future__ import annotations

import pytest

from playground.errors import DataFileError, TemplateError
from playground.finetune.config import FinetuneConfig
from playground.finetune.data import (
    BUNDLED_DATA,
    PromptPair,
    Record,
    format_pairs,
    data_file_columns,
    load_records,
    load_splits,
    preview,
    read_file_records,
    read_hub_records,
    records_from_dataset_dict,
    split_records,
    template_for,
)
from playground.finetune.encoding import (
    IGNORE_INDEX,
    causal_prompt_ids,
    encode_causal,
    encode_classification,
    encode_seq2seq,
    length_summary,
    padding_share,
)
from playground.finetune.templates import FinetuneTemplate, load_templates
from tests.finetune.conftest import dialogue_rows, write_jsonl


def _config(path, **extra) -> FinetuneConfig:
    return FinetuneConfig.from_dict({"data": str(path), "input_column": "dialogue", "target_column": "summary",
                                     **extra}, check=False)


# ------------------------------------------------------------------ reading files


def test_malformed_jsonl_reports_the_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"dialogue": "a", "summary": "b"}\n{"dialogue": "c", "summary": \n')
    with pytest.raises(DataFileError, match=r"bad.jsonl: Line 2 is not valid JSON") as info:
        read_file_records(path, "dialogue", "summary")
    assert info.value.line == 2


def test_malformed_csv_reports_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('dialogue,summary\n"hello",world\n"never closed,x\n')
    with pytest.raises(DataFileError, match=r"bad.csv: Line 3 is not valid CSV") as info:
        read_file_records(path, "dialogue", "summary")
    assert info.value.line == 3


def test_csv_with_mapping_reads(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text('text,answer\n"A: hi, there\nB: hello",They greet.\nA: bye,They part.\n')
    records = read_file_records(path, "text", "answer")
    assert [(r.line, r.target) for r in records] == [(2, "They greet."), (4, "They part.")]
    assert records[0].input == "A: hi, there\nB: hello"


def test_missing_mapped_column_names_column_and_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"dialogue": "x", "summary": "y"}, {"dialogue": "x", "sumary": "y"}])
    with pytest.raises(DataFileError, match=r"d.jsonl line 2 has no 'summary' column \(its columns: dialogue, "
                                            r"sumary\)"):
        read_file_records(path, "dialogue", "summary")


def test_empty_mapped_value_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"dialogue": "x", "summary": "y"}, {"dialogue": "  ", "summary": "y"}])
    with pytest.raises(DataFileError, match=r"line 2: the 'dialogue' value is empty"):
        read_file_records(path, "dialogue", "summary")


def test_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataFileError, match="holds no examples"):
        read_file_records(empty, "dialogue", "summary")
    with pytest.raises(DataFileError, match="does not exist"):
        read_file_records(tmp_path / "gone.jsonl", "dialogue", "summary")


def test_bad_split_value_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"dialogue": "x", "summary": "y", "split": "holdout"}])
    with pytest.raises(DataFileError, match="line 1: split 'holdout' is not one of train, validation, test"):
        read_file_records(path, "dialogue", "summary")


def test_bundled_sets_exist_and_load():
    for name, bundled in BUNDLED_DATA.items():
        assert bundled.path.is_file(), name
    splits = load_splits(FinetuneConfig(data="dialogues"))
    counts = splits.counts()
    assert counts["train"] + counts["validation"] == 326 and counts["validation"] == round(326 * 0.1)
    assert counts["test"] == 50  # test_limit
    small = load_splits(FinetuneConfig(data="dialogues-small", validation_fraction=0))
    assert small.counts()["train"] == sum(1 for r in load_records(FinetuneConfig(data="dialogues-small"))
                                          if r.split == "train")  # the Prompt Lab's "demo" rows train


# ------------------------------------------------------------------ splits


def test_split_column_is_honoured_and_validation_carved_with_the_seed(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", dialogue_rows(train_repeats=2, test=2))
    splits = load_splits(_config(path, validation_fraction=0.25, seed=1))
    assert splits.counts() == {"train": 9, "validation": 3, "test": 2}
    again = load_splits(_config(path, validation_fraction=0.25, seed=1))
    other = load_splits(_config(path, validation_fraction=0.25, seed=2))
    assert [r.line for r in again.validation] == [r.line for r in splits.validation]
    assert [r.line for r in other.validation] != [r.line for r in splits.validation]
    assert not {r.line for r in splits.validation} & {r.line for r in splits.train}


def test_without_split_column_test_rows_are_carved(tmp_path):
    rows = [{"dialogue": f"A: line {i}", "summary": f"Summary {i}."} for i in range(20)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    splits = load_splits(_config(path, test_fraction=0.2, validation_fraction=0.1))
    assert splits.counts() == {"train": 14, "validation": 2, "test": 4}
    lines = [r.line for s in (splits.train, splits.validation, splits.test) for r in s]
    assert sorted(lines) == list(range(1, 21))


def test_empty_splits_are_clear_errors(tmp_path):
    only_train = write_jsonl(tmp_path / "a.jsonl", [{"dialogue": "x", "summary": "y", "split": "train"}] * 3)
    with pytest.raises(DataFileError, match="no rows with split 'test'"):
        load_splits(_config(only_train))
    only_test = write_jsonl(tmp_path / "b.jsonl", [{"dialogue": "x", "summary": "y", "split": "test"}] * 3)
    with pytest.raises(DataFileError, match="has no training rows"):
        load_splits(_config(only_test))
    one_train = write_jsonl(tmp_path / "c.jsonl", [{"dialogue": "x", "summary": "y", "split": "train"},
                                                   {"dialogue": "x", "summary": "y", "split": "test"}])
    with pytest.raises(DataFileError, match="too few to hold out validation rows"):
        load_splits(_config(one_train, validation_fraction=0.1))
    assert load_splits(_config(one_train, validation_fraction=0)).counts() == {"train": 1, "validation": 0,
                                                                                "test": 1}
    mixed = write_jsonl(tmp_path / "m.jsonl", [{"dialogue": "x", "summary": "y", "split": "test"},
                                               {"dialogue": "x", "summary": "y"}])
    with pytest.raises(DataFileError, match="Line 2 .* has no split while other rows do"):
        load_splits(_config(mixed))
    with pytest.raises(DataFileError, match="holds no examples"):
        split_records([], _config(mixed))


def test_classifier_labels_come_from_the_training_rows(tmp_path):
    rows = [{"text": "good", "label": "pos", "split": "train"}, {"text": "bad", "label": "neg", "split": "train"},
            {"text": "meh", "label": "neutral", "split": "test"}]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    config = FinetuneConfig.from_dict({"data": str(path), "input_column": "text", "target_column": "label",
                                       "method": "classifier", "validation_fraction": 0}, check=False)
    with pytest.raises(DataFileError, match="label 'neutral' never occurs in the training rows"):
        load_splits(config)
    sentiment = load_splits(FinetuneConfig(data="sentiment", method="classifier"))
    assert sentiment.labels == ("negative", "neutral", "positive")


# ------------------------------------------------------------------ Hub datasets (the offline part)


def test_dataset_dict_rows_map_splits_and_columns():
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"dialogue": "a", "summary": "b"}, {"dialogue": "c", "summary": "d"}]),
        "validation": datasets.Dataset.from_list([{"dialogue": "e", "summary": "f"}]),
        "test": datasets.Dataset.from_list([{"dialogue": "g", "summary": "h"}]),
        "unsupervised": datasets.Dataset.from_list([{"dialogue": "i", "summary": "j"}]),
    })
    records = records_from_dataset_dict(dd, "dialogue", "summary", "Hub dataset x ")
    assert [(r.split, r.input) for r in records] == [("train", "a"), ("train", "c"), ("validation", "e"),
                                                     ("test", "g")]
    splits = split_records(records, FinetuneConfig(data="hub:someone/x", input_column="dialogue",
                                                   target_column="summary"))
    assert splits.counts() == {"train": 2, "validation": 1, "test": 1}  # its own validation split is used
    with pytest.raises(DataFileError, match="Hub dataset x train line 1 has no 'text' column"):
        records_from_dataset_dict(dd, "text", "summary", "Hub dataset x ")


def test_read_hub_records_refuses_a_path_before_anything_else(tmp_path, monkeypatch):
    (tmp_path / "x.csv").write_text("secret_a,secret_b\n1,2\n")
    monkeypatch.chdir(tmp_path)
    for given, message in [(str(tmp_path), "looks like a file path"), (str(tmp_path / "x.csv"), "looks like a file"),
                           ("csv", "is not a Hub dataset id"), ("./x.csv", "looks like a file path"),
                           ("x.csv", "is not a Hub dataset id")]:
        with pytest.raises(DataFileError) as info:
            read_hub_records(given, "secret_a", "secret_b")
        assert message in str(info.value) and "secret_a," not in str(info.value)


# ------------------------------------------------------------------ messages name files by their own name


def test_file_messages_name_the_file_not_its_folder(tmp_path, monkeypatch):
    upload = tmp_path / "gradio" / "4f9c2a" / "my data.jsonl"
    upload.parent.mkdir(parents=True)
    upload.write_text('{"dialogue": "a", "summary": "b"}\n')
    for config, message in [
        (_config(upload), "The data 'my data.jsonl' has only 1 row"),
        (_config(tmp_path / "gone.jsonl"), "The data file gone.jsonl does not exist."),
        (FinetuneConfig.from_dict({"data": str(upload)}, check=False), "Name the columns of 'my data.jsonl'"),
    ]:
        with pytest.raises(DataFileError) as info:
            load_splits(config)
        assert message in str(info.value) and str(tmp_path) not in str(info.value)
    bundled = BUNDLED_DATA["dialogues"]
    import playground.finetune.data as data_module

    moved = type(bundled)(bundled.name, tmp_path / "nowhere.jsonl", bundled.input_column, bundled.target_column,
                          bundled.template, bundled.description)
    monkeypatch.setattr(data_module, "BUNDLED_DATA", {**BUNDLED_DATA, "dialogues": moved})
    with pytest.raises(DataFileError) as info:
        load_records(FinetuneConfig(data="dialogues"))
    assert "The bundled data set 'dialogues' is missing from this installation" in str(info.value)
    assert str(tmp_path) not in str(info.value)


def test_data_file_columns_checks_an_upload_first(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("text;label\nhi;pos\n")
    assert data_file_columns(good) == ["text", "label"]
    for name, body, message in [
        ("broken.jsonl", '{"a": 1}\n{"a": \n', "broken.jsonl cannot be used: Line 2 is not valid JSON"),
        ("latin.csv", b"a,b\ncaf\xe9,1\n", "latin.csv cannot be used: The file is not UTF-8 text"),
        ("empty.csv", "", "empty.csv cannot be used: The file holds no examples."),
        ("notes.txt", "hello", "notes.txt is not a JSONL or CSV file"),
    ]:
        path = tmp_path / name
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
        with pytest.raises(DataFileError) as info:
            data_file_columns(path)
        assert message in str(info.value) and str(tmp_path) not in str(info.value)


# ------------------------------------------------------------------ templates


def test_shipped_templates_render_every_phrasing():
    templates = load_templates()
    assert len(templates.for_task("summarization")) >= 5
    for template in templates.templates:
        prompt, completion = template.render("A: hi\nB: hello", "They greet.", {"dialogue": "A: hi"})
        assert "A: hi" in prompt and completion == "They greet."


def test_auto_template_follows_the_data_set():
    assert template_for(FinetuneConfig(data="dialogues")).id == "summarize-dialogue"
    assert template_for(FinetuneConfig(data="sentiment", method="classifier")).id == "plain"
    assert template_for(FinetuneConfig(data="dialogues", template="dialogue-tldr")).id == "dialogue-tldr"


def test_templates_render_in_the_sandbox():
    evil = FinetuneTemplate(id="evil", name="evil", prompt="{{ input.__class__.__mro__ }}")
    with pytest.raises(TemplateError, match="Template 'evil': .*sandbox refused"):
        evil.render("x", "y")
    unknown = FinetuneTemplate(id="typo", name="typo", prompt="{{ inptu }}")
    with pytest.raises(TemplateError, match="'inptu', which is not defined"):
        unknown.render("x", "y")


def test_template_file_errors(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("templates:\n  - id: a\n    name: A\n    prompt: '{{ input'\n")
    with pytest.raises(TemplateError, match="syntax error"):
        load_templates(path)
    path.write_text("templates:\n  - id: a\n    name: A\n    prompt: x\n    colour: red\n")
    with pytest.raises(TemplateError, match="unknown keys"):
        load_templates(path)


def test_preview_shows_formatted_examples():
    rows = preview(FinetuneConfig(data="dialogues"), count=2)
    assert len(rows) == 2 and rows[0]["prompt"].startswith("Summarize the following conversation.")
    assert rows[0]["completion"] and rows[0]["split"] == "train"


# ------------------------------------------------------------------ tokenisation


def _pairs(n=2, prompt="Summarize: A: hi B: hello", completion="They greet each other."):
    return [PromptPair(prompt, completion, Record("in", completion, i + 1)) for i in range(n)]


@pytest.fixture(scope="module")
def llama_tokenizer(ft_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ft_models["llama"])


def test_decoder_labels_mask_the_prompt_token_by_token(llama_tokenizer):
    tok = llama_tokenizer
    split = encode_causal(_pairs(1), tok, max_length=512)
    feature = split.features[0]
    ids, labels = feature["input_ids"], feature["labels"]
    prompt_ids = causal_prompt_ids(tok, "Summarize: A: hi B: hello")
    assert tok.decode(prompt_ids).endswith("<s>assistant:")  # the chat template's generation prompt
    assert ids[:len(prompt_ids)] == prompt_ids
    for position, (token, label) in enumerate(zip(ids, labels)):
        if position < len(prompt_ids):
            assert label == IGNORE_INDEX, position
        else:
            assert label == token, position
    completion = tok.decode(ids[len(prompt_ids):])
    assert completion.startswith(" They greet each other.") and completion.rstrip().endswith("</s>")
    assert split.stats.target_tokens == len(ids) - len(prompt_ids)
    assert feature["attention_mask"] == [1] * len(ids)


def test_decoder_without_chat_template_ends_with_eos(llama_tokenizer):
    import copy

    tok = copy.deepcopy(llama_tokenizer)
    tok.chat_template = None
    feature = encode_causal(_pairs(1), tok, max_length=512).features[0]
    prompt_ids = tok("Summarize: A: hi B: hello\n")["input_ids"]
    assert feature["labels"][:len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert feature["labels"][-1] == tok.eos_token_id == feature["input_ids"][-1]
    assert tok.decode(feature["input_ids"][len(prompt_ids):], skip_special_tokens=True) == "They greet each other."


def test_truncation_is_counted_and_lost_targets_dropped(llama_tokenizer):
    tok = llama_tokenizer
    full = len(encode_causal(_pairs(1), tok, 512).features[0]["input_ids"])
    prompt = len(causal_prompt_ids(tok, "Summarize: A: hi B: hello"))
    cut = encode_causal(_pairs(3), tok, max_length=full - 2)
    assert cut.stats.truncated == 3 and cut.stats.dropped == 0
    assert all(len(f["input_ids"]) == full - 2 for f in cut.features)
    assert cut.stats.lengths == (full,) * 3
    gone = encode_causal(_pairs(2), tok, max_length=prompt)
    assert gone.stats.truncated == 2 and gone.stats.dropped == 2 and not gone.features
    fits = encode_causal(_pairs(2), tok, max_length=full)
    assert fits.stats.truncated == 0 and fits.stats.summary()["max"] == full


def test_seq2seq_inputs_and_labels(ft_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ft_models["t5"])
    split = encode_seq2seq(_pairs(2), tok, max_length=64)
    feature = split.features[0]
    assert feature["input_ids"] == tok("Summarize: A: hi B: hello")["input_ids"]
    assert feature["labels"] == tok(text_target="They greet each other.")["input_ids"]
    assert feature["labels"][-1] == tok.eos_token_id
    short = encode_seq2seq(_pairs(2), tok, max_length=4)
    assert short.stats.truncated == 2 and all(len(f["labels"]) == 4 for f in short.features)


def test_classifier_inputs_carry_label_ids(ft_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ft_models["bert"])
    pairs = [PromptPair("the fox is quick", "pos", Record("the fox is quick", "pos", 1)),
             PromptPair("the dog is lazy", "neg", Record("the dog is lazy", "neg", 2))]
    split = encode_classification(pairs, tok, 16, {"neg": 0, "pos": 1})
    assert [f["labels"] for f in split.features] == [1, 0]
    assert split.features[0]["input_ids"][0] == tok.cls_token_id
    cut = encode_classification(pairs, tok, 4, {"neg": 0, "pos": 1})
    assert cut.stats.truncated == 2 and all(len(f["input_ids"]) == 4 for f in cut.features)
    assert cut.features[0]["input_ids"][-1] == tok.sep_token_id
    with pytest.raises(DataFileError, match="unknown label 'pos'"):
        encode_classification(pairs, tok, 16, {"neg": 0, "meh": 1})


def test_padding_share_and_length_summary():
    assert padding_share([4, 4, 4, 4], 2) == 0.0
    assert padding_share([2, 4], 2) == pytest.approx(2 / 8)
    assert padding_share([2, 4, 3], 2) == pytest.approx(2 / 11)
    assert padding_share([2, 4], 1) == 0.0
    assert padding_share([], 4) == 0.0
    summary = length_summary(list(range(1, 101)))
    assert summary == {"min": 1, "mean": 50.5, "median": 50.5, "p95": 95, "max": 100}
    assert length_summary([])["max"] == 0


def test_format_pairs_uses_the_template():
    template = load_templates().get("dialogue-tldr")
    pairs = format_pairs([Record("A: hi", "They greet.", 3)], template)
    assert pairs[0].prompt == "A: hi\n\nTL;DR:" and pairs[0].completion == "They greet."
