"""Timed generation streams, shared by the llama.cpp and transformers suites: counted like ``GenerationResult``."""

from __future__ import annotations

import time
from dataclasses import dataclass

from playground.bench.core import speeds

# One timed stream stops after this long (the speed counts the tokens made so far), so a machine
# whose cores are busy with other programs cannot stretch the run to many minutes.
RUN_CAP_S = 10.0  # llama.cpp makes 128 tokens in about 2 s on two quiet cores

# A plain-text prompt the model continues at length (greedy decoding rarely ends it before N tokens).
THROUGHPUT_PROMPT = (
    "The history of the lighthouse begins in the ancient world. Sailors needed a way to find the "
    "harbour at night, so the people of the coast lit fires on hills and towers. Over the centuries"
)


@dataclass(frozen=True)
class StreamRun:
    """One timed stream: counted and timed exactly like ``GenerationResult``."""

    tokens: int
    ttft_s: float
    total_s: float
    text: str

    @property
    def tokens_per_s(self) -> float:
        decode = self.total_s - self.ttft_s
        return (self.tokens - 1) / decode if self.tokens >= 2 and decode > 0 else 0.0


def app_run(engine, prompt: str, params, cap_s: float = RUN_CAP_S) -> StreamRun:
    """One stream through an app engine, cancelled once it has run ``cap_s`` seconds."""
    generation = engine.stream(prompt, params)
    started = time.perf_counter()
    pieces = []
    for piece in generation:
        pieces.append(piece)
        if time.perf_counter() - started > cap_s:
            generation.cancel()  # the speed still counts the tokens made so far
    result = generation.result
    return StreamRun(result.completion_tokens, result.time_to_first_token_s, result.total_s, "".join(pieces))


def speed_detail(runs: list[StreamRun]) -> str:
    """The start of a decode figure's detail: each run's speed and tokens."""
    return f"median of {speeds(runs)}; tokens: {', '.join(str(r.tokens) for r in runs)}"
