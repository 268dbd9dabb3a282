"""The Quantized CPU tab's controller with a scripted engine: a streamed answer, the slot, cancel, bad input."""

from __future__ import annotations

import contextlib
import threading

import pytest

from playground.backends.base import GenerationParams
from playground.backends.chat import ChatRequest, QuantizedChat
from playground.errors import InvalidPromptError
from tests.prompting.fakes import ScriptedEngine


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
