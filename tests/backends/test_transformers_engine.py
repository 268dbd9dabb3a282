"""The transformers engine: SmolLM2 dequantised from its GGUF, and tiny random models from local folders."""

from __future__ import annotations

import pytest

from playground.backends.base import Engine, GenerationParams
from playground.backends.transformers_engine import TransformersEngine, device_for
from playground.errors import ContextOverflowError, InvalidGGUFError, InvalidPromptError, PlaygroundError
from playground.models.conversion import converted_dir, load_gguf_as_transformers
from playground.models.sources import ResolvedWeights
from tests.helpers import SMOLLM2, TINY_CHAT_TEMPLATE, TINY_MODELS

GREEDY = GenerationParams(max_new_tokens=12, temperature=0)
MESSAGES = [{"role": "user", "content": "Name three colours."}]


def test_device_choice():
    assert device_for(False, False).device == "cpu" and device_for(False, True).dtype_name == "float32"
    assert device_for(True, True).dtype_name == "bfloat16"
    assert device_for(True, False).dtype_name == "float16"


# ---------------------------------------------------------------- SmolLM2 through transformers


@pytest.mark.slow
def test_smollm2_engine_shape(transformers_engine, data_dir, provider):
    engine = transformers_engine
    assert isinstance(engine, TransformersEngine) and isinstance(engine, Engine)
    assert engine.name == "transformers" and engine.model_id == SMOLLM2
    assert engine.context_window == 8192
    assert engine.has_chat_template
    assert engine.memory_bytes() > 400e6  # fp32: about 4 bytes per parameter
    # the dequantised copy was written once, as safetensors, into the data dir
    target = converted_dir(data_dir, provider.resolve(SMOLLM2, "gguf"))
    assert (target / "config.json").is_file() and list(target.glob("*.safetensors"))
    assert not list(target.parent.glob("*.partial-*"))


@pytest.mark.slow
def test_smollm2_greedy_generation(transformers_engine):
    prompt = transformers_engine.format_chat(MESSAGES)
    result = transformers_engine.generate(prompt, GREEDY)
    assert result.text.strip()
    assert 1 <= result.completion_tokens <= GREEDY.max_new_tokens
    assert result.tokens_per_s > 0
    assert result.engine == "transformers"
    assert transformers_engine.generate(prompt, GREEDY).text == result.text


@pytest.mark.slow
def test_smollm2_streaming_pieces_join_to_the_result(transformers_engine):
    generation = transformers_engine.stream(transformers_engine.format_chat(MESSAGES), GREEDY)
    pieces = list(generation)
    assert len(pieces) >= 3
    assert "".join(pieces) == generation.result.text


@pytest.mark.slow
def test_both_engines_render_the_same_prompt_and_tokens(transformers_engine, llama_engine):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there!"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is 2+2?"}]
    hf_prompt = transformers_engine.format_chat(messages)
    cpp_prompt = llama_engine.format_chat(messages)
    assert hf_prompt == cpp_prompt
    assert transformers_engine.tokenize(hf_prompt) == llama_engine.tokenize(cpp_prompt)
    default_system = transformers_engine.format_chat(MESSAGES)
    assert default_system == llama_engine.format_chat(MESSAGES)
    assert transformers_engine.tokenize(default_system) == llama_engine.tokenize(default_system)


@pytest.mark.slow
@pytest.mark.parametrize("text", ["The sky is", "café ☕ 日本", "Hello <|im_end|> there"])
def test_both_engines_tokenize_plain_text_alike(transformers_engine, llama_engine, text):
    assert transformers_engine.tokenize(text) == llama_engine.tokenize(text)


@pytest.mark.slow
def test_both_engines_agree_on_an_easy_next_token(transformers_engine, llama_engine):
    prompt = "The capital of France is"
    hf_top = transformers_engine.next_token_probabilities(prompt, k=3)
    cpp_top = llama_engine.next_token_probabilities(prompt, k=3)
    assert hf_top[0].token_id == cpp_top[0].token_id
    assert hf_top[0].token.strip() == "Paris"
    assert hf_top[0].probability == pytest.approx(cpp_top[0].probability, abs=0.05)


@pytest.mark.slow
def test_smollm2_next_token_probabilities(transformers_engine, llama_engine):
    prompt = transformers_engine.format_chat(MESSAGES)
    top = transformers_engine.next_token_probabilities(prompt, k=8)
    assert len(top) == 8
    probs = [t.probability for t in top]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) <= 1 + 1e-5
    # the same weights, quantised or not, agree on the likely next tokens
    cpp_ids = {t.token_id for t in llama_engine.next_token_probabilities(prompt, k=8)}
    assert len(cpp_ids & {t.token_id for t in top}) >= 4


@pytest.mark.slow
def test_smollm2_context_overflow_then_a_normal_request_works(transformers_engine):
    long_prompt = "word " * 9000
    with pytest.raises(ContextOverflowError) as info:
        transformers_engine.generate(long_prompt, GenerationParams(max_new_tokens=8))
    assert str(transformers_engine.count_tokens(long_prompt)) in str(info.value)
    assert "8192" in str(info.value)
    assert not transformers_engine.lock.locked()
    prompt = transformers_engine.format_chat(MESSAGES)
    assert transformers_engine.generate(prompt, GenerationParams(max_new_tokens=6, temperature=0)).text.strip()


@pytest.mark.slow
def test_smollm2_empty_prompt_is_refused(transformers_engine):
    with pytest.raises(InvalidPromptError):
        transformers_engine.generate(" ", GREEDY)


@pytest.mark.slow
def test_smollm2_stop_sequence(transformers_engine):
    prompt = transformers_engine.format_chat(MESSAGES)
    full = transformers_engine.generate(prompt, GenerationParams(max_new_tokens=16, temperature=0))
    words = full.text.split()
    assert len(words) >= 3, full.text
    stopped = transformers_engine.generate(prompt, GenerationParams(max_new_tokens=16, temperature=0,
                                                                    stop=(words[2],)))
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[: full.text.find(words[2])]


@pytest.mark.slow
def test_cached_conversion_is_reused(transformers_engine, data_dir, provider):
    weights = provider.resolve(SMOLLM2, "gguf")
    model, tokenizer, from_cache = load_gguf_as_transformers(weights, data_dir)
    assert from_cache is True
    assert tokenizer.chat_template == transformers_engine.tokenizer.chat_template


def test_corrupted_gguf_is_refused_before_dequantising(tmp_path, provider):
    source = provider.resolve(SMOLLM2, "gguf").path
    broken = tmp_path / "broken.gguf"
    with source.open("rb") as handle:
        broken.write_bytes(handle.read(source.stat().st_size // 2))
    weights = ResolvedWeights(SMOLLM2, "gguf", broken, "local", f"local file {broken}")
    with pytest.raises(InvalidGGUFError):
        TransformersEngine.load(SMOLLM2, weights, tmp_path / "data", device_for(False, False))
    assert not (tmp_path / "data" / "converted").exists() or not any((tmp_path / "data" / "converted").iterdir())


# ---------------------------------------------------------------- tiny random models from PLAYGROUND_MODELS_DIR


@pytest.mark.parametrize("model_id", list(TINY_MODELS))
def test_tiny_model_loads_from_the_local_folder(tiny_provider, model_id):
    arch, repo, context = TINY_MODELS[model_id]
    weights = tiny_provider.resolve(model_id)
    assert weights.origin == "local" and weights.format == "transformers"
    assert weights.path.name == repo.split("/")[-1]
    assert tiny_provider.choose(model_id).engine == "transformers"
    engine = tiny_provider.get(model_id)
    assert isinstance(engine, TransformersEngine)
    assert engine.model.config.model_type == arch
    assert engine.context_window == context
    assert engine.device.device == "cpu"
    assert tiny_provider.get(model_id) is engine  # cached


@pytest.mark.parametrize("model_id", list(TINY_MODELS))
def test_tiny_model_generates(tiny_provider, model_id):
    engine = tiny_provider.get(model_id)
    prompt = engine.format_chat([{"role": "user", "content": "Hello world"}])
    assert prompt == "<s>user: Hello world</s>\n<s>assistant:"
    generation = engine.stream(prompt, GenerationParams(max_new_tokens=10, temperature=0))
    pieces = list(generation)
    result = generation.result
    assert "".join(pieces) == result.text
    assert 1 <= result.completion_tokens <= 10
    assert result.prompt_tokens == engine.count_tokens(prompt)
    sampled = GenerationParams(max_new_tokens=10, temperature=1.0, seed=3)
    assert engine.generate(prompt, sampled).text == engine.generate(prompt, sampled).text


def test_tiny_tokenizer_does_not_add_specials_twice(tiny_provider, tiny_tokenizer):
    engine = tiny_provider.get("tiny-llama")
    prompt = engine.format_chat([{"role": "user", "content": "Hello world"}])
    ids = engine.tokenize(prompt)
    assert ids.count(tiny_tokenizer.bos_token_id) == 2  # one per turn in the template, none added
    assert engine.tokenizer.chat_template == TINY_CHAT_TEMPLATE


@pytest.mark.parametrize("model_id", list(TINY_MODELS))
def test_tiny_model_next_token_probabilities(tiny_provider, model_id):
    engine = tiny_provider.get(model_id)
    vocab = len(engine.tokenizer)
    top = engine.next_token_probabilities("Hello world", k=vocab)
    assert len(top) == vocab
    probs = [t.probability for t in top]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("model_id", list(TINY_MODELS))
def test_tiny_model_context_overflow(tiny_provider, model_id):
    engine = tiny_provider.get(model_id)
    context = engine.context_window
    prompt = "fox " * context
    n = engine.count_tokens(prompt)
    with pytest.raises(ContextOverflowError) as info:
        engine.generate(prompt, GenerationParams(max_new_tokens=4))
    assert info.value.prompt_tokens == n and info.value.context_window == context
    assert engine.generate("fox", GenerationParams(max_new_tokens=4, temperature=0)).completion_tokens >= 1


def test_pickle_only_folder_is_refused(tmp_path):
    import torch

    folder = tmp_path / "pickled"
    folder.mkdir()
    from transformers import GPT2Config

    GPT2Config(vocab_size=10, n_embd=8, n_layer=1, n_head=2, n_positions=16, bos_token_id=0,
               eos_token_id=0).save_pretrained(folder)
    torch.save({}, folder / "pytorch_model.bin")
    weights = ResolvedWeights("pickled", "transformers", folder, "local", f"local folder {folder}")
    with pytest.raises(PlaygroundError) as info:
        TransformersEngine.load("pickled", weights, tmp_path / "data", device_for(False, False))
    assert "safetensors" in str(info.value)  # weights load from safetensors only, never from pickle


@pytest.mark.gpu
def test_tiny_model_on_cuda(tiny_models_dir, tiny_provider):
    import torch

    weights = tiny_provider.resolve("tiny-llama")
    device = device_for(True, torch.cuda.is_bf16_supported())
    engine = TransformersEngine.load("tiny-llama", weights, tiny_models_dir, device)
    try:
        assert next(engine.model.parameters()).device.type == "cuda"
        result = engine.generate("Hello world", GenerationParams(max_new_tokens=6, temperature=0))
        assert 1 <= result.completion_tokens <= 6
        assert sum(t.probability for t in engine.next_token_probabilities("Hello", k=5)) <= 1 + 1e-3
    finally:
        engine.close()
