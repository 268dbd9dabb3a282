"""Pulling the answer out of a model's text, checking it, and voting over several answers.

Models rarely answer with the bare label or number: they write "The sentiment
of this sentence is positive." or reason for three lines and end with "So the
answer is $1,250." The extractors here find the answer in such text:

- ``label``: one of the task's labels, robust to case, punctuation, Markdown and
  phrasing ("Answer: **Negative**", "The answer is: positive"); an explicit
  conclusion wins over earlier mentions.
- ``number``: the number after "the answer is" (or "####"), else the last number
  in the text; thousands separators, a leading "$", negatives and decimals are
  understood, and the result is written canonically ("1,250.00" -> "1250").
- ``text``: the first paragraph of the output, without a leading "Summary:".

An answer that cannot be found is ``None``: it counts as wrong and is shown as
such, never raised as an error. ``majority_vote`` is the self-consistency
step: the most frequent answer wins, ties go to the answer that appeared first.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Sequence

from playground.errors import InvalidParameterError
from playground.prompting.tasks import ANSWER_KINDS

SENTIMENT_LABELS = ("positive", "negative", "neutral")

# A number: optional sign and "$" (either order), digits with optional thousands separators and decimals.
_NUMBER = re.compile(
    r"(?<![\w.,])(?:(?P<sign>[-\u2212])\s?\$?|\$\s?(?P<sign2>[-\u2212])?)?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\d])"
)
# Where a final answer is announced; the number follows within a few characters.
_ANSWER_CUE = re.compile(r"(?:answer\s*(?:is|was|would be|will be|=|:)|####|final answer\b)\s*[:=]?", re.IGNORECASE)
_TEXT_PREFIX = re.compile(r"^(?:here is (?:the|a|my) \w+\s*:|(?:summary|translation|answer|output|french|"
                          r"in french|response)\s*:)\s*", re.IGNORECASE)
_DECORATION = " \t\r\n\"'`*_.,;:!?()[]{}<>-#"


# --------------------------------------------------------------------------- numbers


def canonical_number(value: str | int | float | Decimal) -> str | None:
    """``value`` written canonically ("1,250.00" -> "1250", "-0" -> "0"); None when it is no number."""
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        match = _NUMBER.fullmatch(value.strip().rstrip(".").replace(" ", ""))
        if not match:
            return None
        return _canonical(match)
    else:
        return None
    return _format_decimal(number)


def _format_decimal(number: Decimal) -> str | None:
    if not number.is_finite():
        return None
    if number == number.to_integral_value():
        return str(int(number))
    text = format(number.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _canonical(match: re.Match) -> str | None:
    digits = match.group("digits").replace(",", "")
    sign = "-" if (match.group("sign") or match.group("sign2")) else ""
    try:
        return _format_decimal(Decimal(sign + digits))
    except InvalidOperation:
        return None


def extract_number(text: str | None) -> str | None:
    """The final numeric answer in ``text``, canonical ("24", "-3", "2.5"), or None."""
    if not text:
        return None
    cues = list(_ANSWER_CUE.finditer(text))
    for cue in reversed(cues):
        window = text[cue.end():cue.end() + 40]
        match = _NUMBER.search(window)
        if match and not re.search(r"[.!?\n]\s", window[:match.start()]):  # the number belongs to this sentence
            return _canonical(match)
    numbers = list(_NUMBER.finditer(text))
    return _canonical(numbers[-1]) if numbers else None


def numbers_equal(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    ca, cb = canonical_number(a), canonical_number(b)
    return ca is not None and ca == cb


# --------------------------------------------------------------------------- labels


def normalize_label(value: str | None, labels: Sequence[str] = SENTIMENT_LABELS) -> str | None:
    """``value`` as one of ``labels`` when it is exactly one, ignoring case and decoration; else None."""
    if value is None:
        return None
    cleaned = str(value).strip(_DECORATION).lower()
    return next((label for label in labels if label.lower() == cleaned), None)


def extract_label(text: str | None, labels: Sequence[str] = SENTIMENT_LABELS) -> str | None:
    """The label ``text`` concludes with, or None when it names none of ``labels``."""
    if not text or not labels:
        return None
    lowered = text.lower()
    if "neutral" in [label.lower() for label in labels]:
        lowered = re.sub(r"\bneither\s+(?:positive|negative)\s+nor\s+(?:positive|negative)\b", "neutral", lowered)
    by_lower = {label.lower(): label for label in labels}
    words = "|".join(re.escape(label) for label in sorted(by_lower, key=len, reverse=True))
    label_re = re.compile(rf"(?<![\w-])({words})(?![\w-])")
    # 1. an explicit conclusion: "the answer is: positive", "Sentiment: **Negative**", "classified as neutral"
    conclusion = re.compile(
        rf"(?:answer|sentiment|label|classification|classified as|category)\b[^.\n]{{0,40}}?"
        rf"(?:\bis\b|\bas\b|:|=)\s*[\"'`*_(\[]*\s*({words})(?![\w-])")
    found = list(conclusion.finditer(lowered))
    if found:
        return by_lower[found[-1].group(1)]
    # 2. the text starts with a label ("Positive.", "**NEGATIVE**")
    start = label_re.match(lowered.lstrip(_DECORATION))
    if start:
        return by_lower[start.group(1)]
    # 3. otherwise the one label mentioned, or the last one when several are
    mentions = [m.group(1) for m in label_re.finditer(lowered)]
    return by_lower[mentions[-1]] if mentions else None


# --------------------------------------------------------------------------- free text


def extract_text(text: str | None) -> str | None:
    """The first paragraph of ``text`` without a leading "Summary:"-style prefix; None when empty."""
    if not text:
        return None
    cleaned = _TEXT_PREFIX.sub("", text.strip()).strip()
    paragraph = re.split(r"\n\s*\n", cleaned, maxsplit=1)[0].strip()
    paragraph = paragraph.strip('"\u201c\u201d').strip()
    return paragraph or None


def normalize_text(text: str | None) -> str:
    return " ".join((text or "").lower().split()).strip(_DECORATION)


# --------------------------------------------------------------------------- by kind


def _check_kind(kind: str) -> None:
    if kind not in ANSWER_KINDS:
        raise InvalidParameterError(f"Unknown answer kind {kind!r}; choose one of {', '.join(ANSWER_KINDS)}.")


def extract_answer(text: str | None, kind: str, labels: Sequence[str] = SENTIMENT_LABELS) -> str | None:
    """The answer of ``kind`` ("label", "number" or "text") in ``text``, or None when there is none."""
    _check_kind(kind)
    if kind == "label":
        return extract_label(text, labels)
    if kind == "number":
        return extract_number(text)
    return extract_text(text)


def normalize_target(target: str, kind: str, labels: Sequence[str] = SENTIMENT_LABELS) -> str | None:
    """A gold answer written like extracted answers (label lower-cased, number canonical)."""
    _check_kind(kind)
    if kind == "label":
        return normalize_label(target, labels)
    if kind == "number":
        return canonical_number(target)
    return str(target).strip() or None


def is_correct(answer: str | None, target: str, kind: str, labels: Sequence[str] = SENTIMENT_LABELS) -> bool:
    """Exact match after normalising both sides; a missing answer is wrong."""
    _check_kind(kind)
    if answer is None:
        return False
    if kind == "label":
        return normalize_label(answer, labels) is not None and normalize_label(answer, labels) == \
            normalize_label(target, labels)
    if kind == "number":
        return numbers_equal(answer, target)
    return normalize_text(answer) == normalize_text(target)


# --------------------------------------------------------------------------- voting


@dataclass(frozen=True)
class VoteResult:
    """Self-consistency's majority vote over the answers of several sampled paths."""

    winner: str | None  # None when no path gave an answer
    counts: tuple[tuple[str, int], ...]  # (answer, votes), most votes first, ties in order of first appearance
    unparsed: int  # paths whose answer could not be extracted
    total: int  # paths voted over

    @property
    def histogram(self) -> dict[str, int]:
        return dict(self.counts)

    @property
    def agreement(self) -> float:
        """Share of all paths that gave the winning answer (0 when nobody answered)."""
        if self.winner is None or not self.total:
            return 0.0
        return self.histogram[self.winner] / self.total

    @property
    def tied(self) -> bool:
        return len(self.counts) > 1 and self.counts[0][1] == self.counts[1][1]


def majority_vote(answers: Sequence[str | None]) -> VoteResult:
    """The most frequent answer; a tie goes to the answer that appeared first (deterministic)."""
    given = [a for a in answers if a is not None]
    counter = Counter(given)
    first_seen = {a: i for i, a in reversed(list(enumerate(given)))}
    ordered = sorted(counter.items(), key=lambda item: (-item[1], first_seen[item[0]]))
    return VoteResult(winner=ordered[0][0] if ordered else None, counts=tuple(ordered),
                      unparsed=len(answers) - len(given), total=len(answers))
