"""One prompt through full precision (transformers) and quantised (llama.cpp), side by side.

The comparison is the lesson of the Quantized CPU tab: the same weights,
stored in 32 or about 4.5 bits, give nearly the same answer at a fraction of
the memory and several times the speed on a CPU. The runs happen one after
the other so neither slows the other down.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

from playground.backends.base import GenerationParams, GenerationResult, Message
from playground.backends.slots import SlotHolder, no_slot
from playground.backends.selection import LLAMA_CPP, TRANSFORMERS


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


def compare_precisions(provider, model_id: str, messages: list[Message], params: GenerationParams,
                       progress=None, slot: SlotHolder = no_slot) -> Iterator[PrecisionComparison]:
    """Yields the comparison as it fills: after each load and each generated piece.

    ``progress(fraction, message)`` hears about slow loads (the first GGUF conversion). ``slot`` is held
    while each of the two models generates, not while they load.
    """
    facts = provider.gguf_facts(model_id)
    full = PrecisionRun(TRANSFORMERS, "fp32 (dequantised from GGUF)" if not provider.hardware.cuda else "bf16")
    quant = PrecisionRun(LLAMA_CPP, facts.file_type)
    # A fixed seed makes the two runs comparable when sampling.
    if params.seed is None:
        params = replace(params, seed=0)

    full = replace(full, status="loading")
    yield PrecisionComparison(full, quant)
    engine = provider.get(model_id, TRANSFORMERS, progress=progress)
    full = replace(full, status="generating", weights_bytes=engine.memory_bytes())
    yield PrecisionComparison(full, quant)
    for run in _stream(engine, messages, params, full, slot):
        full = run
        yield PrecisionComparison(full, quant)

    quant = replace(quant, status="loading")
    yield PrecisionComparison(full, quant)
    engine = provider.get(model_id, LLAMA_CPP, progress=progress)
    quant = replace(quant, status="generating", weights_bytes=engine.weights_bytes)
    yield PrecisionComparison(full, quant)
    for run in _stream(engine, messages, params, quant, slot):
        quant = run
        yield PrecisionComparison(full, quant)


def _stream(engine, messages: list[Message], params: GenerationParams, run: PrecisionRun, slot: SlotHolder
            ) -> Iterator[PrecisionRun]:
    generation = engine.stream(engine.format_chat(messages), params)
    with slot(None):
        text = ""
        for piece in generation:
            text += piece
            yield replace(run, text=text)
    yield replace(run, text=generation.result.text, result=generation.result, status="done")
