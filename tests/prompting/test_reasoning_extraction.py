"""Answer extraction for the reasoning tasks: dates, one-word answers and multiple-choice letters."""

from __future__ import annotations

import pytest

from playground.prompting.extraction import (
    canonical_date,
    extract_answer,
    extract_choice,
    extract_date,
    extract_label,
    extract_word,
    is_correct,
    majority_vote,
    normalize_choice,
    normalize_target,
    normalize_word,
)

# ---------------------------------------------------------------- dates


@pytest.mark.parametrize("text, date", [
    ("2027-03-03", "2027-03-03"),
    ("The answer is 2027-03-03.", "2027-03-03"),
    ("The answer is: **2027-3-3**", "2027-03-03"),
    ("The answer is 2027/03/03", "2027-03-03"),
    ("3 March 2027", "2027-03-03"),
    ("The answer is 3rd of March, 2027.", "2027-03-03"),
    ("So the last day is March 3, 2027.", "2027-03-03"),
    ("The answer is March 3rd 2027", "2027-03-03"),
    ("The answer is Wednesday, 3 Mar. 2027.", "2027-03-03"),
    ("The answer is on the 3rd of march 2027", "2027-03-03"),
    ("Answer: Sept 30, 2026", "2026-09-30"),
    ("The answer is 15/03/2027.", "2027-03-15"),  # day first: 15 cannot be a month
    ("The answer is 03/15/2027.", "2027-03-15"),  # month first: 15 cannot be a month
    # the announced date wins over the dates of the working
    ("28 February 2027 + 3 days = 3 March 2027. The answer is 2027-03-03.", "2027-03-03"),
    ("The answer is 2027-03-03, not 2 March 2027.", "2027-03-03"),
    # no announcement: the last date written
    ("28 February 2027 + 3 days = 3 March 2027.", "2027-03-03"),
    ("A leap year: 28 February 2028 + 1 day = 29 February 2028", "2028-02-29"),
])
def test_dates(text, date):
    assert extract_date(text) == date
    assert extract_answer(text, "date") == date


@pytest.mark.parametrize("text", [
    "", None, "I don't know.", "The answer is tomorrow.", "The answer is March 3.",  # no year: not checkable
    "30 February 2027", "2027-02-29",  # no such day (2027 is no leap year)
    "2027-13-01", "The answer is 03/04/2027.",  # 3 April or March 4? ambiguous
    "The answer is 12345", "Q: 1-2-3", "2027", "March 2027",
    "x" * 5000,
])
def test_no_date_is_none(text):
    assert extract_date(text) is None


def test_an_impossible_announced_date_falls_back_to_a_real_one():
    # "The answer is 31 April 2027" names no day; the last real date written is taken instead
    assert extract_date("30 April 2027 + 1 day = 1 May 2027. The answer is 31 April 2027.") == "2027-05-01"


def test_canonical_date_reads_one_whole_date():
    assert canonical_date("2027-03-03") == canonical_date(" 3 March 2027. ") == "2027-03-03"
    assert canonical_date("Wednesday 3 March 2027") == "2027-03-03"
    assert canonical_date("3 March 2027 or 4 March 2027") is None
    assert canonical_date("around 3 March 2027") is None
    assert canonical_date("") is None and canonical_date(None) is None and canonical_date(20270303) is None


def test_dates_are_correct_in_any_spelling():
    for written in ("2027-03-03", "3 March 2027", "March 3, 2027", "03/03/2027"):
        assert is_correct(written, "2027-03-03", "date"), written
    assert not is_correct("2027-03-04", "2027-03-03", "date")
    assert not is_correct(None, "2027-03-03", "date")
    assert not is_correct("soon", "2027-03-03", "date")
    assert normalize_target("1 March 2027", "date") == "2027-03-01"


# ---------------------------------------------------------------- one-word answers


@pytest.mark.parametrize("text, word", [
    ("ere", "ere"),
    ("  **Ere**  ", "ere"),
    ('"ere".', "ere"),
    ('The answer is "ere".', "ere"),
    ("The answer is ERE", "ere"),
    ("The answer is: ere.\nQ: next", "ere"),
    ('The answer is the string "ere".', "ere"),
    ("The answer is e, r, e.", "ere"),
    ("The answer is e-r-e", "ere"),
    ("The answer is e r and e", "ere"),
    ('The last letter of "apple" is "e". The last letter of "river" is "r". Joined they make "er".', "er"),
    ('Working: "apple" ends in "e" and "river" in "r".\nThe answer is "er".', "er"),
])
def test_words(text, word):
    assert extract_word(text) == word
    assert extract_answer(text, "word") == word


@pytest.mark.parametrize("text", ["", None, "I cannot do that.", "The answer is 42.", "12 34", "!!!",
                                  "The last letters are e and r"])
def test_no_word_is_none(text):
    assert extract_word(text) is None


def test_words_are_checked_exactly():
    assert is_correct("ERE", "ere", "word") and is_correct('"ere"', "ere", "word")
    assert not is_correct("er", "ere", "word") and not is_correct("e r e", "ere", "word")
    assert not is_correct(None, "ere", "word")
    assert normalize_word("Ere.") == "ere" and normalize_word("two words") is None and normalize_word("a1") is None


# ---------------------------------------------------------------- multiple-choice letters


@pytest.mark.parametrize("text, letter", [
    ("C", "C"),
    ("C.", "C"),
    ("(C)", "C"),
    ("(c)", "C"),
    ("C) a freezer", "C"),
    ("**B**", "B"),
    ("E - a garden shed", "E"),
    ("The answer is (C).", "C"),
    ("The answer is C.", "C"),
    ("the answer is c)", "C"),
    ("Answer: D", "D"),
    ("The answer is: **B**", "B"),
    ("The correct option is E", "E"),
    ("So the answer is B) a mailbox", "B"),
    ("The answer is A because a freezer keeps food cold.", "A"),
    ("A freezer is cold, so the answer is (C).", "C"),
    ("Choice A is too warm, and the answer is (C) a freezer.", "C"),
    ("A freezer keeps it cold. That is choice C.", "C"),
    ("I would pick (D).", "D"),
    ("A", "A"),
])
def test_choices(text, letter):
    assert extract_choice(text) == letter
    assert extract_answer(text, "choice", ("A", "B", "C", "D", "E")) == letter


@pytest.mark.parametrize("text", [
    "", None, "I am not sure.", "A freezer keeps food cold.",  # "A" is an article here
    "The answer is a freezer.", "The answer is about keeping food cold.",
    "The answer is F.", "(F)", "F", "Z) none", "none of them", "42", "a",
])
def test_no_choice_is_none(text):
    assert extract_choice(text) is None


def test_choices_are_limited_to_the_tasks_letters():
    assert extract_choice("The answer is (E).", ("A", "B", "C", "D")) is None
    assert extract_choice("The answer is (D).", ("A", "B", "C", "D")) == "D"
    assert normalize_choice("(c)") == "C" and normalize_choice("F") is None and normalize_choice("CD") is None
    assert is_correct("(c)", "C", "choice", ("A", "B", "C", "D", "E"))
    assert not is_correct("B", "C", "choice", ("A", "B", "C", "D", "E"))
    assert not is_correct(None, "C", "choice")


def test_coin_flips_use_yes_and_no_labels():
    labels = ("yes", "no")
    assert extract_label("It ends tails up, not heads up. The answer is no.", labels) == "no"
    assert extract_label("Yes, the coin is still heads up.", labels) == "yes"
    assert extract_label("**No**", labels) == "no"
    assert extract_label("The coin is tails up.", labels) is None


# ---------------------------------------------------------------- self-consistency over the new kinds


def test_votes_count_one_date_however_it_is_written():
    paths = ["... The answer is 2027-03-03.", "So it is 3 March 2027.", "The answer is March 3, 2027.",
             "The answer is 2027-03-02.", "no idea"]
    vote = majority_vote([extract_date(p) for p in paths])
    assert vote.winner == "2027-03-03" and vote.histogram == {"2027-03-03": 3, "2027-03-02": 1}
    assert vote.unparsed == 1 and vote.agreement == pytest.approx(0.6)


def test_votes_over_letters_and_words():
    letters = majority_vote([extract_choice(t) for t in ("The answer is (B).", "B", "(c)", "The answer is B) x")])
    assert letters.winner == "B" and letters.histogram == {"B": 3, "C": 1}
    words = majority_vote([extract_word(t) for t in ('The answer is "er".', "ER", "The answer is e, r", "re")])
    assert words.winner == "er" and words.histogram == {"er": 3, "re": 1}
