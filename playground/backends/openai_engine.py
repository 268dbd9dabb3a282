"""The OpenAI-compatible engine: generation on a server elsewhere (llama.cpp's server, vLLM, TGI) over HTTP.

A room points the app at a server that batches many people's requests itself
(continuous batching), and several app replicas can share that one server. The
engine speaks the same protocol as the in-process ones:

- A plain prompt (``str`` or :class:`TokenizedPrompt`) goes to ``/completions``
  as text. Chat goes to ``/chat/completions`` so that the *server* applies the
  model's chat template: :meth:`OpenAICompatibleEngine.format_chat` returns a
  :class:`ChatPrompt`, a ``str`` whose text is a readable rendering of the
  conversation (for previews and token estimates) and which carries the
  messages themselves; ``stream`` sends those messages.
- Sampling settings go as OpenAI fields (``temperature``, ``top_p``, ``seed``,
  ``stop``, ``max_tokens``) plus the extra fields llama.cpp's servers and vLLM
  read (``top_k``, ``min_p``, ``repeat_penalty`` / ``repetition_penalty``); a
  server ignores the extra fields it does not know.
- Token counts come from the server's own tokenizer endpoint, found once
  (:data:`TOKENIZE_ROUTES`); the context window from the settings, else what the
  server reports, else :data:`DEFAULT_CONTEXT`.
- Answers stream as server-sent events; cancelling a :class:`Generation` (or
  closing it) closes the HTTP response, and the servers stop generating for a
  client that went away.

Nothing here holds the engine's lock while generating: the server serves many
requests at once, and the app's own generation slots (``PLAYGROUND_CONCURRENCY``)
bound how many this process sends.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from playground.backends.base import (
    EngineBase,
    Generation,
    GenerationParams,
    GenerationResult,
    Message,
    Prompt,
    SampleProgress,
    TokenizedPrompt,
    TokenProbability,
    check_sample_count,
    sample_seeds,
)
from playground.backends.selection import OPENAI
from playground.errors import EngineUnavailableError, InferenceServerError, InvalidParameterError, redact_server_paths

# A context window for a server that reports none (llama-cpp-python's server does not): the n_ctx that
# llama-cpp-python's server starts with by default, so the local check is not looser than the usual server.
DEFAULT_CONTEXT = 2048
CONNECT_TIMEOUT_S = 5.0  # a server that does not accept a connection in 5 s is down or unreachable
# Between two pieces of an answer (and before the first): a busy server queues requests, so this is generous,
# but bounded, so a hung server ends in a message instead of a request that never returns.
READ_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 5.0  # the start-up questions (models, context window, tokenizer)
MAX_PARALLEL_SAMPLES = 8  # sample_n requests in flight at once; the server batches them
ERROR_CHARS = 300  # how much of a server's own error message a person sees


# --------------------------------------------------------------------------- chat prompts


def render_chat(messages: Sequence[Message]) -> str:
    """A readable rendering of a conversation ("role: text" turns, then "assistant:"), for previews and counts.

    It is not the model's template (the server applies that), so a token count of it is an estimate.
    """
    turns = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n\n".join([*turns, "assistant:\n"])


class ChatPrompt(str):
    """A conversation for the server's chat endpoint: the ``str`` is :func:`render_chat`'s rendering, and
    ``messages`` are what is sent.

    ``answer_prefix`` is text the answer must start with (the Prompt Lab's chain-of-thought trigger placed in the
    assistant's turn); ``chat + "text"`` keeps the messages and extends the prefix, so code written for rendered
    templates (``text + prefix``) keeps working.
    """

    messages: tuple[Message, ...]
    answer_prefix: str

    def __new__(cls, messages: Sequence[Message], answer_prefix: str = "") -> "ChatPrompt":
        kept = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in messages)
        self = super().__new__(cls, render_chat(kept) + answer_prefix)
        self.messages = kept
        self.answer_prefix = answer_prefix
        return self

    def __add__(self, other):
        if isinstance(other, str) and not isinstance(other, ChatPrompt):
            return ChatPrompt(self.messages, self.answer_prefix + other)
        return str.__add__(self, other)

    def __getnewargs__(self):  # copy and pickle rebuild it from its messages, not from its rendering
        return self.messages, self.answer_prefix

    def request_messages(self) -> list[Message]:
        """The messages to send: with an answer prefix, a last assistant turn the server continues."""
        messages = [dict(m) for m in self.messages]
        if self.answer_prefix:
            messages.append({"role": "assistant", "content": self.answer_prefix})
        return messages


def _prompt_text(prompt: Prompt) -> str:
    return prompt.text if isinstance(prompt, TokenizedPrompt) else prompt


# --------------------------------------------------------------------------- tokenizer endpoints


@dataclass(frozen=True)
class TokenizeRoute:
    """One server family's tokenizer endpoint: its path from the server root, the request body, the ids."""

    server: str
    path: str
    body: Callable[[str, str], dict]  # (served name, text) -> JSON body
    ids: Callable[[Any], list]  # JSON answer -> token ids


TOKENIZE_ROUTES = (
    # llama-cpp-python's server (python -m llama_cpp.server): counts as its completions do (BOS, special tokens).
    TokenizeRoute("llama-cpp-python", "/extras/tokenize", lambda served, text: {"input": text, "model": served},
                  lambda answer: answer["tokens"]),
    # vLLM (adds the model's special tokens by default, as its completions do).
    TokenizeRoute("vLLM", "/tokenize", lambda served, text: {"model": served, "prompt": text},
                  lambda answer: answer["tokens"]),
    # llama.cpp's own server (llama-server): add_special so BOS counts, as in its completions.
    TokenizeRoute("llama.cpp server", "/tokenize", lambda served, text: {"content": text, "add_special": True},
                  lambda answer: answer["tokens"]),
    # Text Generation Inference: a list of {"id", "text", "start", "stop"}.
    TokenizeRoute("TGI", "/tokenize", lambda served, text: {"inputs": text},
                  lambda answer: [token["id"] for token in answer]),
)


class _NoTokenizer(EngineUnavailableError):
    """The server answers none of the tokenizer endpoints."""


class _Unreachable(InferenceServerError):
    """No answer at all: the connection failed, timed out or broke off (as opposed to an HTTP error status)."""


class _StatusError(InferenceServerError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- errors


def _display_url(url: str) -> str:
    return str(url).split("?")[0]


def _server_message(response: httpx.Response) -> str:
    """The server's own error text, short: OpenAI ({"error": {"message"}}), vLLM ({"message"}), FastAPI
    ({"detail"}), TGI ({"error": "..."}) or the raw body."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    message = body
    if isinstance(body, dict):
        error = body.get("error")
        message = (error.get("message") if isinstance(error, dict) else error) or body.get("message") \
            or body.get("detail") or body
    text = message if isinstance(message, str) else json.dumps(message)
    # llama-cpp-python appends its traceback ("\n\n  File .../app.py, line ..."): not for a person to read.
    text = re.split(r"\n\s*File \"", text)[0]
    text = " ".join(text.split())
    if len(text) > ERROR_CHARS:
        text = text[:ERROR_CHARS].rstrip() + "..."
    return redact_server_paths(text)


def _status_error(response: httpx.Response) -> _StatusError:
    url = _display_url(response.request.url)
    status = response.status_code
    detail = _server_message(response)
    if status in (401, 403):
        message = (f"The OpenAI-compatible server at {url} refused the request (HTTP {status}: {detail}): set "
                   f"PLAYGROUND_OPENAI_API_KEY to the key it expects.")
    elif status == 404:
        message = (f"The OpenAI-compatible server at {url} answered 404 ({detail}): check that "
                   f"PLAYGROUND_OPENAI_BASE_URL is its API root (usually ending in /v1) and that "
                   f"PLAYGROUND_OPENAI_MODELS names a model it serves.")
    elif status in (502, 503, 504):
        message = (f"The OpenAI-compatible server at {url} is not ready or overloaded (HTTP {status}: {detail}); "
                   f"try again in a moment.")
    else:
        message = f"The OpenAI-compatible server at {url} refused the request (HTTP {status}): {detail}"
    return _StatusError(message, status)


def _transport_error(exc: httpx.HTTPError, url: str) -> _Unreachable:
    url = _display_url(url)
    if isinstance(exc, httpx.ConnectTimeout):
        return _Unreachable(f"The OpenAI-compatible server at {url} did not accept a connection within "
                            f"{CONNECT_TIMEOUT_S:g} s: check that it is running and reachable.")
    if isinstance(exc, httpx.ConnectError):
        return _Unreachable(
            f"Could not connect to the OpenAI-compatible server at {url} ({exc or 'connection refused'}): check "
            f"that it is running and that PLAYGROUND_OPENAI_BASE_URL points at it.")
    if isinstance(exc, httpx.ReadTimeout):
        return _Unreachable(f"The OpenAI-compatible server at {url} sent nothing for {READ_TIMEOUT_S:g} s; it may "
                            f"be overloaded. Try again.")
    if isinstance(exc, httpx.TimeoutException):
        return _Unreachable(f"The OpenAI-compatible server at {url} timed out ({type(exc).__name__}).")
    return _Unreachable(f"The connection to the OpenAI-compatible server at {url} broke off "
                        f"({type(exc).__name__}: {exc}). Try again.")


# --------------------------------------------------------------------------- the answer as it streams


@dataclass
class _StreamState:
    """What the server said about an answer besides its text."""

    finish: str | None = None  # its finish_reason
    usage: dict | None = None  # its token counts, when it sends them


class ServerGeneration(Generation):
    """A :class:`Generation` whose result takes the server's own token counts and finish reason where it gives
    them (a server may send several tokens in one event, and only it knows the templated prompt's length)."""

    def __init__(self, pieces: Iterator[str], state: _StreamState, **kwargs):
        super().__init__(pieces, **kwargs)
        self._state = state

    def __iter__(self) -> Iterator[str]:
        yield from super().__iter__()
        result, state = self.result, self._state
        assert result is not None
        usage = state.usage or {}
        changes: dict[str, Any] = {}
        if isinstance(usage.get("prompt_tokens"), int) and usage["prompt_tokens"] > 0:
            changes["prompt_tokens"] = usage["prompt_tokens"]
        if result.finish_reason != "cancelled":
            if isinstance(usage.get("completion_tokens"), int):
                changes["completion_tokens"] = usage["completion_tokens"]
            if result.finish_reason != "stop" or state.finish == "length":
                # The app's own stop-sequence cut stays "stop"; otherwise the server knows why it ended.
                changes["finish_reason"] = "length" if state.finish == "length" else "stop"
        if changes:
            self.result = replace(result, **changes)


# --------------------------------------------------------------------------- the engine


class OpenAICompatibleEngine(EngineBase):
    """A catalog model served by an OpenAI-compatible server; ``served_name`` is what the server calls it."""

    name = OPENAI

    def __init__(self, model_id: str, client: httpx.Client, base_url: str, served_name: str, context_window: int,
                 token_limit: int | None = None):
        super().__init__(model_id, token_limit)
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.server_root = server_root(self.base_url)
        self.served_name = served_name
        self._context = int(context_window)
        self._route: TokenizeRoute | None = None
        self._no_tokenizer = False
        self._route_lock = threading.Lock()
        self._closed = False
        self._in_flight = 0  # requests under way; close() waits for the last one before closing the client
        self._flight_lock = threading.Lock()

    @classmethod
    def connect(cls, model_id: str, base_url: str, served_name: str, *, api_key: str = "",
                context_window: int | None = None, token_limit: int | None = None,
                transport: httpx.BaseTransport | None = None) -> "OpenAICompatibleEngine":
        """An engine on the server at ``base_url`` (the API root, e.g. ``http://host:8080/v1``), after checking
        that the server answers and serves ``served_name``; raises InferenceServerError naming the URL."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        client = httpx.Client(headers=headers, timeout=timeout, transport=transport)
        base_url = base_url.rstrip("/")
        try:
            entry = _served_entry(client, base_url, served_name)
            window = context_window or _reported_context(client, base_url, entry) or DEFAULT_CONTEXT
        except BaseException:
            client.close()
            raise
        return cls(model_id, client, base_url, served_name, window, token_limit)

    # ------------------------------------------------------------------ protocol facts
    @property
    def context_window(self) -> int:
        return self._context

    @property
    def has_chat_template(self) -> bool:
        return True  # the server applies the model's template to what format_chat returns

    def format_chat(self, messages: Sequence[Message]) -> ChatPrompt:
        return ChatPrompt(messages)

    def memory_bytes(self) -> int:
        return 0  # the weights live on the server

    def close(self) -> None:
        """Refuse new requests and close the HTTP client once the requests under way are done.

        The model cache may close an engine it evicts (this one costs no memory, but the least recently used
        entry goes first) while someone's answer still streams; that answer finishes, and the next request
        gets a freshly connected engine from the provider.
        """
        with self._flight_lock:
            self._closed = True
            idle = self._in_flight == 0
        if idle:
            self.client.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ HTTP
    @contextlib.contextmanager
    def _request_under_way(self):
        with self._flight_lock:
            self._check_open()
            self._in_flight += 1
        try:
            yield
        finally:
            with self._flight_lock:
                self._in_flight -= 1
                close = self._closed and self._in_flight == 0
            if close:
                self.client.close()

    def _post(self, url: str, body: dict, timeout: float | None = None) -> Any:
        try:
            with self._request_under_way():
                response = self.client.post(url, json=body, **({"timeout": timeout} if timeout else {}))
        except httpx.HTTPError as exc:
            raise _transport_error(exc, url) from None
        return _json_answer(response, _display_url(url))

    def _check_open(self) -> None:
        if self._closed:
            raise EngineUnavailableError("This model's connection to its server was closed (the model was "
                                         "unloaded); send the request again.")

    # ------------------------------------------------------------------ tokens
    def tokenize(self, text: str) -> list[int]:
        """The server's token ids for ``text`` (a ChatPrompt: of its readable rendering, so an estimate).

        The server's tokenizer endpoint is found on the first call and remembered. A server without one makes
        this raise, rather than invent counts; generation still works there (the server checks its own
        context window), see :meth:`check_prompt`.
        """
        text = str(text)
        route = self._route
        if route is None:
            route = self._find_route(text)
            if route is None:
                raise _NoTokenizer(
                    f"The OpenAI-compatible server at {self.server_root} has none of the tokenizer endpoints this "
                    f"app knows ({', '.join(sorted({r.server + ' ' + r.path for r in TOKENIZE_ROUTES}))}), so "
                    f"token counts are not available for {self.model_id}.")
        return self._tokenize_with(route, text)

    def _tokenize_with(self, route: TokenizeRoute, text: str) -> list[int]:
        answer = self._post(self.server_root + route.path, route.body(self.served_name, text))
        try:
            return [int(i) for i in route.ids(answer)]
        except (KeyError, TypeError, ValueError):
            raise InferenceServerError(f"The {route.server} tokenizer at {self.server_root}{route.path} answered in "
                                       f"an unexpected shape.") from None

    def _find_route(self, text: str) -> TokenizeRoute | None:
        """The first tokenizer endpoint that answers ``text`` with ids; None (remembered) when none does."""
        with self._route_lock:
            if self._route is not None or self._no_tokenizer:
                return self._route
            probe = text if text.strip() else "Hello"  # every tokenizer gives a word at least one id
            for route in TOKENIZE_ROUTES:
                try:
                    ids = self._tokenize_with(route, probe)
                except _StatusError as exc:
                    if exc.status in (401, 403):
                        raise  # a refused key is refused on every route
                    continue  # this server does not speak this route (404, 405, 422, a 500 for another body)
                except _Unreachable:
                    raise
                except InferenceServerError:
                    continue  # an answer in another shape: another server's route
                # llama.cpp's server answers a body without "content" with no ids: not a route that works.
                if ids:
                    self._route = route
                    return route
            self._no_tokenizer = True
            return None

    def check_prompt(self, prompt: Prompt, params: GenerationParams) -> list[int]:
        try:
            return super().check_prompt(prompt, params)
        except _NoTokenizer:
            # No count to check here: the server refuses a prompt longer than its context window itself, and
            # that message reaches the person. The prompt's length is then what the server reports.
            return []

    # ------------------------------------------------------------------ generation
    def _sampling(self, params: GenerationParams) -> dict:
        body: dict[str, Any] = {
            "model": self.served_name,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            # Not in OpenAI's API. llama.cpp's servers and vLLM read them (0 turns top-k off on both, as here);
            # others ignore them. min_p 0 as the in-process llama.cpp engine uses (llama-cpp-python's server
            # would apply 0.05 otherwise). The repetition penalty goes under both names: repeat_penalty is
            # llama.cpp's, repetition_penalty vLLM's and TGI's.
            "top_k": params.top_k,
            "min_p": 0.0,
            "repeat_penalty": params.repetition_penalty,
            "repetition_penalty": params.repetition_penalty,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def _request(self, prompt: Prompt, params: GenerationParams) -> tuple[str, dict, bool]:
        """(URL, JSON body, is chat) of the request for ``prompt``."""
        text = _prompt_text(prompt)
        body = self._sampling(params)
        if isinstance(text, ChatPrompt):
            body["messages"] = text.request_messages()
            if text.answer_prefix:
                # vLLM continues the last assistant turn only when told; llama.cpp's server does it by itself.
                body.update(continue_final_message=True, add_generation_prompt=False)
            return f"{self.base_url}/chat/completions", body, True
        body["prompt"] = str(text)
        return f"{self.base_url}/completions", body, False

    def stream(self, prompt: Prompt, params: GenerationParams) -> ServerGeneration:
        started = time.perf_counter()
        self._check_open()
        ids = self.check_prompt(prompt, params)
        url, body, chat = self._request(prompt, params)
        body.update(stream=True, stream_options={"include_usage": True})
        state = _StreamState()
        # batched: the server admits and batches its requests itself, so the answer needs no generation slot here.
        return ServerGeneration(self._events(url, body, chat, state), state, prompt_tokens=len(ids), params=params,
                                engine=self.name, model_id=self.model_id, started=started, batched=True)

    def _events(self, url: str, body: dict, chat: bool, state: _StreamState) -> Iterator[str]:
        """The answer's text pieces from the server's event stream; closing this closes the HTTP response."""
        done = False
        received = 0
        try:
            with self._request_under_way(), self.client.stream("POST", url, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _status_error(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, ": ping" comments, "event:" names
                    data = line[len("data:"):].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    for piece in _chunk_pieces(data, chat, state, url):
                        received += 1
                        yield piece
        except httpx.HTTPError as exc:
            raise _transport_error(exc, url) from None
        if state.finish is None:
            # A stream that ends without a finish reason is a cut answer that would otherwise pass for a whole one.
            where = f"The OpenAI-compatible server at {_display_url(url)}"
            if done:
                # llama-cpp-python's server ends a stream this way when another request arrives, unless it runs
                # with --interrupt_requests False.
                raise InferenceServerError(
                    f"{where} ended the answer without saying why (no finish reason). If it is llama-cpp-python's "
                    f"server, start it with --interrupt_requests False so requests do not cut each other off.")
            if not received:
                # Once it has sent its 200 and its headers, a server that fails (llama-cpp-python's, for a prompt
                # longer than its context window) can only close the stream; its log says why.
                raise InferenceServerError(
                    f"{where} closed the stream without an answer: it failed on this request (a prompt longer than "
                    f"its context window does this on llama-cpp-python's server); its log says why.")
            raise InferenceServerError(f"{where} broke off in the middle of the answer; try again.")

    def sample_n(self, prompt: Prompt, params: GenerationParams, n: int,
                 cancel: threading.Event | None = None,
                 progress: Callable[[SampleProgress], None] | None = None) -> list[GenerationResult]:
        """``n`` samples with seeds ``seed, seed + 1, ...``, sent together (the server batches them).

        Greedy settings give one answer ``n`` times. When ``cancel`` is set, samples not yet sent are left out and
        those in flight end with finish reason "cancelled". A failed sample stops the others and raises.
        """
        n = check_sample_count(n)
        if n == 1 or params.temperature == 0:
            return super().sample_n(prompt, params, n, cancel, progress)
        ids = self.check_prompt(prompt, params)  # once for all samples
        tokenized = prompt if isinstance(prompt, TokenizedPrompt) else TokenizedPrompt(prompt, tuple(ids))
        failed = threading.Event()
        stop = _Either(cancel, failed)

        def one(seed: int) -> GenerationResult | None:
            if stop.is_set():
                return None
            try:
                return self.generate_cancellable(tokenized, replace(params, seed=seed), stop)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(max_workers=min(n, MAX_PARALLEL_SAMPLES), thread_name_prefix="openai-sample") as pool:
            futures = [pool.submit(one, seed) for seed in sample_seeds(params, n)]
            if progress is not None:  # the server streams each sample apart: report each one as it ends
                finished = []
                for future in as_completed(futures):
                    if future.exception() is None and future.result() is not None:
                        finished.append(future.result().completion_tokens)
                        progress(SampleProgress(len(finished), n, sum(finished)))
            results = [future.result() for future in futures]
        return [result for result in results if result is not None]

    def next_token_probabilities(self, prompt: str, k: int = 10) -> list[TokenProbability]:
        """The server's top-``k`` next tokens (``logprobs``), most likely first.

        Servers give tokens as text, not ids, so ``token_id`` is -1; two tokens with the same text (e.g. two
        halves of one character) read as one entry.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidParameterError(f"k must be a whole number of at least 1, not {k!r}.")
        self.check_prompt(prompt, GenerationParams(max_new_tokens=1))
        url, body, chat = self._request(prompt, GenerationParams(max_new_tokens=1, temperature=0.0))
        if chat:
            body.update(logprobs=True, top_logprobs=k)
        else:
            body["logprobs"] = k
        answer = self._post(url, body)
        try:
            candidates = _top_logprobs(answer, chat)
        except (KeyError, IndexError, TypeError, ValueError):
            candidates = None
        if not candidates:
            raise InferenceServerError(f"The OpenAI-compatible server at {_display_url(url)} sent no log-probabilities "
                                       f"for {self.served_name}; this server may not support them.")
        ranked = sorted(candidates.items(), key=lambda item: -item[1])[:k]
        return [TokenProbability(-1, token, math.exp(logprob)) for token, logprob in ranked]


# --------------------------------------------------------------------------- helpers


class _Either:
    """``is_set`` of either event (the caller's cancel, or a failed sample)."""

    def __init__(self, *events: threading.Event | None):
        self._events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


def server_root(base_url: str) -> str:
    """The server's root for its own endpoints (tokenize, props): the API root without its ``/v1``."""
    parts = urlsplit(base_url.rstrip("/"))
    path = parts.path[:-3] if parts.path.endswith("/v1") else parts.path
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")).rstrip("/")


def _get_json(client: httpx.Client, url: str, timeout: float = PROBE_TIMEOUT_S) -> Any:
    try:
        response = client.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        raise _transport_error(exc, url) from None
    return _json_answer(response, url, " is PLAYGROUND_OPENAI_BASE_URL its API root (usually ending in /v1)?")


def _json_answer(response: httpx.Response, shown_url: str, hint: str = "") -> Any:
    """The JSON body of a server's answer; an HTTP error or a body that is not JSON raises with the URL."""
    if response.status_code >= 400:
        raise _status_error(response)
    try:
        return response.json()
    except ValueError:
        raise InferenceServerError(f"The OpenAI-compatible server at {shown_url} answered with something that is "
                                   f"not JSON{':' + hint if hint else '.'}") from None


def _served_entry(client: httpx.Client, base_url: str, served_name: str) -> dict:
    """The server's /models entry for ``served_name``.

    Checked up front because llama-cpp-python's server answers a request for a model it does not have with its
    default model instead of an error.
    """
    url = f"{base_url}/models"
    answer = _get_json(client, url)
    entries = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(entries, list):
        raise InferenceServerError(f"The OpenAI-compatible server at {url} did not answer with a model list: is "
                                   f"PLAYGROUND_OPENAI_BASE_URL its API root (usually ending in /v1)?")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("id") == served_name:
            return entry
    names = [str(e.get("id")) for e in entries if isinstance(e, dict)]
    shown = ", ".join(repr(redact_server_paths(name)) for name in names[:8]) or "no models"
    raise InferenceServerError(
        f"The OpenAI-compatible server at {base_url} serves {shown}, not {served_name!r}: fix "
        f"PLAYGROUND_OPENAI_MODELS (catalog-id=served-name).")


def _positive_int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _reported_context(client: httpx.Client, base_url: str, entry: dict) -> int | None:
    """The context window the server reports: vLLM's ``max_model_len`` in /models, llama.cpp's server's /props
    (per slot), TGI's /info; None when it reports none."""
    found = _positive_int(entry.get("max_model_len"))
    if found:
        return found
    root = server_root(base_url)
    for path, read in (("/props", _props_context), ("/info", lambda info: info.get("max_total_tokens"))):
        try:
            answer = _get_json(client, root + path)
        except InferenceServerError:
            continue  # this server has no such endpoint
        if isinstance(answer, dict):
            found = _positive_int(read(answer))
            if found:
                return found
    return None


def _props_context(props: dict):
    settings = props.get("default_generation_settings")
    nested = settings.get("n_ctx") if isinstance(settings, dict) else None
    return nested or props.get("n_ctx")


def _chunk_pieces(data: str, chat: bool, state: _StreamState, url: str) -> Iterator[str]:
    """The text pieces of one streamed event; records its finish reason and usage in ``state``."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise InferenceServerError(f"The OpenAI-compatible server at {_display_url(url)} sent an event that is "
                                   f"not JSON.") from None
    if not isinstance(chunk, dict):
        return
    if chunk.get("error"):
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise InferenceServerError(f"The OpenAI-compatible server at {_display_url(url)} stopped with an error: "
                                   f"{redact_server_paths(str(message))[:ERROR_CHARS]}")
    if isinstance(chunk.get("usage"), dict):
        state.usage = chunk["usage"]
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
        if choice.get("finish_reason"):
            state.finish = str(choice["finish_reason"])
        if piece:
            yield piece


def _top_logprobs(answer: dict, chat: bool) -> dict[str, float]:
    """token text -> log-probability of the first generated position, from either endpoint's shape."""
    logprobs = answer["choices"][0]["logprobs"]
    if chat:  # {"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}]}
        first = logprobs["content"][0]
        return {str(item["token"]): float(item["logprob"]) for item in first["top_logprobs"]}
    # completions: {"tokens": [...], "top_logprobs": [{token: logprob, ...}]}
    return {str(token): float(value) for token, value in logprobs["top_logprobs"][0].items()}
