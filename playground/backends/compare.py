"""One prompt through full precision (transformers) and quantised (llama.cpp), side by side.

The comparison is the lesson of the Quantized CPU tab: the same weights,
stored in 32 or about 4.5 bits, give nearly the same answer at a fraction of
the memory and several times the speed on a CPU. The runs happen one after
the other so neither slows the other down.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator

from playground.backends.base import Engine, GenerationParams, GenerationResult, Message
from playground.backends.slots import SlotHolder, no_slot, slot_for
from playground.backends.selection import LLAMA_CPP, TRANSFORMERS

EngineFor = Callable[..., Engine]  # (model id, engine name, progress=...) -> a loaded engine


@dataclass(frozen=True)
class PrecisionRun:
    engine: str
    precision: str  # e.g. "fp32 (dequantised)" or "Q4_1"
    text: str = ""
    result: GenerationResult | None = None
    weights_bytes: int = 0
    status: str = "waiting"  # waiting, loading, generating, done

    @property
    def tokens_per_s(self) -> float:
        return self.result.tokens_per_s if self.result else 0.0


@dataclass(frozen=True)
class PrecisionComparison:
    full: PrecisionRun
    quantised: PrecisionRun

    @property
    def speedup(self) -> float:
        if self.full.tokens_per_s and self.quantised.tokens_per_s:
            return self.quantised.tokens_per_s / self.full.tokens_per_s
        return 0.0

    @property
    def memory_ratio(self) -> float:
        if self.full.weights_bytes and self.quantised.weights_bytes:
            return self.full.weights_bytes / self.quantised.weights_bytes
        return 0.0


def compare_precisions(engine_for: EngineFor, model_id: str, messages: list[Message], params: GenerationParams,
                       *, full_precision: str, quantised_precision: str, progress=None, slot: SlotHolder = no_slot
                       ) -> Iterator[PrecisionComparison]:
    """Yields the comparison as it fills: after each load and each generated piece.

    ``engine_for(model_id, engine, progress=...)`` loads the model on transformers, then on llama.cpp (an
    engine provider's ``get``, or one person's models, whose fine-tuned runs answer as their base plus their
    adapter). ``full_precision`` and ``quantised_precision`` name what each side holds (e.g. "fp32", "Q4_1").
    ``progress(fraction, message)`` hears about slow loads (the first GGUF conversion). ``slot`` is held
    while each of the two models generates, not while they load.
    """
    full = PrecisionRun(TRANSFORMERS, full_precision)
    quant = PrecisionRun(LLAMA_CPP, quantised_precision)
    # A fixed seed makes the two runs comparable when sampling.
    if params.seed is None:
        params = replace(params, seed=0)

    full = replace(full, status="loading")
    yield PrecisionComparison(full, quant)
    engine = engine_for(model_id, TRANSFORMERS, progress=progress)
    full = replace(full, status="generating", weights_bytes=engine.memory_bytes())
    yield PrecisionComparison(full, quant)
    for run in _stream(engine, messages, params, full, slot):
        full = run
        yield PrecisionComparison(full, quant)

    quant = replace(quant, status="loading")
    yield PrecisionComparison(full, quant)
    engine = engine_for(model_id, LLAMA_CPP, progress=progress)
    # A run's adapter GGUF sits in memory beside the quantised base.
    adapter_bytes = getattr(engine, "adapter_bytes", 0)
    quant = replace(quant, status="generating", weights_bytes=engine.weights_bytes + adapter_bytes)
    yield PrecisionComparison(full, quant)
    for run in _stream(engine, messages, params, quant, slot):
        quant = run
        yield PrecisionComparison(full, quant)


def _stream(engine, messages: list[Message], params: GenerationParams, run: PrecisionRun, slot: SlotHolder
            ) -> Iterator[PrecisionRun]:
    generation = engine.stream(engine.format_chat(messages), params)
    with slot_for(slot, generation)(None):
        text = ""
        for piece in generation:
            text += piece
            yield replace(run, text=text)
    yield replace(run, text=generation.result.text, result=generation.result, status="done")
