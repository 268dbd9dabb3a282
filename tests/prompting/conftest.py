"""Fixtures of the Prompt Lab tests: the real packaged MiniLM embedder and SmolLM2 through llama.cpp."""

from __future__ import annotations

import pytest

from playground.prompting.demos import MiniLMEmbedder
from playground.prompting.templates import TemplateLibrary


@pytest.fixture(scope="session")
def library() -> TemplateLibrary:
    return TemplateLibrary.load()


@pytest.fixture(scope="session")
def minilm(provider) -> MiniLMEmbedder:
    """The packaged all-MiniLM-L6-v2, resolved offline and loaded once into the provider's cache."""
    return MiniLMEmbedder.from_provider(provider)


@pytest.fixture(scope="session")
def smollm2(provider):
    """The packaged SmolLM2 GGUF through llama.cpp (the app's default model and engine)."""
    return provider.get("smollm2-135m-instruct", "llama.cpp")
