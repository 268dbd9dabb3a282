"""A real app on a free local port, shared by the gradio_client and browser tests of a session, and a second
app over the tiny GGUF catalog, whose fine-tuned runs are made in seconds (``gguf_app``)."""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from playground.config import Settings

CHROMIUM = os.environ.get("PLAYGROUND_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


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


@contextlib.contextmanager
def launched(services):
    """The app of ``services`` served on its settings' host and port, for the block; yields its URL."""
    from playground.ui.app import build_app, launch_options

    demo = build_app(services)
    options = launch_options(services)
    options.update(prevent_thread_lock=True, quiet=True, share=False)
    demo.launch(**options)
    try:
        yield f"http://{services.settings.host}:{services.settings.port}/"
    finally:
        demo.close()


@pytest.fixture(scope="session")
def app_url(app_services):
    with launched(app_services) as url:
        yield url


@dataclass(frozen=True)
class GgufApp:
    """An app over one tiny Llama with a GGUF twin: make runs for a token with ``run_for``."""

    services: object
    url: str
    folder: Path  # the tiny model's transformers folder (what a run's adapter is made on)

    def run_for(self, token: str, seed: int = 1) -> str:
        """A finished LoRA run (random adapter) owned by the token's person; returns its run id."""
        from tests.gguf_models import make_lora_run

        return make_lora_run(self.services, self.folder, owner_id(self.services, token), seed)


@pytest.fixture(scope="session")
def gguf_app(tmp_path_factory, tiny_tokenizer):
    from playground.services import Services
    from tests.gguf_models import TINY_GGUF, tiny_gguf_catalog
    from tests.helpers import fake_hardware, offline_settings

    models = tmp_path_factory.mktemp("gguf-app-models")
    folder, catalog = tiny_gguf_catalog(models, tiny_tokenizer)
    settings = offline_settings(tmp_path_factory.mktemp("gguf-app-data"), models, PLAYGROUND_HOST="127.0.0.1",
                                PLAYGROUND_PORT=str(_free_port()), PLAYGROUND_DEFAULT_MODEL=TINY_GGUF)
    services = Services.create(settings, fake_hardware(cuda=False), catalog)
    try:
        with launched(services) as url:
            yield GgufApp(services, url, folder)
    finally:
        services.close()


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


@pytest.fixture(scope="session")
def browser():
    """One Chromium for every browser test (Debian's, through Playwright)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium (see README, 'Run the tests').")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def record_issued_tokens(services, monkeypatch) -> list[str]:
    """The identity tokens the app issues from now on, in order (so a test knows its page's person)."""
    issuer = services.identities.issuer
    issued: list[str] = []
    original = issuer.issue
    monkeypatch.setattr(issuer, "issue", lambda: issued.append(original()) or issued[-1])
    return issued


@pytest.fixture(scope="session")
def flan_app(tmp_path_factory, flan_models_dir):
    """(services, URL) of an app whose models dir holds FLAN-T5 small (the session's tiny T5, where the catalog
    looks for it), with the real catalog otherwise: its Prompt Lab lists FLAN-T5 and runs the classic lab's
    setups on it."""
    from playground.services import Services
    from tests.helpers import offline_settings

    settings = offline_settings(tmp_path_factory.mktemp("flan-app-data"), flan_models_dir,
                                PLAYGROUND_HOST="127.0.0.1", PLAYGROUND_PORT=str(_free_port()))
    services = Services.create(settings)
    services.engines.resolver.hub_cache_dir = tmp_path_factory.mktemp("flan-app-hub")  # nothing from the Hub cache
    try:
        with launched(services) as url:
            yield services, url
    finally:
        services.close()
