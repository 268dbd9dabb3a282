"""``GET /health`` of a launched app answers at once while generations run and wait (a blocking fake engine),
and a waiting person's chat says how many requests are ahead of theirs (gradio_client)."""

from __future__ import annotations

import threading

import httpx
import pytest
from gradio_client import Client

from playground.services import Services
from tests.helpers import SMOLLM2, fake_hardware, offline_settings, wait_until
from tests.prompting.fakes import ScriptedEngine
from tests.ui.conftest import _free_port, launched
from tests.ui.test_quantized_cpu_client import assistant_text, chat_args

PEOPLE = 4  # one generation holds the only slot; three wait in line for it


class GatedEngine(ScriptedEngine):
    """Answers "Hello there." once ``gate`` opens; until then its one generation holds the slot."""

    name = "llama.cpp"

    def __init__(self) -> None:
        super().__init__("Hello there.")
        self.gate = threading.Event()

    def _token_pieces(self, prompt_ids, params):
        assert self.gate.wait(60), "the test never opened the gate"
        yield from super()._token_pieces(prompt_ids, params)


@pytest.fixture(scope="module")
def gated_app(tmp_path_factory, catalog):
    settings = offline_settings(tmp_path_factory.mktemp("health-data"), PLAYGROUND_CONCURRENCY="1",
                                PLAYGROUND_HOST="127.0.0.1", PLAYGROUND_PORT=str(_free_port()))
    services = Services.create(settings, fake_hardware(cuda=False), catalog)
    engine = GatedEngine()
    services.engines.cache.get_or_load(("engine", "llama.cpp", SMOLLM2), lambda: (engine, 0))
    try:
        with launched(services) as url:
            yield services, engine, url
    finally:
        engine.gate.set()
        services.close()


def test_health_answers_at_once_while_generations_run_and_wait(gated_app):
    services, engine, url = gated_app
    jobs = [Client(url, verbose=False).submit(*chat_args(f"Hello {i}", max_new_tokens=16), api_name="/quantized_chat")
            for i in range(PEOPLE)]
    slots = services.generation_slots
    wait_until(lambda: slots.busy == 1 and slots.waiting == PEOPLE - 1, "one generation running and three waiting")

    # The generations stay blocked until the test lets them go, so an answer at all shows /health never waits
    # behind them (its speed under load is a bench figure: bench --load times it, tests never time anything).
    response = httpx.get(f"{url}health", timeout=5)
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ok" and body["uptime_s"] > 0
    assert (body["slots"], body["slots_busy"], body["slots_waiting"]) == (1, 1, PEOPLE - 1)
    assert body["generations"] == {"running": 1, "waiting": PEOPLE - 1}
    assert {"id": SMOLLM2, "engine": "llama.cpp"} in body["models"]
    assert response.headers["cache-control"] == "no-store"
    assert httpx.get(url, timeout=30).status_code == 200  # and the page itself is served meanwhile

    # Everyone waiting reads their place in line: 1, 2 and 3 requests ahead (the running one, then the line).
    def waiting_texts():
        return {outputs[-1][2] for job in jobs if (outputs := job.outputs()) and "Waiting" in outputs[-1][2]}

    expected = {"_Waiting for the model — 1 request ahead of you_", "_Waiting for the model — 2 requests ahead of you_",
                "_Waiting for the model — 3 requests ahead of you_"}
    wait_until(lambda: waiting_texts() == expected, "every waiting person seeing their place in line", 30)

    engine.gate.set()
    answers = [job.result(timeout=60) for job in jobs]
    assert all(assistant_text(history) == "Hello there." and "tokens/s" in stats for history, _, stats in answers)
    assert httpx.get(f"{url}health", timeout=5).json()["generations"] == {"running": 0, "waiting": 0}


def test_python_app_py_launches_with_the_health_route(gated_app, monkeypatch):
    """``python app.py`` (and a Space) reach ``playground.ui.app.launch``; the tests' app used the same options."""
    import gradio as gr

    from playground.ui import app

    services, _, _ = gated_app
    launched_with = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **options: launched_with.update(options))
    app.launch(services)
    assert [route.path for route in launched_with["app_kwargs"]["routes"]] == ["/health"]
