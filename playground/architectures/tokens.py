"""Tokenisation: the same text cut into each model's own tokens, so vocabulary differences show.

- :func:`tokenize` gives a :class:`Tokenization`: every token as a :class:`TokenPiece`
  (id, the vocabulary entry with its ``Ġ`` / ``##`` / ``▁`` markers, the text it decodes to,
  whether it is a special token the tokenizer added), the count, and a note when the
  text is longer than the model's context (then only the first ``context`` tokens are listed).
- :func:`encode` is what every task uses to feed a model: the ids it reads after truncation to its
  context (decoders keep the *end* of a long text, since they predict what follows it; encoders keep
  the start), the full count and the note.
- :func:`token_label` is a short, readable label for heatmap axes.
"""

from __future__ import annotations

from dataclasses import dataclass

from playground.architectures.loading import LoadedModel
from playground.architectures.text import check_text
from playground.errors import InvalidInputError


@dataclass(frozen=True)
class TokenPiece:
    """One token: its position, id, vocabulary entry (``piece``), decoded ``text`` and whether it is special."""

    index: int
    id: int
    piece: str
    text: str
    special: bool

    @property
    def label(self) -> str:
        """Short text for a heatmap axis or a coloured chip (spaces shown as \u2423)."""
        return token_label(self.piece, self.text, self.special)


@dataclass(frozen=True)
class Tokenization:
    """A text as one model's tokenizer sees it."""

    model_id: str
    tokenizer_kind: str  # "Byte-level BPE", "WordPiece", "SentencePiece Unigram", ...
    tokens: tuple[TokenPiece, ...]  # at most context_length of them
    count: int  # tokens of the whole text, special tokens included
    context_length: int
    truncated: bool
    note: str = ""

    @property
    def ids(self) -> list[int]:
        return [t.id for t in self.tokens]


@dataclass(frozen=True)
class Encoded:
    """The ids a model reads for a text, after truncation to its context."""

    ids: tuple[int, ...]
    total: int  # tokens in the whole text
    truncated: bool
    note: str = ""


def encode(loaded: LoadedModel, text: str, keep: str | None = None, limit: int | None = None) -> Encoded:
    """Token ids for ``text`` (with the tokenizer's usual special tokens), cut to the model's context.

    ``keep`` is "start" or "end" (default: "end" for decoders, "start" otherwise); ``limit``
    overrides the context (the number of tokens the model may read).
    """
    check_text(text)
    tokenizer = loaded.tokenizer
    limit = limit or loaded.max_length
    ids = list(tokenizer(text)["input_ids"])
    total = len(ids)
    if not ids:
        raise InvalidInputError(f"The text gives no tokens for {loaded.spec.name}: type some words.")
    if total <= limit:
        return Encoded(tuple(ids), total, False)
    keep = keep or ("end" if loaded.family == "decoder" else "start")
    if keep == "end":
        ids = ids[-limit:]
        where = f"the last {limit}"
    else:
        ids = list(tokenizer(text, truncation=True, max_length=limit)["input_ids"])
        where = f"the first {limit}"
    note = (f"The text is {total:,} tokens for {loaded.spec.name}, more than the {limit:,} it reads at once; "
            f"only {where} tokens were used.")
    return Encoded(tuple(ids), total, True, note)


def token_label(piece: str, text: str, special: bool) -> str:
    """A short label for a heatmap axis: the decoded text with spaces and newlines made visible."""
    if special or not text:
        return piece
    return text.replace("\n", "\u21b5").replace(" ", "\u2423")


def pieces(loaded: LoadedModel, ids: list[int] | tuple[int, ...], start: int = 0) -> tuple[TokenPiece, ...]:
    """TokenPiece for each id (``start`` numbers the first one)."""
    tokenizer = loaded.tokenizer
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocab_pieces = tokenizer.convert_ids_to_tokens(list(ids))
    return tuple(
        TokenPiece(start + i, int(token_id), str(piece), tokenizer.decode([token_id]), int(token_id) in special_ids)
        for i, (token_id, piece) in enumerate(zip(ids, vocab_pieces))
    )


def tokenizer_kind(tokenizer) -> str:
    """The tokenisation algorithm: Byte-level BPE, SentencePiece BPE, BPE, WordPiece, SentencePiece Unigram, ..."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        return type(tokenizer).__name__
    model = type(backend.model).__name__
    pipeline = f"{backend.pre_tokenizer!r} {backend.decoder!r}"
    if model == "BPE":
        if "ByteLevel" in pipeline:
            return "Byte-level BPE"
        if "Metaspace" in pipeline or "\u2581" in pipeline:
            return "SentencePiece BPE"
        return "BPE"
    if model == "Unigram":
        return "SentencePiece Unigram"
    if model == "WordPiece":
        return "WordPiece"
    if model == "WordLevel":
        return "Word-level"
    return model


def tokenize(loaded: LoadedModel, text: str) -> Tokenization:
    """``text`` cut into ``loaded``'s tokens (the first ``context_length`` of them when it is longer)."""
    check_text(text)
    ids = list(loaded.tokenizer(text)["input_ids"])
    limit = loaded.context_length
    truncated = len(ids) > limit
    note = ""
    if truncated:
        note = (f"The text is {len(ids):,} tokens for {loaded.spec.name}, more than its context of {limit:,}; "
                f"only the first {limit:,} are shown.")
    return Tokenization(loaded.model_id, tokenizer_kind(loaded.tokenizer), pieces(loaded, ids[:limit]), len(ids),
                        limit, truncated, note)
