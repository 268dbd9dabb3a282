"""One prompt through full precision (transformers) and quantised (llama.cpp), side by side.

The comparison is the lesson of the Quantized CPU tab: the same weights,
stored in 32 or about 4.5 bits, give nearly the same answer at a fraction of
the memory and several times the speed on a CPU. The runs happen one after
the other so neither slows the other down.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from playground.backends.base import Engine, GenerationParams, GenerationResult, Message
from playground.backends.slots import SlotHolder, no_slot, slot_for
from playground.backends.selection import LLAMA_CPP, TRANSFORMERS

EngineFor = Callable[..., Engine]  # (model id, engine name, progress=...) -> a loaded engine
SIDES = ("full", "quantised")
# How much of the progress bar each side's load takes (the rest is its generation); the first full-precision
# load converts the GGUF, which is most of a first comparison's time.
LOAD_SHARE = 0.3
ABOUT_SAME = 0.05  # speed ratios within 5% of 1 read as "about as fast"


@dataclass(frozen=True)
class ComparisonStep:
    """Where a comparison is, for a progress bar: ``side`` (full, quantised), ``phase`` (loading, generating,
    done), the tokens generated of the most asked for, the seconds the side's generation should still take
    (None until it has a speed), and the whole comparison's ``fraction`` done. ``detail`` is what a slow load
    said last (e.g. converting the GGUF)."""

    side: str
    phase: str
    done: int = 0
    total: int = 0
    eta_s: float | None = None
    fraction: float = 0.0
    detail: str = ""

    @property
    def index(self) -> int:
        """1 for the first side (full precision), 2 for the second."""
        return SIDES.index(self.side) + 1


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

    def verdict(self) -> tuple[str, float] | None:
        """How llama.cpp's speed compares (:func:`speed_verdict`)."""
        return speed_verdict(self.speedup, self.memory_ratio)

    def rows(self) -> list[list[str]]:
        """The comparison as table rows (a header, then one row per side) for a CSV download."""
        head = ["side", "engine", "precision", "weights_mb", "time_to_first_token_s", "tokens_per_s",
                "prompt_tokens", "new_tokens", "finish", "text"]
        rows = [head]
        for name, run in zip(SIDES, (self.full, self.quantised)):
            result = run.result
            rows.append([name, run.engine, run.precision, f"{run.weights_bytes / 1e6:.1f}",
                         f"{result.time_to_first_token_s:.3f}" if result else "",
                         f"{result.tokens_per_s:.2f}" if result else "",
                         str(result.prompt_tokens) if result else "", str(result.completion_tokens) if result else "",
                         result.finish_reason if result else run.status, run.text])
        return rows

    def csv(self) -> str:
        """:meth:`rows` as CSV text (a spreadsheet opens it)."""
        out = io.StringIO()
        csv.writer(out).writerows(self.rows())
        return out.getvalue()


def speed_verdict(speedup: float | None, memory_ratio: float | None = 1.0) -> tuple[str, float] | None:
    """How llama.cpp's speed compares, as (kind, factor): ("faster", 2.5) when it decoded 2.5 times as many
    tokens per second as full precision, ("slower", 2.5) when it decoded 2.5 times fewer (a ratio of 0.4:
    never "0.4x faster"), ("same", 1.0) within 5%; None until both sides have a speed and a size."""
    if not (speedup and memory_ratio) or speedup <= 0:
        return None
    if abs(speedup - 1) <= ABOUT_SAME:
        return "same", 1.0
    return ("faster", speedup) if speedup > 1 else ("slower", 1 / speedup)


def compare_precisions(engine_for: EngineFor, model_id: str, messages: list[Message], params: GenerationParams,
                       *, full_precision: str, quantised_precision: str, progress=None, slot: SlotHolder = no_slot,
                       steps: Callable[[ComparisonStep], None] | None = None) -> Iterator[PrecisionComparison]:
    """Yields the comparison as it fills: after each load and each generated piece.

    ``engine_for(model_id, engine, progress=...)`` loads the model on transformers, then on llama.cpp (an
    engine provider's ``get``, or one person's models, whose fine-tuned runs answer as their base plus their
    adapter). ``full_precision`` and ``quantised_precision`` name what each side holds (e.g. "fp32", "Q4_1").
    ``progress(fraction, message)`` hears about slow loads (the first GGUF conversion). ``slot`` is held
    while each of the two models generates, not while they load. ``steps(ComparisonStep)`` hears where the
    comparison is (each side's load, then every generated token with a count and the time left).
    """
    report = steps or (lambda step: None)
    total = params.max_new_tokens

    def loading(side: str):
        start = SIDES.index(side) / len(SIDES)
        report(ComparisonStep(side, "loading", 0, total, None, start))

        def heard(fraction, message=""):  # a slow load's own progress (the GGUF conversion)
            share = max(0.0, min(1.0, float(fraction or 0.0)))
            report(ComparisonStep(side, "loading", 0, total, None, start + share * LOAD_SHARE / len(SIDES),
                                  str(message or "")))
            if progress is not None:
                progress(fraction, message)
        return heard

    full = PrecisionRun(TRANSFORMERS, full_precision)
    quant = PrecisionRun(LLAMA_CPP, quantised_precision)
    # A fixed seed makes the two runs comparable when sampling.
    if params.seed is None:
        params = replace(params, seed=0)

    full = replace(full, status="loading")
    yield PrecisionComparison(full, quant)
    engine = engine_for(model_id, TRANSFORMERS, progress=loading("full"))
    full = replace(full, status="generating", weights_bytes=engine.memory_bytes())
    yield PrecisionComparison(full, quant)
    for run in _stream(engine, messages, params, full, slot, "full", report):
        full = run
        yield PrecisionComparison(full, quant)

    quant = replace(quant, status="loading")
    yield PrecisionComparison(full, quant)
    engine = engine_for(model_id, LLAMA_CPP, progress=loading("quantised"))
    # A run's adapter GGUF sits in memory beside the quantised base.
    adapter_bytes = getattr(engine, "adapter_bytes", 0)
    quant = replace(quant, status="generating", weights_bytes=engine.weights_bytes + adapter_bytes)
    yield PrecisionComparison(full, quant)
    for run in _stream(engine, messages, params, quant, slot, "quantised", report):
        quant = run
        yield PrecisionComparison(full, quant)
    report(ComparisonStep("quantised", "done", quant.result.completion_tokens if quant.result else 0, total, 0.0,
                          1.0))


def eta_seconds(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds the rest of ``total`` tokens should take at the speed of the ``done`` ones, which took
    ``elapsed_s`` (None before any: there is no speed yet). At most: an answer may stop early."""
    if done < 1 or elapsed_s <= 0:
        return None
    return max(0, total - done) * elapsed_s / done


def _stream(engine, messages: list[Message], params: GenerationParams, run: PrecisionRun, slot: SlotHolder,
            side: str = "full", report: Callable[[ComparisonStep], None] = lambda step: None
            ) -> Iterator[PrecisionRun]:
    total = params.max_new_tokens
    base = SIDES.index(side) / len(SIDES)
    share = 1 / len(SIDES)

    def at(done: int, eta: float | None) -> None:
        part = LOAD_SHARE + (1 - LOAD_SHARE) * min(done, total) / max(total, 1)
        report(ComparisonStep(side, "generating", done, total, eta, base + share * part))

    generation = engine.stream(engine.format_chat(messages), params)
    with slot_for(slot, generation)(None):
        text, done, first_at = "", 0, None
        at(0, None)
        for piece in generation:
            if not piece:
                continue
            done += 1  # engines stream one token per piece (a held-back stop sequence joins a few)
            now = time.perf_counter()
            first_at = first_at or now
            at(done, eta_seconds(done - 1, total - 1, now - first_at))
            text += piece
            yield replace(run, text=text)
    yield replace(run, text=generation.result.text, result=generation.result, status="done")
