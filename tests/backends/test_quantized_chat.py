"""The Quantized CPU tab's controller with a scripted engine: a streamed answer, the slot, cancel, bad input."""

from __future__ import annotations

import contextlib
import threading

import pytest

from playground.backends.base import GenerationParams
from playground.backends.chat import ChatRequest, QuantizedChat
from playground.backends.slots import GenerationSlots
from playground.errors import InvalidPromptError
from tests.prompting.fakes import QueuedEngine, ScriptedEngine


class FakeModels:
    """One person's models (QuantizedModels) with one scripted engine."""

    def __init__(self, reply="Paris."):
        self.scripted = ScriptedEngine(reply)
        self.asked = []

    def engine(self, model_id, engine="auto", progress=None):
        self.asked.append((model_id, engine))
        return self.scripted

    def chat_engine(self, model_id):
        return "openai" if model_id.startswith("served") else "llama.cpp"


def test_an_answer_streams_into_the_conversation_and_ends_with_its_figures():
    models = FakeModels("Paris.")
    history = ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"})
    updates = list(QuantizedChat().reply(ChatRequest("m", "  Capital of France?  ", history, "Be brief.",
                                                     GenerationParams(max_new_tokens=16, temperature=0)), models))
    assert updates[0].history[-2:] == [{"role": "user", "content": "Capital of France?"},
                                       {"role": "assistant", "content": ""}]
    assert [u.history[-1]["content"] for u in updates[1:-1]] == ["P", "Pa", "Par", "Pari", "Paris", "Paris."]
    assert updates[-1].result.text == "Paris." and updates[-1].history[:2] == list(history)
    assert models.asked == [("m", "llama.cpp")]
    prompt = models.scripted.prompts[0]
    assert prompt.startswith("<|system|>Be brief.") and "<|assistant|>Hello!" in prompt


def test_a_model_the_openai_compatible_server_serves_chats_there():
    models = FakeModels("Paris.")
    list(QuantizedChat().reply(ChatRequest("served-model", "Capital of France?"), models))
    assert models.asked == [("served-model", "openai")]


def test_the_slot_is_taken_after_the_prompt_and_a_stop_while_waiting_generates_nothing():
    events = []

    @contextlib.contextmanager
    def slot(cancel=None):
        events.append("slot")
        yield not (cancel is not None and cancel.is_set())

    models = FakeModels("Paris.")
    cancel = threading.Event()
    cancel.set()
    updates = list(QuantizedChat(slot=slot).reply(ChatRequest("m", "Hi"), models, cancel))
    assert updates[-1].cancelled_waiting and events == ["slot"] and models.scripted.prompts == []


@pytest.mark.parametrize("message, expected", [("", "empty"), ("   ", "empty"), ("x" * 101, "limit is 100")])
def test_a_bad_message_is_refused_before_the_model_loads(message, expected):
    models = FakeModels()
    with pytest.raises(InvalidPromptError, match=expected):
        next(QuantizedChat(max_chars=100).reply(ChatRequest("m", message), models))
    assert models.asked == []


# ---------------------------------------------------------------- waiting for one's turn


class QueuedModels(FakeModels):
    def __init__(self, reply="Paris.", waits=(2, 2, 0)):
        super().__init__(reply)
        self.scripted = QueuedEngine(reply, waits=waits)


def test_a_batched_answer_says_its_place_in_line_then_streams_without_a_slot():
    slots = GenerationSlots(1)
    with slots.hold():  # every slot busy: a batched generation does not need one
        updates = list(QuantizedChat(slot=slots).reply(
            ChatRequest("m", "Capital?", params=GenerationParams(max_new_tokens=16, temperature=0)),
            QueuedModels("Paris.")))
    positions = [u.queue_position for u in updates]
    assert positions[:4] == [None, 2, 0, None]  # the repeated Waiting(2) is shown once
    assert all(u.history[-1]["content"] == "" for u in updates[:3])
    assert [u.history[-1]["content"] for u in updates[3:-1]] == ["P", "Pa", "Par", "Pari", "Paris", "Paris."]
    assert updates[-1].result.text == "Paris." and updates[-1].queue_position is None


def test_a_stop_while_waiting_in_the_decode_loop_ends_the_answer_cancelled():
    cancel = threading.Event()
    updates = []
    for update in QuantizedChat().reply(ChatRequest("m", "Capital?"), QueuedModels(waits=(3,) * 50), cancel):
        updates.append(update)
        if update.queue_position == 3:
            cancel.set()
    assert updates[-1].result.finish_reason == "cancelled" and updates[-1].result.text == ""


def test_an_answer_waiting_for_a_generation_slot_says_how_many_are_ahead():
    slots = GenerationSlots(1)
    updates = []
    with slots.hold():
        chat = QuantizedChat(slot=slots).reply(ChatRequest("m", "Hi", params=GenerationParams(max_new_tokens=4)),
                                               FakeModels("Yes"))
        updates.append(next(chat))  # the question shown
        updates.append(next(chat))  # the place in line, while the slot is busy
    updates.extend(chat)  # the slot is free: the answer comes
    assert [u.queue_position for u in updates[:3]] == [None, 1, 0]  # then its prompt is read
    assert updates[-1].result.text == "Yes" and all(u.queue_position is None for u in updates[3:])
    assert slots.busy == 0 and slots.waiting == 0
