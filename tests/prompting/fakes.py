"""Test doubles for the Prompt Lab: an engine with scripted answers and an embedder with fixed vectors."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator, Sequence

import numpy as np

from playground.backends.base import EngineBase, Generation, GenerationParams, Waiting


class ScriptedEngine(EngineBase):
    """One token per character; a tiny chat template; the answer comes from ``reply(prompt, params)``."""

    name = "scripted"

    def __init__(self, reply: Callable[[str, GenerationParams], str] | str = "positive", context: int = 4096,
                 chat_template: bool = True):
        super().__init__("scripted-model")
        self.reply = reply if callable(reply) else (lambda prompt, params, text=reply: text)
        self.context = context
        self.chat_template = chat_template
        self.prompts: list[str] = []

    @property
    def context_window(self) -> int:
        return self.context

    @property
    def has_chat_template(self) -> bool:
        return self.chat_template

    def format_chat(self, messages) -> str:
        if not self.chat_template:
            return "\n".join(m["content"] for m in messages)
        return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages) + "<|assistant|>"

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def _token_pieces(self, prompt_ids, params: GenerationParams) -> Iterator[str]:
        prompt = "".join(chr(i) for i in prompt_ids)
        self.prompts.append(prompt)
        yield from self.reply(prompt, params)[: params.max_new_tokens]

    def next_token_probabilities(self, prompt: str, k: int = 10):
        return []

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


class QueuedEngine(ScriptedEngine):
    """A ScriptedEngine whose generations join a shared decode loop, as a batched llama.cpp engine's do: the
    stream first waits for its turn (``Waiting(ahead)`` for each of ``waits``), then gives the answer; it needs
    no generation slot (``batched``)."""

    def __init__(self, reply="positive", waits=(2, 2, 0), **kwargs):
        super().__init__(reply, **kwargs)
        self.waits = tuple(waits)

    def stream(self, prompt, params: GenerationParams) -> Generation:
        started = time.perf_counter()
        ids = self.check_prompt(prompt, params)

        def pieces():
            for ahead in self.waits:
                yield Waiting(ahead)
            yield from self._token_pieces(ids, params)

        return Generation(pieces(), prompt_tokens=len(ids), params=params, engine=self.name,
                          model_id=self.model_id, started=started, batched=True)


class BatchingEngine(ScriptedEngine):
    """A ScriptedEngine whose generations run at once, as in a shared decode loop, counting how many overlap."""

    streams = 4

    def __init__(self, reply):
        super().__init__(reply)
        self.active = self.most = 0
        self.guard = threading.Lock()

    def stream(self, prompt, params):
        ids = self.check_prompt(prompt, params)

        def pieces():
            with self.guard:
                self.active += 1
                self.most = max(self.most, self.active)
            try:
                time.sleep(0.1)
                yield from self._token_pieces(ids, params)
            finally:
                with self.guard:
                    self.active -= 1

        return Generation(pieces(), prompt_tokens=len(ids), params=params, engine=self.name,
                          model_id=self.model_id, started=time.perf_counter(), batched=True)


class KeywordEmbedder:
    """Embeds a text as counts of a few keywords (L2-normalised), so similarity is easy to predict."""

    KEYWORDS = ("train", "coffee", "shoes", "package", "phone", "hotel")

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            lowered = text.lower()
            vector = np.array([lowered.count(k) for k in self.KEYWORDS] + [0.01], dtype=np.float64)
            rows.append(vector / np.linalg.norm(vector))
        return np.stack(rows)
