"""Loaded engines for the whole app: resolve weights, pick the engine, load once, share.

``EngineProvider`` is the one place that turns a model id into a ready engine.
It goes through the process-wide ``ModelCache``, so concurrent requests for
the same model trigger one load and memory stays under the budget. A model
listed in ``PLAYGROUND_OPENAI_MODELS`` "loads" as a connection to the
OpenAI-compatible server (its weights live there; it costs no memory here).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from playground.backends.base import Engine
from playground.backends.selection import LLAMA_CPP, OPENAI, TRANSFORMERS, EngineChoice, choose_engine
from playground.config import Settings
from playground.errors import EngineUnavailableError, SettingsError, UnknownModelError
from playground.hardware import Hardware
from playground.models.cache import ModelCache
from playground.models.catalog import Catalog, ModelSpec
from playground.models.gguf_info import GGUFFacts, cached_gguf_facts
from playground.models.sources import ResolvedWeights, SourceResolver

if TYPE_CHECKING:
    from playground.backends.transformers_engine import DeviceChoice


def _close_engine(key, engine) -> None:
    """Close an evicted engine once no request is using it.

    A generation in flight holds the engine's lock; closing under it would free
    the weights beneath a running llama.cpp loop (a segfault of the whole app).
    Answers in a llama.cpp engine's shared decode loop hold no lock: its close
    waits for them to end, so it runs beside the request that evicted the engine.
    """
    close = getattr(engine, "close", None)
    if not close:
        return
    lock = getattr(engine, "lock", None)
    if getattr(engine, "idle", True) and (lock is None or lock.acquire(blocking=False)):
        try:
            close()
        finally:
            if lock is not None:
                lock.release()
        return

    def close_when_idle() -> None:
        with lock:
            close()

    threading.Thread(target=close_when_idle, name=f"close-{key}", daemon=True).start()


class EngineProvider:
    def __init__(self, settings: Settings, hardware: Hardware, catalog: Catalog,
                 cache: ModelCache | None = None, resolver: SourceResolver | None = None):
        self.settings = settings
        self.hardware = hardware
        self.catalog = catalog
        self.cache = cache or ModelCache(int(settings.memory_budget_gb * 2**30), on_evict=_close_engine)
        self.resolver = resolver or SourceResolver(settings.models_dir, settings.offline)
        self._facts: dict[Path, GGUFFacts] = {}
        self._facts_lock = threading.Lock()
        self.openai_models = self._checked_openai_models()

    def _checked_openai_models(self) -> dict[str, str]:
        """Catalog id -> served name of the models the OpenAI-compatible server serves; SettingsError at start-up
        for an id the catalog lacks or one that is not a decoder."""
        served = self.settings.openai_served_models
        for model_id in served:
            try:
                spec = self.catalog.get(model_id)
            except UnknownModelError:
                raise SettingsError(f"PLAYGROUND_OPENAI_MODELS lists {model_id!r}, which is not in the catalog; "
                                    f"choose from: {', '.join(self.catalog.ids)}.") from None
            if spec.family != "decoder":
                raise SettingsError(f"PLAYGROUND_OPENAI_MODELS lists {model_id!r}, an {spec.family} model; an "
                                    f"OpenAI-compatible server generates text with decoder models only.")
        return served

    def served_remotely(self, model_id: str) -> bool:
        """True when the OpenAI-compatible server serves this catalog id (PLAYGROUND_OPENAI_MODELS)."""
        return model_id in self.openai_models

    def spec(self, model_id: str) -> ModelSpec:
        return self.catalog.get(model_id)

    def choose(self, model_id: str, requested: str | None = None, remote: bool = True) -> EngineChoice:
        """The engine for ``model_id``; ``remote=False`` leaves the OpenAI-compatible server out (weights that
        exist only here, such as a fine-tuned run over this base)."""
        served = self.openai_models if remote and self.settings.openai_base_url else None
        requested = requested or self.settings.engine
        if not remote and requested == OPENAI:
            requested = "auto"
        return choose_engine(self.spec(model_id), self.hardware, requested, served)

    def resolve(self, model_id: str, fmt: str | None = None, progress=None) -> ResolvedWeights:
        return self.resolver.resolve(self.spec(model_id), fmt, progress)

    def gguf_facts(self, model_id: str) -> GGUFFacts:
        weights = self.resolve(model_id, "gguf")
        with self._facts_lock:
            facts = self._facts.get(weights.path)
        if facts is None:
            facts = cached_gguf_facts(weights.path, self.settings.data_dir / "gguf-facts")
            with self._facts_lock:
                self._facts[weights.path] = facts
        return facts

    def get(self, model_id: str, engine: str | None = None, progress=None) -> Engine:
        """A loaded engine for ``model_id``; ``engine`` is auto, llama.cpp, transformers or openai."""
        spec = self.spec(model_id)
        choice = self.choose(model_id, engine)
        if not spec.is_generative:
            raise EngineUnavailableError(
                f"{spec.name} is an {spec.family} model; text generation here runs decoder and encoder-decoder "
                f"models."
            )
        key = ("engine", choice.engine, model_id)
        return self.cache.get_or_load(key, lambda: self._load(spec, choice, progress))

    def get_transformers(self, model_id: str, load: Callable[[DeviceChoice], tuple[Any, Any]]) -> Engine:
        """A transformers engine for weights outside the catalog (a fine-tuned run), cached like the rest.

        ``load(device)`` returns (model, tokenizer) on that device; it runs once per ``model_id``.
        """
        def build():
            import torch

            from playground.backends.transformers_engine import device_for, engine_for

            torch.set_num_threads(self.hardware.cpu_threads)
            device = device_for(self.hardware.cuda, self.hardware.bf16)
            model, tokenizer = load(device)
            # A decoder, or an encoder-decoder (a fine-tuned FLAN-T5): engine_for reads the model's config.
            engine = engine_for(model_id, model.to(device=device.device, dtype=device.dtype).eval(),
                                tokenizer, device, token_limit=self.settings.request_token_limit)
            return engine, engine.memory_bytes()

        return self.cache.get_or_load(("engine", TRANSFORMERS, model_id), build)

    def loaded(self, model_id: str, engine: str) -> Engine | None:
        return self.cache.peek(("engine", engine, model_id))

    def _load(self, spec: ModelSpec, choice: EngineChoice, progress):
        token_limit = self.settings.request_token_limit
        if choice.engine == OPENAI:
            from playground.backends.openai_engine import OpenAICompatibleEngine

            settings = self.settings
            engine = OpenAICompatibleEngine.connect(
                spec.id, settings.openai_base_url, self.openai_models[spec.id], api_key=settings.openai_api_key,
                context_window=settings.openai_context or None, token_limit=token_limit)
        elif choice.engine == LLAMA_CPP:
            from playground.backends.llama_cpp_engine import LlamaCppEngine

            weights = self.resolver.resolve(spec, "gguf", progress)
            facts = self.gguf_facts(spec.id)
            engine = LlamaCppEngine.load(spec.id, weights, threads=self.hardware.cpu_threads,
                                         token_limit=token_limit, facts=facts, streams=self.settings.parallel)
        else:
            import torch

            from playground.backends.transformers_engine import TransformersEngine, device_for

            torch.set_num_threads(self.hardware.cpu_threads)

            # Prefer real safetensors weights; fall back to dequantising the GGUF.
            weights = self.resolver.resolve_for_transformers(spec, progress)
            engine = TransformersEngine.load(spec.id, weights, self.settings.data_dir,
                                             device_for(self.hardware.cuda, self.hardware.bf16),
                                             token_limit=token_limit, progress=progress)
        return engine, engine.memory_bytes()
