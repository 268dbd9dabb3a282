"""One decode loop per loaded llama.cpp model: everyone's requests decoded together.

A room of people chatting with one model on a CPU gets the throughput of one
person if each answer is decoded on its own: one token costs nearly the same
whether one sequence or sixteen ride in the batch, because reading the weights
dominates. :class:`DecodeLoop` owns one llama.cpp context with ``streams``
sequences and one thread. A request joins between two steps: its prompt is read
(in blocks of ``PROMPT_BLOCK`` tokens, a few blocks per step so the answers
already streaming keep coming), then every step sends one token per live
sequence in a single ``llama_decode``; each request has its own sampler, seed
and token limit, and a request that ends (end of text, its token limit, a stop
sequence or a cancel seen by its :class:`~playground.backends.base.Generation`)
leaves at once and frees its sequence for the next in line. Requests beyond
``streams`` wait in arrival order and hear how many are ahead of them.

Every sequence has its own KV stream (``kv_unified`` off): its cells sit at the
same indices whatever the others do, so its attention sums in the same order,
and a request decoded in a full batch gives the same logits, bit for bit, as the
same request decoded alone (with a unified cache, the cells of many sequences
interleave and the sums' order changes with the company; that changed greedy
answers in a measurement on an AMD EPYC). Greedy and seeded answers therefore do
not depend on who else is in the room.

A stream keeps the tokens it holds after its request ends; the next request on
the same adapter that shares whole blocks of them (a chat's next turn) takes
that stream and reads only the rest (``reusable_prefix``), and before a prompt
block is evaluated it is copied from any other stream that already holds it (in
a room everyone's prompt starts with the same system turn or demonstrations). LoRA adapters apply
to a whole context, so a step decodes the sequences of one adapter at a time,
switching between adapters from step to step: many people's fine-tuned runs over
one base share one loop.
"""

from __future__ import annotations

import codecs
import ctypes
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from playground.backends.base import GenerationParams, Waiting
from playground.errors import EngineUnavailableError, InvalidGGUFError

PROMPT_BLOCK = 16  # the unit of prompt evaluation and of KV reuse, in the loop and the main context alike
# Prompt blocks read between two decode steps. More blocks: a burst of new people sees its first tokens sooner,
# while the answers already streaming pause longer (12 blocks of 16 tokens: about a second on 2 cores).
PREFILL_BLOCKS_PER_STEP = 12
WAIT_POLL_S = 0.25  # how often a waiting request tells its queue position (and sees a cancel)
_END = object()  # the end of a request's pieces


def reusable_prefix(shared: int, prompt_tokens: int, block: int = PROMPT_BLOCK) -> int:
    """How many cached prompt tokens to keep: whole blocks of the shared prefix, never the last token.

    ``shared`` is how many leading tokens the cache and the new prompt have in common. The rest is
    evaluated from a block boundary, in the blocks a fresh evaluation would use, and at least the last
    prompt token is evaluated, because its logits pick the first new token.
    """
    if prompt_tokens <= 0:
        return 0
    return max(0, min(shared, prompt_tokens - 1)) // block * block


def shared_prefix(cached, tokens) -> int:
    """The number of leading tokens two token lists have in common."""
    count = 0
    for a, b in zip(cached, tokens):
        if a != b:
            break
        count += 1
    return count


def apply_adapter(ctx, adapter) -> None:
    """Make ``adapter`` (or none) the only LoRA adapter of a llama.cpp context."""
    import llama_cpp

    if adapter is None:
        failed = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
    else:
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
        failed = llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
    if failed:
        raise InvalidGGUFError("llama.cpp could not apply the LoRA adapter to this model.")


def make_sampler(params: GenerationParams, seed: int, n_vocab: int, penalty_last_n: int):
    """A sampler chain built like ``Llama.generate``'s (penalties first; greedy at temperature 0)."""
    from llama_cpp import _internals

    chain = _internals.LlamaSampler()
    chain.add_penalties(n_vocab=n_vocab, penalty_last_n=penalty_last_n, penalty_repeat=params.repetition_penalty,
                        penalty_freq=0.0, penalty_present=0.0)
    if params.temperature == 0:
        chain.add_greedy()
        return chain
    chain.add_top_k(params.top_k)
    chain.add_typical(1.0, 1)
    chain.add_top_p(params.top_p, 1)
    chain.add_min_p(0.0, 1)
    chain.add_temp(params.temperature)
    chain.add_dist(seed)
    return chain


@dataclass(eq=False)
class LoopRequest:
    """One person's answer in the loop: what to decode, and the queue its text pieces go to."""

    ids: list[int]
    params: GenerationParams
    seed: int
    adapter_key: Path | None  # the adapter file (None: the base); cached cells are reused only on the same one
    adapter: object  # the loaded adapter handle, held while the request is in the loop
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    closed: threading.Event = field(default_factory=threading.Event)  # nobody reads the answer any more

    def close(self) -> None:
        self.closed.set()


@dataclass(eq=False)
class _Stream:
    """One sequence of the loop's context: the tokens its KV cells hold, and the request decoding in it."""

    index: int
    cached: list[int] = field(default_factory=list)
    adapter_key: Path | None = None
    last_used: float = 0.0
    request: LoopRequest | None = None
    to_read: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    sampler: object = None
    decoder: object = None
    pending: int | None = None  # the last sampled token, decoded at the next step
    produced: int = 0
    admitted: int = 0  # admission order: prompts are read oldest first


class DecodeLoop:
    """Decode every request on one llama.cpp model together, ``streams`` sequences at a time."""

    def __init__(self, model, *, streams: int, stream_context: int, threads: int, penalty_last_n: int = 64,
                 name: str = "model") -> None:
        import llama_cpp
        from llama_cpp import _internals

        if streams < 1:
            raise ValueError("a decode loop needs at least one stream")
        self._model = model  # llama_cpp._internals.LlamaModel
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = streams * stream_context
        params.n_batch = max(PROMPT_BLOCK, streams)
        params.n_ubatch = max(PROMPT_BLOCK, streams)
        params.n_seq_max = streams
        params.kv_unified = False  # a KV stream per sequence: see the module docstring
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as the main context (Llama's default)
        self._ctx = _internals.LlamaContext(model=model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=max(PROMPT_BLOCK, streams), embd=0, n_seq_max=streams,
                                            verbose=False)
        self.stream_context = int(llama_cpp.llama_n_ctx_seq(self._ctx.ctx))
        self.streams = streams
        self._memory = self._ctx.memory
        self._n_vocab = model.n_vocab()
        self._penalty_last_n = penalty_last_n
        self._vocab = model.vocab
        self._slots = [_Stream(i) for i in range(streams)]
        self._line: deque[LoopRequest] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._admissions = 0
        self._adapter_applied: object = None
        self._thread = threading.Thread(target=self._run, name=f"decode-loop-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ what other threads call
    def fits(self, prompt_tokens: int, max_new_tokens: int) -> bool:
        """Whether a request this long fits one stream (longer ones decode alone in the model's main context)."""
        return prompt_tokens + max_new_tokens <= self.stream_context

    def submit(self, ids: list[int], params: GenerationParams, *, adapter_key: Path | None = None,
               adapter=None) -> LoopRequest:
        seed = params.seed if params.seed is not None else random.randrange(2**31)
        request = LoopRequest(list(ids), params, seed, adapter_key, adapter)
        with self._cond:
            if self._closing:
                raise EngineUnavailableError("This model was unloaded to free memory; send the request again.")
            self._line.append(request)
            self._cond.notify_all()
        return request

    def pieces(self, request: LoopRequest) -> Iterator[str | Waiting]:
        """The request's text pieces as they are decoded; ``Waiting`` a few times a second until the first."""
        answering = False
        try:
            while True:
                try:
                    item = request.out.get(timeout=WAIT_POLL_S)
                except queue.Empty:
                    if not answering:
                        yield Waiting(self.ahead(request))
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                answering = True
                yield item
        finally:
            self.withdraw(request)

    def withdraw(self, request: LoopRequest) -> None:
        """Nobody reads this request any more: out of the line at once, or out of its stream at the next step."""
        request.close()
        with self._cond:
            try:
                self._line.remove(request)
            except ValueError:
                pass

    def ahead(self, request: LoopRequest) -> int:
        """How many must go before this request: its place in line, counting the answer whose end frees a
        sequence for the first in line (0 once it has a sequence and its prompt is being read)."""
        with self._cond:
            try:
                return self._line.index(request) + 1
            except ValueError:
                return 0

    def summary(self) -> dict[str, int]:
        """How many requests are decoding and how many wait, for the health endpoint (never blocks on decoding)."""
        with self._cond:
            return {"decoding": sum(1 for s in self._slots if s.request is not None), "waiting": len(self._line),
                    "streams": self.streams}

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._line and all(s.request is None for s in self._slots)

    def adapters_in_use(self) -> set[int]:
        """ids of the adapter handles requests in the loop hold (they must not be freed)."""
        with self._cond:
            held = [r.adapter for r in self._line] + [s.request.adapter for s in self._slots if s.request]
        return {id(a) for a in held if a is not None}

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests (those in line hear the model was unloaded), let the answers in progress end,
        then free the context."""
        with self._cond:
            self._closing = True
            line, self._line = list(self._line), deque()
            self._cond.notify_all()
        for request in line:
            request.out.put(EngineUnavailableError("This model was unloaded to free memory; send the request again."))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the loop thread
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closing and not self._line and all(s.request is None for s in self._slots):
                        self._cond.wait()
                    if self._closing and all(s.request is None for s in self._slots):
                        break
                    self._admit()
                try:
                    self._drop_closed()
                    self._read_prompts()
                    self._decode_step()
                except Exception as exc:  # a failed llama_decode: everyone in the loop hears it, the loop goes on
                    self._fail_all(exc)
        finally:
            self._batch.close()
            self._ctx.close()

    def _admit(self) -> None:
        """Give free streams to the requests first in line (called with the condition held)."""
        while self._line and not self._closing:
            free = [s for s in self._slots if s.request is None]
            if not free:
                return
            request = self._line.popleft()
            if request.closed.is_set():
                request.out.put(_END)
                continue
            stream = self._stream_for(request, free)
            keep = reusable_prefix(shared_prefix(stream.cached, request.ids), len(request.ids)) \
                if stream.adapter_key == request.adapter_key else 0
            import llama_cpp

            llama_cpp.llama_memory_seq_rm(self._memory, stream.index, keep, -1)
            stream.cached = list(request.ids[:keep])
            stream.adapter_key = request.adapter_key
            stream.request = request
            stream.to_read = list(request.ids[keep:])
            stream.sampler = make_sampler(request.params, request.seed, self._n_vocab, self._penalty_last_n)
            stream.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            stream.pending = None
            stream.produced = 0
            self._admissions += 1
            stream.admitted = self._admissions

    def _stream_for(self, request: LoopRequest, free: list[_Stream]) -> _Stream:
        """The free stream whose cache shares the most whole blocks with the prompt, else the least recently used."""
        best, best_keep = None, 0
        for stream in free:
            if stream.adapter_key != request.adapter_key:
                continue
            keep = reusable_prefix(shared_prefix(stream.cached, request.ids), len(request.ids))
            if keep > best_keep:
                best, best_keep = stream, keep
        return best or min(free, key=lambda s: s.last_used)

    def _drop_closed(self) -> None:
        for stream in self._slots:
            if stream.request is not None and stream.request.closed.is_set():
                self._finish(stream)

    def _use_adapter(self, adapter) -> None:
        if adapter is not self._adapter_applied:
            apply_adapter(self._ctx.ctx, adapter)
            self._adapter_applied = adapter

    def _read_prompts(self) -> None:
        """Evaluate up to PREFILL_BLOCKS_PER_STEP blocks of the prompts waiting to be read, oldest first."""
        budget = PREFILL_BLOCKS_PER_STEP
        for stream in sorted(self._slots, key=lambda s: s.admitted):
            while budget and stream.request is not None and stream.to_read:
                self._borrow_blocks(stream)
                budget -= 1
                chunk, stream.to_read = stream.to_read[:PROMPT_BLOCK], stream.to_read[PROMPT_BLOCK:]
                self._use_adapter(stream.request.adapter)
                batch = self._batch.batch
                batch.n_tokens = len(chunk)
                start = len(stream.cached)
                for i, token in enumerate(chunk):
                    batch.token[i] = token
                    batch.pos[i] = start + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = stream.index
                    batch.logits[i] = False
                last = not stream.to_read
                batch.logits[len(chunk) - 1] = last
                self._ctx.decode(self._batch)
                stream.cached.extend(chunk)
                if last:  # the prompt's last logits give the first token, before the next decode overwrites them
                    self._take(stream, len(chunk) - 1)

    def _borrow_blocks(self, stream: _Stream) -> None:
        """Copy the prompt blocks another sequence already holds instead of computing them again.

        In a room everyone's prompt starts alike (the chat template's system turn, the same few-shot
        demonstrations); a block another stream computed for the same tokens at the same positions, on the
        same adapter, is bit for bit what this stream would compute. llama.cpp copies between KV streams only
        whole, so the copy is trimmed to the shared blocks afterwards (a few megabytes: far cheaper than
        evaluating a block).
        """
        import llama_cpp

        ids = stream.request.ids
        have = len(stream.cached)
        best, best_keep = None, have
        for other in self._slots:
            if other is stream or other.adapter_key != stream.adapter_key:
                continue
            keep = reusable_prefix(shared_prefix(other.cached, ids), len(ids))
            if keep > best_keep:
                best, best_keep = other, keep
        if best is None:
            return
        llama_cpp.llama_memory_seq_rm(self._memory, stream.index, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, best.index, stream.index, -1, -1)
        llama_cpp.llama_memory_seq_rm(self._memory, stream.index, best_keep, -1)
        stream.cached = list(ids[:best_keep])
        stream.to_read = list(ids[best_keep:])

    def _decode_step(self) -> None:
        """One token for every sequence with a sampled token, one adapter's sequences per llama_decode."""
        ready = [s for s in self._slots if s.request is not None and s.pending is not None]
        groups: dict[int, list[_Stream]] = {}
        for stream in ready:
            groups.setdefault(id(stream.request.adapter), []).append(stream)
        for group in groups.values():
            self._use_adapter(group[0].request.adapter)
            batch = self._batch.batch
            batch.n_tokens = len(group)
            for i, stream in enumerate(group):
                batch.token[i] = stream.pending
                batch.pos[i] = len(stream.cached)
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = stream.index
                batch.logits[i] = True
            self._ctx.decode(self._batch)
            for i, stream in enumerate(group):
                stream.cached.append(stream.pending)
                stream.pending = None
                self._take(stream, i)

    def _take(self, stream: _Stream, row: int) -> None:
        """Sample the stream's next token from the logits of ``row`` and send its text, or end the request."""
        import llama_cpp

        request = stream.request
        token = stream.sampler.sample(self._ctx, row)
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(stream)
            return
        stream.produced += 1
        last = stream.produced >= request.params.max_new_tokens
        # The last token flushes a dangling half character (as "replacement"), like the main context does.
        text = stream.decoder.decode(self._model.detokenize([token]), final=last)
        request.out.put(text)
        if last or request.closed.is_set():
            self._finish(stream)
        else:
            stream.pending = token

    def _finish(self, stream: _Stream, error: Exception | None = None) -> None:
        """End the stream's request (with ``error``, if given); its cells stay cached for the next request that
        shares them."""
        request = stream.request
        stream.request = None
        stream.pending = None
        stream.to_read = []
        stream.last_used = time.monotonic()
        if stream.sampler is not None:
            stream.sampler.close()
            stream.sampler = None
        if request is not None:
            request.out.put(error if error is not None else _END)
        with self._cond:
            self._cond.notify_all()

    def _fail_all(self, exc: Exception) -> None:
        import llama_cpp

        error = EngineUnavailableError(f"llama.cpp failed while decoding: {exc}. Send the request again.")
        for stream in self._slots:
            if stream.request is not None:
                self._finish(stream, error)
        llama_cpp.llama_memory_clear(self._memory, True)
        for stream in self._slots:
            stream.cached = []
