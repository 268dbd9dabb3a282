"""A run's before/after answers on llama.cpp: the base's quantised GGUF, alone or with the run's adapter GGUF.

The trainer answers ``sample_count`` test examples before and after training
(:mod:`~playground.finetune.train`). Those answers come from transformers (the
model that trains, fp32 on a CPU) or from llama.cpp (the catalog's GGUF of the
base, several times faster on a CPU), as the config's ``sample_engine`` says:

- ``transformers``: base and fine-tuned on transformers; a LoRA/QLoRA run of a
  decoder whose base has a GGUF also answers on llama.cpp with its adapter
  converted (:func:`~playground.finetune.gguf_adapter.run_adapter_gguf`): a
  third system, "fine-tuned, quantized", that shows what quantisation costs the
  fine-tune;
- ``llama.cpp``: base = the GGUF alone, fine-tuned = the GGUF with the adapter
  (the quantised model already, so there is no third system);
- ``auto``: llama.cpp on a CPU where it can serve the run, else transformers.

:func:`gguf_plan` says whether llama.cpp can serve a run, and if not, why (one
sentence the run's metrics keep). :class:`GgufAnswers` loads the base GGUF for
one stage of a run and answers the same token ids transformers reads, greedily,
with the same ``max_new_tokens`` and the same stop rule (end of text).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from playground.backends.selection import LLAMA_CPP, TRANSFORMERS
from playground.errors import FinetuneConfigError, PlaygroundError, UnknownModelError
from playground.finetune.methods import get_method
from playground.finetune.weights import DECODER, ENCODER

AUTO = "auto"
SAMPLE_ENGINES = (AUTO, TRANSFORMERS, LLAMA_CPP)
# The systems a run's samples can show, by their field prefix in samples.jsonl.
BASE, TUNED, QUANTIZED = "base", "tuned", "quantized"


@dataclass(frozen=True)
class SampleEngine:
    """What produced one system's answers: an engine, its weights and (llama.cpp) an adapter file over them."""

    engine: str  # transformers | llama.cpp
    weights: str = ""  # fp32, bf16, NF4 (transformers); the GGUF's type, e.g. Q4_1 (llama.cpp); "" unknown
    adapter: bool = False  # the run's LoRA as a llama.cpp adapter GGUF over the quantised base

    @property
    def label(self) -> str:
        """e.g. "transformers fp32", "llama.cpp Q4_1 + adapter"."""
        return " ".join(p for p in (self.engine, self.weights) if p) + (" + adapter" if self.adapter else "")

    def to_json(self) -> dict:
        return {"engine": self.engine, "weights": self.weights, "adapter": self.adapter}

    @classmethod
    def from_json(cls, data) -> "SampleEngine | None":
        if not isinstance(data, dict) or not data.get("engine"):
            return None
        return cls(str(data["engine"]), str(data.get("weights") or ""), bool(data.get("adapter")))


@dataclass(frozen=True)
class GgufPlan:
    """Whether llama.cpp can answer for a run: the base GGUF, or why not."""

    weights: object = None  # models.sources.ResolvedWeights of the base's GGUF; None when llama.cpp cannot
    file_type: str = ""  # the GGUF's quantisation, e.g. Q4_1
    reason: str = ""  # why llama.cpp cannot answer for this run ("" when it can)

    @property
    def available(self) -> bool:
        return self.weights is not None


def llama_cpp_problem(method_name: str, model: str, family: str, catalog) -> str:
    """Why llama.cpp cannot answer for a run of ``method_name`` on ``model``, read from the config alone
    (the GGUF itself is found later); "" when it can."""
    method = get_method(method_name)
    if family == ENCODER:
        return "a classifier answers with labels, and llama.cpp runs generative decoders only"
    if family != DECODER:
        return f"llama.cpp runs decoder models only, and this base is an {family} model"
    if not method.gguf_adapter:
        return (f"method {method.name!r} saves weights that a llama.cpp LoRA adapter cannot carry (only a plain "
                f"LoRA applies to the quantised base); its merged model can be exported and quantised instead")
    spec = _spec(model, catalog)
    if spec is None:
        return "the base is a local folder, and llama.cpp needs the catalog's GGUF of a model"
    if not spec.has_gguf:
        return f"the catalog has no GGUF of {spec.name} for llama.cpp to load"
    return ""


def _spec(model: str, catalog):
    try:
        return catalog.get(model)
    except UnknownModelError:
        return None


def gguf_plan(config, family: str, catalog, resolver, progress=None) -> GgufPlan:
    """The base GGUF that llama.cpp answers on for this run (resolved like every other weight), or why not."""
    problem = llama_cpp_problem(config.method, config.model, family, catalog)
    if problem:
        return GgufPlan(reason=problem)
    if importlib.util.find_spec("llama_cpp") is None:
        return GgufPlan(reason="llama-cpp-python is not installed (pip install llama-cpp-python)")
    spec = catalog.get(config.model)
    try:
        weights = resolver.resolve(spec, "gguf", progress)
        from playground.models.gguf_info import read_gguf_facts

        facts = read_gguf_facts(weights.path)
    except PlaygroundError as exc:
        return GgufPlan(reason=f"the GGUF of {spec.name} is not available here ({str(exc).rstrip('.')})")
    file_type = (facts.file_type or "").removeprefix("ALL_")  # gguf names an all-F32 file ALL_F32
    return GgufPlan(weights, "" if file_type == "?" else file_type)


def sample_engine_for(requested: str, cuda: bool, plan: GgufPlan) -> str:
    """The engine of the before/after answers: ``requested``, with auto decided (llama.cpp on a CPU where it can).

    Raises FinetuneConfigError when llama.cpp is asked for a run it cannot serve.
    """
    if requested == LLAMA_CPP and not plan.available:
        raise FinetuneConfigError(f"sample_engine is llama.cpp, but {plan.reason}. Choose auto or transformers.")
    if requested == AUTO:
        return LLAMA_CPP if plan.available and not cuda else TRANSFORMERS
    return requested


class GgufAnswers:
    """The base GGUF loaded on llama.cpp for one stage of a run (close it, or use ``with``)."""

    def __init__(self, model_id: str, plan: GgufPlan, threads: int, n_ctx: int):
        from playground.backends.llama_cpp_engine import LlamaCppEngine

        self.model_id = model_id
        # One stream: the stage answers one example after the other, alone on the machine.
        self.engine = LlamaCppEngine.load(model_id, plan.weights, threads, n_ctx=n_ctx, streams=1)

    def __enter__(self) -> "GgufAnswers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.engine.close()

    def answer(self, prompt: str, ids: Sequence[int], max_new_tokens: int, adapter: Path | None = None,
               should_stop: Callable[[], bool] | None = None) -> str:
        """The greedy answer to ``ids`` (the prompt's tokens as transformers reads them), with the adapter
        GGUF applied when given; ends at the end of text or after ``max_new_tokens`` tokens. ``should_stop``
        is asked at every token; once it says yes the answer is cut short there."""
        from playground.backends.base import GenerationParams, TokenizedPrompt

        engine = self.engine.with_adapter(self.model_id, adapter) if adapter is not None else self.engine
        params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0, repetition_penalty=1.0, seed=0)
        generation = engine.stream(TokenizedPrompt(prompt, tuple(ids)), params)
        for _ in generation:
            if should_stop is not None and should_stop():
                generation.cancel()
        assert generation.result is not None
        return generation.result.text.strip()
