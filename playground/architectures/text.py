"""Checking and parsing what the user typed: the input text, words, word spans, candidate lines, labels.

Pure Python (no torch), so the UI can validate widget values before any model
runs. Every problem raises :class:`~playground.errors.InvalidInputError` with
a message that says what to change.

- :func:`check_text` refuses empty or over-long text.
- :func:`find_words` lists the words of a text (``\\w+`` runs) with their character offsets;
  fill-mask picks a word to hide from this list and span corruption takes word spans over it.
- :func:`parse_lines`, :func:`parse_labels` and :func:`parse_word_spans` turn a text box into
  candidate sentences, ``label: description`` pairs and ``(start, end)`` word spans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from playground.errors import InvalidInputError

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_CANDIDATES = 20  # candidate sentences or labels one request may compare


@dataclass(frozen=True)
class Word:
    """One word of the input: its position among the words and its character range ``[start, end)``."""

    index: int
    text: str
    start: int
    end: int


def check_text(text: str, max_chars: int | None = None, what: str = "text") -> str:
    """``text`` unchanged when it is usable; raises InvalidInputError when it is empty or too long."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(f"The {what} is empty: type a sentence for the models to read.").keyed(
            "arch.error.empty")
    if max_chars is not None and len(text) > max_chars:
        raise InvalidInputError(
            f"The {what} is {len(text):,} characters long; the limit is {max_chars:,}. Shorten it."
        ).keyed("arch.error.too_long", count=len(text), limit=max_chars)
    return text


def find_words(text: str) -> list[Word]:
    """The words of ``text`` (runs of letters, digits and underscores) in order, with their offsets."""
    return [Word(i, m.group(), m.start(), m.end()) for i, m in enumerate(_WORD.finditer(text))]


def pick_word(text: str, word: int | str, words: Sequence[Word] | None = None) -> Word:
    """The word chosen by its index (0-based) or by itself (first match, case-insensitive).

    ``words`` is the list to choose from (default: :func:`find_words` of ``text``).
    """
    words = list(find_words(text) if words is None else words)
    if not words:
        raise InvalidInputError("The text has no word to choose: type a sentence with words.")
    listing = ", ".join(f"{w.index}: {w.text}" for w in words[:30]) + (" ..." if len(words) > 30 else "")
    if isinstance(word, bool) or not isinstance(word, (int, str)):
        raise InvalidInputError(f"Pick a word by its number or by the word itself, not {word!r}.")
    if isinstance(word, int):
        if not 0 <= word < len(words):
            raise InvalidInputError(
                f"There is no word number {word}: the text has {len(words)} words, numbered from 0 ({listing}).")
        return words[word]
    wanted = word.strip().casefold()
    for candidate in words:
        if candidate.text.casefold() == wanted:
            return candidate
    raise InvalidInputError(f"The word {word.strip()!r} is not in the text; pick one of: {listing}.")


def parse_lines(text: str | Sequence[str], what: str = "candidate sentences") -> tuple[str, ...]:
    """Non-empty, stripped lines (a text box with one item per line, or a list); at most MAX_CANDIDATES."""
    lines = text.splitlines() if isinstance(text, str) else list(text)
    items = tuple(line.strip() for line in lines if isinstance(line, str) and line.strip())
    if not items:
        raise InvalidInputError(f"Give at least one of the {what}, one per line.")
    if len(items) > MAX_CANDIDATES:
        raise InvalidInputError(f"Give at most {MAX_CANDIDATES} {what}; there are {len(items)}.")
    return items


def label_description(label: str) -> str:
    """The sentence a bare label is compared with in zero-shot classification."""
    return f"This text is about {label}."


def parse_labels(text: str | Mapping[str, str] | Sequence[str] | Sequence[tuple[str, str]]
                 ) -> tuple[tuple[str, str], ...]:
    """``(label, description)`` pairs from lines ``label: description`` (a bare label gets a generic sentence)."""
    if isinstance(text, Mapping):
        raw = [f"{k}: {v}" if str(v).strip() else str(k) for k, v in text.items()]
    elif isinstance(text, str):
        raw = text.splitlines()
    else:
        raw = [f"{item[0]}: {item[1]}" if isinstance(item, (tuple, list)) else item for item in text]
    pairs: list[tuple[str, str]] = []
    for line in parse_lines(raw, what="labels"):
        label, sep, description = line.partition(":")
        label, description = label.strip(), description.strip()
        if not label:
            raise InvalidInputError(f"The line {line!r} has no label before ':'; write 'label: description'.")
        pairs.append((label, description if sep and description else label_description(label)))
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise InvalidInputError("Each label may appear only once.")
    return tuple(pairs)


def parse_word_spans(text: str) -> tuple[tuple[int, int], ...]:
    """Word spans from ``"2-4, 7"`` (inclusive word numbers, from 0) as half-open ``(start, end)`` pairs."""
    spans: list[tuple[int, int]] = []
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not match:
            raise InvalidInputError(f"{part!r} is not a word span: write word numbers like '2-4, 7' (from 0).")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise InvalidInputError(f"The span {part!r} ends before it starts; write the smaller number first.")
        spans.append((first, last + 1))
    if not spans:
        raise InvalidInputError("Give at least one word span, like '2-4, 7' (word numbers from 0).")
    return tuple(spans)
