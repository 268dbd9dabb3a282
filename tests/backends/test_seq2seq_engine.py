"""The transformers engine's encoder-decoder path, on the session's tiny random T5 placed where the catalog looks for
FLAN-T5 small: loading, text to text (no chat template), streaming, stop sequences, samples, token counts, the
context window and the decoder's first-step probabilities."""

from __future__ import annotations

import pytest

from playground.backends.base import GenerationParams
from playground.backends.transformers_engine import Seq2SeqTransformersEngine, TransformersEngine
from playground.errors import ContextOverflowError, EngineUnavailableError, InvalidParameterError
from tests.helpers import fake_hardware, offline_settings

FLAN = "flan-t5-small"
PROMPT = "Summarize the following conversation.\n\nA: Can we meet at six?\nB: Yes, at the cafe.\n\nSummary:"
SAMPLED = GenerationParams(max_new_tokens=10, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=3)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flan_provider(tmp_path_factory, flan_models_dir, catalog):
    from playground.backends.provider import EngineProvider

    engines = EngineProvider(offline_settings(tmp_path_factory.mktemp("flan-data"), flan_models_dir),
                             fake_hardware(cuda=False), catalog)
    yield engines
    engines.cache.clear()


@pytest.fixture(scope="module")
def t5(flan_provider):
    return flan_provider.get(FLAN)


def test_flan_t5_loads_as_a_text_to_text_engine(t5, flan_provider):
    assert isinstance(t5, Seq2SeqTransformersEngine) and isinstance(t5, TransformersEngine)
    assert t5.is_encoder_decoder and not t5.has_chat_template and t5.name == "transformers"
    assert t5.context_window == 512  # T5's relative positions; its checkpoints say 512 (n_positions)
    assert flan_provider.get(FLAN, "transformers") is t5 and flan_provider.choose(FLAN).engine == "transformers"
    with pytest.raises(EngineUnavailableError, match="encoder-decoder .*llama.cpp here runs decoders only"):
        flan_provider.get(FLAN, "llama.cpp")


def test_the_system_text_is_folded_into_the_input_and_chats_are_refused(t5):
    folded = t5.format_chat([{"role": "system", "content": "Be brief. "}, {"role": "user", "content": "Hello."}])
    assert folded == "Be brief.\n\nHello."
    assert t5.format_chat([{"role": "user", "content": "Hello."}]) == "Hello."
    with pytest.raises(EngineUnavailableError, match="encoder-decoder .*cannot continue a conversation"):
        t5.format_chat([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                        {"role": "user", "content": "And?"}])


def test_token_counts_are_the_encoder_input_with_its_end_token(t5):
    ids = t5.tokenize(PROMPT)
    assert ids[-1] == t5.tokenizer.eos_token_id and t5.count_tokens(PROMPT) == len(ids)


def test_streaming_pieces_join_to_the_result_and_a_seed_repeats_it(t5):
    generation = t5.stream(PROMPT, SAMPLED)
    pieces = list(generation)
    result = generation.result
    assert "".join(pieces) == result.text and result.text.strip()
    assert 1 <= result.completion_tokens <= SAMPLED.max_new_tokens
    assert result.prompt_tokens == t5.count_tokens(PROMPT)
    assert t5.generate(PROMPT, SAMPLED).text == result.text
    greedy = GenerationParams(max_new_tokens=6, temperature=0)
    assert t5.generate(PROMPT, greedy).text == t5.generate(PROMPT, greedy).text


def test_stop_sequences_cut_the_answer(t5):
    text = t5.generate(PROMPT, SAMPLED).text
    stop = text.strip()[2:4]
    cut = t5.generate(PROMPT, GenerationParams(**{**SAMPLED.to_dict(), "stop": (stop,)}))
    assert cut.finish_reason == "stop" and stop not in cut.text and text.startswith(cut.text)


def test_samples_come_from_one_batched_generate(t5):
    reports = []
    results = t5.sample_n(PROMPT, SAMPLED, 3, progress=reports.append)
    assert len(results) == 3 and all(1 <= r.completion_tokens <= SAMPLED.max_new_tokens for r in results)
    assert all(r.prompt_tokens == t5.count_tokens(PROMPT) for r in results)
    assert len({r.text for r in results}) > 1  # sampled paths differ
    assert reports and reports[-1].tokens <= 3 * SAMPLED.max_new_tokens
    assert [r.text for r in t5.sample_n(PROMPT, SAMPLED, 3)] == [r.text for r in results]  # the seed repeats them


def test_next_token_probabilities_are_the_decoders_first_step(t5):
    import torch

    top = t5.next_token_probabilities(PROMPT, k=5)
    assert len(top) == 5 and all(a.probability >= b.probability for a, b in zip(top, top[1:]))
    ids = torch.tensor([t5.tokenize(PROMPT)])
    with torch.no_grad():
        logits = t5.model(input_ids=ids, decoder_input_ids=torch.tensor([[t5.model.config.decoder_start_token_id]]))
    expected = torch.softmax(logits.logits[0, -1], dim=-1)
    assert top[0].token_id == int(expected.argmax()) and abs(top[0].probability - float(expected.max())) < 1e-5


def test_the_encoder_input_alone_must_fit_the_window(t5):
    words = ("the quick brown fox " * 200).split()
    count = next(i for i in range(100, len(words)) if t5.count_tokens(" ".join(words[:i])) > 440)
    long_prompt = " ".join(words[:count])
    n = t5.count_tokens(long_prompt)
    assert 440 < n <= 512, n  # near the window: a decoder-only model could not add 100 new tokens
    assert t5.generate(long_prompt, GenerationParams(max_new_tokens=100, temperature=0)).completion_tokens >= 1
    with pytest.raises(ContextOverflowError, match="reads at most 512 tokens of input"):
        t5.generate(long_prompt + " the quick brown fox" * 40, GenerationParams(max_new_tokens=4))
    with pytest.raises(InvalidParameterError, match="writes at most 512 tokens"):
        t5.generate("Hello.", GenerationParams(max_new_tokens=600))


@pytest.mark.gpu
def test_the_tiny_t5_on_cuda(flan_provider, tmp_path):
    import torch

    from playground.backends.transformers_engine import device_for

    weights = flan_provider.resolve(FLAN)
    engine = TransformersEngine.load(FLAN, weights, tmp_path, device_for(True, torch.cuda.is_bf16_supported()))
    try:
        assert isinstance(engine, Seq2SeqTransformersEngine)
        assert next(engine.model.parameters()).device.type == "cuda"
        result = engine.generate(PROMPT, GenerationParams(max_new_tokens=6, temperature=0))
        assert 1 <= result.completion_tokens <= 6
        assert len(engine.sample_n(PROMPT, SAMPLED, 2)) == 2
        assert sum(t.probability for t in engine.next_token_probabilities(PROMPT, k=5)) <= 1 + 1e-3
    finally:
        engine.close()
