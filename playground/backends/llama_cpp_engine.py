"""The llama.cpp engine: quantised GGUF models on the CPU through llama-cpp-python.

It drives ``Llama.generate`` token by token (the same loop llama-cpp-python's
own completion API uses) so the app adds almost nothing on top of the C++
inference, and applies the model's own chat template from the GGUF metadata.
"""

from __future__ import annotations

import codecs
import random
from typing import Iterator, Sequence

from playground.backends.base import EngineBase, GenerationParams, Message, TokenProbability
from playground.errors import InvalidGGUFError
from playground.models.gguf_info import GGUFFacts, read_gguf_facts
from playground.models.sources import ResolvedWeights

MAX_CONTEXT = 8192  # the KV cache is allocated up front; longer contexts cost memory nobody here needs


class LlamaCppEngine(EngineBase):
    name = "llama.cpp"

    def __init__(self, model_id: str, llm, facts: GGUFFacts, threads: int, token_limit: int | None = None):
        super().__init__(model_id, token_limit)
        self.llm = llm
        self.facts = facts
        self.threads = threads
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

    @classmethod
    def load(cls, model_id: str, weights: ResolvedWeights, threads: int, token_limit: int | None = None,
             n_ctx: int | None = None, facts: GGUFFacts | None = None) -> "LlamaCppEngine":
        # Reading the facts also refuses a damaged file with a clear message, before llama.cpp sees it.
        facts = facts or read_gguf_facts(weights.path)
        from llama_cpp import Llama

        context = n_ctx or min(facts.context_length or 2048, MAX_CONTEXT)
        try:
            llm = Llama(model_path=str(weights.path), n_ctx=context, n_threads=threads, n_threads_batch=threads,
                        verbose=False)
        except Exception as exc:
            raise InvalidGGUFError(
                f"llama.cpp could not load {weights.path.name}: {exc}. The file may be damaged or use an "
                f"architecture this llama-cpp-python does not know."
            ) from None
        return cls(model_id, llm, facts, threads, token_limit)

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

    @property
    def kv_cache_bytes(self) -> int:
        f = self.facts
        head_dim = f.hidden_size // f.attention_heads if f.attention_heads else 0
        return f.layers * self.context_window * 2 * (f.kv_heads or f.attention_heads) * head_dim * 2  # f16 K and V

    def memory_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes

    def _token_pieces(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[str]:
        import llama_cpp

        llm = self.llm
        llm.set_seed(params.seed if params.seed is not None else random.randrange(2**31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab
        tokens = llm.generate(
            prompt_ids, top_k=params.top_k, top_p=params.top_p, min_p=0.0, temp=params.temperature,
            repeat_penalty=params.repetition_penalty, reset=True,
        )
        produced = 0
        try:
            for token in tokens:
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                produced += 1
                yield decoder.decode(llm.detokenize([token]))
                if produced >= params.max_new_tokens:
                    break
        finally:
            tokens.close()

    def next_token_probabilities(self, prompt: str, k: int = 10) -> list[TokenProbability]:
        import llama_cpp
        import numpy as np

        ids = self.check_prompt(prompt, GenerationParams(max_new_tokens=1))
        llm = self.llm
        with self.lock:
            llm.reset()
            llm.eval(ids)
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                           shape=(llm.n_vocab(),)).astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs)[:k]
        return [TokenProbability(int(i), llm.detokenize([int(i)]).decode("utf-8", errors="replace"),
                                 float(probs[i])) for i in top]

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()
