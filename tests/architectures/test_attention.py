"""Real attention weights: shapes per family, the once-per-input cache, windowing of long inputs."""

from __future__ import annotations

import numpy as np
import pytest

from playground.architectures.attention import extract_attention
from playground.errors import InvalidInputError
from tests.helpers import SMOLLM2, TRAINING_SENTENCES

TEXT = "The quick brown fox jumps over the lazy dog."
LONG = " ".join(TRAINING_SENTENCES * 2)


def _count_forwards(model):
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def test_encoder_self_attention_shape_and_rows(bert):
    maps = extract_attention(bert, TEXT)
    n = len(bert.tokenizer(TEXT)["input_ids"])
    assert maps.kinds == ("self",) and maps.shape() == (2, 4, n, n)
    assert maps.tokens[0] == "[CLS]" and maps.tokens[-1] == "[SEP]" and maps.note == ""
    assert np.allclose(maps.maps["self"].sum(axis=-1), 1.0, atol=1e-4)  # softmax rows
    assert maps.maps["self"].dtype == np.float32


def test_decoder_attention_is_causal(gpt2):
    maps = extract_attention(gpt2, TEXT)
    array = maps.maps["self"]
    n = array.shape[-1]
    assert np.allclose(array[..., np.triu_indices(n, k=1)[0], np.triu_indices(n, k=1)[1]], 0.0)
    view = maps.view("self", layer=1, head=2)
    assert len(view.weights) == len(view.rows) == n and view.weights[0][0] == pytest.approx(1.0)
    mean = maps.view(layer=0)
    assert mean.head is None and mean.weights[2][1] == pytest.approx(float(array[0, :, 2, 1].mean()), abs=1e-5)


def test_encoder_decoder_gives_encoder_decoder_and_cross_attention(t5):
    target = "fox jumps"
    maps = extract_attention(t5, TEXT, target=target)
    n = len(t5.tokenizer(TEXT)["input_ids"])
    m = len(t5.tokenizer(target)["input_ids"])  # decoder start token + target without its </s>
    assert maps.kinds == ("encoder", "decoder", "cross") and maps.target == target
    assert maps.shape("encoder") == (2, 4, n, n)
    assert maps.shape("decoder") == (2, 4, m, m)
    assert maps.shape("cross") == (2, 4, m, n)  # decoder x encoder
    assert maps.target_tokens[0] == "<pad>"  # T5's decoder start token
    cross = maps.view("cross", layer=1, head=0)
    assert (len(cross.rows), len(cross.cols)) == (m, n)
    decoder = maps.maps["decoder"]
    assert np.allclose(decoder[..., 0, 1:], 0.0)  # the decoder is causal
    own = extract_attention(t5, TEXT)
    assert "own greedy output" in own.note and own.shape("cross")[3] == n


def test_smollm2_attention(smollm2):
    maps = extract_attention(smollm2, "The capital of France is")
    assert maps.shape() == (30, 9, 5, 5)
    assert maps.tokens == ("The", "\u2423capital", "\u2423of", "\u2423France", "\u2423is")


def test_extraction_runs_once_per_model_and_text(lab, gpt2):
    calls, handle = _count_forwards(gpt2.model)
    try:
        text = "Attention is extracted once for this sentence."
        first = lab.attention("tiny-gpt2", text)
        assert len(calls) == 1
        again = lab.attention("tiny-gpt2", text)
        views = [lab.attention_view("tiny-gpt2", text, layer=layer, head=head) for layer in (0, 1) for head in
                 (None, 0, 3)]
        assert again is first and len(calls) == 1 and len(views) == 6
        lab.attention("tiny-gpt2", text + " And a new one.")
        assert len(calls) == 2
    finally:
        handle.remove()


def test_long_inputs_are_windowed_and_the_note_says_so(gpt2):
    total = min(len(gpt2.tokenizer(LONG)["input_ids"]), 96)
    assert total > 64
    maps = extract_attention(gpt2, LONG)
    assert maps.shape() == (2, 4, 64, 64) and maps.window == (0, 64) and maps.total_tokens == total
    assert f"Showing tokens 0 to 63 of {total}" in maps.note
    later = extract_attention(gpt2, LONG, max_tokens=16, window_start=20)
    assert later.shape() == (2, 4, 16, 16) and later.window == (20, 36)
    assert "before the window is not drawn" in later.note
    assert later.tokens[0] == maps.tokens[20]


def test_bad_attention_requests(gpt2, t5):
    maps = extract_attention(gpt2, TEXT)
    with pytest.raises(InvalidInputError, match="Layer 2 does not exist: choose 0 to 1"):
        maps.view(layer=2)
    with pytest.raises(InvalidInputError, match="Head 4 does not exist"):
        maps.view(layer=0, head=4)
    with pytest.raises(InvalidInputError, match="no 'cross' attention"):
        maps.view("cross")
    with pytest.raises(InvalidInputError, match="window must start"):
        extract_attention(gpt2, TEXT, window_start=500)
    with pytest.raises(InvalidInputError, match="between 1 and 256"):
        extract_attention(gpt2, TEXT, max_tokens=0)
    with pytest.raises(InvalidInputError, match="target is empty"):
        extract_attention(t5, TEXT, target=" ")
    with pytest.raises(InvalidInputError, match="empty"):
        extract_attention(gpt2, "")


def test_lab_attention_for_the_default_decoder_is_cached(lab):
    first = lab.attention(SMOLLM2, "Lisbon is the capital of Portugal.")
    loads = lab.attention_cache.stats().loads
    assert lab.attention(SMOLLM2, "Lisbon is the capital of Portugal.") is first
    assert lab.attention_cache.stats().loads == loads


def test_cross_attention_on_the_span_corruption_target(lab):
    from playground.architectures.tasks import span_corruption

    result = span_corruption(lab.load("tiny-t5"), TEXT, word_spans=[(1, 3)])
    maps = lab.attention("tiny-t5", result.example.model_input, target=result.example.target)
    assert "<extra_id_0>" in maps.tokens and maps.target_tokens[1] == "<extra_id_0>"
    assert maps.shape("cross")[2:] == (len(maps.target_tokens), len(maps.tokens))
