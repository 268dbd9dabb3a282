"""Generation slots: N at once, first come first served, cancellable while waiting, held only while generating."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from playground.backends.base import GenerationParams
from playground.backends.slots import GenerationSlots, no_slot
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
