"""The shared llama.cpp decode loop: many people's answers in one batch, each as if it were decoded alone.

On the packaged SmolLM2 GGUF (a real model) and, for fine-tuned runs, on the tiny F32 GGUF with two
people's LoRA adapters.
"""

from __future__ import annotations

import threading

import pytest

from playground.backends.base import GenerationParams, Waiting
from playground.backends.llama_batch import PROMPT_BLOCK, reusable_prefix, shared_prefix
from playground.backends.llama_cpp_engine import LlamaCppEngine
from playground.errors import EngineUnavailableError
from playground.finetune.finetuned import finetuned_id

QUESTIONS = ["What is the capital of France?", "Write a haiku about rain.", "Explain photosynthesis briefly.",
             "What is 12 times 7?", "Name three colours.", "Say hello in Portuguese.", "Who wrote Hamlet?",
             "Give me a tip for studying."]
GREEDY = GenerationParams(max_new_tokens=20, temperature=0)


def _chat(engine, question: str) -> str:
    return engine.format_chat([{"role": "user", "content": question}])


def _together(calls):
    """Run the calls at once, each in its own thread; their results in order (an exception is re-raised)."""
    results: list = [None] * len(calls)

    def run(i, call):
        try:
            results[i] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _hold_between_steps(engine, monkeypatch) -> threading.Event:
    """Stop the engine's decode loop before its next decode step, so no race decides what the test sees;
    the loop goes on once the returned event is set."""
    loop = engine._decode_loop()
    held, gate = threading.Event(), threading.Event()
    decode_step = loop._decode_step

    def holding_step():
        held.set()
        gate.wait(30)
        decode_step()

    monkeypatch.setattr(loop, "_decode_step", holding_step)
    assert held.wait(30)
    return gate


@pytest.fixture(scope="module")
def two_streams(provider):
    """The packaged SmolLM2 with a decode loop of two sequences, so a third request waits in line."""
    engine = LlamaCppEngine.load("smollm2-135m-instruct", provider.resolve("smollm2-135m-instruct", "gguf"),
                                 threads=provider.hardware.cpu_threads, streams=2)
    yield engine
    engine.close()


def test_greedy_and_seeded_answers_are_the_same_alone_and_in_a_full_batch(llama_engine):
    prompts = [_chat(llama_engine, q) for q in QUESTIONS]
    seeded = GenerationParams(max_new_tokens=20, temperature=0.9, seed=11)
    alone = [llama_engine.generate(p, GREEDY) for p in prompts]
    alone_seeded = [llama_engine.generate(p, seeded).text for p in prompts[:3]]
    together = _together([lambda p=p: llama_engine.generate(p, GREEDY) for p in prompts]
                         + [lambda p=p: llama_engine.generate(p, seeded).text for p in prompts[:3]])
    assert [r.text for r in together[:len(prompts)]] == [r.text for r in alone]
    assert together[len(prompts):] == alone_seeded
    assert all(r.engine == "llama.cpp" and r.completion_tokens > 0 for r in together[:len(prompts)])
    assert llama_engine.loop_summary()["decoding"] == 0 and llama_engine.loop_summary()["waiting"] == 0


def test_a_request_joins_between_steps_and_one_that_ends_leaves(llama_engine):
    """A long answer is decoding when a short one joins; the short one ends first and leaves, the long one
    goes on; both are what they would be alone."""
    long_prompt, short_prompt = _chat(llama_engine, QUESTIONS[2]), _chat(llama_engine, QUESTIONS[3])
    long_params = GenerationParams(max_new_tokens=48, temperature=0, repetition_penalty=1.3)
    short_params = GenerationParams(max_new_tokens=3, temperature=0)
    long_alone = llama_engine.generate(long_prompt, long_params).text
    short_alone = llama_engine.generate(short_prompt, short_params).text

    long_generation = llama_engine.stream(long_prompt, long_params)
    pieces = iter(long_generation)
    text = ""
    while len(text.strip()) < 5:  # the long answer is under way
        text += next(pieces)
    short = llama_engine.generate(short_prompt, short_params)
    summary_after_short = llama_engine.loop_summary()
    text += "".join(pieces)
    assert long_generation.batched
    assert short.text == short_alone and short.finish_reason == "length"
    assert summary_after_short["decoding"] == 1  # the short one left; the long one was still decoding
    assert text == long_alone and long_generation.result.completion_tokens > short.completion_tokens


def test_cancel_stops_only_that_sequence(llama_engine):
    prompts = [_chat(llama_engine, q) for q in QUESTIONS[:2]]
    params = GenerationParams(max_new_tokens=40, temperature=0, repetition_penalty=1.3)
    other_alone = llama_engine.generate(prompts[1], params).text
    cancelled = llama_engine.stream(prompts[0], params)

    def cancel_after_two_pieces():
        for i, _ in enumerate(cancelled):
            if i == 1:
                cancelled.cancel()
        return cancelled.result

    result, other = _together([cancel_after_two_pieces, lambda: llama_engine.generate(prompts[1], params)])
    assert result.finish_reason == "cancelled" and result.completion_tokens <= 4
    assert other.text == other_alone and other.finish_reason in ("stop", "length")


def test_stop_sequences_are_per_sequence(llama_engine):
    prompts = [_chat(llama_engine, q) for q in QUESTIONS[4:6]]
    full = [llama_engine.generate(p, GREEDY).text for p in prompts]
    stops = [full[0].split()[1], full[1].split()[2]]
    results = _together([lambda p=p, s=s: llama_engine.generate(p, GenerationParams(
        max_new_tokens=20, temperature=0, stop=(s,))) for p, s in zip(prompts, stops)])
    for result, text, stop in zip(results, full, stops):
        assert result.finish_reason == "stop" and result.text == text[:text.find(stop)]


def test_requests_beyond_the_streams_wait_in_line_and_hear_their_place(two_streams):
    engine = two_streams
    prompts = [_chat(engine, q) for q in QUESTIONS[:5]]
    # long enough answers that the third in line waits past a quarter second, when it hears its place
    params = GenerationParams(max_new_tokens=48, temperature=0, repetition_penalty=1.3)
    alone = [engine.generate(p, params).text for p in prompts]
    positions: dict[int, list[int]] = {i: [] for i in range(len(prompts))}

    def run(i):
        generation = engine.stream(prompts[i], params)
        text = ""
        for piece in generation:
            if generation.queue_position is not None:
                positions[i].append(generation.queue_position)
            text += piece
        return text

    texts = _together([lambda i=i: run(i) for i in range(len(prompts))])
    assert texts == alone
    assert any(p and max(p) >= 1 for p in positions.values())  # someone waited behind another in line
    assert engine.loop_summary() == {"decoding": 0, "waiting": 0, "streams": 2}


def test_a_request_cancelled_while_waiting_leaves_the_line_at_once(two_streams, monkeypatch):
    engine = two_streams
    params = GenerationParams(max_new_tokens=40, temperature=0)
    busy = [engine.stream(_chat(engine, q), params) for q in QUESTIONS[:2]]
    iterators = [iter(g) for g in busy]
    for it in iterators:
        next(it)  # both streams are taken
    gate = _hold_between_steps(engine, monkeypatch)  # nobody leaves a stream meanwhile
    waiting = engine.stream(_chat(engine, QUESTIONS[2]), params)
    pieces = iter(waiting)
    try:
        assert next(pieces) == "" and waiting.queue_position == 1  # first in line, behind a running answer
        assert engine.loop_summary()["waiting"] == 1
        waiting.cancel()
        assert list(pieces) == [] and waiting.result.finish_reason == "cancelled"
        assert waiting.result.completion_tokens == 0
        assert engine.loop_summary()["waiting"] == 0
    finally:
        gate.set()
    for generation, it in zip(busy, iterators):
        generation.cancel()
        list(it)


def test_closing_the_model_turns_away_the_line_and_lets_answers_finish(provider, monkeypatch):
    engine = LlamaCppEngine.load("smollm2-135m-instruct", provider.resolve("smollm2-135m-instruct", "gguf"),
                                 threads=provider.hardware.cpu_threads, streams=1)
    params = GenerationParams(max_new_tokens=16, temperature=0)
    running = engine.stream(_chat(engine, QUESTIONS[0]), params)
    running_pieces = iter(running)
    first = next(running_pieces)
    gate = _hold_between_steps(engine, monkeypatch)  # the running answer cannot end before the next is in line
    waiting = engine.stream(_chat(engine, QUESTIONS[1]), params)
    waiting_pieces = iter(waiting)
    closer = threading.Thread(target=engine.close)
    try:
        assert next(waiting_pieces) == ""  # in line behind the running answer
        closer.start()
        with pytest.raises(EngineUnavailableError, match="send the request again"):
            list(waiting_pieces)
    finally:
        gate.set()
    rest = "".join(running_pieces)
    closer.join(30)
    assert not closer.is_alive() and engine.closed
    assert running.result.finish_reason in ("stop", "length") and (first + rest).strip()
    with pytest.raises(EngineUnavailableError):
        engine.generate(_chat(engine, QUESTIONS[2]), params)


def test_a_request_longer_than_a_stream_decodes_alone_in_the_main_context(llama_engine):
    prompt = _chat(llama_engine, "word " * (llama_engine.stream_context - 100))
    room = llama_engine.stream_context - llama_engine.count_tokens(prompt)
    assert 1 <= room < 1024
    fits = llama_engine.stream(prompt, GenerationParams(max_new_tokens=room, temperature=0))
    too_long = llama_engine.stream(prompt, GenerationParams(max_new_tokens=room + 1, temperature=0))
    assert fits.batched and not too_long.batched
    fits.cancel(), too_long.cancel()
    assert fits.run().finish_reason == "cancelled" and too_long.run().finish_reason == "cancelled"


def test_people_s_fine_tuned_runs_share_their_base_s_loop(gguf_room):
    """Two people's runs and the base itself, at once: each answer is the one its model gives alone."""
    services, runs = gguf_room
    engines = [services.engine(finetuned_id(runs["alice"]), "llama.cpp", "alice"),
               services.engine(finetuned_id(runs["bob"]), "llama.cpp", "bob")]
    engines.append(services.engine(engines[0].base_model_id, "llama.cpp"))
    prompt = "hello world"
    params = GenerationParams(max_new_tokens=12, temperature=0, repetition_penalty=1.0)
    alone = [engine.generate(prompt, params).text for engine in engines]
    assert len(set(alone)) == 3  # the adapters change the answers
    together = _together([lambda e=e: e.generate(prompt, params).text for e in engines for _ in range(2)])
    assert together == [text for text in alone for _ in range(2)]
    assert engines[0]._loaded is engines[2]._loaded and engines[0]._loaded.loop is not None


def test_waiting_pieces_are_not_tokens_and_the_time_in_line_is_not_the_first_token_s(monkeypatch):
    """The Generation turns the loop's Waiting pieces into empty strings and a queue position; the time spent
    behind others is queued_s, outside the time to first token and the decode speed."""
    from playground.backends import base
    from playground.backends.base import Generation

    clock = iter([1.0, 3.0, 3.5, 5.0])  # heard in line twice, the first token, the end
    monkeypatch.setattr(base.time, "perf_counter", lambda: next(clock))

    def pieces():
        yield Waiting(2)
        yield Waiting(1)
        yield Waiting(0)
        yield "Hi"
        yield "!"

    generation = Generation(pieces(), prompt_tokens=3, params=GenerationParams(max_new_tokens=2), engine="x",
                            model_id="m", started=0.0, batched=True)
    seen = []
    for piece in generation:
        seen.append((piece, generation.queue_position))
    assert seen == [("", 2), ("", 1), ("", 0), ("Hi", None), ("!", None)]
    result = generation.result
    assert result.text == "Hi!" and result.completion_tokens == 2
    assert result.queued_s == 3.0 and result.time_to_first_token_s == 0.5 and result.total_s == 5.0
    assert result.tokens_per_s == pytest.approx(1 / 1.5)


@pytest.mark.parametrize("cached, prompt, keep", [
    ([], [1] * 200, 0),
    ([1] * 200, [1] * 200, 199 // PROMPT_BLOCK * PROMPT_BLOCK),
    ([1] * PROMPT_BLOCK, [1] * PROMPT_BLOCK, 0),  # the last prompt token is always evaluated
    ([1] * (2 * PROMPT_BLOCK + 2) + [2], [1] * (2 * PROMPT_BLOCK + 2) + [3] * 10, 2 * PROMPT_BLOCK),
])
def test_a_stream_keeps_whole_blocks_it_shares_with_the_next_prompt(cached, prompt, keep):
    assert reusable_prefix(shared_prefix(cached, prompt), len(prompt)) == keep


def test_an_evaluation_decodes_its_examples_together_with_the_answers_it_gives_in_turn(llama_engine, monkeypatch):
    from playground.prompting import evaluation
    from playground.prompting.data import load_bundled
    from playground.prompting.strategies import PromptSetup

    data = load_bundled("sentiment")
    setups = [PromptSetup("sentiment", "Sentence: {{ text }}\nSentiment (positive, negative or neutral):")]
    params = GenerationParams(max_new_tokens=6, temperature=0)
    decoding = []
    summary = llama_engine.loop_summary

    def watched():
        figures = summary()
        decoding.append(figures["decoding"])
        return figures

    together = evaluation.evaluate(llama_engine, setups, data, params, limit=6,
                                   progress=lambda update: watched())
    monkeypatch.setattr(evaluation, "EXAMPLES_IN_FLIGHT", 1)
    in_turn = evaluation.evaluate(llama_engine, setups, data, params, limit=6)
    assert [r.output for r in together.results] == [r.output for r in in_turn.results]
    assert max(decoding) >= 2  # other examples were still decoding when one finished


def test_a_prompt_borrows_the_blocks_another_sequence_holds_and_answers_as_alone(llama_engine, monkeypatch):
    """In a room everyone's prompt starts alike: the second person's prompt copies the shared blocks from the
    first person's sequence instead of computing them, and the answer is the one it gets alone."""
    demos = " ".join(f"Example {i}: the parcel number {i} arrived on time." for i in range(10))
    first = _chat(llama_engine, demos + " Question: did parcel 3 arrive?")
    second = _chat(llama_engine, demos + " Question: did parcel 7 arrive?")
    params = GenerationParams(max_new_tokens=8, temperature=0)
    second_alone = llama_engine.generate(second, params).text
    shared = shared_prefix(llama_engine.tokenize(first), llama_engine.tokenize(second))
    assert shared > 3 * PROMPT_BLOCK

    loop = llama_engine._decode_loop()
    evaluated: list[tuple[int, int]] = []  # (sequence, prompt tokens) of each prompt block evaluated
    decode = loop._ctx.decode

    def recording(batch):
        b = batch.batch
        if b.n_tokens > 1 or not b.logits[0]:
            evaluated.append((int(b.seq_id[0][0]), int(b.n_tokens)))
        return decode(batch)

    monkeypatch.setattr(loop._ctx, "decode", recording)
    busy = llama_engine.stream(first, GenerationParams(max_new_tokens=40, temperature=0, repetition_penalty=1.3))
    pieces = iter(busy)
    next(pieces)  # the first person's sequence holds the shared blocks and is still answering
    evaluated.clear()
    answer = llama_engine.generate(second, params)
    busy.cancel()
    list(pieces)
    second_tokens = len(llama_engine.tokenize(second))
    read = sum(n for _, n in evaluated)
    assert answer.text == second_alone
    assert read <= second_tokens - shared // PROMPT_BLOCK * PROMPT_BLOCK + PROMPT_BLOCK
