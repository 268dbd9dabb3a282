"""The one protocol every generation engine speaks, and the parts they share.

An engine turns a prompt into a stream of tokens. What is the same for all
engines lives here: parameter validation, the context-window check, stop
sequences, timing (time to first token, tokens per second) and cancellation.
An engine only has to tokenize, apply its chat template, yield one text piece
per generated token, and give next-token probabilities.

``sample_n`` draws several completions of one prompt (self-consistency). The
shared version here samples them one after the other with seeds ``seed``,
``seed + 1``, ...; the engines override it to process the prompt once and
decode the samples together (llama.cpp: one batch of parallel sequences;
transformers: ``num_return_sequences``).
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, Iterator, Protocol, Sequence, runtime_checkable

from playground.errors import ContextOverflowError, InvalidParameterError, InvalidPromptError

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


def _param(default, help: str, low=None, high=None, **extra):
    return field(default=default, metadata={"help": help, "low": low, "high": high, **extra})


_INT_TYPES = ("int", "int | None")
MAX_SAMPLES = 32  # most completions one sample_n call may ask for


@dataclass(frozen=True)
class SampleProgress:
    """How far one ``sample_n`` call is: paths finished of ``total``, and the new tokens so far (of all paths,
    and of those still being generated). Engines report it to ``sample_n``'s ``progress`` callback."""

    done: int
    total: int
    tokens: int
    live_tokens: int = 0


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one request; the help texts become the widgets' info."""

    max_new_tokens: int = _param(256, "Upper limit on the tokens generated for this answer.", 1, None)
    temperature: float = _param(
        0.7, "Randomness of sampling; 0 always picks the most likely token (greedy).", 0.0, 2.0)
    top_p: float = _param(0.95, "Nucleus sampling: keep the smallest set of tokens whose probability adds "
                                "up to p.", 0.01, 1.0)
    top_k: int = _param(40, "Sample only among the k most likely tokens (0 turns the filter off).", 0, 1000)
    repetition_penalty: float = _param(
        1.1, "Values above 1 make tokens that already appeared less likely.", 0.5, 2.0)
    seed: int | None = _param(None, "Same seed, same prompt, same settings: same answer (empty: random).",
                              0, 2**31 - 1)
    stop: tuple[str, ...] = _param((), "Generation ends before any of these strings appears.")

    def __post_init__(self) -> None:
        # Number widgets hand over 42.0 for 42; the engines need real ints (llama.cpp's C calls refuse
        # floats), so whole numbers become ints here and anything else is left for validated() to refuse.
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in _INT_TYPES and isinstance(value, float) and value.is_integer():
                object.__setattr__(self, f.name, int(value))

    def validated(self, token_limit: int | None = None) -> "GenerationParams":
        """Self, after checking every range; raises InvalidParameterError naming the parameter."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "stop" or value is None:
                continue
            low, high = f.metadata["low"], f.metadata["high"]
            if f.name == "max_new_tokens" and token_limit is not None:
                high = token_limit
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidParameterError(f"{f.name} must be a number, not {value!r}.")
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidParameterError(f"{f.name} must be a finite number, not {value!r}.")
            if f.type in _INT_TYPES and int(value) != value:
                raise InvalidParameterError(f"{f.name} must be a whole number, not {value!r}.")
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
                raise InvalidParameterError(f"{f.name}={value} is out of range: it must be {bounds}.")
        if len(self.stop) > 8 or any(not s or len(s) > 100 for s in self.stop):
            raise InvalidParameterError("Give at most 8 stop sequences, each 1 to 100 characters long.")
        return self

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)

    @classmethod
    def bounds(cls, name: str) -> tuple:
        f = next(f for f in fields(cls) if f.name == name)
        return f.metadata["low"], f.metadata["high"]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TokenProbability:
    token_id: int
    token: str
    probability: float


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    total_s: float
    finish_reason: str  # "stop" (end of text or a stop sequence), "length" or "cancelled"
    engine: str
    model_id: str
    queued_s: float = 0.0  # time spent in line behind other people's requests (not in time_to_first_token_s)

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first, over the time after the first."""
        decode_time = self.total_s - self.queued_s - self.time_to_first_token_s
        if self.completion_tokens < 2 or decode_time <= 0:
            return 0.0
        return (self.completion_tokens - 1) / decode_time


@dataclass(frozen=True)
class Waiting:
    """What an engine's token stream yields instead of text while the request waits for its turn in a
    decode loop shared with other people: ``ahead`` requests are before it (0: its prompt is being read)."""

    ahead: int


@dataclass(frozen=True)
class TokenizedPrompt:
    """A prompt tokenised by the engine that will run it: its text and its ids, so it is tokenised once."""

    text: str
    ids: tuple[int, ...]


Prompt = str | TokenizedPrompt  # what stream, generate and sample_n take


@runtime_checkable
class Engine(Protocol):
    """What the app needs from an inference engine."""

    name: str
    model_id: str

    @property
    def context_window(self) -> int: ...

    @property
    def has_chat_template(self) -> bool: ...

    def format_chat(self, messages: Sequence[Message]) -> str: ...

    def tokenize(self, text: str) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...

    def stream(self, prompt: Prompt, params: GenerationParams) -> "Generation": ...

    def generate(self, prompt: Prompt, params: GenerationParams) -> GenerationResult: ...

    def sample_n(self, prompt: Prompt, params: GenerationParams, n: int,
                 cancel: threading.Event | None = None,
                 progress: Callable[[SampleProgress], None] | None = None) -> list[GenerationResult]: ...

    def next_token_probabilities(self, prompt: str, k: int = 10) -> list[TokenProbability]: ...

    def memory_bytes(self) -> int: ...

    def close(self) -> None: ...


class CancelFlag(threading.Event):
    """A cancel signal for work that is not one generation (evaluations, side-by-side runs).

    It is a ``threading.Event`` that the logic checks, with the ``cancel()`` method the
    app's registry of running work calls, like a ``Generation``'s.
    """

    def cancel(self) -> None:
        self.set()


class Generation:
    """An answer being generated: iterate to get text as it arrives; ``result`` once done.

    Stop sequences are applied here for every engine: text that could be the
    start of a stop sequence is held back until it is clear it is not.

    A generation that joined a decode loop shared by everyone on its model is ``batched``: the loop admits
    it, so it needs none of the app's generation slots. While it waits for its turn, iterating gives empty
    strings a few times a second and ``queue_position`` says how many requests are ahead (0: its prompt is
    being read; None: its answer is coming, or it never waited), so a tab can show the wait and a cancel
    is seen while waiting.
    """

    def __init__(self, pieces: Iterator, *, prompt_tokens: int, params: GenerationParams,
                 engine: str, model_id: str, started: float, batched: bool = False):
        self._pieces = pieces
        self._params = params
        self._engine = engine
        self._model_id = model_id
        self._prompt_tokens = prompt_tokens
        self._started = started
        self._cancel = threading.Event()
        self.batched = batched
        self.queue_position: int | None = None
        self.result: GenerationResult | None = None

    def cancel(self) -> None:
        self._cancel.set()

    def __iter__(self) -> Iterator[str]:
        stops = self._params.stop
        buffer, text = "", []
        first_token_at: float | None = None
        in_line_until: float | None = None  # when the request was last heard waiting behind others
        tokens = 0
        finish = "length"
        try:
            for piece in self._pieces:
                if isinstance(piece, Waiting):
                    if piece.ahead > 0:
                        in_line_until = time.perf_counter()
                    self.queue_position = piece.ahead
                    if self._cancel.is_set():
                        finish = "cancelled"
                        break
                    yield ""
                    continue
                self.queue_position = None
                tokens += 1
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                if self._cancel.is_set():
                    finish = "cancelled"
                    break
                buffer += piece
                cut = first_stop_index(buffer, stops)
                if cut is not None:
                    buffer = buffer[:cut]
                    finish = "stop"
                    break
                hold = _held_back(buffer, stops)
                ready, buffer = buffer[:len(buffer) - hold], buffer[len(buffer) - hold:]
                if ready:
                    text.append(ready)
                    yield ready
            else:
                finish = "stop" if tokens < self._params.max_new_tokens else "length"
        finally:
            close = getattr(self._pieces, "close", None)
            if close:
                close()
        if buffer:
            text.append(buffer)
            yield buffer
        end = time.perf_counter()
        # The time in line (to a quarter second: the loop says a request's place a few times a second) is
        # not the model reading the prompt, so the time to first token leaves it out.
        queued = (in_line_until - self._started) if in_line_until is not None else 0.0
        self.result = GenerationResult(
            text="".join(text), prompt_tokens=self._prompt_tokens, completion_tokens=tokens,
            time_to_first_token_s=(first_token_at or end) - self._started - queued, total_s=end - self._started,
            finish_reason=finish, engine=self._engine, model_id=self._model_id, queued_s=queued,
        )

    def run(self) -> GenerationResult:
        for _ in self:
            pass
        assert self.result is not None
        return self.result


def check_sample_count(n) -> int:
    """``n`` as an int between 1 and MAX_SAMPLES; raises InvalidParameterError otherwise."""
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
        raise InvalidParameterError(f"The number of samples must be a whole number from 1 to {MAX_SAMPLES}, "
                                    f"not {n!r}.")
    return n


def sample_seeds(params: GenerationParams, n: int) -> list[int]:
    """One seed per sample: ``seed, seed + 1, ...`` (a random start when the seed is empty)."""
    base = params.seed if params.seed is not None else random.randrange(2**31 - MAX_SAMPLES)
    return [(base + i) % 2**31 for i in range(n)]


def first_stop_index(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins some stop sequence."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class EngineBase:
    """Shared behaviour; subclasses provide tokenization, templates and the token stream."""

    name = "base"

    def __init__(self, model_id: str, token_limit: int | None = None):
        self.model_id = model_id
        self.token_limit = token_limit
        self.lock = threading.Lock()  # one generation at a time per loaded model

    # subclasses implement these
    def _token_pieces(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[str]:
        raise NotImplementedError

    def tokenize(self, text: str) -> list[int]:
        raise NotImplementedError

    @property
    def context_window(self) -> int:
        raise NotImplementedError

    # shared
    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def check_prompt(self, prompt: Prompt, params: GenerationParams) -> list[int]:
        """The prompt's ids (tokenised here unless they came with it), checked against the context window."""
        text = prompt.text if isinstance(prompt, TokenizedPrompt) else prompt
        if not text or not text.strip():
            raise InvalidPromptError("The prompt is empty: type some text first.").keyed("error.empty_prompt")
        params.validated(self.token_limit)
        ids = list(prompt.ids) if isinstance(prompt, TokenizedPrompt) else self.tokenize(text)
        if len(ids) + params.max_new_tokens > self.context_window:
            raise ContextOverflowError(len(ids), params.max_new_tokens, self.context_window)
        return ids

    def stream(self, prompt: Prompt, params: GenerationParams) -> Generation:
        started = time.perf_counter()
        ids = self.check_prompt(prompt, params)
        return Generation(self._locked(ids, params), prompt_tokens=len(ids), params=params,
                          engine=self.name, model_id=self.model_id, started=started)

    def _locked(self, ids: list[int], params: GenerationParams) -> Iterator[str]:
        with self.lock:
            pieces = self._token_pieces(ids, params)
            try:
                yield from pieces
            finally:
                pieces.close()

    def generate(self, prompt: Prompt, params: GenerationParams) -> GenerationResult:
        return self.stream(prompt, params).run()

    def generate_cancellable(self, prompt: Prompt, params: GenerationParams,
                             cancel: threading.Event | None = None) -> GenerationResult:
        """``generate``, stopping early (finish reason "cancelled") once ``cancel`` is set."""
        generation = self.stream(prompt, params)
        for _ in generation:
            if cancel is not None and cancel.is_set():
                generation.cancel()
        assert generation.result is not None
        return generation.result

    def sample_n(self, prompt: Prompt, params: GenerationParams, n: int,
                 cancel: threading.Event | None = None,
                 progress: Callable[[SampleProgress], None] | None = None) -> list[GenerationResult]:
        """``n`` sampled completions of one prompt, with seeds ``seed, seed + 1, ...``.

        Greedy settings (temperature 0) give one answer, returned ``n`` times. This shared
        version generates one sample after the other; when ``cancel`` is set it stops and
        returns the samples made so far (the last one with finish reason "cancelled").
        ``progress`` hears after every generated piece how many samples are done and the tokens so far.
        """
        n = check_sample_count(n)
        if params.temperature == 0:
            return [self.generate_cancellable(prompt, params, cancel)] * n
        results: list[GenerationResult] = []
        for seed in sample_seeds(params, n):
            if cancel is not None and cancel.is_set():
                break
            generation = self.stream(prompt, replace(params, seed=seed))
            finished = sum(r.completion_tokens for r in results)
            live = 0
            for piece in generation:
                if piece and progress is not None:
                    live += 1
                    progress(SampleProgress(len(results), n, finished + live, live))
                if cancel is not None and cancel.is_set():
                    generation.cancel()
            assert generation.result is not None
            results.append(generation.result)
            if progress is not None:
                progress(SampleProgress(len(results), n, finished + generation.result.completion_tokens))
        return results
