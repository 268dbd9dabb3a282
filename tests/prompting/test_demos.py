"""Choosing demonstrations: fixed, random with a seed, most similar (fake embedder and the real MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest

from playground.errors import InvalidParameterError
from playground.prompting.data import Example, load_bundled
from playground.prompting.demos import Embedder, check_k, rank_by_similarity, select_demos
from tests.prompting.fakes import KeywordEmbedder

POOL = tuple(Example(text, label) for text, label in [
    ("The train was late again.", "negative"),
    ("This coffee is lovely.", "positive"),
    ("My new shoes hurt.", "negative"),
    ("The package arrived today.", "neutral"),
    ("The hotel was spotless.", "positive"),
    ("My phone screen cracked.", "negative"),
])


def test_fixed_takes_the_first_k_in_order():
    assert select_demos(POOL, 3, "fixed") == POOL[:3]
    assert select_demos(POOL, 0, "fixed") == ()
    assert select_demos(POOL, len(POOL), "fixed") == POOL


def test_random_is_reproducible_with_a_seed():
    first = select_demos(POOL, 3, "random", seed=7)
    assert first == select_demos(POOL, 3, "random", seed=7)
    assert len(set(first)) == 3 and set(first) <= set(POOL)
    draws = {select_demos(POOL, 3, "random", seed=s) for s in range(10)}
    assert len(draws) > 1  # different seeds give different prompts


def test_k_larger_than_the_pool_is_a_clear_error():
    with pytest.raises(InvalidParameterError, match="k=7 demonstrations were asked for, but the demonstration "
                                                    "set has only 6. Choose k between 0 and 6."):
        select_demos(POOL, 7, "fixed")
    with pytest.raises(InvalidParameterError, match="whole number"):
        check_k(-1, 6)
    assert check_k(2.0, 6) == 2
    with pytest.raises(InvalidParameterError, match="Unknown selection"):
        select_demos(POOL, 1, "best")


def test_similar_with_a_fake_embedder_puts_the_closest_last():
    embedder = KeywordEmbedder()
    assert isinstance(embedder, Embedder)
    chosen = select_demos(POOL, 2, "similar", query="Is the train to the hotel on time?", embedder=embedder)
    assert {d.input for d in chosen} == {"The train was late again.", "The hotel was spotless."}
    ranked = rank_by_similarity(POOL, "The coffee and the coffee cup", embedder)
    assert ranked[0][0].input == "This coffee is lovely." and ranked[0][1] == pytest.approx(1.0, abs=1e-3)
    assert [score for _, score in ranked] == sorted((score for _, score in ranked), reverse=True)
    chosen = select_demos(POOL, 3, "similar", query="coffee", embedder=embedder)
    assert chosen[-1].input == "This coffee is lovely."  # the most similar sits right before the input


def test_similar_needs_an_embedder_and_a_query():
    with pytest.raises(InvalidParameterError, match="needs a sentence embedder"):
        select_demos(POOL, 2, "similar", query="x")
    with pytest.raises(InvalidParameterError, match="needs an input"):
        select_demos(POOL, 2, "similar", query=" ", embedder=KeywordEmbedder())


def test_real_minilm_embeddings(minilm):
    vectors = minilm.embed(["The parcel came early.", "My package arrived before the expected day.",
                            "The soup was cold and salty."])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # L2-normalised
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2  # paraphrases are closer than unrelated sentences
    assert np.allclose(minilm.embed(["The parcel came early."])[0], vectors[0])  # cached, same vector


def test_real_minilm_picks_related_demonstrations(minilm):
    demos = load_bundled("sentiment").demos
    chosen = select_demos(demos, 2, "similar", query="The waitress forgot what I had ordered.", embedder=minilm)
    assert any("waiter" in d.input or "soup" in d.input for d in chosen), [d.input for d in chosen]
