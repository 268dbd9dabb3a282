"""Pre-training objectives shown on the user's own text: what is hidden, what is predicted.

Each function takes a tokenizer and the text and returns an :class:`ObjectiveExample` whose
``tokens`` carry a *role* the UI can colour (:data:`ROLES`), what the model reads
(``model_input``), what it must produce (``target``) and a table of ``predictions``
(:class:`Prediction`: position, what the model is given, what it must predict).
Random choices use ``random.Random(seed)``: the same seed gives the same example.

- :func:`masked_lm_example` (BERT): 15% of the ordinary tokens are selected (at least one); of those
  80% become the mask token, 10% a random token and 10% stay unchanged; all selected are predicted.
- :func:`causal_lm_example` (GPT, Llama): every token is predicted from the tokens to its left,
  giving ``(left context -> next token)`` pairs; the target is the input shifted by one.
- :func:`span_corruption_example` (T5): about 15% of the tokens in spans of mean length 3
  (T5's ``random_spans_noise_mask``), or the word spans the user gives, are replaced by
  sentinels ``<extra_id_0>, <extra_id_1>, ...``; the target lists each sentinel followed by the
  tokens it hides and ends with one more sentinel. The returned :class:`SpanCorruptionExample`
  also carries the ids to feed a T5 model (``input_ids``, ``target_ids``).
- :func:`contrastive_example` (sentence embeddings): no token is hidden; the explanation says how
  the sentence vector is trained.
- :func:`objective_example` picks one of these by the catalog's objective code.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

from playground.architectures.facts import OBJECTIVES
from playground.architectures.text import check_text, find_words
from playground.architectures.tokens import token_label
from playground.errors import InvalidInputError

ROLES = {
    "context": "read by the model, not predicted",
    "special": "a special token the tokenizer added",
    "masked": "selected: replaced by the mask token, to be predicted",
    "random": "selected: replaced by a random token, to be predicted",
    "unchanged": "selected: left as it is, still to be predicted",
    "predicted": "predicted from the tokens to its left",
    "noise": "cut out of the input (inside a sentinel span); the decoder must write it",
}
MAX_PREDICTIONS = 64  # rows of the prediction table
SENTINEL = re.compile(r"<extra_id_(\d+)>")


@dataclass(frozen=True)
class ObjectiveToken:
    """A token of the user's text with its role in the objective."""

    index: int
    id: int
    text: str  # the token as a label
    role: str  # a key of ROLES
    shown: str  # what the model reads at this position ("" when cut out)
    target: str  # what the model must predict for it ("" when nothing)
    span: int = -1  # span corruption: the sentinel number that replaced it


@dataclass(frozen=True)
class Prediction:
    """One row of the objective's table: at ``position`` the model is ``given`` this and must predict ``target``."""

    position: int
    given: str
    target: str


@dataclass(frozen=True)
class ObjectiveExample:
    objective: str  # masked_lm, causal_lm, span_corruption or contrastive_embedding
    title: str
    description: str
    tokens: tuple[ObjectiveToken, ...]
    model_input: str  # what the model reads
    target: str  # what it must produce
    predictions: tuple[Prediction, ...]
    note: str = ""


@dataclass(frozen=True)
class CorruptedSpan:
    """A span replaced by one sentinel: the tokens ``[token_start, token_end)`` of the text."""

    sentinel: str
    text: str
    token_start: int
    token_end: int


@dataclass(frozen=True)
class SpanCorruptionExample(ObjectiveExample):
    spans: tuple[CorruptedSpan, ...] = ()
    input_ids: tuple[int, ...] = ()  # the corrupted input for a T5 model (empty: tokenizer has no sentinels)
    target_ids: tuple[int, ...] = ()


def _special_ids(tokenizer) -> set[int]:
    return set(getattr(tokenizer, "all_special_ids", []) or [])


def _labels(tokenizer, ids: Sequence[int]) -> list[str]:
    special = _special_ids(tokenizer)
    vocab_pieces = tokenizer.convert_ids_to_tokens(list(ids))
    return [token_label(str(piece), tokenizer.decode([i]), i in special) for i, piece in zip(ids, vocab_pieces)]


def _header(objective: str) -> tuple[str, str]:
    return OBJECTIVES.get(objective, (objective, ""))


def _cap_note(count: int) -> str:
    return f"The table lists the first {MAX_PREDICTIONS} of {count} predictions." if count > MAX_PREDICTIONS else ""


# ---------------------------------------------------------------- masked LM


def masked_lm_example(tokenizer, text: str, seed: int = 0, mask_rate: float = 0.15) -> ObjectiveExample:
    """BERT's objective on ``text``: seeded 15% selection and the 80/10/10 rule."""
    check_text(text)
    if not 0 < mask_rate <= 1:
        raise InvalidInputError(f"The mask rate must be between 0 and 1, not {mask_rate}.")
    ids = list(tokenizer(text)["input_ids"])
    special = _special_ids(tokenizer)
    labels = _labels(tokenizer, ids)
    eligible = [i for i, token_id in enumerate(ids) if token_id not in special]
    if not eligible:
        raise InvalidInputError("The text has no ordinary token to hide: type a few words.")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(eligible, max(1, round(len(eligible) * mask_rate))))
    mask = getattr(tokenizer, "mask_token", None)
    notes = [] if mask else ["This tokenizer has no mask token; [MASK] stands in for one."]
    mask = mask or "[MASK]"
    pieces = [str(p) for p in tokenizer.convert_ids_to_tokens(ids)]
    shown_pieces = list(pieces)
    roles = {}
    for position in chosen:
        draw = rng.random()
        if draw < 0.8:
            roles[position] = ("masked", mask)
            shown_pieces[position] = mask
        elif draw < 0.9:
            replacement = _random_token(tokenizer, rng, special)
            roles[position] = ("random", token_label(str(tokenizer.convert_ids_to_tokens(replacement)),
                                                     tokenizer.decode([replacement]), False))
            shown_pieces[position] = str(tokenizer.convert_ids_to_tokens(replacement))
        else:
            roles[position] = ("unchanged", labels[position])
    tokens = []
    for i, (token_id, label) in enumerate(zip(ids, labels)):
        if i in roles:
            role, shown = roles[i]
            tokens.append(ObjectiveToken(i, token_id, label, role, shown, label))
        else:
            tokens.append(ObjectiveToken(i, token_id, label, "special" if token_id in special else "context", label,
                                         ""))
    predictions = tuple(Prediction(i, roles[i][1], labels[i]) for i in chosen[:MAX_PREDICTIONS])
    notes.append(_cap_note(len(chosen)))
    title, description = _header("masked_lm")
    return ObjectiveExample("masked_lm", title, description, tuple(tokens),
                            tokenizer.convert_tokens_to_string(shown_pieces),
                            ", ".join(labels[i] for i in chosen), predictions, " ".join(n for n in notes if n))


def _random_token(tokenizer, rng: random.Random, special: set[int]) -> int:
    size = len(tokenizer)
    for _ in range(100):
        token_id = rng.randrange(size)
        if token_id not in special:
            return token_id
    return rng.randrange(size)


# ---------------------------------------------------------------- causal LM


def causal_lm_example(tokenizer, text: str) -> ObjectiveExample:
    """GPT's objective on ``text``: each token predicted from its left context."""
    check_text(text)
    ids = list(tokenizer(text)["input_ids"])
    special = _special_ids(tokenizer)
    labels = _labels(tokenizer, ids)
    tokens = tuple(
        ObjectiveToken(i, token_id, label, "predicted" if i > 0 else "special" if token_id in special else "context",
                       label, label if i > 0 else "")
        for i, (token_id, label) in enumerate(zip(ids, labels))
    )
    predictions = []
    for i in range(1, min(len(ids), MAX_PREDICTIONS + 1)):
        context = tokenizer.decode(ids[:i])
        context = context if len(context) <= 60 else "\u2026" + context[-59:]
        predictions.append(Prediction(i, context, labels[i]))
    title, description = _header("causal_lm")
    note = _cap_note(len(ids) - 1)
    if len(ids) < 2:
        note = "A single token has nothing to its left: type more text to see predictions."
    return ObjectiveExample("causal_lm", title, description, tokens, tokenizer.decode(ids),
                            tokenizer.decode(ids[1:]), tuple(predictions), note)


# ---------------------------------------------------------------- span corruption


def random_spans_noise_mask(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0,
                            rng: random.Random | None = None, max_spans: int | None = None) -> list[bool]:
    """T5's noise mask: ``round(length * density)`` noise tokens in spans of mean length ``mean_span_length``.

    The sequence alternates kept and noise runs and starts with a kept run, as in T5's
    ``random_spans_noise_mask``; there is at least one noise and one kept token.
    """
    if length < 2:
        raise InvalidInputError("Span corruption needs at least two tokens: type a longer text.")
    if not 0 < noise_density < 1 or mean_span_length < 1:
        raise InvalidInputError("The noise density must be between 0 and 1 and the mean span length at least 1.")
    rng = rng or random.Random(0)
    noise = min(max(int(round(length * noise_density)), 1), length - 1)
    spans = max(int(round(noise / mean_span_length)), 1)
    spans = min(spans, noise, length - noise, max_spans or spans)

    def segment(items: int, segments: int) -> list[int]:
        cuts = sorted(rng.sample(range(1, items), segments - 1))
        bounds = [0, *cuts, items]
        return [b - a for a, b in zip(bounds, bounds[1:])]

    noise_lengths = segment(noise, spans)
    kept_lengths = segment(length - noise, spans)
    mask: list[bool] = []
    for kept, hidden in zip(kept_lengths, noise_lengths):
        mask += [False] * kept + [True] * hidden
    return mask


def sentinel_ids(tokenizer, limit: int = 1000) -> list[int]:
    """Ids of ``<extra_id_0>``, ``<extra_id_1>``, ... in order, as far as the tokenizer has them."""
    vocab = tokenizer.get_vocab()
    found = []
    for i in range(limit):
        token_id = vocab.get(f"<extra_id_{i}>")
        if token_id is None:
            break
        found.append(token_id)
    return found


def _word_span_mask(tokenizer, text: str, body: list[int], word_spans: Sequence[tuple[int, int]]) -> list[bool]:
    words = find_words(text)
    ranges = []
    for span in word_spans:
        try:
            start, end = (int(span[0]), int(span[1]))
        except (TypeError, ValueError, IndexError):
            raise InvalidInputError(f"A word span is a pair (first word, end word), not {span!r}.") from None
        if not 0 <= start < end <= len(words):
            raise InvalidInputError(f"The word span {start}-{end - 1} is outside the text, which has {len(words)} "
                                    f"words numbered from 0.")
        ranges.append((words[start].start, words[end - 1].end))
    try:
        offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, ValueError, TypeError):
        raise InvalidInputError("This tokenizer cannot map words to tokens; let the seed choose the spans.") from None
    mask = []
    for position in body:
        start, end = offsets[position]
        mask.append(end > start and any(start < r_end and end > r_start for r_start, r_end in ranges))
    if all(mask):
        raise InvalidInputError("The word spans cover the whole text; leave at least one word visible.")
    return mask


def _tidy(text: str) -> str:
    text = SENTINEL.sub(lambda m: f" {m.group(0)} ", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def span_corruption_example(tokenizer, text: str, seed: int = 0, noise_density: float = 0.15,
                            mean_span_length: float = 3.0,
                            word_spans: Sequence[tuple[int, int]] | None = None) -> SpanCorruptionExample:
    """T5's objective on ``text``: seeded random spans, or ``word_spans`` as half-open word ranges."""
    check_text(text)
    ids = list(tokenizer(text)["input_ids"])
    special = _special_ids(tokenizer)
    labels = _labels(tokenizer, ids)
    body = [i for i, token_id in enumerate(ids) if token_id not in special]
    sentinels = sentinel_ids(tokenizer)
    if word_spans:
        mask = _word_span_mask(tokenizer, text, body, word_spans)
    else:
        mask = random_spans_noise_mask(len(body), noise_density, mean_span_length, random.Random(seed),
                                       max_spans=len(sentinels) - 1 if len(sentinels) > 1 else None)
    runs: list[list[int]] = []  # positions (indices into ids) of each noise span
    previous = False
    for position, hidden in zip(body, mask):
        if hidden:
            if not previous:
                runs.append([])
            runs[-1].append(position)
        previous = hidden
    notes = []
    if sentinels and len(runs) > len(sentinels) - 1:
        raise InvalidInputError(f"{len(runs)} spans need {len(runs) + 1} sentinels but the tokenizer has "
                                f"{len(sentinels)}; choose fewer spans.")
    names = [f"<extra_id_{i}>" for i in range(len(runs) + 1)]
    span_of = {position: n for n, run in enumerate(runs) for position in run}
    eos = getattr(tokenizer, "eos_token_id", None)
    ends_with_eos = bool(ids) and eos is not None and ids[-1] == eos

    tokens = []
    for i, (token_id, label) in enumerate(zip(ids, labels)):
        if i in span_of:
            tokens.append(ObjectiveToken(i, token_id, label, "noise", "", label, span_of[i]))
        else:
            tokens.append(ObjectiveToken(i, token_id, label, "special" if token_id in special else "context", label,
                                         ""))
    spans = tuple(CorruptedSpan(names[n], tokenizer.decode([ids[p] for p in run]).strip(), run[0], run[-1] + 1)
                  for n, run in enumerate(runs))
    input_ids: list[int] = []
    target_ids: list[int] = []
    if sentinels:
        for i, token_id in enumerate(ids):
            if i in span_of:
                if i == runs[span_of[i]][0]:
                    input_ids.append(sentinels[span_of[i]])
            else:
                input_ids.append(token_id)
        for n, run in enumerate(runs):
            target_ids += [sentinels[n], *(ids[p] for p in run)]
        target_ids.append(sentinels[len(runs)])
        if ends_with_eos:
            target_ids.append(eos)
        model_input = _tidy(tokenizer.decode([i for i in input_ids if i != eos], skip_special_tokens=False))
    else:
        notes.append("This tokenizer has no sentinel tokens, so the example is for reading only.")
        parts, i = [], 0
        while i < len(ids):
            if i in span_of:
                parts.append(names[span_of[i]])
                i = runs[span_of[i]][-1] + 1
            else:
                start = i
                while i < len(ids) and i not in span_of:
                    i += 1
                parts.append(tokenizer.decode(ids[start:i], skip_special_tokens=True))
        model_input = _tidy("".join(f" {p} " if SENTINEL.fullmatch(p) else p for p in parts))
    target = " ".join([f"{span.sentinel} {span.text}" for span in spans] + [names[len(runs)]])
    predictions = tuple(Prediction(span.token_start, span.sentinel, span.text) for span in spans[:MAX_PREDICTIONS])
    title, description = _header("span_corruption")
    notes.append(_cap_note(len(spans)))
    return SpanCorruptionExample("span_corruption", title, description, tuple(tokens), model_input, target,
                                 predictions, " ".join(n for n in notes if n), spans, tuple(input_ids),
                                 tuple(target_ids))


def parse_span_output(output: str, span_count: int) -> list[str | None]:
    """The text the model wrote after each sentinel ``<extra_id_0> ... <extra_id_{span_count-1}>``.

    ``None`` for a sentinel the output does not contain. ``output`` is the decoded output with
    special tokens kept; padding and end-of-sequence markers are ignored.
    """
    fills: dict[int, str] = {}
    current = None
    pieces = re.split(r"(<extra_id_\d+>)", output.replace("<pad>", "").replace("</s>", ""))
    for part in pieces:
        match = SENTINEL.fullmatch(part)
        if match:
            current = int(match.group(1))
            fills.setdefault(current, "")
        elif current is not None and current in fills:
            fills[current] += part
    return [fills[n].strip() if n in fills else None for n in range(span_count)]


# ---------------------------------------------------------------- contrastive embedding and dispatch


def contrastive_example(tokenizer, text: str) -> ObjectiveExample:
    """Sentence-embedding training hides nothing: the whole text becomes one vector."""
    check_text(text)
    ids = list(tokenizer(text)["input_ids"])
    special = _special_ids(tokenizer)
    labels = _labels(tokenizer, ids)
    tokens = tuple(ObjectiveToken(i, token_id, label, "special" if token_id in special else "context", label, "")
                   for i, (token_id, label) in enumerate(zip(ids, labels)))
    title, description = _header("contrastive_embedding")
    return ObjectiveExample("contrastive_embedding", title, description, tokens, text,
                            "one vector: the mean of the token vectors, normalised", (),
                            "Nothing is hidden: the training pairs this sentence with a paraphrase (pulled "
                            "closer) and with the other sentences of the batch (pushed apart).")


def objective_example(objective: str, tokenizer, text: str, seed: int = 0) -> ObjectiveExample:
    """The example for a catalog objective code (masked_lm, causal_lm, span_corruption, contrastive_embedding)."""
    if objective == "masked_lm":
        return masked_lm_example(tokenizer, text, seed)
    if objective == "causal_lm":
        return causal_lm_example(tokenizer, text)
    if objective == "span_corruption":
        return span_corruption_example(tokenizer, text, seed)
    if objective == "contrastive_embedding":
        return contrastive_example(tokenizer, text)
    raise InvalidInputError(f"Unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}.")
