"""Checking and parsing the user's input (pure Python), and how fill-mask makes its masks."""

from __future__ import annotations

import pytest

from playground.architectures.tasks import apply_mask, maskable_words
from playground.architectures.text import (
    MAX_CANDIDATES,
    check_text,
    find_words,
    parse_labels,
    parse_lines,
    parse_word_spans,
    pick_word,
)
from playground.errors import InvalidInputError, NoMaskError


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None])
def test_empty_text_is_refused(text):
    with pytest.raises(InvalidInputError, match="empty"):
        check_text(text)


def test_over_long_text_is_refused_with_the_numbers():
    with pytest.raises(InvalidInputError, match="1,001 characters.*1,000"):
        check_text("a" * 1001, max_chars=1000)
    assert check_text(" keep my spaces ", 100) == " keep my spaces "


def test_words_and_their_offsets():
    words = find_words("Hello, world! It's 2024.")
    assert [w.text for w in words] == ["Hello", "world", "It", "s", "2024"]
    text = "Hello, world! It's 2024."
    assert all(text[w.start:w.end] == w.text for w in words)
    assert [w.index for w in words] == list(range(5))


def test_pick_word_by_number_or_by_itself():
    text = "The capital of France is Paris."
    assert pick_word(text, 3).text == "France"
    assert pick_word(text, "paris").text == "Paris"
    with pytest.raises(InvalidInputError, match="no word number 9.*6 words"):
        pick_word(text, 9)
    with pytest.raises(InvalidInputError, match="'Lisbon' is not in the text.*0: The"):
        pick_word(text, "Lisbon")
    with pytest.raises(InvalidInputError, match="no word"):
        pick_word("?!", 0)


def test_parse_lines_and_labels():
    assert parse_lines("  first \n\n second\n") == ("first", "second")
    with pytest.raises(InvalidInputError, match="at least one"):
        parse_lines(" \n ")
    with pytest.raises(InvalidInputError, match=f"at most {MAX_CANDIDATES}"):
        parse_lines([f"s{i}" for i in range(MAX_CANDIDATES + 1)])
    assert parse_labels("sport: About games.\nfood") == (("sport", "About games."),
                                                        ("food", "This text is about food."))
    assert parse_labels({"a": "desc a", "b": ""}) == (("a", "desc a"), ("b", "This text is about b."))
    assert parse_labels([("x", "y")]) == (("x", "y"),)
    with pytest.raises(InvalidInputError, match="only once"):
        parse_labels("a\na: again")
    with pytest.raises(InvalidInputError, match="no label"):
        parse_labels(": description only")


def test_parse_word_spans():
    assert parse_word_spans("2-4, 7") == ((2, 5), (7, 8))
    assert parse_word_spans("0 - 1; 3") == ((0, 2), (3, 4))
    for bad in ("two", "4-2", "", "1-"):
        with pytest.raises(InvalidInputError):
            parse_word_spans(bad)


def test_typed_mask_in_any_case_becomes_the_models_mask_token():
    assert apply_mask("The [mask] sat.", "<mask>") == ("The <mask> sat.", "", "")
    assert apply_mask("The [MASK] sat on the [Mask].", "[MASK]")[0] == "The [MASK] sat on the [MASK]."


def test_a_word_can_be_masked_by_number_or_by_itself():
    text = "The cat sat on the mat."
    assert apply_mask(text, "[MASK]", 1) == ("The [MASK] sat on the mat.", "cat", "")
    assert apply_mask(text, "[MASK]", "1")[0] == "The [MASK] sat on the mat."
    assert apply_mask(text, "[MASK]", "MAT") == ("The cat sat on the [MASK].", "mat", "")
    # words inside a typed mask are not offered, so numbers match what the user sees
    assert [w.text for w in maskable_words("The [MASK] sat.")] == ["The", "sat"]
    assert apply_mask("The [MASK] sat.", "[MASK]", 1)[0] == "The [MASK] [MASK]."


def test_no_mask_and_no_word_picked_is_an_error_unless_auto_mask():
    with pytest.raises(NoMaskError, match=r"no \[MASK\].*type \[MASK\].*pick a word"):
        apply_mask("The cat sat on the mat.", "[MASK]")
    masked, hidden, note = apply_mask("The cat sat on the mat.", "[MASK]", auto_mask=True)
    assert masked == "The cat sat on the [MASK]." and hidden == "mat" and "'mat'" in note


def test_no_maskable_word_is_an_error_even_with_auto_mask():
    with pytest.raises(NoMaskError, match="no word that could be hidden"):
        apply_mask("?! ...", "[MASK]", auto_mask=True)
    with pytest.raises(InvalidInputError, match="no word number 5"):
        apply_mask("one two", "[MASK]", 5)
