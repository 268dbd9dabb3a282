"""Pre-training objectives on the user's own text: roles, seeds, the 80/10/10 rule, sentinels and targets."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from playground.architectures.objectives import (
    ROLES,
    causal_lm_example,
    contrastive_example,
    masked_lm_example,
    objective_example,
    parse_span_output,
    random_spans_noise_mask,
    sentinel_ids,
    span_corruption_example,
)
from playground.errors import InvalidInputError
from tests.helpers import TINY_SENTINELS

TEXT = "The quick brown fox jumps over the lazy dog."
LONG = " ".join(["The quick brown fox jumps over the lazy dog."] * 6)


# ---------------------------------------------------------------- masked LM


def test_mlm_selects_15_percent_of_ordinary_tokens_and_is_seeded(bert):
    tokenizer = bert.tokenizer
    example = masked_lm_example(tokenizer, LONG, seed=3)
    ordinary = [t for t in example.tokens if t.role != "special"]
    selected = [t for t in example.tokens if t.role in ("masked", "random", "unchanged")]
    assert len(selected) == max(1, round(len(ordinary) * 0.15))
    assert {t.role for t in example.tokens} <= set(ROLES)
    assert example.tokens[0].role == example.tokens[-1].role == "special"  # [CLS] and [SEP] are never chosen
    assert masked_lm_example(tokenizer, LONG, seed=3) == example
    assert masked_lm_example(tokenizer, LONG, seed=4) != example
    for token in selected:
        assert token.target == token.text
        if token.role == "masked":
            assert token.shown == "[MASK]"
        if token.role == "unchanged":
            assert token.shown == token.text
    assert [p.position for p in example.predictions] == [t.index for t in selected]
    assert example.model_input.count("[MASK]") == sum(t.role == "masked" for t in selected)


def test_mlm_follows_the_80_10_10_rule(bert):
    roles = Counter()
    for seed in range(300):
        example = masked_lm_example(bert.tokenizer, LONG, seed=seed)
        roles.update(t.role for t in example.tokens if t.role in ("masked", "random", "unchanged"))
    total = sum(roles.values())
    assert total > 2000
    assert 0.76 < roles["masked"] / total < 0.84
    assert 0.07 < roles["random"] / total < 0.13
    assert 0.07 < roles["unchanged"] / total < 0.13


def test_mlm_on_a_tokenizer_without_a_mask_token_says_so(gpt2):
    example = masked_lm_example(gpt2.tokenizer, TEXT, seed=0)
    assert "no mask token" in example.note
    with pytest.raises(InvalidInputError, match="empty"):
        masked_lm_example(gpt2.tokenizer, "  ")


# ---------------------------------------------------------------- causal LM


def test_causal_lm_predicts_every_token_from_its_left_context(gpt2):
    tokenizer = gpt2.tokenizer
    ids = tokenizer(TEXT)["input_ids"]
    example = causal_lm_example(tokenizer, TEXT)
    assert len(example.predictions) == len(ids) - 1
    for prediction in example.predictions:
        i = prediction.position
        assert prediction.given == tokenizer.decode(ids[:i])
        assert prediction.target == example.tokens[i].text
    assert example.tokens[0].role == "context" and all(t.role == "predicted" for t in example.tokens[1:])
    assert example.target == tokenizer.decode(ids[1:])  # the input shifted left by one token


# ---------------------------------------------------------------- span corruption


@pytest.mark.parametrize("length", [2, 10, 37, 200])
def test_random_spans_noise_mask_matches_t5s_shape(length):
    mask = random_spans_noise_mask(length, 0.15, 3.0, random.Random(1))
    noise = min(max(round(length * 0.15), 1), length - 1)
    assert len(mask) == length and sum(mask) == noise
    assert mask[0] is False  # T5 starts with a kept run
    spans = sum(1 for i, hidden in enumerate(mask) if hidden and (i == 0 or not mask[i - 1]))
    assert spans == min(max(round(noise / 3), 1), noise, length - noise)
    assert random_spans_noise_mask(length, 0.15, 3.0, random.Random(1)) == mask


def test_random_spans_need_two_tokens():
    with pytest.raises(InvalidInputError, match="at least two tokens"):
        random_spans_noise_mask(1)


def test_span_corruption_input_and_target_rebuild_the_original(t5):
    tokenizer = t5.tokenizer
    sentinels = sentinel_ids(tokenizer)
    assert len(sentinels) == TINY_SENTINELS
    original = tokenizer(LONG)["input_ids"]
    example = span_corruption_example(tokenizer, LONG, seed=5)
    spans = example.spans
    assert spans and [s.sentinel for s in spans] == [f"<extra_id_{i}>" for i in range(len(spans))]
    noise = [t for t in example.tokens if t.role == "noise"]
    assert abs(len(noise) - 0.15 * (len(original) - 1)) <= 1
    # the target is: sentinel 0, its tokens, sentinel 1, ..., one more sentinel, </s>
    target = list(example.target_ids)
    assert target[-2:] == [sentinels[len(spans)], tokenizer.eos_token_id]
    rebuilt, pieces, current = [], {}, None
    for token_id in target[:-2]:
        if token_id in sentinels:
            current = sentinels.index(token_id)
            pieces[current] = []
        else:
            pieces[current].append(token_id)
    for token_id in example.input_ids:
        rebuilt += pieces[sentinels.index(token_id)] if token_id in sentinels else [token_id]
    assert rebuilt == original
    assert example.target.startswith("<extra_id_0> ") and example.target.endswith(f"<extra_id_{len(spans)}>")
    assert span_corruption_example(tokenizer, LONG, seed=5) == example
    assert span_corruption_example(tokenizer, LONG, seed=6).input_ids != example.input_ids


def test_span_corruption_on_word_spans_looks_like_the_t5_paper(t5):
    example = span_corruption_example(t5.tokenizer, TEXT, word_spans=[(1, 3), (5, 6)])
    assert example.model_input == "The <extra_id_0> fox jumps <extra_id_1> the lazy dog."
    assert example.target == "<extra_id_0> quick brown <extra_id_1> over <extra_id_2>"
    assert [(p.given, p.target) for p in example.predictions] == [("<extra_id_0>", "quick brown"),
                                                                  ("<extra_id_1>", "over")]
    assert {t.span for t in example.tokens if t.role == "noise"} == {0, 1}
    # the texts shown tokenise back to exactly the ids the model reads and must write
    assert tuple(t5.tokenizer(example.model_input)["input_ids"]) == example.input_ids
    assert tuple(t5.tokenizer(example.target)["input_ids"]) == example.target_ids


def test_bad_word_spans(t5):
    with pytest.raises(InvalidInputError, match="outside the text"):
        span_corruption_example(t5.tokenizer, TEXT, word_spans=[(7, 12)])
    with pytest.raises(InvalidInputError, match="whole text"):
        span_corruption_example(t5.tokenizer, "two words", word_spans=[(0, 2)])
    with pytest.raises(InvalidInputError, match="sentinels"):  # the tiny tokenizer has 8 sentinels
        span_corruption_example(t5.tokenizer, LONG, word_spans=[(i, i + 1) for i in range(0, 20, 2)])


def test_span_corruption_on_a_tokenizer_without_sentinels_is_for_reading_only(gpt2):
    example = span_corruption_example(gpt2.tokenizer, TEXT, word_spans=[(1, 3)])
    assert example.input_ids == () and "no sentinel" in example.note
    assert example.model_input == "The <extra_id_0> fox jumps over the lazy dog."


def test_parse_span_output():
    output = "<pad><extra_id_0> quick brown<extra_id_1> over<extra_id_2></s>"
    assert parse_span_output(output, 2) == ["quick brown", "over"]
    assert parse_span_output("<extra_id_1> only the second", 2) == [None, "only the second"]
    assert parse_span_output("no sentinel at all", 1) == [None]


# ---------------------------------------------------------------- dispatch


def test_objective_example_dispatch(minilm, gpt2, t5, bert):
    assert objective_example("masked_lm", bert.tokenizer, TEXT).objective == "masked_lm"
    assert objective_example("causal_lm", gpt2.tokenizer, TEXT).title == "Causal language modelling"
    assert objective_example("span_corruption", t5.tokenizer, TEXT).objective == "span_corruption"
    contrastive = contrastive_example(minilm.tokenizer, TEXT)
    assert contrastive.predictions == () and all(t.role in ("context", "special") for t in contrastive.tokens)
    with pytest.raises(InvalidInputError, match="Unknown objective"):
        objective_example("next_sentence", bert.tokenizer, TEXT)
