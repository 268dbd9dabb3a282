"""The Quantized CPU chat of an app whose SmolLM2 is served by an OpenAI-compatible server (the session's
llama-cpp-python server), through gradio_client: the answer comes from the server, Stop closes its stream, and a
model the server does not serve reads as a clear error."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.backends.base import GenerationParams
from playground.backends.openai_engine import OpenAICompatibleEngine
from playground.config import Settings
from tests.helpers import SMOLLM2
from tests.openai_server import SERVED_NAME, free_port, wait_for_log
from tests.ui.conftest import launched
from tests.ui.test_quantized_cpu_client import assistant_text, chat_args, wait_until_answering


@dataclass(frozen=True)
class OpenAIApp:
    services: object
    url: str


@pytest.fixture(scope="module")
def openai_app(openai_server, tmp_path_factory):
    from playground.services import Services

    # gemma-3-270m is listed under a name the server does not serve, to see that refusal in the page.
    settings = Settings.load([], {
        "PLAYGROUND_DATA_DIR": str(tmp_path_factory.mktemp("openai-app-data")), "PLAYGROUND_OFFLINE": "1",
        "PLAYGROUND_HOST": "127.0.0.1", "PLAYGROUND_PORT": str(free_port()),
        **openai_server.environment(PLAYGROUND_OPENAI_MODELS=f"{SMOLLM2}={SERVED_NAME},gemma-3-270m=gemma3"),
    })
    services = Services.create(settings)
    try:
        with launched(services) as url:
            yield OpenAIApp(services, url)
    finally:
        services.close()


def test_the_quantized_chat_answers_through_the_openai_engine(openai_app, openai_server):
    client = Client(openai_app.url, verbose=False)
    history, message_box, stats = client.predict(*chat_args("What is the capital of France?", max_new_tokens=16),
                                                 api_name="/quantized_chat")
    engines = openai_app.services.engines
    assert engines.loaded(SMOLLM2, "openai") is not None and engines.loaded(SMOLLM2, "llama.cpp") is None
    direct = OpenAICompatibleEngine.connect(SMOLLM2, openai_server.base_url, SERVED_NAME)
    try:
        expected = direct.generate(direct.format_chat([{"role": "user", "content": "What is the capital of France?"}]),
                                   GenerationParams(max_new_tokens=16, temperature=0.0))
    finally:
        direct.close()
    assert assistant_text(history).strip() == expected.text.strip() != ""
    assert message_box == "" and "tokens/s" in stats


def test_stop_closes_the_servers_stream(openai_app, openai_server):
    client = Client(openai_app.url, verbose=False)
    before = openai_server.log_text().count("Disconnected from client")
    job = client.submit(*chat_args("Write a very long story about a lighthouse keeper.", max_new_tokens=900,
                                   temperature=0.7, repetition_penalty=1.3), api_name="/quantized_chat")
    wait_until_answering(job)
    client.predict(api_name="/quantized_stop")
    _, _, stats = job.result(timeout=120)
    assert "cancelled" in stats
    assert wait_for_log(openai_server, "Disconnected from client", count=before + 1)


def test_a_model_the_server_does_not_serve_reads_as_a_clear_message(openai_app, openai_server):
    client = Client(openai_app.url, verbose=False)
    with pytest.raises(AppError, match=r"serves 'smollm2', not 'gemma3'.*PLAYGROUND_OPENAI_MODELS") as error:
        client.predict(*chat_args("Hello", model="gemma-3-270m"), api_name="/quantized_chat")
    assert openai_server.base_url in str(error.value) and "Traceback" not in str(error.value)
