"""Choosing the k demonstrations of a few-shot prompt, and the sentence embedder that ranks them.

Three ways to choose, as in the literature on in-context examples:

- ``fixed``: the first k of the demonstration set (the classic few-shot prompt);
- ``random``: k drawn with a seed, so the same seed gives the same prompt;
- ``similar``: the k demonstrations whose sentence embeddings are closest to the
  input's (cosine similarity), placed with the most similar one last, right
  before the input.

The embedder is injected (anything with ``embed(texts) -> array``), so tests
can pass a fake. ``MiniLMEmbedder`` is the real one: the packaged
all-MiniLM-L6-v2 encoder, resolved offline through the catalog and loaded with
transformers' ``AutoModel``/``AutoTokenizer``; a sentence's embedding is the
mean of its token vectors (padding masked out), L2-normalised.
"""

from __future__ import annotations

import random
import threading
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from playground.errors import InvalidParameterError
from playground.prompting.data import Example
from playground.prompting.tasks import FIXED, RANDOM, SELECTIONS

EMBEDDER_MODEL_ID = "all-minilm-l6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors, one row per text."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def check_k(k: int, available: int) -> int:
    """``k`` as an int from 0 to ``available``; raises InvalidParameterError with both numbers."""
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InvalidParameterError(f"k must be a whole number of demonstrations (0 or more), not {k!r}.")
    if k > available:
        raise InvalidParameterError(
            f"k={k} demonstrations were asked for, but the demonstration set has only {available}. "
            f"Choose k between 0 and {available}.")
    return k


def rank_by_similarity(pool: Sequence[Example], query: str, embedder: Embedder) -> list[tuple[Example, float]]:
    """Every demonstration with its cosine similarity to ``query``, most similar first (ties: set order)."""
    if not pool:
        return []
    vectors = np.asarray(embedder.embed([query] + [d.input for d in pool]), dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(pool) + 1:
        raise InvalidParameterError("The embedder must return one vector per text.")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms == 0, 1.0, norms)
    scores = vectors[1:] @ vectors[0]
    order = sorted(range(len(pool)), key=lambda i: (-scores[i], i))
    return [(pool[i], float(scores[i])) for i in order]


def select_demos(pool: Sequence[Example], k: int, method: str = FIXED, *, seed: int = 0, query: str = "",
                 embedder: Embedder | None = None) -> tuple[Example, ...]:
    """The ``k`` demonstrations for one prompt, in the order they appear in it.

    ``fixed`` keeps the set's order; ``random`` draws with ``seed`` (reproducible);
    ``similar`` needs ``query`` and an ``embedder`` and puts the closest demonstration
    last, next to the input.
    """
    if method not in SELECTIONS:
        raise InvalidParameterError(f"Unknown selection {method!r}; choose one of {', '.join(SELECTIONS)}.")
    k = check_k(k, len(pool))
    if k == 0:
        return ()
    if method == FIXED:
        return tuple(pool[:k])
    if method == RANDOM:
        indices = random.Random(seed).sample(range(len(pool)), k)
        return tuple(pool[i] for i in indices)
    if embedder is None:
        raise InvalidParameterError("Choosing the most similar demonstrations needs a sentence embedder.")
    if not query.strip():
        raise InvalidParameterError("Choosing the most similar demonstrations needs an input to compare with.")
    ranked = rank_by_similarity(pool, query, embedder)[:k]
    return tuple(example for example, _ in reversed(ranked))


class MiniLMEmbedder:
    """Sentence embeddings from the packaged all-MiniLM-L6-v2 (mean pooling, then L2 norm).

    The model loads on first use; embeddings are cached per text, so the demonstration
    set is encoded once however many inputs are compared with it. Thread-safe.
    """

    def __init__(self, model_path, max_length: int = 256, batch_size: int = 32, cache_size: int = 20_000):
        self.model_path = model_path
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._model = None
        self._tokenizer = None
        self._cache: dict[str, np.ndarray] = {}

    @classmethod
    def from_resolver(cls, resolver, catalog, model_id: str = EMBEDDER_MODEL_ID, **kwargs) -> "MiniLMEmbedder":
        """Resolve the encoder's weights offline-first (packaged, then local folder, then Hub)."""
        weights = resolver.resolve(catalog.get(model_id), "transformers")
        return cls(weights.path, **kwargs)

    @classmethod
    def from_provider(cls, provider, model_id: str = EMBEDDER_MODEL_ID) -> "MiniLMEmbedder":
        """The app's shared embedder, loaded once into the provider's model cache."""
        def load():
            embedder = cls.from_resolver(provider.resolver, provider.catalog, model_id)
            embedder.load()
            return embedder, embedder.memory_bytes()

        return provider.cache.get_or_load(("embedder", model_id), load)

    def load(self) -> None:
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self._model = AutoModel.from_pretrained(self.model_path, use_safetensors=True).eval()

    def memory_bytes(self) -> int:
        if self._model is None:
            return 0
        return sum(p.numel() * p.element_size() for p in self._model.parameters())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised row per text (float32)."""
        import torch

        texts = [str(t) for t in texts]
        with self._lock:
            self._load_locked()
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            fresh: dict[str, np.ndarray] = {}
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start:start + self.batch_size]
                encoded = self._tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                          return_tensors="pt")
                with torch.inference_mode():
                    tokens = self._model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                fresh.update(zip(chunk, pooled.numpy().astype(np.float32)))
            rows = [fresh[t] if t in fresh else self._cache[t] for t in texts]
            if len(self._cache) + len(fresh) > self.cache_size:
                self._cache.clear()
            self._cache.update(fresh)
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(rows)

    def close(self) -> None:
        with self._lock:
            self._model = None
            self._tokenizer = None
            self._cache.clear()
