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
- ``date``: the date after "the answer is", else the last date in the text, in
  any of the usual spellings ("2027-03-03", "3 March 2027", "March 3rd, 2027",
  "Wed, 3 Mar. 2027", "03/15/2027" when day and month cannot be confused),
  written as ISO ``YYYY-MM-DD``; impossible dates (30 February) are no dates.
- ``word``: the word after "the answer is", else a one-word reply, else the
  last quoted word; letters spelled out ("n, l, e") are joined; lower-cased.
- ``choice``: a multiple-choice letter (A to E): "the answer is (C)", "Answer: C",
  "C) a freezer", "(c)", "option C"; a lone article "A" in a sentence is no answer.

An answer that cannot be found is ``None``: it counts as wrong and is shown as
such, never raised as an error. ``majority_vote`` is the self-consistency
step: the most frequent answer wins, ties go to the answer that appeared first.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Sequence

from playground.errors import InvalidParameterError
from playground.prompting.tasks import ANSWER_KINDS

SENTIMENT_LABELS = ("positive", "negative", "neutral")
CHOICE_LETTERS = ("A", "B", "C", "D", "E")

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


# --------------------------------------------------------------------------- dates

_MONTHS = {name: number for number, names in enumerate((
    ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
    ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
    ("november", "nov"), ("december", "dec")), start=1) for name in names}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ORD = r"(?:st|nd|rd|th)?"
_DATE = re.compile(
    rf"(?<![\w/.-])(?P<iy>\d{{4}})(?P<isep>[-/.])(?P<im>\d{{1,2}})(?P=isep)(?P<id>\d{{1,2}})(?![\w/-]|\.\d)"
    rf"|(?<![\w/.-])(?P<na>\d{{1,2}})(?P<nsep>[-/.])(?P<nb>\d{{1,2}})(?P=nsep)(?P<ny>\d{{4}})(?![\w/-]|\.\d)"
    rf"|(?<![\w-])(?P<dd>\d{{1,2}}){_ORD}\s*(?:of\s+)?(?P<dm>{_MONTH})\.?,?\s+(?P<dy>\d{{4}})(?!\d)"
    rf"|(?<![\w-])(?P<mm>{_MONTH})\.?\s+(?:the\s+)?(?P<md>\d{{1,2}}){_ORD},?\s+(?P<my>\d{{4}})(?!\d)",
    re.IGNORECASE)
_WEEKDAY = r"(?:mon|tues|wednes|thurs|fri|satur|sun)day|mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun"
# What may stand between "the answer is" and its date: decoration, "on", "the", a weekday.
_BEFORE_DATE = re.compile(rf"^[\s\"'`*_(\[:=,-]*(?:on\s+)?(?:the\s+)?(?:(?:{_WEEKDAY})\b\.?,?\s*)?(?:the\s+)?$",
                          re.IGNORECASE)


def _date_of(match: re.Match) -> str | None:
    """The ISO date a _DATE match names, or None when it names no real (or no unambiguous) date."""
    g = match.groupdict()
    if g["iy"]:
        year, month, day = int(g["iy"]), int(g["im"]), int(g["id"])
    elif g["ny"]:
        a, b, year = int(g["na"]), int(g["nb"]), int(g["ny"])
        if a > 12 >= b:
            day, month = a, b
        elif b > 12 >= a or a == b:
            month, day = a, b
        else:  # 03/04/2027: 3 April or March 4? Not an answer that can be checked.
            return None
    elif g["dy"]:
        year, month, day = int(g["dy"]), _MONTHS[g["dm"].lower()], int(g["dd"])
    else:
        year, month, day = int(g["my"]), _MONTHS[g["mm"].lower()], int(g["md"])
    try:
        return _dt.date(year, month, day).isoformat()
    except ValueError:
        return None


def canonical_date(value: str | _dt.date | None) -> str | None:
    """``value`` as ISO ``YYYY-MM-DD`` when it is one date in any usual spelling; else None."""
    if isinstance(value, _dt.datetime):
        return value.date().isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    if not isinstance(value, str):
        return None
    cleaned = value.strip(_DECORATION.replace(".", "") + ".")
    match = _DATE.search(cleaned)
    if not match or not _BEFORE_DATE.match(cleaned[:match.start()]) or cleaned[match.end():].strip(_DECORATION):
        return None
    return _date_of(match)


def extract_date(text: str | None) -> str | None:
    """The final date in ``text`` as ISO ``YYYY-MM-DD``, or None."""
    if not text:
        return None
    for cue in reversed(list(_ANSWER_CUE.finditer(text))):
        window = text[cue.end():cue.end() + 60]
        for match in _DATE.finditer(window):
            if _BEFORE_DATE.match(window[:match.start()]):
                found = _date_of(match)
                if found:
                    return found
            break  # only the first date after the cue belongs to it
    dates = [d for d in (_date_of(m) for m in _DATE.finditer(text)) if d]
    return dates[-1] if dates else None


def dates_equal(a: str | None, b: str | None) -> bool:
    ca, cb = canonical_date(a), canonical_date(b)
    return ca is not None and ca == cb


# --------------------------------------------------------------------------- words

_LETTERS = r"[^\W\d_]"
_WORD = re.compile(rf"{_LETTERS}+")
_SPELLED = re.compile(rf"({_LETTERS}(?:\s*[,+-]\s*|\s+(?:and\s+)?|\s*,\s*and\s+){_LETTERS}"
                      rf"(?:(?:\s*[,+-]\s*|\s+(?:and\s+)?|\s*,\s*and\s+){_LETTERS})*)(?!\w)")
_WORD_FILLER = re.compile(r"^(?:the\s+)?(?:final\s+)?(?:word|string|letters|result|concatenation)\b\s*(?:is\b|:)?\s*",
                          re.IGNORECASE)
_QUOTED = re.compile(rf"[\"\u201c\u2018'`*]+({_LETTERS}+)[\"\u201d\u2019'`*]+")


def normalize_word(value: str | None) -> str | None:
    """``value`` lower-cased when it is one word of letters (quotes, bold and a full stop aside); else None."""
    if value is None:
        return None
    cleaned = str(value).strip(_DECORATION + "\u201c\u201d\u2018\u2019")
    return cleaned.lower() if _WORD.fullmatch(cleaned) else None


def _word_after(window: str) -> str | None:
    window = window.split("\n", 1)[0].lstrip(_DECORATION + "\u201c\u2018")
    window = _WORD_FILLER.sub("", window).lstrip(_DECORATION + "\u201c\u2018")
    spelled = _SPELLED.match(window)
    if spelled:
        return "".join(w for w in _WORD.findall(spelled.group(1)) if len(w) == 1).lower() or None
    word = _WORD.match(window)
    return word.group(0).lower() if word else None


def extract_word(text: str | None) -> str | None:
    """The one-word answer in ``text`` (lower-cased), or None."""
    if not text:
        return None
    cues = list(_ANSWER_CUE.finditer(text))
    if cues:
        found = _word_after(text[cues[-1].end():cues[-1].end() + 80])
        if found:
            return found
    whole = normalize_word(text.strip().split("\n", 1)[0])
    if whole:
        return whole
    quoted = _QUOTED.findall(text)
    return quoted[-1].lower() if quoted else None


# --------------------------------------------------------------------------- multiple-choice letters


def _letters(labels: Sequence[str]) -> tuple[str, ...]:
    letters = tuple(str(label).upper() for label in labels if len(str(label)) == 1 and str(label).isalpha())
    return letters if letters and len(letters) == len(labels) else CHOICE_LETTERS


def normalize_choice(value: str | None, labels: Sequence[str] = CHOICE_LETTERS) -> str | None:
    """``value`` as an upper-case choice letter when it is one ("c", "(C)", "C)", "**C.**"); else None."""
    if value is None:
        return None
    cleaned = str(value).strip(_DECORATION).upper()
    return cleaned if cleaned in _letters(labels) else None


def extract_choice(text: str | None, labels: Sequence[str] = CHOICE_LETTERS) -> str | None:
    """The choice letter ``text`` concludes with (upper case), or None.

    In order: an announced answer ("the answer is (C)", "Answer: c)", "the correct option is C"), the
    last one wins; a reply that starts with a letter ("C", "C) a freezer", "(B)"); else the last
    "(C)", "C)", "choice C" or "option C" in the text. A bare lower-case letter after the cue, or a
    reply that starts "A freezer ...", is read as an article, not an answer.
    """
    if not text:
        return None
    letters = _letters(labels)
    group = "".join(letters) + "".join(letters).lower()
    cue = re.compile(
        rf"(?:answer|choice|option)\b[^.\n]{{0,30}}?(?:\bis\b|:|=|\bwould be\b|\bmust be\b)\s*"
        rf"[\"'`*_\[]*\s*(?P<open>\()?\s*(?P<letter>[{group}])(?P<close>\s*\))?(?P<after>[^\n]{{0,3}})",
        re.IGNORECASE)
    found = None
    for match in cue.finditer(text):
        letter, after = match.group("letter"), match.group("after")
        if re.match(r"\w", after) and not match.group("close"):
            continue  # "the answer is about ...": the letter starts a word
        if letter.islower() and not (match.group("open") or match.group("close")):
            continue  # "the answer is a freezer"
        found = letter.upper()
    if found:
        return found
    start = re.match(rf"^[\s\"'`*_\[]*(?:(?P<p>\(\s*(?P<a>[{group}])\s*\))|(?P<b>[{''.join(letters)}])"
                     rf"(?=\s*$|\s*[).:\]\n*]|\s+-))", text)
    if start:
        return (start.group("a") or start.group("b")).upper()
    mentions = re.findall(rf"\(\s*([{group}])\s*\)|(?<![\w(])([{''.join(letters)}])\)|"
                          rf"\b(?:choice|option)\s+\(?([{''.join(letters)}])\b", text, re.IGNORECASE)
    if mentions:
        return "".join(mentions[-1]).upper()
    return None


# --------------------------------------------------------------------------- by kind


def _check_kind(kind: str) -> None:
    if kind not in ANSWER_KINDS:
        raise InvalidParameterError(f"Unknown answer kind {kind!r}; choose one of {', '.join(ANSWER_KINDS)}.")


def extract_answer(text: str | None, kind: str, labels: Sequence[str] = SENTIMENT_LABELS) -> str | None:
    """The answer of ``kind`` (one of ``ANSWER_KINDS``) in ``text``, or None when there is none."""
    _check_kind(kind)
    if kind == "label":
        return extract_label(text, labels)
    if kind == "number":
        return extract_number(text)
    if kind == "date":
        return extract_date(text)
    if kind == "word":
        return extract_word(text)
    if kind == "choice":
        return extract_choice(text, labels)
    return extract_text(text)


def normalize_target(target: str, kind: str, labels: Sequence[str] = SENTIMENT_LABELS) -> str | None:
    """A gold answer written like extracted answers (label lower-cased, number canonical, date ISO, word
    lower-cased, choice letter upper-cased)."""
    _check_kind(kind)
    if kind == "label":
        return normalize_label(target, labels)
    if kind == "number":
        return canonical_number(target)
    if kind == "date":
        return canonical_date(target)
    if kind == "word":
        return normalize_word(target)
    if kind == "choice":
        return normalize_choice(target, labels)
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
    if kind == "date":
        return dates_equal(answer, target)
    if kind in ("word", "choice"):
        expected = normalize_target(target, kind, labels)
        return expected is not None and normalize_target(answer, kind, labels) == expected
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
