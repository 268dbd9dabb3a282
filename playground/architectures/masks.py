"""Attention mask patterns of the three families, as 0/1 matrices (pure Python, no model needed).

A mask says which tokens (columns, the keys) each token (rows, the queries) may look at:

- encoder (BERT, MiniLM): **bidirectional**, every token sees every token (all ones);
- decoder (GPT, Llama): **causal**, a token sees itself and the tokens to its left (lower-triangular);
- encoder-decoder (T5): the **encoder** is bidirectional over the input, the **decoder** is causal over
  the output, and **cross**-attention lets every output token see every input token
  (a decoder x encoder matrix of ones).

:func:`mask_patterns` builds :class:`MaskPatterns` for a family from token labels (so the UI can
draw them on the user's own tokens); at most ``max_tokens`` per side, with a note when cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from playground.errors import InvalidInputError

Matrix = tuple[tuple[int, ...], ...]
MAX_MASK_TOKENS = 64

_DESCRIPTIONS = {
    "bidirectional": "Every token attends to every token, left and right.",
    "causal": "Each token attends to itself and the tokens before it, never to later ones.",
    "encoder": "Encoder self-attention: every input token sees the whole input.",
    "decoder": "Decoder self-attention: each output token sees only the output tokens before it.",
    "cross": "Cross-attention: every output token sees every input token (rows: output, columns: input).",
}


def bidirectional_mask(n: int) -> Matrix:
    return tuple(tuple(1 for _ in range(n)) for _ in range(n))


def causal_mask(n: int) -> Matrix:
    return tuple(tuple(1 if col <= row else 0 for col in range(n)) for row in range(n))


def cross_mask(decoder_tokens: int, encoder_tokens: int) -> Matrix:
    return tuple(tuple(1 for _ in range(encoder_tokens)) for _ in range(decoder_tokens))


@dataclass(frozen=True)
class MaskMatrix:
    """One mask: ``values[row][col]`` is 1 when query ``rows[row]`` may attend to key ``cols[col]``."""

    name: str  # "bidirectional", "causal", "encoder", "decoder" or "cross"
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    values: Matrix
    description: str

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)


@dataclass(frozen=True)
class MaskPatterns:
    family: str
    matrices: tuple[MaskMatrix, ...]
    note: str = ""

    def get(self, name: str) -> MaskMatrix:
        return next(m for m in self.matrices if m.name == name)


def mask_patterns(family: str, tokens: Sequence[str], target_tokens: Sequence[str] | None = None,
                  max_tokens: int = MAX_MASK_TOKENS) -> MaskPatterns:
    """The masks of ``family`` drawn on ``tokens`` (and ``target_tokens``, the decoder side of an encoder-decoder)."""
    if not tokens:
        raise InvalidInputError("There are no tokens to draw a mask on: type some text.")
    notes = []
    source = tuple(tokens[:max_tokens])
    if len(tokens) > max_tokens:
        notes.append(f"Only the first {max_tokens} of {len(tokens)} tokens are drawn.")
    if family == "encoder":
        n = len(source)
        matrices = (MaskMatrix("bidirectional", source, source, bidirectional_mask(n), _DESCRIPTIONS["bidirectional"]),)
    elif family == "decoder":
        n = len(source)
        matrices = (MaskMatrix("causal", source, source, causal_mask(n), _DESCRIPTIONS["causal"]),)
    elif family == "encoder-decoder":
        if not target_tokens:
            target_tokens = tokens
            notes.append("No output tokens were given, so the input tokens stand in for the decoder side.")
        target = tuple(target_tokens[:max_tokens])
        if len(target_tokens) > max_tokens:
            notes.append(f"Only the first {max_tokens} of {len(target_tokens)} output tokens are drawn.")
        n, m = len(source), len(target)
        matrices = (
            MaskMatrix("encoder", source, source, bidirectional_mask(n), _DESCRIPTIONS["encoder"]),
            MaskMatrix("decoder", target, target, causal_mask(m), _DESCRIPTIONS["decoder"]),
            MaskMatrix("cross", target, source, cross_mask(m, n), _DESCRIPTIONS["cross"]),
        )
    else:
        raise InvalidInputError(f"Unknown family {family!r}: use encoder, decoder or encoder-decoder.")
    return MaskPatterns(family, matrices, " ".join(notes))
