"""Generation slots: N at once, first come first served, cancellable while waiting, held only while generating."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from playground.backends.base import GenerationParams
from playground.backends.slots import GenerationSlots, line_for, no_slot
from playground.prompting.columns import Column, run_columns
from playground.prompting.data import Example, LabelledSet
from playground.prompting.evaluation import evaluate
from playground.prompting.strategies import PromptSetup, StrategyConfig, run_strategy
from playground.prompting.tasks import get_task
from tests.prompting.fakes import ScriptedEngine


def test_at_most_n_hold_a_slot_at_once():
    slots = GenerationSlots(2)
    inside, peak, lock = [0], [0], threading.Lock()

    def work():
        with slots.hold() as admitted:
            assert admitted
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert peak[0] == 2 and slots.busy == 0 and slots.waiting == 0


def test_waiting_requests_are_served_in_arrival_order():
    slots = GenerationSlots(1)
    order, started = [], []
    with slots.hold():  # the slot is busy while the others line up
        threads = []
        for index in range(5):
            thread = threading.Thread(target=lambda i=index: _take(slots, order, i))
            thread.start()
            threads.append(thread)
            while slots.waiting < index + 1:  # each joins the line before the next one is started
                time.sleep(0.005)
            started.append(index)
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]


def _take(slots, order, index):
    with slots.hold():
        order.append(index)


def test_a_request_cancelled_while_waiting_leaves_the_line_without_a_slot():
    slots = GenerationSlots(1)
    cancel = threading.Event()
    outcome = []
    with slots.hold():
        waiter = threading.Thread(target=lambda: outcome.append(_admitted(slots, cancel)))
        waiter.start()
        while slots.waiting < 1:
            time.sleep(0.005)
        cancel.set()
        waiter.join(5)
        assert outcome == [False] and slots.waiting == 0
    with slots.hold() as admitted:  # and the next one gets the slot
        assert admitted


def _admitted(slots, cancel):
    with slots.hold(cancel) as admitted:
        return admitted


def test_an_error_inside_gives_the_slot_back():
    slots = GenerationSlots(1)
    with pytest.raises(RuntimeError):
        with slots.hold():
            raise RuntimeError("boom")
    assert slots.busy == 0
    with pytest.raises(ValueError):
        GenerationSlots(0)


# ---------------------------------------------------------------- held only while a model generates


class RecordingSlot:
    """A slot holder that records when it was held, and whether the template had rendered by then."""

    def __init__(self):
        self.events: list[str] = []

    @contextlib.contextmanager
    def __call__(self, cancel=None):
        self.events.append("slot")
        yield True
        self.events.append("free")


class RecordingEngine(ScriptedEngine):
    def __init__(self, events):
        super().__init__("positive")
        self.events = events

    def _token_pieces(self, prompt_ids, params):
        self.events.append("generate")
        yield from super()._token_pieces(prompt_ids, params)


def _setup(template: str) -> PromptSetup:
    return PromptSetup(task="sentiment", template=template, strategy=StrategyConfig(strategy="zero_shot"))


SLOW = ("{% macro m() %}{% for i in range(1000) %}{% for j in range(90) %}{% endfor %}{% endfor %}{% endmacro %}"
        "{{ m() }}{{ input }}")  # 90,000 loop steps: slow to render, within every budget


def test_a_run_renders_its_template_before_taking_a_slot():
    slot = RecordingSlot()
    engine = RecordingEngine(slot.events)
    rendered = []
    original = engine.format_chat
    engine.format_chat = lambda messages: (rendered.append(len(slot.events)), original(messages))[1]
    run = run_strategy(engine, _setup(SLOW), "Nice!", (), GenerationParams(max_new_tokens=4, temperature=0),
                       slot=slot)
    assert run.output == "posi"
    assert rendered == [0]  # the prompt was built before anything held the slot
    assert slot.events == ["slot", "generate", "free"]


def test_columns_and_evaluations_take_a_slot_per_generation():
    slot = RecordingSlot()
    engine = RecordingEngine(slot.events)
    columns = [Column(_setup("{{ input }}"), "m", GenerationParams(max_new_tokens=2, temperature=0))] * 2
    list(run_columns(columns, "Nice!", (), lambda _: engine, slot=slot))
    assert slot.events == ["slot", "generate", "free"] * 2
    slot.events.clear()
    data = LabelledSet(get_task("sentiment"), tuple(Example(f"text {i}", "positive") for i in range(3)), (), "t")
    evaluate(engine, [_setup("{{ input }}")], data, GenerationParams(max_new_tokens=2, temperature=0), slot=slot)
    assert slot.events == ["slot", "generate", "free"] * 3  # given back between examples


def test_a_slow_prompt_build_does_not_keep_another_persons_generation_waiting():
    """One slot. One person's prompt is still being built (here: it waits until the other is served); the other
    person's answer comes meanwhile. Were building inside the slot, the second person would wait for ever."""
    slots = GenerationSlots(1)
    quick_done = threading.Event()
    finished = []

    class SlowToBuild(ScriptedEngine):
        def format_chat(self, messages):
            assert quick_done.wait(10), "the other generation was kept waiting"
            return super().format_chat(messages)

    def person(name, engine, template):
        run_strategy(engine, _setup(template), "Nice!", (), GenerationParams(max_new_tokens=2, temperature=0),
                     slot=slots.hold)
        finished.append(name)
        if name == "quick":
            quick_done.set()

    slow = threading.Thread(target=person, args=("slow", SlowToBuild("positive"), SLOW))
    slow.start()
    quick = threading.Thread(target=person, args=("quick", ScriptedEngine("positive"), "{{ input }}"))
    quick.start()
    quick.join(15)
    slow.join(15)
    assert finished == ["quick", "slow"] and slots.busy == 0


def test_callers_that_share_nothing_are_admitted_at_once():
    with no_slot(None) as admitted:
        assert admitted


# ---------------------------------------------------------------- a place in line, for callers that show the wait


def _wait_until(condition, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_place_in_line_says_how_many_requests_are_ahead_each_time_that_changes():
    slots = GenerationSlots(1)
    seen, held = [], []
    release_first, release_second = threading.Event(), threading.Event()

    def holder(release):
        with slots.hold():
            release.wait(5)

    first = threading.Thread(target=holder, args=(release_first,))
    first.start()
    _wait_until(lambda: slots.busy == 1)
    second = threading.Thread(target=holder, args=(release_second,))
    second.start()
    _wait_until(lambda: slots.waiting == 1)

    def third():
        with line_for(slots) as place:
            for ahead in place.positions():
                seen.append(ahead)
            held.append(place.held)

    waiter = threading.Thread(target=third)
    waiter.start()
    _wait_until(lambda: seen == [2])  # the running request and the one before it in line
    release_first.set()
    _wait_until(lambda: seen == [2, 1])  # the second now runs; nobody waits before the third
    release_second.set()
    waiter.join(5)
    for thread in (first, second):
        thread.join(5)
    assert seen == [2, 1] and held == [True] and slots.busy == 0 and slots.waiting == 0


def test_a_free_slot_is_held_without_a_position():
    slots = GenerationSlots(2)
    with line_for(slots) as place:
        assert list(place.positions()) == [] and place.held and slots.busy == 1
    assert slots.busy == 0


def test_a_waiting_generator_that_is_closed_leaves_the_line():
    slots = GenerationSlots(1)

    def chat():
        with line_for(slots) as place:
            for ahead in place.positions():
                yield ahead

    with slots.hold():
        waiting = chat()
        assert next(waiting) == 1 and slots.waiting == 1
        waiting.close()  # the person left while waiting
        assert slots.waiting == 0
    with slots.hold() as admitted:
        assert admitted


def test_a_stop_while_waiting_in_line_ends_the_positions_without_a_slot():
    slots = GenerationSlots(1)
    cancel = threading.Event()
    with slots.hold():
        with line_for(slots, cancel) as place:
            positions = place.positions()
            assert next(positions) == 1
            cancel.set()
            assert list(positions) == [] and not place.held and slots.waiting == 0


def test_a_place_whose_owner_went_away_does_not_stop_the_line(monkeypatch):
    import playground.backends.slots as slots_module

    monkeypatch.setattr(slots_module, "STALE_S", 0.05)
    slots = GenerationSlots(1)
    admitted = []
    with line_for(slots) as lost:
        with slots.hold():
            assert next(lost.positions()) == 1  # then its owner never looks again, nor leaves
            behind = threading.Thread(target=lambda: admitted.append(_admitted(slots, None)))
            behind.start()
            _wait_until(lambda: slots.waiting == 2)
        behind.join(5)  # the slot is free and the lost place first in line: it is skipped once stale
        assert admitted == [True] and not lost.held


def test_holders_that_cannot_show_their_line_are_waited_for_at_once():
    with line_for(no_slot) as place:
        assert place.held and list(place.positions()) == []
    refusing = lambda cancel=None: contextlib.nullcontext(False)  # noqa: E731
    with line_for(refusing) as place:
        assert not place.held
