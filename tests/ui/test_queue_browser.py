"""A person whose request waits for its turn sees their place in line, then the answer (Debian's Chromium).

The app's SmolLM2 on llama.cpp is replaced by a fake engine that waits in a "decode loop" the test controls:
its stream says ``Waiting(ahead)`` for as long as the test wants (what a batched llama.cpp engine's stream says
while its request waits for a sequence), then answers. So the page's request waits for certain, for as long as
the test looks at it.
"""

from __future__ import annotations

import threading
import time

import pytest

from playground.backends.base import Generation, Waiting
from playground.services import Services
from tests.helpers import SMOLLM2, fake_hardware, offline_settings
from tests.prompting.fakes import ScriptedEngine
from tests.ui.conftest import _free_port, launched
from tests.ui.test_browser import ARTIFACTS, _wait_for_text

pytestmark = pytest.mark.browser

ANSWER = "positive, and a colour: blue."


class LineEngine(ScriptedEngine):
    """A batched engine whose requests wait in a line the test moves: ``ahead`` requests before them until
    ``go`` is set, then the answer."""

    name = "llama.cpp"

    def __init__(self) -> None:
        super().__init__(ANSWER)
        self.ahead = 3
        self.go = threading.Event()

    def stream(self, prompt, params):
        started = time.perf_counter()
        ids = self.check_prompt(prompt, params)

        def pieces():
            while not self.go.is_set():
                yield Waiting(self.ahead)
                time.sleep(0.05)
            for piece in self._token_pieces(ids, params):
                time.sleep(0.01)
                yield piece

        return Generation(pieces(), prompt_tokens=len(ids), params=params, engine=self.name,
                          model_id=self.model_id, started=started, batched=True)


@pytest.fixture(scope="module")
def line_app(tmp_path_factory, catalog):
    settings = offline_settings(tmp_path_factory.mktemp("queue-browser-data"), PLAYGROUND_HOST="127.0.0.1",
                                PLAYGROUND_PORT=str(_free_port()))
    services = Services.create(settings, fake_hardware(cuda=False), catalog)
    engine = LineEngine()
    services.engines.cache.get_or_load(("engine", "llama.cpp", SMOLLM2), lambda: (engine, 0))
    try:
        with launched(services) as url:
            yield engine, url
    finally:
        engine.go.set()
        services.close()


@pytest.fixture
def line(line_app):
    engine, url = line_app
    engine.ahead = 3
    engine.go.clear()
    yield engine, url
    engine.go.set()


def _page(browser, url, locale):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale=locale)
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#arch-run", timeout=60_000)  # the app opens on its first tab, Architectures
    return context, page


@pytest.mark.parametrize("locale, waiting, reading", [
    ("en-US", "Waiting for the model — 3 requests ahead of you", "Reading your prompt…"),
    ("pt-BR", "Aguardando o modelo — 3 pedidos na sua frente", "Lendo o seu prompt…"),
])
def test_a_waiting_chat_shows_its_place_in_line_then_the_answer(browser, line, locale, waiting, reading):
    engine, url = line
    context, page = _page(browser, url, locale)
    try:
        page.locator("#tab-quantized-button").click()  # the tab's name is in the page's language
        page.wait_for_selector("#quant-input textarea", state="visible", timeout=10_000)
        page.fill("#quant-input textarea", "Name a colour.")
        page.click("#quant-send")
        _wait_for_text(page, "#quant-stats", waiting, 60)
        page.locator("#quant-stats").scroll_into_view_if_needed()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"quantized-waiting-{locale}.png"))
        assert page.locator("#quant-chatbot").inner_text().count("Name a colour.") == 1
        engine.ahead = 0  # its turn: the loop reads its prompt
        _wait_for_text(page, "#quant-stats", reading, 30)
        engine.go.set()
        stats = _wait_for_text(page, "#quant-stats", "tokens/s", 60)
        assert waiting not in stats and reading not in stats
        bot = page.locator("#quant-chatbot .message.bot, #quant-chatbot [data-testid='bot']").last
        assert "blue" in bot.inner_text()
        page.screenshot(path=str(ARTIFACTS / f"quantized-waited-answer-{locale}.png"))
    finally:
        context.close()


def test_a_waiting_prompt_lab_run_shows_its_place_in_line_then_the_answer(browser, line):
    engine, url = line
    engine.ahead = 1
    context, page = _page(browser, url, "en-US")
    try:
        page.get_by_role("tab", name="Prompt Lab").click()
        page.wait_for_selector("#lab-run", state="visible", timeout=10_000)
        page.click("#lab-run")
        _wait_for_text(page, "#lab-result", "Waiting for the model — 1 request ahead of you", 60)
        page.locator("#lab-result").scroll_into_view_if_needed()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "prompt-lab-waiting.png"))
        engine.go.set()
        result = _wait_for_text(page, "#lab-result", "tokens/s", 60)
        assert "Waiting" not in result and "Answer: positive" in result
    finally:
        context.close()
