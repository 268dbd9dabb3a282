"""The transformers engine: full-precision PyTorch models, on CUDA (bf16) or the CPU (fp32).

It loads a model folder of safetensors, or a GGUF file dequantised by
transformers through :mod:`playground.models.conversion` (the first load writes
a safetensors copy into the data dir; later loads read that copy).
``sample_n`` draws several completions in one ``generate`` call
(``num_return_sequences``), so the prompt goes through the model once.

Encoder-decoder models (T5, FLAN-T5, a fine-tuned run of one) load as
:class:`Seq2SeqTransformersEngine` (``AutoModelForSeq2SeqLM``): text to text,
with no chat template. The prompt is the encoder's input; the decoder writes
the answer from its start token, so the answer's tokens do not share the
prompt's context window (the encoder input must fit the window on its own),
the streamer and the samples read the decoder's tokens, and the next-token
probabilities are those of the decoder's first step. A system message is
folded into the input (its text, a blank line, then the user's text); a
conversation with earlier answers (a chat-only feature) is refused with a
clear error. :func:`engine_for` picks the class from the model's config.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from playground.backends.base import (
    EngineBase,
    GenerationParams,
    GenerationResult,
    Prompt,
    Message,
    SampleProgress,
    TokenizedPrompt,
    TokenProbability,
    first_stop_index,
    check_sample_count,
)
from playground.errors import EncoderInputOverflowError, EngineUnavailableError, InvalidParameterError, \
    InvalidPromptError, PlaygroundError
from playground.models.conversion import load_gguf_as_transformers
from playground.models.sources import ResolvedWeights


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda" or "cpu"
    dtype_name: str  # "bfloat16", "float16" or "float32"

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)


def device_for(cuda: bool, bf16: bool) -> DeviceChoice:
    if cuda:
        return DeviceChoice("cuda", "bfloat16" if bf16 else "float16")
    return DeviceChoice("cpu", "float32")


class _TokenQueue:
    """A transformers streamer that hands every generated token id to the consumer thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first pushes the prompt ids
            self._prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self.queue.put(token_id)

    def end(self) -> None:
        self.queue.put(None)


class TransformersEngine(EngineBase):
    name = "transformers"
    is_encoder_decoder = False  # the prompt and the answer share one context window (a decoder-only model)

    def __init__(self, model_id: str, model, tokenizer, device: DeviceChoice, token_limit: int | None = None,
                 context_window: int | None = None):
        super().__init__(model_id, token_limit)
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        config = model.config
        self._context = context_window or int(
            getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 2048)

    @classmethod
    def load(cls, model_id: str, weights: ResolvedWeights, data_dir: Path, device: DeviceChoice,
             token_limit: int | None = None, progress=None) -> "TransformersEngine":
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        if weights.format == "gguf":
            model, tokenizer, _ = load_gguf_as_transformers(weights, data_dir, progress)
        else:
            try:
                seq2seq = bool(getattr(AutoConfig.from_pretrained(weights.path), "is_encoder_decoder", False))
                auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
                model = auto.from_pretrained(weights.path, dtype="float32", use_safetensors=True)
                tokenizer = AutoTokenizer.from_pretrained(weights.path)
            except Exception as exc:
                raise PlaygroundError(
                    f"transformers could not load {model_id} from {weights.detail}: "
                    f"{type(exc).__name__}: {str(exc)[:200]}"
                ) from None
        model = model.to(device=device.device, dtype=device.dtype).eval()
        return engine_for(model_id, model, tokenizer, device, token_limit)

    @property
    def context_window(self) -> int:
        return self._context

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def format_chat(self, messages: Sequence[Message]) -> str:
        if not self.has_chat_template:
            return "\n".join(m["content"] for m in messages)
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def tokenize(self, text: str) -> list[int]:
        # A rendered chat template already holds its special tokens; plain text gets the model's usual ones.
        add_special = not (self.has_chat_template and self._looks_templated(text))
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def _looks_templated(self, text: str) -> bool:
        bos = getattr(self.tokenizer, "bos_token", None)
        specials = [t for t in getattr(self.tokenizer, "all_special_tokens", []) if t]
        return bool(bos and text.startswith(bos)) or any(t in text for t in specials)

    def memory_bytes(self) -> int:
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        buffers = sum(b.numel() * b.element_size() for b in self.model.buffers())
        return params + buffers

    def _token_pieces(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        stop_flag = threading.Event()

        class _StopWhenAsked(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), stop_flag.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        streamer = _TokenQueue()  # skips what generate() pushes first: the prompt (a decoder's start token)
        input_ids = torch.tensor([prompt_ids], device=self.device.device)
        sampling = params.temperature > 0
        kwargs = dict(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=params.max_new_tokens,
            do_sample=sampling, repetition_penalty=params.repetition_penalty, streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_StopWhenAsked()]),
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id,
        )
        if sampling:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced in the consumer thread
                errors.append(exc)
            finally:
                streamer.end()

        worker = threading.Thread(target=run, name=f"generate-{self.model_id}", daemon=True)
        worker.start()
        generated: list[int] = []
        emitted = ""
        eos = set(_as_list(getattr(self.model.generation_config, "eos_token_id", None)))
        try:
            while True:
                token_id = streamer.queue.get()
                if token_id is None:
                    break
                if token_id in eos:
                    continue
                generated.append(token_id)
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                    yield ""
                    continue
                yield text[len(emitted):]
                emitted = text
        finally:
            stop_flag.set()
            worker.join()
        if errors:
            raise PlaygroundError(f"Generation failed: {type(errors[0]).__name__}: {errors[0]}")

    def sample_n(self, prompt: Prompt, params: GenerationParams, n: int,
                 cancel: threading.Event | None = None,
                 progress: Callable[[SampleProgress], None] | None = None) -> list[GenerationResult]:
        """``n`` sampled completions from one batched ``generate`` call (``num_return_sequences=n``).

        The seed, when given, seeds torch once for the whole batch. Stop sequences cut each text
        afterwards; ``cancel`` ends every sample at the next step (finish reason "cancelled").
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        n = check_sample_count(n)
        if n == 1 or params.temperature == 0:
            return super().sample_n(prompt, params, n, cancel, progress)
        started = time.perf_counter()
        ids = self.check_prompt(prompt, params)
        first_step: list[float] = []
        start = self._answer_start(len(ids))  # where the new tokens begin in generate()'s sequences
        eos_ids = sorted(set(_as_list(getattr(self.model.generation_config, "eos_token_id", None))))

        class _Watch(StoppingCriteria):  # called after every step: notes the first, reports, and honours cancel
            def __call__(self, input_ids, scores, **kwargs):
                if not first_step:
                    first_step.append(time.perf_counter())
                if progress is not None:
                    new = input_ids[:, start:]
                    ended = torch.isin(new, torch.tensor(eos_ids, device=new.device))
                    done_rows = ended.any(dim=1)  # a row's tokens: those before its first end-of-sequence token
                    lengths = torch.where(done_rows, ended.int().argmax(dim=1), new.shape[1])
                    progress(SampleProgress(int(done_rows.sum()), n, int(lengths.sum()),
                                            int(lengths[~done_rows].sum())))
                stop = cancel is not None and cancel.is_set()
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        input_ids = torch.tensor([ids], device=self.device.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with self.lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            output = self.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=params.max_new_tokens,
                do_sample=True, num_return_sequences=n, temperature=params.temperature, top_p=params.top_p,
                top_k=params.top_k or None, repetition_penalty=params.repetition_penalty, pad_token_id=pad,
                stopping_criteria=StoppingCriteriaList([_Watch()]),
            )
        end = time.perf_counter()
        cancelled = cancel is not None and cancel.is_set()
        eos = set(eos_ids)
        results = []
        for row in output[:, start:].tolist():
            tokens: list[int] = []
            finish = "length"
            for token_id in row:
                if token_id in eos:
                    finish = "stop"
                    break
                tokens.append(token_id)
            if finish == "length" and cancelled and len(tokens) < params.max_new_tokens:
                finish = "cancelled"
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            cut = first_stop_index(text, params.stop)
            if cut is not None:
                text, finish = text[:cut], "stop"
            results.append(GenerationResult(
                text=text, prompt_tokens=len(ids), completion_tokens=len(tokens),
                time_to_first_token_s=(first_step[0] if first_step else end) - started, total_s=end - started,
                finish_reason=finish, engine=self.name, model_id=self.model_id,
            ))
        return results

    def next_token_probabilities(self, prompt: str, k: int = 10) -> list[TokenProbability]:
        import torch

        ids = self.check_prompt(prompt, GenerationParams(max_new_tokens=1))
        with self.lock, torch.inference_mode():
            logits = self.model(torch.tensor([ids], device=self.device.device)).logits[0, -1].float()
        probs = torch.softmax(logits, dim=-1)
        top = torch.topk(probs, min(int(k), probs.numel()))
        return [TokenProbability(int(i), self.tokenizer.decode([int(i)]), float(p))
                for p, i in zip(top.values.tolist(), top.indices.tolist())]

    def _answer_start(self, prompt_tokens: int) -> int:
        """Where the new tokens begin in the sequences ``generate`` returns: after the prompt."""
        return prompt_tokens

    def close(self) -> None:
        self.model = None


class Seq2SeqTransformersEngine(TransformersEngine):
    """An encoder-decoder model (T5, FLAN-T5): the prompt is the encoder's input, the decoder writes the answer.

    Text to text: there is no chat template. ``format_chat`` folds a system message into the input (its text,
    a blank line, the user's text) and refuses a conversation with earlier answers. The encoder input must fit
    the context window by itself (the answer is the decoder's, which starts afresh), and ``max_new_tokens``
    may be at most the window too.
    """

    is_encoder_decoder = True

    def __init__(self, model_id: str, model, tokenizer, device: DeviceChoice, token_limit: int | None = None,
                 context_window: int | None = None):
        config = model.config
        # T5 has relative positions; its checkpoints name the length they were trained on (512 for FLAN-T5).
        window = context_window or int(getattr(config, "n_positions", 0) or getattr(
            config, "max_position_embeddings", 0) or 512)
        super().__init__(model_id, model, tokenizer, device, token_limit, context_window=window)

    @property
    def has_chat_template(self) -> bool:
        return False

    def format_chat(self, messages: Sequence[Message]) -> str:
        """The encoder's input: the system text (if any), a blank line, then the user's text."""
        if any(m.get("role") == "assistant" for m in messages):
            raise EngineUnavailableError(
                f"{self.model_id} is an encoder-decoder (text-to-text) model: it has no chat template, so it "
                f"cannot continue a conversation with earlier answers. Send one input (the Prompt Lab), or choose "
                f"a decoder model to chat.")
        parts = [str(m.get("content") or "").strip() for m in messages if m.get("role") in ("system", "user")]
        return "\n\n".join(part for part in parts if part)

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def check_prompt(self, prompt: Prompt, params: GenerationParams) -> list[int]:
        """The encoder's ids, checked: the input fits the window on its own; the answer's length is capped by it."""
        text = prompt.text if isinstance(prompt, TokenizedPrompt) else prompt
        if not text or not text.strip():
            raise InvalidPromptError("The prompt is empty: type some text first.").keyed("error.empty_prompt")
        params.validated(self.token_limit)
        if params.max_new_tokens > self.context_window:
            raise InvalidParameterError(
                f"max_new_tokens={params.max_new_tokens} is out of range: {self.model_id}'s decoder writes at most "
                f"{self.context_window} tokens.")
        ids = list(prompt.ids) if isinstance(prompt, TokenizedPrompt) else self.tokenize(text)
        if len(ids) > self.context_window:
            raise EncoderInputOverflowError(len(ids), self.context_window)
        return ids

    def _answer_start(self, prompt_tokens: int) -> int:
        return 1  # the decoder's sequences begin with its start token

    def next_token_probabilities(self, prompt: str, k: int = 10) -> list[TokenProbability]:
        """The decoder's first step: the most likely first tokens of the answer to ``prompt``."""
        import torch

        ids = self.check_prompt(prompt, GenerationParams(max_new_tokens=1))
        start = self.model.generation_config.decoder_start_token_id
        if start is None:
            start = self.model.config.decoder_start_token_id
        with self.lock, torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=self.device.device),
                                decoder_input_ids=torch.tensor([[int(start)]], device=self.device.device)
                                ).logits[0, -1].float()
        probs = torch.softmax(logits, dim=-1)
        top = torch.topk(probs, min(int(k), probs.numel()))
        return [TokenProbability(int(i), self.tokenizer.decode([int(i)]), float(p))
                for p, i in zip(top.values.tolist(), top.indices.tolist())]


def engine_for(model_id: str, model, tokenizer, device: DeviceChoice, token_limit: int | None = None
               ) -> TransformersEngine:
    """The engine for a loaded model: :class:`Seq2SeqTransformersEngine` for an encoder-decoder, else the
    decoder-only :class:`TransformersEngine`."""
    if getattr(model.config, "is_encoder_decoder", False):
        return Seq2SeqTransformersEngine(model_id, model, tokenizer, device, token_limit)
    return TransformersEngine(model_id, model, tokenizer, device, token_limit)


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
