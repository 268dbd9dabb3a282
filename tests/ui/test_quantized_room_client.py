"""A room chatting at once through the Quantized CPU tab's API (the tiny GGUF app): four people send at the same
moment (into the model's shared decode loop), everyone gets the answer their message gets alone, nobody gets an
error, and ``/health`` reads the loop's counters back to zero afterwards."""

from __future__ import annotations

import threading

import httpx
import pytest
from gradio_client import Client

from playground.backends.base import GenerationParams
from playground.backends.chat import build_messages
from tests.gguf_models import TINY_GGUF
from tests.ui.test_quantized_cpu_client import assistant_text, chat_args

pytestmark = pytest.mark.slow

PEOPLE = 4
NEW_TOKENS = 12


def test_four_people_chatting_at_once_each_get_their_own_answer(gguf_app):
    services = gguf_app.services
    messages = [f"The quick brown fox number {i}" for i in range(PEOPLE)]
    answers, statuses, errors = {}, {}, []
    start = threading.Barrier(PEOPLE)

    def person(index: int) -> None:
        try:
            client = Client(gguf_app.url, verbose=False)
            start.wait(30)
            job = client.submit(*chat_args(messages[index], max_new_tokens=NEW_TOKENS, model=TINY_GGUF,
                                           repetition_penalty=1.0), api_name="/quantized_chat")
            history, _, stats = job.result(timeout=180)
            answers[index] = (assistant_text(history), stats)
            statuses[index] = [outputs[2] for outputs in job.outputs()]
        except Exception as exc:  # noqa: BLE001 - reported below, with the person it happened to
            errors.append((index, repr(exc)))

    threads = [threading.Thread(target=person, args=(i,)) for i in range(PEOPLE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert errors == [] and sorted(answers) == list(range(PEOPLE))
    assert all("tokens/s" in stats for _, stats in answers.values())

    engine = services.engine(TINY_GGUF, "llama.cpp")
    greedy = GenerationParams(max_new_tokens=NEW_TOKENS, temperature=0.0, top_p=0.95, top_k=40,
                              repetition_penalty=1.0)
    for index, message in enumerate(messages):  # each answer is the one that message gets alone
        alone = engine.generate(engine.format_chat(build_messages([], message)), greedy).text
        assert answers[index][0] == alone, index
    assert services.generation_slots.busy == 0 and services.generation_slots.waiting == 0
    health = httpx.get(f"{gguf_app.url}health", timeout=10).json()  # the decode loop's counters, read back
    assert health["generations"] == {"running": 0, "waiting": 0}
    assert {"id": TINY_GGUF, "engine": "llama.cpp"} in health["models"]
    seen = [status for updates in statuses.values() for status in updates]
    assert all("⚠" not in status for status in seen)
