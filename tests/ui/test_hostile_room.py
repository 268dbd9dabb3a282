"""A hostile attendee against a real app in workshop mode, in its own process, through gradio_client.

The app runs as ``python app.py --mode workshop`` so its memory can be watched from outside (psutil samples it
every few milliseconds while the attack goes on). Every bad input must come back as a clear message (no
traceback, no server path), another person's chat must keep being answered meanwhile, and the app's memory must
stay within a bound whatever the templates ask for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.ui.conftest import _free_port
from tests.ui.test_finetune_client import config_args
from tests.ui.test_prompt_lab_client import form
from tests.ui.test_quantized_cpu_client import assistant_text, chat_args

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MEMORY_GROWTH_MB = 400  # the attack may not grow the app's memory by more than this (it once grew 20 GB)
IDENTITIES_PER_HOUR = 12
GENERATIONS_PER_MINUTE = 6

HOSTILE_TEMPLATES = {  # name: (template, the budget or refusal its message must name)
    "nested loops print a long string": (
        "{% set s = 'x' * 10000 %}{% for a in range(1000) %}{% for b in range(1000) %}{{ s }}{% endfor %}"
        "{% endfor %}{{ input }}", "output budget"),
    "doubling through a namespace": (
        "{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
        "{{ ns.s }}{{ input }}", "value budget"),
    "a looping macro inside two loops": (
        "{% macro m() %}{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}{% endmacro %}"
        "{% for a in range(1000) %}{% for b in range(1000) %}{{ m() }}{% endfor %}{% endfor %}{{ input }}",
        "work budget"),
    "a huge width": ("{{ input | center(1000000000) }}", "value budget"),
    "a huge format width": ("{{ '{:>1000000000}'.format(input) }}", "value budget"),
    "a macro that collects text": (
        "{% macro m() %}{% for i in range(1000) %}" + "A" * 15000 + "{% endfor %}{% endmacro %}{% set x = m() %}"
        "{{ input }}", "building budget"),
    "python internals": ("{{ input.__class__.__mro__ }}", "sandbox refused"),
    "a template that calls itself": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}{{ input }}", "calls itself"),
    "an include": ("{% include 'x' %}{{ input }}", "not available"),
}
HOSTILE_DATA = ["hub:/etc", "hub:text", "hub:csv", "hub:../x", "hub:./examples/data", "hub:examples/data",
                "hub:http://example.com/a/b", "hub:owner/name/extra", "/etc/passwd", "examples/data/sentiment.jsonl",
                "../../etc/hostname"]


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """(url, app process, data dir): the app in workshop mode, in its own process."""
    port = _free_port()
    data_dir = tmp_path_factory.mktemp("hostile-room-data")
    env = {**os.environ, "PLAYGROUND_MODE": "workshop", "PLAYGROUND_OFFLINE": "1", "PLAYGROUND_PORT": str(port),
           "PLAYGROUND_HOST": "127.0.0.1", "PLAYGROUND_DATA_DIR": str(data_dir), "PLAYGROUND_JOB_SLOTS": "1",
           "PLAYGROUND_IDENTITIES_PER_HOUR": str(IDENTITIES_PER_HOUR),
           "PLAYGROUND_GENERATIONS_PER_MINUTE": str(GENERATIONS_PER_MINUTE), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(data_dir / "app.log", "w")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                log.close()
                raise AssertionError(f"the app did not start:\n{(data_dir / 'app.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield url, psutil.Process(process.pid), data_dir
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


class PeakMemory:
    """Samples a process's resident memory every few milliseconds in a thread; ``peak`` is the highest seen."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.005)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def _clear(message: str, data_dir: Path) -> None:
    """A message a person can read: not empty, no traceback, no place on the server."""
    assert message.strip(), "an empty message"
    assert "Traceback" not in message and 'File "' not in message, message
    for place in (str(data_dir), str(ROOT), sys.prefix, str(Path.home()) + "/"):
        assert place not in message, (place, message)


def test_a_hostile_attendee_gets_clear_messages_while_the_room_keeps_working(room):
    url, app, data_dir = room
    alice, mallory = Client(url, verbose=False), Client(url, verbose=False)
    alice_token = alice.predict("", api_name="/identity")
    mallory_token = mallory.predict("", api_name="/identity")
    history, _, _ = alice.predict(*chat_args("Say hello.", max_new_tokens=6, identity=alice_token),
                                  api_name="/quantized_chat")
    assert assistant_text(history).strip()
    baseline = app.memory_info().rss

    with PeakMemory(app) as memory:
        # Alice keeps chatting while Mallory's templates render.
        answers = []
        alice_chat = threading.Thread(target=lambda: answers.append(assistant_text(alice.predict(
            *chat_args("Name a colour.", max_new_tokens=8, identity=alice_token), api_name="/quantized_chat")[0])))
        alice_chat.start()
        for name, (template, expected) in HOSTILE_TEMPLATES.items():
            tokens_line, prompt, _ = mallory.predict(*form(template_text=template, owner=mallory_token), "llama.cpp",
                                                     api_name="/prompt_lab_preview")
            assert tokens_line.startswith("⚠") and expected in tokens_line, (name, tokens_line)
            assert prompt == "", name
            _clear(tokens_line, data_dir)
        for template, expected in list(HOSTILE_TEMPLATES.values())[:3]:  # the run path renders the same way
            with pytest.raises(AppError, match=expected) as info:
                mallory.predict(*form(template_text=template, owner=mallory_token), api_name="/prompt_lab_run")
            _clear(str(info.value), data_dir)
        alice_chat.join(120)
        assert answers and answers[0].strip(), "the other person's chat was not answered"

        # Data ids that are server paths, builder names or addresses.
        for data in HOSTILE_DATA:
            with pytest.raises(AppError) as info:
                mallory.predict(*config_args(data=data), api_name="/finetune_inspect")
            _clear(str(info.value), data_dir)
            assert "column" not in str(info.value).lower() or "hub" in str(info.value).lower(), str(info.value)

        # Identities: made up, altered, missing; a flood of new ones from one address.
        altered = mallory_token[:-1] + ("0" if mallory_token[-1] != "0" else "1")
        for token, expected in (("someone-else", "not one this server issues"), (altered, "signature does not match"),
                                ("", "carries no identity token")):
            with pytest.raises(AppError, match=expected):
                mallory.predict(token, *config_args(), api_name="/finetune_start")
            with pytest.raises(AppError, match=expected):  # workshop mode: generating needs a token too
                mallory.predict(*chat_args("Hi", identity=token), api_name="/quantized_chat")
        assert "no run" in mallory.predict("someone-else", "", api_name="/finetune_poll")[2].lower()
        with pytest.raises(AppError, match="Too many new identities from your network address"):
            for _ in range(IDENTITIES_PER_HOUR + 1):
                Client(url, verbose=False).predict("", api_name="/identity")
        assert alice.predict(alice_token, api_name="/identity") == alice_token  # a known person is unaffected

        # Oversized text.
        with pytest.raises(AppError, match="limit is"):
            mallory.predict(*chat_args("x" * 30_000, identity=mallory_token), api_name="/quantized_chat")
        tokens_line, _, _ = mallory.predict(*form(system="s" * 30_000, owner=mallory_token), "llama.cpp",
                                            api_name="/prompt_lab_preview")
        assert tokens_line.startswith("⚠") and "system message" in tokens_line

        # One person cannot keep the generations to themselves.
        with pytest.raises(AppError, match="Too many generations"):
            for _ in range(GENERATIONS_PER_MINUTE + 1):
                mallory.predict(*chat_args("Hi", max_new_tokens=1, identity=mallory_token), api_name="/quantized_chat")

    growth_mb = (memory.peak - baseline) / 1e6
    print(f"hostile room: app memory {baseline / 1e6:.0f} MB before, peak {memory.peak / 1e6:.0f} MB during the attack")
    assert growth_mb < MEMORY_GROWTH_MB, f"the app's memory grew by {growth_mb:.0f} MB during the attack"
    history, _, _ = alice.predict(*chat_args("Say bye.", max_new_tokens=6, identity=alice_token),
                                  api_name="/quantized_chat")
    assert assistant_text(history).strip()
