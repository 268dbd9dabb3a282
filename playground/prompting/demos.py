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
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

from playground.errors import InvalidParameterError
from playground.prompting.data import Example
from playground.prompting.tasks import FIXED, RANDOM, SELECTIONS

if TYPE_CHECKING:  # numpy loads with the first embedding, not with the app
    import numpy as np

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
    import numpy as np

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
    """Sentence embeddings from the packaged all-MiniLM-L6-v2, with a per-text cache.

    The model is the app's shared copy (``playground.architectures.loading.load_shared``) and the
    pooling is the Architectures tab's (``playground.architectures.tasks.embed``), so both tabs get
    the same vectors from one model in memory. Embeddings are cached per text, so the
    demonstration set is encoded once however many inputs are compared with it. Thread-safe.
    """

    def __init__(self, engines, model_id: str = EMBEDDER_MODEL_ID, batch_size: int = 32,
                 cache_size: int = 20_000):
        self.engines = engines
        self.model_id = model_id
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._cache: dict[str, np.ndarray] = {}

    @classmethod
    def from_provider(cls, provider, model_id: str = EMBEDDER_MODEL_ID) -> "MiniLMEmbedder":
        """An embedder over the provider's shared model; the model loads here, once for the app."""
        embedder = cls(provider, model_id)
        embedder.load()
        return embedder

    def load(self):
        from playground.architectures.loading import load_shared

        return load_shared(self.engines, self.model_id)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised row per text (float32)."""
        import numpy as np

        from playground.architectures.tasks import embed

        texts = [str(t) for t in texts]
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            fresh: dict[str, np.ndarray] = {}
            if missing:
                loaded = self.load()  # a cache hit after the first call; reloaded if the budget evicted it
                for start in range(0, len(missing), self.batch_size):
                    chunk = missing[start:start + self.batch_size]
                    fresh.update(zip(chunk, embed(loaded, chunk).numpy().astype(np.float32)))
            rows = [fresh[t] if t in fresh else self._cache[t] for t in texts]
            if len(self._cache) + len(fresh) > self.cache_size:
                self._cache.clear()
            self._cache.update(fresh)
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(rows)

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
