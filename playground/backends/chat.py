"""Chat: a history and a new message into a prompt, with the checks every tab needs, and the Quantized CPU
tab's controller (:class:`QuantizedChat`: a streamed answer on llama.cpp, the GGUF facts, and the precision
comparison), for the catalog's GGUF models and a person's fine-tuned runs alike.

The controller reaches models through :class:`QuantizedModels`, one person's view of them (made by
``Services.models_for``): a run (``run:<id>``) answers on llama.cpp as its quantised base with the run's
adapter GGUF applied, and someone else's run reads as no run at all. A catalog model that an OpenAI-compatible
server serves (``PLAYGROUND_OPENAI_MODELS``) chats there instead, so a room shares that server's batching; the
precision comparison stays on this machine's two engines.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

from playground.backends.base import Engine, GenerationParams, GenerationResult, Message
from playground.backends.compare import PrecisionComparison, compare_precisions
from playground.backends.slots import SlotHolder, line_for, no_slot, slot_for
from playground.errors import InvalidPromptError
from playground.hardware import Hardware
from playground.models.gguf_info import GGUFFacts

ROLES = ("system", "user", "assistant")


def check_message(text: str | None, max_chars: int) -> str:
    """The message stripped of surrounding space; raises InvalidPromptError when unusable."""
    text = (text or "").strip()
    if not text:
        raise InvalidPromptError("The message is empty: type something to send.").keyed("error.empty_message")
    if len(text) > max_chars:
        raise InvalidPromptError(
            f"The message has {len(text):,} characters; the limit is {max_chars:,} "
            f"(PLAYGROUND_MAX_PROMPT_CHARS). Shorten it."
        ).keyed("error.message_too_long", chars=len(text), limit=max_chars)
    return text


def content_text(content, separator: str = "") -> str:
    """The text of a chat message's content: Chatbot histories may hold rich content (lists of parts, dicts),
    and the models here read text only. ``separator`` joins the parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    if isinstance(content, (list, tuple)):
        return separator.join(content_text(part, separator) for part in content)
    return "" if content is None else str(content)


def build_messages(history: Sequence[dict], user_message: str, system_prompt: str = "") -> list[Message]:
    """Chat messages for a model: optional system prompt, the earlier turns, then the new message."""
    messages: list[Message] = []
    if system_prompt and system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt.strip()})
    for turn in history or []:
        role = turn.get("role")
        if role in ("user", "assistant"):
            text = content_text(turn.get("content"))
            if text:
                messages.append({"role": role, "content": text})
    messages.append({"role": "user", "content": user_message})
    return messages


# --------------------------------------------------------------------------- the Quantized CPU tab's controller


@dataclass(frozen=True)
class ChatRequest:
    """One chat turn: the model, the new message, the conversation so far, the system prompt and the settings."""

    model_id: str
    message: str
    history: tuple = ()
    system: str = ""
    params: GenerationParams = field(default_factory=GenerationParams)


@dataclass(frozen=True)
class ChatUpdate:
    """The conversation after one step of an answer; ``result`` once it is finished."""

    history: list
    result: GenerationResult | None = None
    cancelled_waiting: bool = False  # stopped before a generation slot was free: nothing was generated
    # While the answer waits for its turn: how many requests are ahead of it (for a generation slot, or in the
    # engine's shared decode loop; 0: the loop is reading its prompt). None once the answer is coming.
    queue_position: int | None = None


@dataclass(frozen=True)
class QuantizedFacts:
    """What llama.cpp loads for a model: its GGUF file and, for a fine-tuned run, the adapter applied to it."""

    gguf: GGUFFacts  # the model's GGUF, or a run's base GGUF
    adapter: tuple[tuple[str, str], ...] = ()  # a run: what was trained and the adapter GGUF's facts
    method: str = ""  # a run's method as shown (LORA, QLORA); "" for a catalog model

    @property
    def is_run(self) -> bool:
        return bool(self.method)

    def as_rows(self) -> list[tuple[str, str]]:
        """(fact, value) rows: a run's own rows first, then the GGUF's (its name then reads "base GGUF")."""
        rows = self.gguf.as_rows()
        if self.is_run:
            rows = [("base GGUF" if name == "name" else name, value) for name, value in rows]
        return [*self.adapter, *rows]


class QuantizedModels(Protocol):
    """One person's models as the Quantized CPU tab uses them: the catalog's GGUF models and their own runs."""

    @property
    def hardware(self) -> Hardware: ...

    def engine(self, model_id: str, engine: str = "auto", progress=None) -> Engine:
        """A loaded engine: ``llama.cpp`` (a run: its base with its adapter), ``transformers`` or ``openai``."""

    def chat_engine(self, model_id: str) -> str:
        """The engine the chat answers on: ``openai`` for a model the OpenAI-compatible server serves, else
        ``llama.cpp``."""

    def quantized_facts(self, model_id: str, progress=None) -> QuantizedFacts:
        """What llama.cpp loads for the model; a run that cannot answer on llama.cpp raises with the reason."""


class QuantizedChat:
    """Chat with a GGUF model (or a fine-tuned run over one) on llama.cpp, its facts, and the full-precision
    against quantised comparison.

    Every call takes ``models``, the asking person's :class:`QuantizedModels`; ``slot`` is held only while a
    model generates.
    """

    def __init__(self, *, slot: SlotHolder = no_slot, max_chars: int = 20_000) -> None:
        self.slot = slot
        self.max_chars = max_chars

    def facts(self, model_id: str, models: QuantizedModels, progress=None) -> list[tuple[str, str]]:
        """(fact, value) rows of what llama.cpp loads for ``model_id`` (a run: its adapter, then its base)."""
        return models.quantized_facts(model_id, progress).as_rows()

    def reply(self, request: ChatRequest, models: QuantizedModels, cancel: threading.Event | None = None,
              progress=None) -> Iterator[ChatUpdate]:
        """The answer to the new message, streamed: the conversation after each piece, then the result.

        While it waits for its turn (a generation slot, or a place in the engine's shared decode loop), an
        update says how many requests are ahead each time that changes (``queue_position``).
        """
        text = check_message(request.message, self.max_chars)
        engine = models.engine(request.model_id, models.chat_engine(request.model_id), progress=progress)
        generation = engine.stream(engine.format_chat(build_messages(request.history, text, request.system)),
                                   request.params)
        history = [*request.history, {"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        yield ChatUpdate(list(history))
        with line_for(slot_for(self.slot, generation), cancel) as place:
            waited = False
            for ahead in place.positions():  # waiting for a generation slot
                waited = True
                yield ChatUpdate(list(history), queue_position=ahead)
            if not place.held:
                yield ChatUpdate(list(history), cancelled_waiting=True)
                return
            if waited:  # its turn: the model reads the prompt before the first token
                yield ChatUpdate(list(history), queue_position=0)
            answer, shown = "", None
            for piece in generation:
                if cancel is not None and cancel.is_set():
                    generation.cancel()
                if not piece:  # a batched generation waiting for its turn in the decode loop
                    position = getattr(generation, "queue_position", None)
                    if position != shown:
                        shown = position
                        yield ChatUpdate(list(history), queue_position=position)
                    continue
                shown = None
                answer += piece
                history[-1] = {"role": "assistant", "content": answer}
                yield ChatUpdate(list(history))
        assert generation.result is not None
        history[-1] = {"role": "assistant", "content": generation.result.text}
        yield ChatUpdate(list(history), result=generation.result)

    def compare(self, request: ChatRequest, models: QuantizedModels, progress=None, steps=None
                ) -> Iterator[PrecisionComparison]:
        """The same message in full precision (transformers) and quantised (llama.cpp): each step of both.

        A run compares its adapter merged into the full-precision base against its adapter GGUF on the
        quantised base. ``steps(ComparisonStep)`` hears each side's load and every generated token.
        """
        text = check_message(request.message, self.max_chars)
        facts = models.quantized_facts(request.model_id, progress)
        full, quantised = precision_labels(facts, models.hardware)
        updates = compare_precisions(models.engine, request.model_id, build_messages([], text, request.system),
                                     request.params, full_precision=full, quantised_precision=quantised,
                                     progress=progress, slot=self.slot, steps=steps)
        try:
            yield from updates
        finally:
            updates.close()


def precision_labels(facts: QuantizedFacts, hardware: Hardware) -> tuple[str, str]:
    """(full precision, quantised) as the comparison names them, e.g. ("fp32 (dequantised from GGUF)", "Q4_1")."""
    full = "bf16" if hardware.cuda else "fp32 (dequantised from GGUF)"
    quantised = facts.gguf.file_type
    if facts.is_run:
        full, quantised = f"{full} + {facts.method} merged", f"{quantised} + {facts.method} adapter"
    return full, quantised
