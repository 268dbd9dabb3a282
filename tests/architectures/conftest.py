"""Fixtures of the Architectures tab's tests: one lab over the real catalog plus tiny random models.

The tiny models (a BertForMaskedLM, a T5ForConditionalGeneration with sentinel tokens and a GPT-2)
are built once per session into a PLAYGROUND_MODELS_DIR, so every family runs offline. The lab uses
the session's shared data dir, so the SmolLM2 GGUF is dequantised once for all the tests, and an
empty Hub cache, so Hub-only models (BERT base, FLAN-T5) are unavailable whatever this machine holds.
"""

from __future__ import annotations

import pytest

from playground.models.catalog import Catalog
from tests.helpers import build_tiny_bert, build_tiny_causal_lm, model_spec, offline_settings

# catalog id -> (family, objective, head, repo, context)
TINY_ARCH_MODELS = {
    "tiny-bert": ("encoder", "masked_lm", "masked_lm", "test-org/Tiny-BERT-Random", 64),
    "tiny-t5": ("encoder-decoder", "span_corruption", "seq2seq", "test-org/Tiny-T5-Random", 64),
    "tiny-gpt2": ("decoder", "causal_lm", "causal_lm", "test-org/Tiny-GPT2-Random", 96),
}
MINILM = "all-minilm-l6-v2"


@pytest.fixture(scope="session")
def arch_models_dir(tmp_path_factory, tiny_tokenizer, tiny_t5):
    root = tmp_path_factory.mktemp("arch-models")
    build_tiny_bert(root / "Tiny-BERT-Random", context=TINY_ARCH_MODELS["tiny-bert"][4])
    (root / "Tiny-T5-Random").symlink_to(tiny_t5, target_is_directory=True)  # the session's tiny T5
    build_tiny_causal_lm(root / "Tiny-GPT2-Random", "gpt2", tiny_tokenizer, TINY_ARCH_MODELS["tiny-gpt2"][4])
    return root


@pytest.fixture(scope="session")
def arch_catalog(catalog) -> Catalog:
    tiny = tuple(model_spec(mid, family, objective, head, repo, context)
                 for mid, (family, objective, head, repo, context) in TINY_ARCH_MODELS.items())
    return Catalog(models=catalog.models + tiny)


@pytest.fixture(scope="session")
def arch_provider(tmp_path_factory, data_dir, arch_models_dir, arch_catalog, hardware):
    from playground.backends.provider import EngineProvider
    from playground.models.sources import SourceResolver

    settings = offline_settings(data_dir, arch_models_dir)
    resolver = SourceResolver(settings.models_dir, offline=True, hub_cache_dir=tmp_path_factory.mktemp("empty-hub"))
    engines = EngineProvider(settings, hardware, arch_catalog, resolver=resolver)
    yield engines
    engines.cache.clear()


@pytest.fixture(scope="session")
def lab(arch_provider):
    from playground.architectures import ArchitectureLab

    return ArchitectureLab(arch_provider)


@pytest.fixture(scope="session")
def bert(lab):
    return lab.load("tiny-bert")


@pytest.fixture(scope="session")
def t5(lab):
    return lab.load("tiny-t5")


@pytest.fixture(scope="session")
def gpt2(lab):
    return lab.load("tiny-gpt2")


@pytest.fixture(scope="session")
def minilm(lab):
    return lab.load(MINILM)


@pytest.fixture(scope="session")
def smollm2(lab):
    return lab.load("smollm2-135m-instruct")
