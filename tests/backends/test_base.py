"""The shared engine protocol: parameter checks, stop sequences, finish reasons, cancel (fake engine)."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest

from playground.backends.base import EngineBase, GenerationParams, GenerationResult
from playground.errors import ContextOverflowError, InvalidParameterError, InvalidPromptError


class FakeEngine(EngineBase):
    """Tokenizes one id per character and 'generates' a fixed list of pieces."""

    name = "fake"

    def __init__(self, pieces, context: int = 64, token_limit: int | None = None):
        super().__init__("fake-model", token_limit)
        self.pieces = list(pieces)
        self.context = context
        self.closed = 0
        self.produced = 0
        self.lock_held_while_generating: list[bool] = []

    @property
    def context_window(self) -> int:
        return self.context

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def _token_pieces(self, prompt_ids, params) -> Iterator[str]:
        try:
            for piece in self.pieces[: params.max_new_tokens]:
                self.lock_held_while_generating.append(self.lock.locked())
                self.produced += 1
                yield piece
        finally:
            self.closed += 1


def params(**kw) -> GenerationParams:
    kw.setdefault("max_new_tokens", 20)
    return GenerationParams(**kw)


def collect(engine: FakeEngine, p: GenerationParams, prompt: str = "hi") -> tuple[list[str], GenerationResult]:
    generation = engine.stream(prompt, p)
    pieces = list(generation)
    assert generation.result is not None
    return pieces, generation.result


# ---------------------------------------------------------------- stop sequences


def test_stop_split_across_pieces_is_cut_and_never_emitted():
    engine = FakeEngine(["Hel", "lo ", "EN", "D", " after"])
    pieces, result = collect(engine, params(stop=("END",)))
    assert "".join(pieces) == "Hello "
    assert result.text == "Hello "
    assert not any("E" in p or "N" in p for p in pieces)
    assert result.finish_reason == "stop"
    assert engine.produced == 4  # nothing is generated past the stop
    assert engine.closed == 1


def test_stop_inside_one_piece():
    pieces, result = collect(FakeEngine(["one two", " three\n\nfour", " five"]), params(stop=("\n\n",)))
    assert result.text == "one two three"
    assert "".join(pieces) == result.text
    assert result.finish_reason == "stop"


def test_held_back_text_that_is_not_a_stop_is_emitted():
    engine = FakeEngine(["a", "E", "N", "x", "b"])
    pieces, result = collect(engine, params(stop=("END",)))
    assert "".join(pieces) == "aENxb" == result.text
    # "E" and "EN" could start the stop, so they wait until "x" shows they do not.
    assert pieces == ["a", "ENx", "b"]


def test_held_back_text_is_emitted_at_the_end():
    pieces, result = collect(FakeEngine(["done", " EN"]), params(stop=("END",)))
    assert "".join(pieces) == "done EN" == result.text
    assert result.finish_reason == "stop"  # the model ended by itself before the limit


def test_earliest_of_several_stops_wins():
    _, result = collect(FakeEngine(["x", "y", "STOP", "z", "END"]), params(stop=("END", "STOP")))
    assert result.text == "xy"


def test_no_stops_streams_every_piece_unchanged():
    pieces, result = collect(FakeEngine(["a", "b", "c"]), params())
    assert pieces == ["a", "b", "c"]
    assert result.text == "abc"


# ---------------------------------------------------------------- finish reasons and timing


def test_finish_reason_length_when_the_limit_is_reached():
    pieces, result = collect(FakeEngine(["w"] * 10), params(max_new_tokens=4))
    assert "".join(pieces) == "wwww"
    assert result.finish_reason == "length"
    assert result.completion_tokens == 4


def test_finish_reason_stop_when_the_model_ends_early():
    _, result = collect(FakeEngine(["w"] * 3), params(max_new_tokens=10))
    assert result.finish_reason == "stop"
    assert result.completion_tokens == 3


def test_result_fields():
    _, result = collect(FakeEngine(["a", "b", "c"]), params(), prompt="hello")
    assert result.prompt_tokens == 5
    assert result.engine == "fake" and result.model_id == "fake-model"
    assert 0 <= result.time_to_first_token_s <= result.total_s
    assert result.tokens_per_s >= 0


def test_tokens_per_s_uses_decode_time_only():
    r = GenerationResult("t", 1, 11, time_to_first_token_s=1.0, total_s=3.0, finish_reason="length",
                         engine="e", model_id="m")
    assert r.tokens_per_s == pytest.approx(5.0)
    assert GenerationResult("t", 1, 1, 0.5, 0.5, "stop", "e", "m").tokens_per_s == 0.0


def test_generate_returns_the_result():
    result = FakeEngine(["x", "y"]).generate("prompt", params())
    assert result.text == "xy"


# ---------------------------------------------------------------- cancel and the engine lock


def test_cancel_stops_the_stream_and_releases_the_lock():
    engine = FakeEngine([f"p{i} " for i in range(10)])
    generation = engine.stream("hi", params())
    seen = []
    for piece in generation:
        seen.append(piece)
        if len(seen) == 2:
            generation.cancel()
    assert seen == ["p0 ", "p1 "]
    assert generation.result.finish_reason == "cancelled"
    assert generation.result.text == "p0 p1 "
    assert engine.closed == 1
    assert not engine.lock.locked()
    assert engine.produced < 10


def test_cancel_from_another_thread():
    started = threading.Event()
    release = threading.Event()

    class Slow(FakeEngine):
        def _token_pieces(self, prompt_ids, p):
            for i in range(1000):
                if i == 1:
                    started.set()
                    release.wait(5)
                yield "x"

    engine = Slow([], context=4096)
    generation = engine.stream("hi", params(max_new_tokens=1000))
    holder = {}
    worker = threading.Thread(target=lambda: holder.setdefault("r", generation.run()), daemon=True)
    worker.start()
    assert started.wait(5)
    generation.cancel()
    release.set()
    worker.join(10)
    assert not worker.is_alive()
    assert holder["r"].finish_reason == "cancelled"
    assert not engine.lock.locked()


def test_generation_holds_the_engine_lock_and_releases_it():
    engine = FakeEngine(["a", "b"])
    engine.generate("hi", params())
    assert engine.lock_held_while_generating == [True, True]
    assert not engine.lock.locked()


def test_abandoned_stream_releases_the_lock():
    engine = FakeEngine(["a", "b", "c"])
    generation = iter(engine.stream("hi", params()))
    next(generation)
    generation.close()  # the consumer went away (e.g. a closed browser tab)
    assert not engine.lock.locked()
    assert engine.closed == 1


# ---------------------------------------------------------------- prompt checks


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_refused(prompt):
    with pytest.raises(InvalidPromptError, match="empty"):
        FakeEngine(["a"]).stream(prompt, params())


def test_context_overflow_is_refused_with_the_numbers():
    engine = FakeEngine(["a"], context=64)
    with pytest.raises(ContextOverflowError) as info:
        engine.stream("x" * 60, params(max_new_tokens=10))
    assert (info.value.prompt_tokens, info.value.max_new_tokens, info.value.context_window) == (60, 10, 64)
    assert "60" in str(info.value) and "64" in str(info.value)
    assert not engine.lock.locked()
    assert engine.generate("x" * 54, params(max_new_tokens=10)).text == "a"  # exactly fits


def test_engine_token_limit_applies():
    engine = FakeEngine(["a"], context=4096, token_limit=256)
    with pytest.raises(InvalidParameterError, match="max_new_tokens"):
        engine.stream("hi", params(max_new_tokens=257))
    assert engine.generate("hi", params(max_new_tokens=256)).text == "a"


# ---------------------------------------------------------------- parameter validation


@pytest.mark.parametrize("kwargs, name", [
    ({"temperature": -1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"top_k": 5000}, "top_k"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ({"repetition_penalty": 0.1}, "repetition_penalty"),
    ({"seed": -5}, "seed"),
    ({"seed": 2**31}, "seed"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_k": True}, "top_k"),
])
def test_out_of_range_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(InvalidParameterError) as info:
        GenerationParams(**kwargs).validated()
    assert name in str(info.value)


def test_whole_number_floats_from_widgets_become_ints():
    p = GenerationParams(max_new_tokens=8.0, top_k=10.0, seed=42.0).validated()
    assert (p.max_new_tokens, p.top_k, p.seed) == (8, 10, 42)
    assert all(type(v) is int for v in (p.max_new_tokens, p.top_k, p.seed))
    assert type(GenerationParams(temperature=1).temperature) is int  # floats fields are left alone


@pytest.mark.parametrize("kwargs, name", [
    ({"seed": 1.5}, "seed"),
    ({"top_k": 2.5}, "top_k"),
    ({"temperature": float("nan")}, "temperature"),
    ({"max_new_tokens": float("inf")}, "max_new_tokens"),
    ({"top_p": float("nan")}, "top_p"),
])
def test_non_whole_or_non_finite_numbers_are_refused(kwargs, name):
    with pytest.raises(InvalidParameterError) as info:
        GenerationParams(**kwargs).validated()
    assert name in str(info.value)


def test_max_new_tokens_above_the_limit():
    with pytest.raises(InvalidParameterError) as info:
        GenerationParams(max_new_tokens=300).validated(token_limit=256)
    assert "max_new_tokens" in str(info.value) and "256" in str(info.value)
    assert GenerationParams(max_new_tokens=256).validated(token_limit=256).max_new_tokens == 256


@pytest.mark.parametrize("stop", [tuple(f"s{i}" for i in range(9)), ("",), ("x" * 101,)])
def test_bad_stop_sequences(stop):
    with pytest.raises(InvalidParameterError, match="stop"):
        GenerationParams(stop=stop).validated()


def test_valid_parameters_pass():
    p = GenerationParams(max_new_tokens=1, temperature=0, top_p=1.0, top_k=0, seed=0,
                         stop=tuple(f"s{i}" for i in range(8)))
    assert p.validated() is p
    assert GenerationParams().validated() == GenerationParams()


def test_parameter_help_and_bounds():
    assert "greedy" in GenerationParams.help("temperature")
    assert GenerationParams.bounds("top_p") == (0.01, 1.0)
    assert GenerationParams(seed=3).to_dict()["seed"] == 3
