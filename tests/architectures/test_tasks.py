"""Each family's native task, on the tiny random models (every path offline) and on MiniLM and SmolLM2."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from playground.architectures import tasks
from playground.architectures.objectives import sentinel_ids
from playground.errors import InvalidInputError, InvalidParameterError, NoMaskError, UnsupportedTaskError
from tests.helpers import TRAINING_SENTENCES

TEXT = "The quick brown fox jumps over the lazy dog."


def _with_head(loaded, head, family):
    """The same model presented as another kind, to check that each task refuses the wrong head."""
    return replace(loaded, spec=replace(loaded.spec, head=head, family=family))


def _ranked(candidates):
    probabilities = [c.probability for c in candidates]
    return probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6


# ---------------------------------------------------------------- fill-mask (tiny BERT)


def test_fill_mask_with_a_typed_mask(bert):
    result = tasks.fill_mask(bert, "The quick [mask] fox jumps.", top_k=5)
    (prediction,) = result.predictions
    ids = bert.tokenizer(result.masked_text)["input_ids"]
    assert ids[prediction.position] == bert.tokenizer.mask_token_id
    assert len(prediction.candidates) == 5 and _ranked(prediction.candidates)
    assert prediction.candidates[0].token == bert.tokenizer.decode([prediction.candidates[0].token_id])
    assert "[MASK]" not in result.filled_text and result.hidden_word == "" and result.note == ""


def test_fill_mask_on_a_picked_word_and_on_two_masks(bert):
    by_word = tasks.fill_mask(bert, TEXT, mask="fox")
    by_number = tasks.fill_mask(bert, TEXT, mask=3)
    assert by_word.masked_text == by_number.masked_text == "The quick brown [MASK] jumps over the lazy dog."
    assert by_word.hidden_word == "fox"
    two = tasks.fill_mask(bert, "The [MASK] brown fox jumps over the [MASK] dog.", top_k=3)
    assert len(two.predictions) == 2 and two.predictions[0].position < two.predictions[1].position
    assert two.predictions[0].filled.count("[MASK]") == 1


def test_fill_mask_without_a_mask(bert):
    with pytest.raises(NoMaskError, match=r"no \[MASK\]"):
        tasks.fill_mask(bert, TEXT)
    with pytest.raises(NoMaskError, match="no word that could be hidden"):
        tasks.fill_mask(bert, "?! ...", auto_mask=True)
    result = tasks.fill_mask(bert, TEXT, auto_mask=True)
    assert result.hidden_word == "dog" and "'dog'" in result.note


def test_fill_mask_on_a_long_text(bert):
    long = " ".join(TRAINING_SENTENCES * 3)
    result = tasks.fill_mask(bert, "[MASK] " + long)
    assert "only the first 64 tokens" in result.note
    with pytest.raises(NoMaskError, match="beyond the first 64 tokens"):
        tasks.fill_mask(bert, long + " [MASK]")


def test_fill_mask_needs_a_masked_lm_head(gpt2, minilm, bert):
    with pytest.raises(UnsupportedTaskError, match="BERT"):
        tasks.fill_mask(gpt2, "The [MASK] sat.")
    with pytest.raises(UnsupportedTaskError):
        tasks.fill_mask(minilm, "The [MASK] sat.")
    with pytest.raises(InvalidParameterError, match="top_k"):
        tasks.fill_mask(bert, "The [MASK] sat.", top_k=0)


# ---------------------------------------------------------------- embeddings (real MiniLM)


def test_minilm_embeddings_match_sentence_transformers(minilm):
    # reference values computed with sentence-transformers 5 on the packaged model
    vectors = tasks.embed(minilm, ["The cat sits on the mat.", "A cat is sitting on a rug.",
                                   "Stock markets fell sharply today."])
    assert vectors.shape == (3, 384)
    assert [round(float(v), 4) for v in vectors[0, :4]] == [0.1342, -0.0329, -0.0248, 0.0414]
    assert math.isclose(float(vectors[0] @ vectors[1]), 0.76888, abs_tol=1e-4)
    assert math.isclose(float(vectors[0] @ vectors[2]), 0.04623, abs_tol=1e-4)
    assert all(math.isclose(float(v.norm()), 1.0, abs_tol=1e-5) for v in vectors)


def test_a_paraphrase_scores_higher_than_an_unrelated_sentence(minilm):
    result = tasks.similarity(minilm, "The cat sits on the mat.",
                              "Stock markets fell sharply today.\nA cat is sitting on a rug.")
    unrelated, paraphrase = result.scores
    assert paraphrase.score > unrelated.score + 0.3
    assert (paraphrase.rank, unrelated.rank) == (1, 2) and result.ranked[0] is paraphrase


def test_zero_shot_by_similarity_to_label_descriptions(minilm):
    result = tasks.zero_shot(minilm, "The striker scored twice in the last minutes of the match.")
    assert result.best.label == "sport"
    assert math.isclose(sum(label.probability for label in result.labels), 1.0, abs_tol=1e-6)
    assert [label.probability for label in result.labels] == sorted((x.probability for x in result.labels),
                                                                    reverse=True)
    custom = tasks.zero_shot(minilm, "Whisk the eggs with sugar.", "baking: A recipe for cakes.\npolitics")
    assert custom.best.label == "baking" and custom.labels[1].description == "This text is about politics."


def test_embedding_tasks_refuse_bad_input(minilm, bert):
    with pytest.raises(InvalidInputError, match="at least one"):
        tasks.similarity(minilm, "A sentence.", "\n  \n")
    with pytest.raises(InvalidInputError, match="empty"):
        tasks.similarity(minilm, "", ["x"])
    with pytest.raises(UnsupportedTaskError, match="all-MiniLM"):
        tasks.similarity(bert, "A sentence.", ["x"])
    long = " ".join(TRAINING_SENTENCES * 30)
    assert "truncated" in tasks.similarity(minilm, long, ["x"]).note


# ---------------------------------------------------------------- encoder-decoder (tiny T5)


def test_text_to_text(t5):
    result = tasks.text_to_text(t5, TEXT, "Summarize:", max_new_tokens=6)
    assert result.model_input == "Summarize: " + TEXT
    assert 1 <= result.output_tokens <= 6 and isinstance(result.output, str)
    assert tasks.instruction_input("Translate {text} now", "this") == "Translate this now"
    assert tasks.instruction_input("", "this") == "this"
    with pytest.raises(InvalidParameterError, match="max_new_tokens"):
        tasks.text_to_text(t5, TEXT, max_new_tokens=0)
    with pytest.raises(UnsupportedTaskError, match="FLAN-T5"):
        tasks.text_to_text(_with_head(t5, "causal_lm", "decoder"), TEXT)


def test_span_corruption_runs_the_model_and_reads_its_fills(t5, monkeypatch):
    result = tasks.span_corruption(t5, TEXT, word_spans=[(1, 3), (5, 6)])
    example = result.example
    assert example.model_input == "The <extra_id_0> fox jumps <extra_id_1> the lazy dog."
    assert example.target == "<extra_id_0> quick brown <extra_id_1> over <extra_id_2>"
    assert [f.sentinel for f in result.fills] == ["<extra_id_0>", "<extra_id_1>"]
    assert [f.original for f in result.fills] == ["quick brown", "over"]

    # a model that has learnt its objective writes exactly the target: every fill is read back
    import torch

    start = t5.model.config.decoder_start_token_id
    perfect = torch.tensor([[start, *example.target_ids]])
    monkeypatch.setattr(t5.model, "generate", lambda **kwargs: perfect)
    learnt = tasks.span_corruption(t5, TEXT, word_spans=[(1, 3), (5, 6)])
    assert [(f.predicted, f.found, f.correct) for f in learnt.fills] == [("quick brown", True, True),
                                                                         ("over", True, True)]


def test_span_corruption_by_seed_is_deterministic(t5):
    first = tasks.span_corruption(t5, TEXT * 2, seed=7)
    assert first.example.input_ids == tasks.span_corruption(t5, TEXT * 2, seed=7).example.input_ids
    assert len(first.fills) == len(first.example.spans) >= 1
    assert first.example.input_ids[-1] == t5.tokenizer.eos_token_id
    assert set(first.example.input_ids) & set(sentinel_ids(t5.tokenizer))


# ---------------------------------------------------------------- decoders (tiny GPT-2, SmolLM2)


def test_next_token_distribution(gpt2):
    result = tasks.next_token(gpt2, "The quick brown", top_k=7)
    assert len(result.candidates) == 7 and _ranked(result.candidates)
    assert all(c.token == gpt2.tokenizer.decode([c.token_id]) for c in result.candidates)
    assert result.context_tokens == len(gpt2.tokenizer("The quick brown")["input_ids"])
    with pytest.raises(UnsupportedTaskError, match="SmolLM2"):
        tasks.next_token(_with_head(gpt2, "masked_lm", "encoder"), "The")


def test_step_appends_the_most_likely_token_or_the_chosen_one(gpt2):
    before = tasks.next_token(gpt2, "The quick brown", top_k=5)
    greedy = tasks.step(gpt2, "The quick brown", top_k=5)
    assert greedy.chosen == before.candidates[0] and greedy.chosen_from == before.candidates
    assert greedy.text == "The quick brown" + greedy.chosen.token
    assert greedy.distribution == tasks.next_token(gpt2, greedy.text, top_k=5).candidates
    pick = before.candidates[3].token_id
    chosen = tasks.step(gpt2, "The quick brown", choice=pick)
    assert chosen.chosen.token_id == pick and chosen.text.endswith(chosen.chosen.token)
    sampled = [tasks.step(gpt2, "The quick brown", temperature=1.5, seed=11).chosen for _ in range(2)]
    assert sampled[0] == sampled[1]
    with pytest.raises(InvalidInputError, match="not in the vocabulary"):
        tasks.step(gpt2, "The quick brown", choice=10**6)


def test_continuation_greedy_and_sampled(gpt2):
    greedy = tasks.continue_text(gpt2, "The quick brown", max_new_tokens=6)
    assert greedy.steps[0].token == tasks.next_token(gpt2, "The quick brown", 1).candidates[0]
    assert greedy.finish_reason in ("stop", "length") and not greedy.sampled
    # the cached one-token-at-a-time loop agrees with stepping on the full text
    assert greedy.steps[1].token.token_id == tasks.step(gpt2, "The quick brown" + greedy.steps[0].token.token
                                                        ).chosen.token_id
    a = tasks.continue_text(gpt2, "The quick brown", max_new_tokens=6, temperature=1.0, seed=3)
    b = tasks.continue_text(gpt2, "The quick brown", max_new_tokens=6, temperature=1.0, seed=3)
    assert a.continuation == b.continuation and a.sampled and a.full_text.startswith("The quick brown")
    with pytest.raises(InvalidParameterError, match="max_new_tokens"):
        tasks.continue_text(gpt2, "The", max_new_tokens=1000)
    with pytest.raises(InvalidParameterError, match="exceed the context"):
        tasks.continue_text(gpt2, " ".join(TRAINING_SENTENCES), max_new_tokens=100)


def test_long_text_keeps_its_end_for_the_next_token(gpt2):
    long = " ".join(TRAINING_SENTENCES * 3)
    result = tasks.next_token(gpt2, long)
    assert result.context_tokens == 96 and "only the last 96 tokens" in result.note


def test_smollm2_knows_the_capital_of_france(smollm2):
    result = tasks.next_token(smollm2, "The capital of France is", top_k=5)
    assert " Paris" in [c.token for c in result.candidates]
    step = tasks.step(smollm2, "The capital of France is", top_k=5)
    assert step.text == "The capital of France is Paris"
