"""The bundled data files, and uploaded JSONL/CSV files with a column mapping."""

from __future__ import annotations

import json
import re
from collections import Counter
from fractions import Fraction

import pytest

from playground.errors import DataFileError
from playground.prompting.data import (
    ColumnMapping,
    UploadLimits,
    detect_separator,
    file_columns,
    labelled_set_from_upload,
    load_bundled,
    parse_labelled_file,
    read_rows,
)
from playground.prompting.tasks import DATA_DIR, TASKS

# ---------------------------------------------------------------- bundled files


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA_DIR / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_sentiment_file():
    rows = _rows("sentiment.jsonl")
    assert len(rows) >= 60
    assert all(set(r) <= {"text", "label", "split", "rationale"} and r["text"].strip() for r in rows)
    labels = Counter(r["label"] for r in rows)
    assert set(labels) == {"positive", "negative", "neutral"}
    assert max(labels.values()) - min(labels.values()) <= 1  # balanced
    tests = Counter(r["label"] for r in rows if r["split"] == "test")
    assert sum(tests.values()) >= 60 and len(set(tests.values())) == 1
    demos = [r for r in rows if r["split"] == "demo"]
    assert len(demos) >= 6 and all(r.get("rationale") for r in demos)
    assert len({r["text"] for r in rows}) == len(rows)


EQUATION = re.compile(r"((?:\d+\s*[x+\-/]\s*)+\d+)\s*=\s*(-?\d+)")


def _evaluate(expression: str) -> Fraction:
    tokens = re.findall(r"\d+|[x+\-/]", expression)
    # x and / before + and -, left to right
    terms: list[Fraction] = []
    signs: list[str] = []
    value = Fraction(int(tokens[0]))
    i = 1
    while i < len(tokens):
        op, number = tokens[i], Fraction(int(tokens[i + 1]))
        if op == "x":
            value *= number
        elif op == "/":
            value /= number
        else:
            terms.append(value)
            signs.append(op)
            value = number
        i += 2
    terms.append(value)
    total = terms[0]
    for sign, term in zip(signs, terms[1:]):
        total = total + term if sign == "+" else total - term
    return total


def test_arithmetic_file_answers_match_their_rationales():
    rows = _rows("arithmetic.jsonl")
    assert len([r for r in rows if r["split"] == "test"]) >= 60
    assert len([r for r in rows if r["split"] == "demo"]) >= 4
    for row in rows:
        assert set(row) == {"question", "rationale", "answer", "split"}
        assert isinstance(row["answer"], int), row
        # the rationale's last number is the answer
        assert int(re.findall(r"-?\d+", row["rationale"])[-1]) == row["answer"], row
        # every equation in the rationale is right
        equations = EQUATION.findall(row["rationale"])
        assert equations, row
        for expression, result in equations:
            assert _evaluate(expression) == int(result), (expression, result, row["question"])
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", row["rationale"].strip()) if s]
        assert 1 <= len(sentences) <= 3, row["rationale"]
    assert len({r["question"] for r in rows}) == len(rows)


def test_dialogue_file():
    rows = _rows("dialogues.jsonl")
    assert len(rows) >= 12 and len([r for r in rows if r["split"] == "test"]) >= 12
    for row in rows:
        turns = row["dialogue"].splitlines()
        assert len(turns) >= 2 and all(re.match(r"#Person\d#: \S", t) for t in turns)
        assert len({t.split(":")[0] for t in turns}) >= 2  # two or more speakers
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", row["summary"].strip()) if s]
        assert 1 <= len(sentences) <= 2, row["summary"]
        assert not re.search(r"\b(I|we|my|our)\b", row["summary"]), "summaries are in the third person"


def test_every_task_loads_with_demos_and_examples():
    for task in TASKS.values():
        data = load_bundled(task)
        assert data.examples and data.demos, task.id
        assert data.source == task.data_file
        if task.answer_kind == "label":
            assert {e.target for e in data.examples} <= set(task.labels)
    assert len(load_bundled("sentiment").limited(5).examples) == 5


# ---------------------------------------------------------------- uploads

MAPPING = ColumnMapping(input="review", label="stars_label", rationale="why")
PLAIN = ColumnMapping(input="review", label="stars_label")


def test_good_jsonl():
    data = b'{"review": "Great tea.", "stars_label": "Positive", "why": "likes it"}\n\n' \
           b'{"review": "Cold soup.", "stars_label": "negative"}\n'
    examples = parse_labelled_file(data, MAPPING, "sentiment", "reviews.jsonl")
    assert [(e.input, e.target, e.rationale, e.line) for e in examples] == [
        ("Great tea.", "positive", "likes it", 1), ("Cold soup.", "negative", "", 3)]


def test_good_csv_with_quotes_and_a_bom(tmp_path):
    path = tmp_path / "problems.csv"
    path.write_text('\ufeffquestion,answer\n"Tom has 3, then 4 more. How many?","7"\nTwo and two?,"$1,004"\n',
                    encoding="utf-8")
    examples = parse_labelled_file(path, ColumnMapping("question", "answer"), "arithmetic")
    assert [(e.input, e.target, e.line) for e in examples] == [
        ("Tom has 3, then 4 more. How many?", "7", 2), ("Two and two?", "1004", 3)]
    assert file_columns(path.read_bytes(), "problems.csv") == ["question", "answer"]


def test_broken_json_names_line_3():
    data = b'{"review": "a", "stars_label": "neutral"}\n{"review": "b", "stars_label": "neutral"}\n' \
           b'{"review": "c", "stars_label": "neutral"\n'
    with pytest.raises(DataFileError) as info:
        parse_labelled_file(data, MAPPING, "sentiment", "x.jsonl")
    assert "Line 3 is not valid JSON" in str(info.value) and info.value.line == 3


def test_missing_column_names_the_line_and_the_fields():
    data = b'{"review": "a", "stars_label": "neutral"}\n{"review": "b", "label": "neutral"}\n'
    with pytest.raises(DataFileError, match=r"Line 2 has no 'stars_label' field \(its fields: review, label\)"):
        parse_labelled_file(data, PLAIN, "sentiment", "x.jsonl")
    with pytest.raises(DataFileError, match="Line 2 has no 'answer' field"):
        parse_labelled_file(b"question,result\nTwo and two?,4\n", ColumnMapping("question", "answer"),
                            "arithmetic", "x.csv")


def test_empty_value_names_the_line():
    with pytest.raises(DataFileError, match="Line 3: the 'review' field is empty"):
        parse_labelled_file(b"review,stars_label\nfine,neutral\n  ,neutral\n", ColumnMapping("review", "stars_label"),
                            "sentiment", "x.csv")


def test_bad_targets_name_the_line():
    with pytest.raises(DataFileError, match="Line 1: the 'stars_label' value 'pos' is not one of the labels"):
        parse_labelled_file(b'{"review": "a", "stars_label": "pos"}', PLAIN, "sentiment", "x.jsonl")
    with pytest.raises(DataFileError, match="Line 2: the 'answer' value 'seven' is not a number"):
        parse_labelled_file(b"question,answer\nq,seven\n", ColumnMapping("question", "answer"), "arithmetic",
                            "x.csv")


def test_too_many_rows_and_too_large():
    rows = b"".join(b'{"review": "r%d", "stars_label": "neutral"}\n' % i for i in range(6))
    with pytest.raises(DataFileError, match=r"more than 5 rows \(line 6 is row 6\); the limit is 5"):
        parse_labelled_file(rows, MAPPING, "sentiment", "x.jsonl", limits=UploadLimits(max_rows=5))
    with pytest.raises(DataFileError, match="the limit is 0.0 MB"):
        parse_labelled_file(rows, MAPPING, "sentiment", "x.jsonl", limits=UploadLimits(max_bytes=10))
    default = UploadLimits()
    assert (default.max_bytes, default.max_rows) == (2_000_000, 2_000)


def test_other_file_problems():
    with pytest.raises(DataFileError, match="not UTF-8"):
        parse_labelled_file(b'{"review": "caf\xe9", "stars_label": "neutral"}', MAPPING, "sentiment", "x.jsonl")
    with pytest.raises(DataFileError, match="no examples"):
        parse_labelled_file(b"\n\n", MAPPING, "sentiment", "x.jsonl")
    with pytest.raises(DataFileError, match="Line 1 must be a JSON object"):
        parse_labelled_file(b'["a", "b"]', MAPPING, "sentiment", "x.jsonl")
    with pytest.raises(DataFileError, match="Line 2 has 3 values"):
        parse_labelled_file(b"review,stars_label\na,neutral,extra\n", ColumnMapping("review", "stars_label"),
                            "sentiment", "x.csv")
    with pytest.raises(DataFileError, match="Choose the input column"):
        parse_labelled_file(b'{"a": 1}', ColumnMapping("", "label"), "sentiment", "x.jsonl")


def test_upload_as_a_labelled_set():
    data = b"review,stars_label,why\nlovely,positive,happy words\nbroken,negative,a fault\nopen at 9,neutral,\n"
    whole = labelled_set_from_upload(data, MAPPING, "sentiment", "x.csv")
    assert len(whole.examples) == 3 and whole.demos == load_bundled("sentiment").demos
    split = labelled_set_from_upload(data, MAPPING, "sentiment", "x.csv", demo_rows=2)
    assert [d.rationale for d in split.demos] == ["happy words", "a fault"] and len(split.examples) == 1
    with pytest.raises(DataFileError, match="keep at least one"):
        labelled_set_from_upload(data, MAPPING, "sentiment", "x.csv", demo_rows=3)


def test_a_rationale_column_nobody_has_is_refused():
    with pytest.raises(DataFileError, match="No row has the rationale column 'why'"):
        parse_labelled_file(b'{"review": "a", "stars_label": "neutral"}', MAPPING, "sentiment", "x.jsonl")


def test_broken_csv_names_the_line():
    with pytest.raises(DataFileError, match="Line 3 is not valid CSV: a quoted value that starts there is never"):
        parse_labelled_file(b'review,stars_label\nfine,neutral\n"unclosed,positive\nnext,neutral\n', PLAIN,
                            "sentiment", "x.csv")
    with pytest.raises(DataFileError, match="Line 2 is not valid CSV: ',' expected after '\"'"):
        parse_labelled_file(b'review,stars_label\n"a"b,positive\n', PLAIN, "sentiment", "x.csv")
    multi = parse_labelled_file(b'review,stars_label\n"two\nlines",positive\nnext,neutral\n', PLAIN, "sentiment",
                                "x.csv")
    assert [(e.input, e.line) for e in multi] == [("two\nlines", 2), ("next", 4)]


# ---------------------------------------------------------------- CSV separators


@pytest.mark.parametrize("name, text, separator", [
    ("semicolon.csv", "text;label\nhello there;pos\nbad day;neg\n", ";"),
    ("tab.csv", "text\tlabel\nhello, there\tpos\nbad; day\tneg\n", "\t"),
    ("pipe.csv", "text|label\nhello there|pos\nbad day|neg\n", "|"),
    ("comma.csv", "text,label\nhello; there|x,pos\nbad; day,neg\n", ","),
    ("quoted.csv", 'text,label\n"a; b | c\td",pos\n"e;f",neg\n', ","),
    ("quoted-semicolon.csv", 'text;label\n"a, b, c";pos\n"d, e";neg\n', ";"),
    ("multiline.csv", 'text;label\n"two\nlines; here";pos\nnext;neg\n', ";"),
    ("crlf.csv", "text;label\r\nhello;pos\r\nbye;neg\r\n", ";"),
    ("tabs.tsv", "text\tlabel\nhello, there; now\tpos\n", "\t"),
    ("no-extension", "text|label\nhello|pos\n", "|"),
])
def test_the_csv_separator_is_detected(name, text, separator):
    assert detect_separator(text, name) == separator
    rows = read_rows(text.encode(), name)
    assert [set(row) for _, row in rows] == [{"text", "label"}] * len(rows)
    assert rows[0][1]["label"] == "pos" and rows[0][1]["text"].strip()


def test_a_semicolon_csv_loads_as_columns_not_one():
    examples = parse_labelled_file(b"review;stars_label\nGreat tea, really;positive\nCold soup;negative\n",
                                   ColumnMapping("review", "stars_label"), "sentiment", "reviews.csv")
    assert [(e.input, e.target) for e in examples] == [("Great tea, really", "positive"), ("Cold soup", "negative")]
    assert file_columns(b"a;b;c\n1;2;3\n", "x.csv") == ["a", "b", "c"]


def test_a_one_column_csv_stays_one_column():
    assert detect_separator("text\nhello\nworld\n", "x.csv") == ","
    assert read_rows(b"text\nhello\nworld\n", "x.csv") == [(2, {"text": "hello"}), (3, {"text": "world"})]
    with pytest.raises(DataFileError, match=r"Line 2 has no 'stars_label' field \(its fields: review\)"):
        parse_labelled_file(b"review\nfine\n", ColumnMapping("review", "stars_label"), "sentiment", "x.csv")


@pytest.mark.parametrize("text, named", [
    ("text;label\nhello;pos\nbad;day;neg\n", "semicolons ';'"),       # one row breaks the semicolon layout
    ("text|label\nhello|pos\nx|y|z|w\n", "pipes '|'"),
    ("text,label\nhello,pos\na,b,c\n", "commas ','"),
])
def test_a_row_that_does_not_fit_names_the_separator_seen(text, named):
    with pytest.raises(DataFileError, match=f"Line 3 has [0-9] values but the header names 2 columns "
                                            f"\\(read with {re.escape(named)} between columns\\)") as info:
        read_rows(text.encode(), "x.csv")
    assert info.value.line == 3 and "quote values that hold the separator" in str(info.value)


def test_sniffing_looks_only_at_the_first_lines():
    rows = "".join(f"row {i};{'pos' if i % 2 else 'neg'}\n" for i in range(5000))
    text = "text;label\n" + rows
    assert detect_separator(text, "big.csv") == ";"
    assert len(read_rows(text.encode(), "big.csv", UploadLimits(max_bytes=10**7, max_rows=10**5))) == 5000
