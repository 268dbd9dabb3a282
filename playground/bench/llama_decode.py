"""llama.cpp: the app engine's decode speed against plain llama-cpp-python, and the warm time to first token.

The decode figure streams the same GGUF file through the app's engine and through llama-cpp-python
directly, with the same prompt tokens, context size and threads, timed the same way (tokens after the
first over the time after the first); the two alternate several times and the medians are compared
(target: the app keeps at least 90 % of the direct speed). The time to first token is that of a short
chat prompt on the warm engine (target: under half a second).
"""

from __future__ import annotations

import statistics
import time

from playground.backends.llama_loading import llama_class
from playground.bench.core import BenchOptions, CpuWatch, Figure, Measure, alternate, log, median_speed, per_round
from playground.bench.streams import RUN_CAP_S, THROUGHPUT_PROMPT, StreamRun, app_run, speed_detail

APP_SPEED = Measure("llama.cpp decode, app engine", "tok/s")
DIRECT_SPEED = Measure("llama.cpp decode, direct", "tok/s")
APP_OVER_DIRECT = Measure("llama.cpp app / direct speed", "x", ">= 0.9")

# Short chat questions for the time to first token; each run asks a different one, as a real chat
# would. The cache is reused only in whole 64-token blocks, so these short prompts are read in full.
CHAT_QUESTIONS = (
    "What is the capital of France?",
    "Name three primary colours.",
    "How many legs does a spider have?",
    "What does a thermometer measure?",
    "Why is the sky blue?",
    "What is two plus three?",
    "Which planet is closest to the Sun?",
    "What do bees make?",
)


def ttft_measure(model: str) -> Measure:
    return Measure(f"warm time to first token ({model})", "s", "< 0.5 s")


def direct_run(llm, prompt_ids: list[int], new_tokens: int, cap_s: float = RUN_CAP_S) -> StreamRun:
    """Plain llama-cpp-python streaming; one chunk per token (the closing chunk carries no token)."""
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    pieces: list[str] = []
    # Forget the last request, as the app does for a prompt shorter than one block: llama-cpp-python's own
    # prefix reuse would evaluate the last prompt token alone and change the greedy text between runs.
    llm.reset()
    stream = llm.create_completion(prompt_ids, max_tokens=new_tokens, temperature=0.0, stream=True,
                                   repeat_penalty=1.0)
    try:
        for chunk in stream:
            choice = chunk["choices"][0]
            if choice.get("finish_reason") is not None and not choice.get("text"):
                continue
            tokens += 1
            if first is None:
                first = time.perf_counter()
            pieces.append(choice.get("text") or "")
            if time.perf_counter() - started > cap_s:
                break
    finally:
        stream.close()
    end = time.perf_counter()
    return StreamRun(tokens, (first or end) - started, end - started, "".join(pieces))


def _app_against_direct(engine, provider, options: BenchOptions) -> tuple[list[Figure], float]:
    """The two decode speeds and their ratio; also returns the app's median speed."""
    from playground.backends.base import GenerationParams
    from playground.backends.llama_cpp_engine import PROMPT_BLOCK

    n = options.new_tokens
    weights = provider.resolve(options.model, "gguf")
    threads, n_ctx = engine.threads, engine.context_window
    # The app's prompt blocks, so both sides compute the same numbers and the texts can be compared.
    Llama = llama_class()
    direct = Llama(model_path=str(weights.path), n_ctx=n_ctx, n_threads=threads,
                   n_threads_batch=threads, n_batch=PROMPT_BLOCK, n_ubatch=PROMPT_BLOCK, verbose=False)
    try:
        ids = engine.tokenize(THROUGHPUT_PROMPT)
        params = GenerationParams(max_new_tokens=n, temperature=0.0, repetition_penalty=1.0, seed=0)
        log(f"warming up both, then {options.rounds} alternating rounds of {n} tokens")
        app_run(engine, THROUGHPUT_PROMPT, GenerationParams(max_new_tokens=8, temperature=0.0,
                                                             repetition_penalty=1.0, seed=0))
        direct_run(direct, ids, 8)
        watch = CpuWatch()
        app_runs, direct_runs = alternate(options.rounds, lambda _: app_run(engine, THROUGHPUT_PROMPT, params),
                                          lambda _: direct_run(direct, ids, n))
    finally:
        direct.close()
    app_speed = median_speed(app_runs)
    direct_speed = median_speed(direct_runs)
    same = all(a.text.startswith(d.text) or d.text.startswith(a.text)  # a run cut short is a prefix
               for a, d in zip(app_runs, direct_runs))
    cut = sum(r.total_s > RUN_CAP_S for r in app_runs + direct_runs)
    setup = f"{len(ids)} prompt tokens, {n} new, greedy, n_ctx={n_ctx}, {threads} threads, {options.rounds} rounds"
    ratio = app_speed / direct_speed if direct_speed > 0 else None
    return [APP_SPEED.measured(app_speed, speed_detail(app_runs)),
            DIRECT_SPEED.measured(direct_speed, speed_detail(direct_runs)),
            APP_OVER_DIRECT.measured(ratio, f"ratio of the medians; per round {per_round(app_runs, direct_runs)}; "
                                            f"{setup}; same text: {'yes' if same else 'NO'}"
                                            f"{f'; {cut} run(s) cut at {RUN_CAP_S:.0f} s' if cut else ''}"
                                            f"{watch.note()}")], app_speed


def _time_to_first_token(engine, options: BenchOptions) -> Figure:
    from playground.backends.base import GenerationParams

    runs = options.ttft_runs
    log(f"time to first token: one warm-up, then {runs} chat prompts")
    params = GenerationParams(max_new_tokens=4, seed=0)  # the app's default sampling
    times: list[float] = []
    prompt_tokens: list[int] = []
    watch = CpuWatch()
    for i in range(runs + 1):
        question = CHAT_QUESTIONS[i % len(CHAT_QUESTIONS)]
        prompt = engine.format_chat([{"role": "user", "content": question}])
        generation = engine.stream(prompt, params)
        generation.run()
        if i > 0:  # the first is the warm-up
            times.append(generation.result.time_to_first_token_s)
            prompt_tokens.append(generation.result.prompt_tokens)
    return ttft_measure(options.model).measured(
        statistics.median(times),
        f"median of {', '.join(f'{t:.3f}' for t in times)} s; chat prompts of "
        f"{min(prompt_tokens)}-{max(prompt_tokens)} tokens, a different question each time{watch.note()}")


def bench_llama_cpp(provider, options: BenchOptions) -> tuple[list[Figure], float | None]:
    """App engine against direct llama-cpp-python, then the warm time to first token.

    Returns the figures and the app's median decode speed (for the ratio with transformers).
    """
    log(f"loading {options.model} in the app's llama.cpp engine")
    engine = provider.get(options.model, "llama.cpp")
    app_speed: float | None = None
    try:
        figures, app_speed = _app_against_direct(engine, provider, options)
    except Exception as exc:
        figures = [APP_OVER_DIRECT.failed(exc)]
    try:
        figures.append(_time_to_first_token(engine, options))
    except Exception as exc:
        figures.append(ttft_measure(options.model).failed(exc))
    return figures, app_speed
