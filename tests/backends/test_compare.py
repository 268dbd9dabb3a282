"""Full precision (transformers) against quantised (llama.cpp) on SmolLM2."""

from __future__ import annotations

import pytest

from playground.backends.base import GenerationParams
from playground.backends.chat import QuantizedFacts, precision_labels
from playground.backends.compare import PrecisionComparison, PrecisionRun, compare_precisions
from tests.helpers import SMOLLM2


@pytest.mark.slow
def test_compare_precisions_on_smollm2(provider, transformers_engine, llama_engine):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    full, quantised = precision_labels(QuantizedFacts(provider.gguf_facts(SMOLLM2)), provider.hardware)
    steps = list(compare_precisions(provider.get, SMOLLM2, messages, GenerationParams(max_new_tokens=16, temperature=0),
                                    full_precision=full, quantised_precision=quantised))
    assert all(isinstance(s, PrecisionComparison) for s in steps)
    first, last = steps[0], steps[-1]
    assert first.full.status == "loading" and first.quantised.status == "waiting"
    assert last.full.status == "done" and last.quantised.status == "done"
    # the full-precision run finishes before the quantised one starts
    done_full = next(i for i, s in enumerate(steps) if s.full.status == "done")
    assert all(s.quantised.status == "waiting" for s in steps[:done_full + 1])
    for run, engine in ((last.full, "transformers"), (last.quantised, "llama.cpp")):
        assert run.engine == engine
        assert run.result is not None and run.result.engine == engine
        assert run.text == run.result.text and run.text.strip()
        assert 1 <= run.result.completion_tokens <= 16
        assert run.tokens_per_s > 0
    assert last.quantised.precision == "Q4_1"
    assert last.full.weights_bytes > 3 * last.quantised.weights_bytes
    assert last.memory_ratio > 3
    assert last.speedup > 0
    # text only grows while a run streams
    texts = [s.quantised.text for s in steps if s.quantised.status == "generating"]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))


def test_ratios_without_results_are_zero():
    empty = PrecisionComparison(PrecisionRun("transformers", "fp32"), PrecisionRun("llama.cpp", "Q4_1"))
    assert empty.speedup == 0.0 and empty.memory_ratio == 0.0
    assert empty.full.tokens_per_s == 0.0
