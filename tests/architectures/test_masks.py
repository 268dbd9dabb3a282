"""Mask patterns of the three families (pure Python)."""

from __future__ import annotations

import pytest

from playground.architectures.masks import bidirectional_mask, causal_mask, cross_mask, mask_patterns
from playground.errors import InvalidInputError

TOKENS = ["The", "cat", "sat", "down"]


def test_causal_mask_is_lower_triangular():
    values = causal_mask(5)
    assert all(values[i][j] == (1 if j <= i else 0) for i in range(5) for j in range(5))
    assert [sum(row) for row in values] == [1, 2, 3, 4, 5]


def test_bidirectional_and_cross_masks_are_full():
    assert bidirectional_mask(3) == ((1, 1, 1),) * 3
    cross = cross_mask(2, 5)
    assert len(cross) == 2 and all(len(row) == 5 and set(row) == {1} for row in cross)


def test_encoder_family_is_bidirectional():
    patterns = mask_patterns("encoder", TOKENS)
    (matrix,) = patterns.matrices
    assert matrix.name == "bidirectional" and matrix.shape == (4, 4)
    assert all(v == 1 for row in matrix.values for v in row)
    assert matrix.rows == matrix.cols == tuple(TOKENS)


def test_decoder_family_is_causal():
    (matrix,) = mask_patterns("decoder", TOKENS).matrices
    assert matrix.name == "causal" and matrix.values == causal_mask(4)


def test_encoder_decoder_has_full_encoder_causal_decoder_and_decoder_by_encoder_cross():
    patterns = mask_patterns("encoder-decoder", TOKENS, ["<pad>", "Die", "Katze"])
    assert [m.name for m in patterns.matrices] == ["encoder", "decoder", "cross"]
    assert patterns.get("encoder").values == bidirectional_mask(4)
    assert patterns.get("decoder").values == causal_mask(3)
    cross = patterns.get("cross")
    assert cross.shape == (3, 4)  # decoder x encoder
    assert cross.rows == ("<pad>", "Die", "Katze") and cross.cols == tuple(TOKENS)
    assert patterns.note == ""


def test_without_target_tokens_the_input_stands_in_and_the_note_says_so():
    patterns = mask_patterns("encoder-decoder", TOKENS)
    assert patterns.get("cross").shape == (4, 4) and "stand in" in patterns.note


def test_long_inputs_are_cut_with_a_note():
    patterns = mask_patterns("decoder", [f"t{i}" for i in range(100)], max_tokens=64)
    assert patterns.matrices[0].shape == (64, 64)
    assert "first 64 of 100" in patterns.note


def test_bad_family_or_no_tokens():
    with pytest.raises(InvalidInputError, match="Unknown family"):
        mask_patterns("recurrent", TOKENS)
    with pytest.raises(InvalidInputError, match="no tokens"):
        mask_patterns("encoder", [])
