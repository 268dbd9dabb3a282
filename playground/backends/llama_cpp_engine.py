"""The llama.cpp engine: quantised GGUF models on the CPU through llama-cpp-python.

An answer is decoded in the model's shared decode loop (:mod:`playground.backends.llama_batch`):
everyone's requests on one model ride in one batch, each with its own sampler, seed
and limits, and a greedy or seeded answer is the same whoever else is decoding. A
request longer than one of the loop's sequences holds (``STREAM_CONTEXT`` tokens)
decodes alone in the Llama's own context, driven through ``Llama.generate`` token by
token, one at a time under the engine's lock; next-token probabilities use that
context too. The model's own chat template comes from the GGUF metadata.

A cached prompt is reused only in whole blocks of :data:`PROMPT_BLOCK` tokens
counted from the start of the prompt (:func:`reusable_prefix`), in the loop and in
the main context alike. A prompt is always evaluated in those same blocks, so a
cached block holds exactly what a fresh evaluation would compute, and the logits
the first token is sampled from come from the same batch shape either way.
Reusing any prefix instead (as ``Llama.generate`` does by itself: the last prompt
token evaluated alone the second time) changes the matrix kernels' batch shape,
and on some CPUs (AVX2 without AVX-512) the logits differ in their last bits,
enough to change a greedy answer.

A fine-tuned run answers on its base: :meth:`LlamaCppEngine.with_adapter` gives a
view of the loaded base that applies the run's llama.cpp LoRA adapter GGUF
(:mod:`playground.finetune.gguf_adapter`). The views share the base's weights,
lock, contexts and decode loop; each adapter file is loaded once per base, and
before a context decodes for a view its adapters are switched to the view's own
(``llama_set_adapters_lora``); KV cells computed under another adapter are never
reused. Many people's runs over one base cost one model in memory plus their
adapters.

``sample_n`` (self-consistency) runs several sequences at once in a second
llama.cpp context on the same weights: the prompt is evaluated once in
sequence 0, its KV cells are shared with sequences 1..n-1 (a unified KV
cache), and every decode step sends one token per live sequence in a single
batch, each sequence with its own seeded sampler.
"""

from __future__ import annotations

import codecs
import copy
import ctypes
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from playground.backends.base import (
    EngineBase,
    Generation,
    GenerationParams,
    GenerationResult,
    Prompt,
    Message,
    SampleProgress,
    TokenProbability,
    first_stop_index,
    check_sample_count,
    sample_seeds,
)
from playground.backends.llama_batch import (
    PROMPT_BLOCK,
    DecodeLoop,
    apply_adapter,
    make_sampler,
    reusable_prefix,
    shared_prefix,
)
from playground.backends.llama_loading import llama_class
from playground.errors import EngineUnavailableError, InvalidGGUFError
from playground.models.gguf_info import GGUFFacts, read_gguf_facts
from playground.models.sources import ResolvedWeights

MAX_CONTEXT = 8192  # the KV cache is allocated up front; longer contexts cost memory nobody here needs
MAX_ADAPTERS = 64  # adapter files kept loaded per base; the least recently used idle one goes first
STREAMS = 32  # sequences the shared decode loop holds when no setting says (the default of PLAYGROUND_PARALLEL)
STREAM_CONTEXT = 2048  # tokens one sequence of the decode loop holds; a longer request decodes alone


@dataclass
class _SamplingContext:
    """The second llama.cpp context that ``sample_n`` decodes parallel sequences in."""

    ctx: object  # llama_cpp._internals.LlamaContext
    batch: object  # llama_cpp._internals.LlamaBatch
    n_ctx: int
    n_seq: int
    prompt: list[int] = field(default_factory=list)  # the tokens whose KV cells sequence 0 holds
    adapter: object = None  # the LoRA adapter applied to this context (None: the base alone)

    def close(self) -> None:
        self.batch.close()
        self.ctx.close()


@dataclass
class _Loaded:
    """What a base engine and its adapter views share: the weights, the contexts and the loaded adapters."""

    llm: object  # llama_cpp.Llama; None once closed
    sampling: _SamplingContext | None = None
    main_adapter: object = None  # the adapter applied to the Llama's own context
    adapters: dict[Path, object] = field(default_factory=dict)  # adapter file -> handle, least recently used first
    adapters_lock: threading.Lock = field(default_factory=threading.Lock)  # the loop thread loads adapters too
    loop: DecodeLoop | None = None  # made on the first request that fits it
    loop_lock: threading.Lock = field(default_factory=threading.Lock)


class LlamaCppEngine(EngineBase):
    name = "llama.cpp"

    def __init__(self, model_id: str, llm, facts: GGUFFacts, threads: int, token_limit: int | None = None,
                 streams: int = STREAMS):
        super().__init__(model_id, token_limit)
        self._loaded = _Loaded(llm)
        self.facts = facts
        self.threads = threads
        self.streams = streams
        self.stream_context = min(STREAM_CONTEXT, int(llm.n_ctx()))
        self.adapter_path: Path | None = None  # set on the views with_adapter makes
        self.base_model_id = model_id
        self.last_sample_prompt_evaluated = 0  # prompt tokens the last sample_n call had to evaluate
        self._template = None
        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # renders in a jinja2 sandbox

            vocab = llm._model
            eos_id, bos_id = llm.token_eos(), llm.token_bos()
            self._eos_text = vocab.token_get_text(eos_id) if eos_id != -1 else ""
            self._bos_text = vocab.token_get_text(bos_id) if bos_id != -1 else ""
            self._template = Jinja2ChatFormatter(template=template, eos_token=self._eos_text,
                                                 bos_token=self._bos_text)
        else:
            self._bos_text = ""

    @property
    def llm(self):
        llm = self._loaded.llm
        if llm is None:
            raise EngineUnavailableError("This model was unloaded to free memory; send the request again.")
        return llm

    @property
    def closed(self) -> bool:
        """True once the weights were freed (by ``close``, e.g. when the model cache evicted the model)."""
        return self._loaded.llm is None

    @property
    def _sampling(self) -> _SamplingContext | None:
        return self._loaded.sampling

    @_sampling.setter
    def _sampling(self, value: _SamplingContext | None) -> None:
        self._loaded.sampling = value

    def with_adapter(self, model_id: str, adapter_path: Path) -> "LlamaCppEngine":
        """This base with the llama.cpp LoRA adapter at ``adapter_path`` applied, answering as ``model_id``.

        The view shares the base's weights, contexts and lock (one generation at a time on the base);
        the adapter file is loaded on the view's first use.
        """
        view = copy.copy(self)
        view.model_id = model_id
        view.adapter_path = Path(adapter_path)
        return view

    @property
    def adapter_bytes(self) -> int:
        try:
            return self.adapter_path.stat().st_size if self.adapter_path else 0
        except OSError:
            return 0

    def _adapter_handle(self):
        """The loaded adapter of this view (None for the base)."""
        import llama_cpp

        if self.adapter_path is None:
            return None
        loaded = self._loaded
        with loaded.adapters_lock:
            handle = loaded.adapters.pop(self.adapter_path, None)
            if handle is None:
                self._free_idle_adapters(MAX_ADAPTERS - 1)
                handle = llama_cpp.llama_adapter_lora_init(self.llm.model, str(self.adapter_path).encode("utf-8"))
                if not handle:
                    raise InvalidGGUFError(f"llama.cpp could not load the adapter {self.adapter_path.name} onto "
                                           f"{self.base_model_id}: it was made for another model or is damaged.")
            loaded.adapters[self.adapter_path] = handle  # now the most recently used
        return handle

    def _free_idle_adapters(self, keep: int) -> None:
        import llama_cpp

        loaded = self._loaded
        active = {id(loaded.main_adapter), id(loaded.sampling.adapter if loaded.sampling else None)}
        if loaded.loop is not None:
            active |= loaded.loop.adapters_in_use()
        for path in list(loaded.adapters):
            if len(loaded.adapters) <= keep:
                break
            if id(loaded.adapters[path]) not in active:
                llama_cpp.llama_adapter_lora_free(loaded.adapters.pop(path))

    def _use_main_context(self) -> None:
        """Put this view's adapter on the Llama's own context; a switch drops the cached prompt."""
        handle = self._adapter_handle()
        if self._loaded.main_adapter is not handle:
            apply_adapter(self.llm.ctx, handle)
            self._loaded.main_adapter = handle
            self.llm.n_tokens = 0

    @classmethod
    def load(cls, model_id: str, weights: ResolvedWeights, threads: int, token_limit: int | None = None,
             n_ctx: int | None = None, facts: GGUFFacts | None = None, streams: int = STREAMS) -> "LlamaCppEngine":
        # Reading the facts also refuses a damaged file with a clear message, before llama.cpp sees it.
        facts = facts or read_gguf_facts(weights.path)
        Llama = llama_class()

        context = n_ctx or min(facts.context_length or 2048, MAX_CONTEXT)
        try:
            llm = Llama(model_path=str(weights.path), n_ctx=context, n_threads=threads, n_threads_batch=threads,
                        n_batch=PROMPT_BLOCK, n_ubatch=PROMPT_BLOCK, verbose=False)
        except Exception as exc:
            raise InvalidGGUFError(
                f"llama.cpp could not load {weights.path.name}: {exc}. The file may be damaged or use an "
                f"architecture this llama-cpp-python does not know."
            ) from None
        return cls(model_id, llm, facts, threads, token_limit, streams=streams)

    @property
    def context_window(self) -> int:
        return int(self.llm.n_ctx())

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    def format_chat(self, messages: Sequence[Message]) -> str:
        if self._template is None:
            return "\n".join(m["content"] for m in messages)
        return self._template(messages=list(messages)).prompt

    def tokenize(self, text: str) -> list[int]:
        add_bos = not (self._bos_text and text.startswith(self._bos_text))
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    @property
    def weights_bytes(self) -> int:
        import llama_cpp

        return int(llama_cpp.llama_model_size(self.llm.model))

    def _kv_bytes_per_token(self) -> int:
        f = self.facts
        head_dim = f.hidden_size // f.attention_heads if f.attention_heads else 0
        return f.layers * 2 * (f.kv_heads or f.attention_heads) * head_dim * 2  # f16 K and V

    @property
    def kv_cache_bytes(self) -> int:
        """The main context's cache, the self-consistency context's, and the decode loop's (counted from the
        start: the loop is made on the first request, and the model cache budgets memory at load)."""
        sampling = self._sampling.n_ctx if self._sampling is not None else 0
        loop = self.streams * self.stream_context
        return (self.context_window + sampling + loop) * self._kv_bytes_per_token()

    def memory_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + sum(
            path.stat().st_size for path in list(self._loaded.adapters) if path.exists())

    # ------------------------------------------------------------------ one answer
    def stream(self, prompt: Prompt, params: GenerationParams) -> Generation:
        """The answer, decoded in the model's shared loop with everyone else's (:mod:`llama_batch`); a request
        longer than one of the loop's sequences holds decodes alone in the main context."""
        started = time.perf_counter()
        ids = self.check_prompt(prompt, params)
        loop = self._decode_loop() if self.streams >= 1 else None
        if loop is None or not loop.fits(len(ids), params.max_new_tokens):
            return Generation(self._locked(ids, params), prompt_tokens=len(ids), params=params, engine=self.name,
                              model_id=self.model_id, started=started)
        return Generation(self._loop_pieces(loop, ids, params), prompt_tokens=len(ids), params=params,
                          engine=self.name, model_id=self.model_id, started=started, batched=True)

    def _loop_pieces(self, loop: DecodeLoop, ids: list[int], params: GenerationParams) -> Iterator:
        # Joins the loop when first iterated: a generation nobody reads never takes a sequence.
        request = loop.submit(ids, params, adapter_key=self.adapter_path, adapter=self._adapter_handle())
        yield from loop.pieces(request)

    def _decode_loop(self) -> DecodeLoop:
        loaded = self._loaded
        with loaded.loop_lock:
            if loaded.loop is None:
                llm = self.llm
                loaded.loop = DecodeLoop(llm._model, streams=self.streams, stream_context=self.stream_context,
                                         threads=self.threads, penalty_last_n=llm.last_n_tokens_size,
                                         name=self.base_model_id)
            return loaded.loop

    def loop_summary(self) -> dict[str, int]:
        """Requests decoding and waiting in the shared loop (zeros before its first request); never blocks."""
        loop = self._loaded.loop
        if loop is None:
            return {"decoding": 0, "waiting": 0, "streams": self.streams}
        return loop.summary()

    @property
    def idle(self) -> bool:
        """No request is decoding or waiting in the shared loop (the main context has the lock for that)."""
        loop = self._loaded.loop
        return loop is None or loop.idle

    def _token_pieces(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[str]:
        import llama_cpp

        llm = self.llm
        llm.set_seed(params.seed if params.seed is not None else random.randrange(2**31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab
        self._use_main_context()
        todo = self._keep_cached_blocks(prompt_ids)
        tokens = llm.generate(
            todo, top_k=params.top_k, top_p=params.top_p, min_p=0.0, temp=params.temperature,
            repeat_penalty=params.repetition_penalty, reset=False,
        )
        produced = 0
        try:
            for token in tokens:
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                produced += 1
                last = produced >= params.max_new_tokens
                # The last token flushes a dangling half character (as "replacement"), like sample_n does.
                yield decoder.decode(llm.detokenize([token]), final=last)
                if last:
                    break
        finally:
            tokens.close()

    def _keep_cached_blocks(self, prompt_ids: list[int]) -> list[int]:
        """Trim the main context's cache to the reusable blocks of ``prompt_ids``; the tokens left to evaluate."""
        llm = self.llm
        keep = reusable_prefix(shared_prefix(llm.input_ids[:llm.n_tokens].tolist(), prompt_ids), len(prompt_ids))
        llm.n_tokens = keep  # Llama.eval removes the cache's cells from n_tokens on before evaluating
        return list(prompt_ids[keep:])

    def next_token_probabilities(self, prompt: str, k: int = 10) -> list[TokenProbability]:
        import llama_cpp
        import numpy as np

        ids = self.check_prompt(prompt, GenerationParams(max_new_tokens=1))
        llm = self.llm
        with self.lock:
            self._use_main_context()
            llm.reset()
            llm.eval(ids)
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                           shape=(llm.n_vocab(),)).astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs)[:k]
        return [TokenProbability(int(i), llm.detokenize([int(i)]).decode("utf-8", errors="replace"),
                                 float(probs[i])) for i in top]

    # ------------------------------------------------------------------ several samples at once
    def sample_n(self, prompt: Prompt, params: GenerationParams, n: int,
                 cancel: threading.Event | None = None,
                 progress: Callable[[SampleProgress], None] | None = None) -> list[GenerationResult]:
        """``n`` sampled completions, decoded together: the prompt is evaluated once for all of them.

        Sample ``i`` uses seed ``seed + i``. Greedy settings give one answer ``n`` times. When
        ``cancel`` is set, every unfinished sample ends with finish reason "cancelled". ``progress`` hears after
        every decoding step how many samples are done and the tokens so far.
        """
        n = check_sample_count(n)
        if n == 1 or params.temperature == 0:
            return super().sample_n(prompt, params, n, cancel, progress)
        started = time.perf_counter()
        ids = self.check_prompt(prompt, params)
        cells = len(ids) + n * params.max_new_tokens + 1
        if cells > max(self.context_window, MAX_CONTEXT):
            # More KV cells than one context would hold: sample one after the other instead
            # (Llama.generate still reuses the prompt's cache from one sample to the next).
            return super().sample_n(prompt, params, n, cancel, progress)
        seeds = sample_seeds(params, n)
        with self.lock:
            return self._sample_parallel(ids, params, seeds, cancel, started, cells, progress)

    def _sampling_context(self, cells: int, n: int) -> _SamplingContext:
        import llama_cpp
        from llama_cpp import _internals

        current = self._sampling
        if current is not None and current.n_ctx >= cells and current.n_seq >= n:
            return current
        if current is not None:
            self._sampling = None
            current.close()
        n_ctx = max(1024, -(-cells // 256) * 256)
        n_seq = max(n, 8)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = max(PROMPT_BLOCK, n_seq)
        params.n_ubatch = max(PROMPT_BLOCK, n_seq)
        params.n_seq_max = n_seq
        params.kv_unified = True  # sequences share the prompt's cells, and each may use the whole context
        params.n_threads = self.threads
        params.n_threads_batch = self.threads
        params.no_perf = True
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as the main context (Llama's default)
        ctx = _internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
        batch = _internals.LlamaBatch(n_tokens=max(PROMPT_BLOCK, n_seq), embd=0, n_seq_max=n_seq, verbose=False)
        self._sampling = _SamplingContext(ctx, batch, n_ctx, n_seq)
        return self._sampling

    def _sampler(self, params: GenerationParams, seed: int):
        """A sampler chain built like ``Llama.generate``'s, with its own seed."""
        return make_sampler(params, seed, self.llm.n_vocab(), self.llm.last_n_tokens_size)

    def _sample_parallel(self, ids: list[int], params: GenerationParams, seeds: list[int],
                         cancel: threading.Event | None, started: float, cells: int,
                         progress: Callable[[SampleProgress], None] | None = None) -> list[GenerationResult]:
        import llama_cpp

        n = len(seeds)
        llm = self.llm
        sampling = self._sampling_context(cells, n)
        ctx, batch = sampling.ctx, sampling.batch.batch
        memory = ctx.memory
        adapter = self._adapter_handle()
        if sampling.adapter is not adapter:
            apply_adapter(ctx.ctx, adapter)
            sampling.adapter = adapter
            sampling.prompt = []  # cells computed under another adapter

        # Sequence 0 keeps the whole blocks it shares with the last prompt; the rest is evaluated in blocks.
        keep = reusable_prefix(shared_prefix(sampling.prompt, ids), len(ids))
        for seq in range(sampling.n_seq):
            llama_cpp.llama_memory_seq_rm(memory, seq, keep if seq == 0 else 0, -1)
        sampling.prompt = []
        todo = ids[keep:]
        last_row = 0
        for start in range(0, len(todo), PROMPT_BLOCK):
            chunk = todo[start:start + PROMPT_BLOCK]
            batch.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = keep + start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = False
            batch.logits[len(chunk) - 1] = True
            last_row = len(chunk) - 1
            ctx.decode(sampling.batch)
        sampling.prompt = list(ids)
        self.last_sample_prompt_evaluated = len(todo)
        for seq in range(1, n):
            llama_cpp.llama_memory_seq_cp(memory, 0, seq, -1, -1)

        samplers = [self._sampler(params, seed) for seed in seeds]
        vocab = llm._model.vocab
        decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(n)]
        texts = [""] * n
        counts = [0] * n
        finish = ["length"] * n
        ended = [0.0] * n
        row = {seq: last_row for seq in range(n)}  # every sequence samples from the prompt's last logits first
        first_token_at: float | None = None
        cut_short: set[int] = set()
        live = list(range(n))
        position = len(ids)
        try:
            while live:
                if cancel is not None and cancel.is_set():
                    now = time.perf_counter()
                    for seq in live:
                        finish[seq], ended[seq] = "cancelled", now
                    break
                going: list[tuple[int, int]] = []
                for seq in live:
                    token = samplers[seq].sample(ctx, row[seq])
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        finish[seq], ended[seq] = "stop", time.perf_counter()
                        continue
                    counts[seq] += 1
                    texts[seq] += decoders[seq].decode(llm.detokenize([token]))
                    cut = first_stop_index(texts[seq], params.stop)
                    if cut is not None:
                        texts[seq] = texts[seq][:cut]
                        cut_short.add(seq)
                        finish[seq], ended[seq] = "stop", time.perf_counter()
                    elif counts[seq] >= params.max_new_tokens:
                        finish[seq], ended[seq] = "length", time.perf_counter()
                    else:
                        going.append((seq, token))
                if progress is not None:
                    progress(SampleProgress(n - len(going), n, sum(counts), sum(counts[seq] for seq, _ in going)))
                if not going:
                    break
                batch.n_tokens = len(going)
                for i, (seq, token) in enumerate(going):
                    batch.token[i] = token
                    batch.pos[i] = position
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = seq
                    batch.logits[i] = True
                    row[seq] = i
                ctx.decode(sampling.batch)
                position += 1
                live = [seq for seq, _ in going]
        finally:
            for chain in samplers:
                chain.close()
            # Keep only the prompt, so the next call can reuse it.
            for seq in range(sampling.n_seq):
                llama_cpp.llama_memory_seq_rm(memory, seq, len(ids) if seq == 0 else 0, -1)
        end = time.perf_counter()
        first = (first_token_at or end) - started
        results = []
        for seq in range(n):
            if seq not in cut_short:
                texts[seq] += decoders[seq].decode(b"", final=True)  # a dangling half character, if any
            results.append(GenerationResult(
                text=texts[seq], prompt_tokens=len(ids), completion_tokens=counts[seq],
                time_to_first_token_s=first, total_s=(ended[seq] or end) - started, finish_reason=finish[seq],
                engine=self.name, model_id=self.model_id,
            ))
        return results

    def close(self) -> None:
        """Free the base's contexts, adapters and weights (a view closes the base it shares)."""
        import llama_cpp

        loaded = self._loaded
        with loaded.loop_lock:
            loop, loaded.loop = loaded.loop, None
        if loop is not None:  # lets the answers in progress end, then frees its context
            loop.close()
        sampling, loaded.sampling = loaded.sampling, None
        if sampling is not None:
            sampling.close()
        llm, loaded.llm = loaded.llm, None
        adapters, loaded.adapters = loaded.adapters, {}
        loaded.main_adapter = None
        if llm is not None:
            for handle in adapters.values():
                llama_cpp.llama_adapter_lora_free(handle)
            llm.close()
