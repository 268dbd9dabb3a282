"""A real app on a free local port, shared by the gradio_client and browser tests of a session."""

from __future__ import annotations

import socket

import pytest

from playground.config import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def app_services(tmp_path_factory):
    from playground.services import Services

    # The same data dir name as the core tests use, so the GGUF is converted once per session.
    data_dir = tmp_path_factory.getbasetemp() / "playground-data"
    settings = Settings.load([], {
        "PLAYGROUND_DATA_DIR": str(data_dir),
        "PLAYGROUND_OFFLINE": "1",
        "PLAYGROUND_HOST": "127.0.0.1",
        "PLAYGROUND_PORT": str(_free_port()),
        "PLAYGROUND_MAX_PROMPT_CHARS": "60000",  # long enough to reach the context window in a test
    })
    services = Services.create(settings)
    yield services
    services.close()


@pytest.fixture(scope="session")
def app_url(app_services):
    from playground.ui.app import build_app, launch_options

    demo = build_app(app_services)
    options = launch_options(app_services)
    options.update(prevent_thread_lock=True, quiet=True, share=False)
    demo.launch(**options)
    yield f"http://127.0.0.1:{app_services.settings.port}/"
    demo.close()


@pytest.fixture
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def issue_token(client) -> str:
    """A fresh identity token from the app, as a script gets one: the /identity endpoint with no token."""
    token = client.predict("", api_name="/identity")
    assert token.startswith("pg1."), token
    return token


def owner_id(services, token: str) -> str:
    """The owner id the app files a token's runs under."""
    return services.identities.person(token).id
