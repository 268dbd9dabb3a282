"""The Architectures tab through its API (packaged MiniLM and SmolLM2; FLAN-T5 is Hub-only, so offline here)."""

from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError

TEXT = "The capital of France is Paris, a city famous for its museums."


def run(client, text=TEXT, encoder="all-minilm-l6-v2", encdec="flan-t5-small", decoder="smollm2-135m-instruct",
        candidates="Paris is the capital of France.\nThe cake needs two eggs.", labels="travel: cities and trips\n"
        "cooking: food and recipes"):
    return client.predict(text, encoder, encdec, decoder, "", "Translate English to German:", candidates, labels, 0, 5,
                          api_name="/architectures_run")


def test_three_families_side_by_side(client):
    outputs = run(client)
    summary, enc, encdec, dec = outputs[0], outputs[1:7], outputs[7:13], outputs[13:19]
    assert summary.startswith("3 models")
    # Encoder: zero-shot label, similarity ranking, facts, tokens, objective.
    assert enc[2]["label"] == "travel"
    ranked = enc[3].split("<tr>")[2]  # the header row, then the first-ranked sentence
    assert "Paris is the capital of France." in ranked and '<td class="num">1</td>' in ranked
    facts = dict(enc[1]["data"])
    assert facts["parameters"] == "22,713,216" and facts["tokenizer"].startswith("WordPiece")
    assert "[CLS]" in enc[4] and "tok-id" in enc[4]
    # Encoder-decoder: unavailable offline, said so, and the other columns still work.
    assert "Not available" in encdec[0] and "flan-t5-small" in encdec[0]
    # Decoder: next-token distribution with probabilities, and the SmolLM2 facts.
    assert len(dec[2]["confidences"]) == 5
    assert dict(dec[1]["data"])["parameters"] == "134,515,008"
    assert "Causal language modelling" in dec[5]
    # Attention of the first model, with its mask pattern.
    heatmap, mask = outputs[20], outputs[21]
    assert "<table>" in heatmap and "bidirectional mask" in mask


def test_attention_view_for_the_decoder_is_causal(client):
    run(client)
    heatmap, mask, kind, layer, head = client.predict("smollm2-135m-instruct", TEXT, "self", 3, 2,
                                                      api_name="/architectures_attention")
    assert "layer 3 · head 2" in heatmap
    assert "causal mask" in mask


def test_step_adds_the_most_likely_token(client):
    run(client)
    # The running text lives in session state, which the API does not expose; it starts from the input text.
    label, text = client.predict("smollm2-135m-instruct", "The capital of France is", 5,
                                 api_name="/architectures_step")[:2]
    assert text.startswith("**Text so far:** The capital of France is")
    assert len(label["confidences"]) == 5


def test_empty_text_is_refused_clearly(client):
    with pytest.raises(AppError, match="(?i)empty"):
        run(client, text="   ")


def test_continuation_greedy_and_sampled(client):
    run(client)
    label, text = client.predict("smollm2-135m-instruct", "The capital of France is", 6, 0.0, 0,
                                 api_name="/architectures_continue")[:2]
    assert "6 tokens, greedy" in text
    label, text = client.predict("smollm2-135m-instruct", "Once upon a time", 6, 0.9, 3,
                                 api_name="/architectures_continue")[:2]
    assert "sampled" in text and label["confidences"]
