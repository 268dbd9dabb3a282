"""The engine provider: model id -> resolved weights -> chosen engine -> one shared loaded engine."""

from __future__ import annotations

import threading

import pytest

from playground.backends.base import GenerationParams
from playground.backends.provider import EngineProvider
from playground.errors import EngineUnavailableError, InvalidGGUFError, ModelUnavailableError, UnknownModelError
from playground.models.sources import SourceResolver
from tests.helpers import SMOLLM2, fake_hardware, offline_settings

QWEN = "qwen2.5-0.5b-instruct"  # a catalog entry whose GGUF comes from the Hub, so a local file stands in


def test_unknown_model_id(provider):
    with pytest.raises(UnknownModelError) as info:
        provider.get("no-such-model")
    assert SMOLLM2 in str(info.value)
    with pytest.raises(UnknownModelError):
        provider.choose("no-such-model")


def test_engine_choice_on_this_machine(provider, hardware):
    if hardware.cuda:
        pytest.skip("this machine has CUDA; the CPU rule does not apply")
    assert provider.choose(SMOLLM2).engine == "llama.cpp"
    assert provider.choose("gpt2").engine == "transformers"
    assert provider.choose(SMOLLM2, "transformers").engine == "transformers"


@pytest.mark.gpu
def test_engine_choice_with_cuda(provider):
    assert provider.choose(SMOLLM2).engine == "transformers"


def test_encoder_is_not_a_generation_engine(provider):
    with pytest.raises(EngineUnavailableError, match="encoder"):
        provider.get("all-minilm-l6-v2")


def test_llama_cpp_for_a_model_without_gguf(provider):
    with pytest.raises(EngineUnavailableError, match="GGUF"):
        provider.get("gpt2", "llama.cpp")


def test_the_same_engine_is_shared(provider, llama_engine):
    assert provider.get(SMOLLM2, "llama.cpp") is llama_engine
    assert provider.loaded(SMOLLM2, "llama.cpp") is llama_engine
    entry = provider.cache.entry(("engine", "llama.cpp", SMOLLM2))
    assert entry.size_bytes == llama_engine.memory_bytes()


def test_concurrent_gets_return_one_engine(provider, llama_engine):
    engines = []
    threads = [threading.Thread(target=lambda: engines.append(provider.get(SMOLLM2, "llama.cpp")), daemon=True)
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(engines) == 8 and all(e is llama_engine for e in engines)


def test_gguf_facts_through_the_provider(provider):
    facts = provider.gguf_facts(SMOLLM2)
    assert facts.architecture == "llama" and facts.file_type == "Q4_1"
    assert provider.gguf_facts(SMOLLM2) is facts  # read once


def test_offline_hub_only_model_is_unavailable(tmp_path, catalog):
    settings = offline_settings(tmp_path / "data")
    engines = EngineProvider(settings, fake_hardware(), catalog,
                             resolver=SourceResolver(None, offline=True, hub_cache_dir=tmp_path / "hub"))
    with pytest.raises(ModelUnavailableError) as info:
        engines.get("gpt2")
    assert "openai-community/gpt2" in str(info.value) and "PLAYGROUND_MODELS_DIR" in str(info.value)
    assert engines.cache.keys() == []


@pytest.mark.parametrize("corruption", ["half", "random"])
@pytest.mark.parametrize("engine_name", ["llama.cpp", "transformers"])
def test_corrupted_local_gguf_fails_cleanly_and_the_app_keeps_working(
        tmp_path, catalog, provider, llama_engine, corruption, engine_name):
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    bad = models_dir / f"{QWEN}.gguf"
    if corruption == "half":
        source = llama_engine.facts.path
        with source.open("rb") as handle:
            bad.write_bytes(handle.read(source.stat().st_size // 2))
    else:
        bad.write_bytes(bytes(range(256)) * 400)
    # The same process-wide cache as the app, as another tab of the same app would use it.
    engines = EngineProvider(offline_settings(tmp_path / "data", models_dir), provider.hardware, catalog,
                             cache=provider.cache,
                             resolver=SourceResolver(models_dir, offline=True, hub_cache_dir=tmp_path / "hub"))
    assert engines.resolve(QWEN, "gguf").path == bad
    with pytest.raises(InvalidGGUFError) as info:
        engines.get(QWEN, engine_name)
    assert bad.name in str(info.value)
    assert engines.loaded(QWEN, engine_name) is None
    # the app's engine is untouched and still answers
    assert provider.get(SMOLLM2, "llama.cpp") is llama_engine
    prompt = llama_engine.format_chat([{"role": "user", "content": "Hi"}])
    assert llama_engine.generate(prompt, GenerationParams(max_new_tokens=4, temperature=0)).text.strip()
    # and a second try fails the same way instead of hanging on a stale load
    # (only for the cheap case: reading half a GGUF header takes seconds)
    if corruption == "random":
        with pytest.raises(InvalidGGUFError):
            engines.get(QWEN, engine_name)


def test_workshop_mode_limits_tokens_per_request(tmp_path, catalog, llama_engine):
    settings = offline_settings(tmp_path / "data", PLAYGROUND_MODE="workshop")
    engines = EngineProvider(settings, fake_hardware(), catalog)
    engine = engines.get(SMOLLM2, "llama.cpp")
    try:
        assert engine.token_limit == 256
        from playground.errors import InvalidParameterError

        with pytest.raises(InvalidParameterError, match="max_new_tokens"):
            engine.generate("Hello", GenerationParams(max_new_tokens=257))
    finally:
        engines.cache.clear()


_EVICT_WHILE_GENERATING = r"""
import sys, time
sys.path.insert(0, {root!r})
from playground.backends.base import GenerationParams
from playground.backends.provider import EngineProvider
from playground.hardware import detect
from playground.models.catalog import Catalog
from tests.helpers import SMOLLM2, offline_settings

engines = EngineProvider(offline_settings({data!r}), detect(), Catalog.load())
engine = engines.get(SMOLLM2, "llama.cpp")
generation = engine.stream("The capital of France is", GenerationParams(max_new_tokens=8, temperature=0))
pieces = iter(generation)
first = next(pieces)
assert engines.cache.evict(("engine", "llama.cpp", SMOLLM2))  # e.g. another user's load needed the memory
assert not engine.closed, "closed under a running generation"
rest = "".join(pieces)
assert generation.result.text == first + rest and generation.result.completion_tokens >= 2
deadline = time.time() + 60
while not engine.closed and time.time() < deadline:
    time.sleep(0.05)
assert engine.closed, "the evicted engine was never closed"
print("OK", repr(generation.result.text))
"""


def test_evicting_an_engine_while_it_generates_waits_for_the_generation(tmp_path):
    # Run in a child process: the failure this guards against is a segfault, which would end pytest itself.
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    code = _EVICT_WHILE_GENERATING.format(root=root, data=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"rc={out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}"
    assert out.stdout.startswith("OK")
