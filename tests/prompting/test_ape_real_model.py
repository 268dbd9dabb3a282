"""A tiny APE search on the packaged SmolLM2 through llama.cpp: the machinery end to end on a real model (its
instructions are weak; the test checks the search, not their quality)."""

from __future__ import annotations

import pytest

from playground.prompting.ape import ORIGINS, ApeConfig, instruction_template, search_instructions
from playground.prompting.data import load_bundled
from playground.prompting.templates import parse_template

pytestmark = pytest.mark.slow


def test_a_tiny_search_on_smollm2_proposes_varies_and_tests(smollm2, library):
    config = ApeConfig(task="sentiment", candidates=2, rounds=2, keep=1, dev_size=2, test_size=2, seed=1)
    steps = []
    result = search_instructions(smollm2, config, load_bundled("sentiment"), library.get("sentiment-question"),
                                 progress=steps.append)
    assert not result.cancelled and result.candidates
    assert all(c.text and c.origin in ORIGINS and len(c.text) <= 401 for c in result.candidates)
    assert {c.round for c in result.candidates} <= {1, 2}
    assert all(c.dev_score is not None and 0.0 <= c.dev_score <= 1.0 for c in result.candidates)
    assert result.winner_test.examples == result.baseline_test.examples == 2
    parse_template(instruction_template("sentiment", result.winner.text))  # the model's text is a valid template
    assert steps[-1].finished and steps[-1].done == steps[-1].planned == result.generations
