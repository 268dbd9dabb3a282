"""Answer extraction (labels, numbers, free text), correctness and self-consistency's vote."""

from __future__ import annotations

import pytest

from playground.errors import InvalidParameterError
from playground.prompting.extraction import (
    canonical_number,
    extract_answer,
    extract_label,
    extract_number,
    extract_text,
    is_correct,
    majority_vote,
    normalize_target,
)


@pytest.mark.parametrize("text, label", [
    ("positive", "positive"),
    ("Positive.", "positive"),
    ("POSITIVE!!!", "positive"),
    ("  **Negative**  ", "negative"),
    ('"neutral"', "neutral"),
    ("- positive\n- negative", "positive"),
    ("The answer is: positive", "positive"),
    ("The answer is negative.", "negative"),
    ("Answer: Neutral", "neutral"),
    ("Sentiment: **Negative**.", "negative"),
    ("The sentiment of the sentence is positive.", "positive"),
    ("I would classify this as neutral.", "neutral"),
    ("The writer is upset. So the answer is negative.", "negative"),
    ("Positive words appear, but the answer is negative.", "negative"),
    ("It is not negative; the answer is neutral", "neutral"),
    ("I think it's positive", "positive"),
    ("It is neither positive nor negative.", "neutral"),
    ("The label: `positive`", "positive"),
])
def test_labels(text, label):
    assert extract_label(text) == label
    assert extract_answer(text, "label") == label


@pytest.mark.parametrize("text", ["", None, "pos", "mixed feelings", "nonpositive", "The writer is pleased.",
                                  "I cannot tell."])
def test_no_label_is_none(text):
    assert extract_label(text) is None


def test_labels_of_another_task():
    assert extract_label("The answer is Spam.", ("spam", "ham")) == "spam"
    assert extract_label("ham", ("spam", "ham")) == "ham"


@pytest.mark.parametrize("text, number", [
    ("The answer is 24.", "24"),
    ("24", "24"),
    ("3 x 12 = 36. 36 - 10 = 26 pencils.", "26"),
    ("The answer is 24 pencils. I checked it 3 times.", "24"),
    ("The answer is $1,250.", "1250"),
    ("It costs $45 in total", "45"),
    ("answer: 1,000,000", "1000000"),
    ("#### 72", "72"),
    ("The answer is -3.", "-3"),
    ("It fell to -5 degrees", "-5"),
    ("The answer is 7.0", "7"),
    ("He has 2.50 dollars left", "2.5"),
    ("The final answer is: 18", "18"),
    ("10-3 = 7", "7"),
    ("The answer is 12.\n\nQ: Another question with 99 apples", "12"),
    ("So, the answer is 1600 metres.", "1600"),
])
def test_numbers(text, number):
    assert extract_number(text) == number
    assert extract_answer(text, "number") == number


@pytest.mark.parametrize("text", ["", None, "no number here", "The answer is forty."])
def test_no_number_is_none(text):
    assert extract_number(text) is None


@pytest.mark.parametrize("value, canonical", [("1,234.50", "1234.5"), ("-0", "0"), ("$5", "5"), ("12.", "12"),
                                              (3.0, "3"), (42, "42"), ("abc", None), ("", None)])
def test_canonical_numbers(value, canonical):
    assert canonical_number(value) == canonical


@pytest.mark.parametrize("text, expected", [
    ("Summary: Anna asks Ben to buy milk.", "Anna asks Ben to buy milk."),
    ("  Anna asks Ben to buy milk.\n\nDialogue:\n#Person1#: more", "Anna asks Ben to buy milk."),
    ('"Le pain est frais."', "Le pain est frais."),
    ("French: Le pain est frais.", "Le pain est frais."),
    ("   ", None),
    (None, None),
])
def test_free_text(text, expected):
    assert extract_text(text) == expected
    assert extract_answer(text, "text") == expected


def test_correctness():
    assert is_correct("positive", "Positive", "label")
    assert not is_correct("negative", "positive", "label")
    assert not is_correct(None, "positive", "label")  # no answer counts as wrong
    assert is_correct("1250", "1,250", "number") and is_correct("7", "7.0", "number")
    assert not is_correct("7", "8", "number") and not is_correct(None, "8", "number")
    assert is_correct("Le pain est frais", "le pain est frais.", "text")
    assert normalize_target(" Neutral ", "label") == "neutral" and normalize_target("$1,000", "number") == "1000"
    with pytest.raises(InvalidParameterError, match="answer kind"):
        extract_answer("x", "colour")


def test_majority_vote_counts_and_breaks_ties_by_first_appearance():
    vote = majority_vote(["24", "26", None, "26", "24", "9"])
    assert vote.winner == "24"  # 24 and 26 both have two votes; 24 came first
    assert vote.counts == (("24", 2), ("26", 2), ("9", 1))
    assert vote.histogram == {"24": 2, "26": 2, "9": 1}
    assert vote.unparsed == 1 and vote.total == 6 and vote.tied
    assert vote.agreement == pytest.approx(2 / 6)


def test_majority_vote_clear_winner_and_no_answers():
    vote = majority_vote(["negative", "positive", "positive", "positive", None])
    assert vote.winner == "positive" and not vote.tied and vote.agreement == pytest.approx(0.6)
    empty = majority_vote([None, None, None])
    assert empty.winner is None and empty.counts == () and empty.unparsed == 3 and empty.agreement == 0.0
    assert majority_vote([]).winner is None
