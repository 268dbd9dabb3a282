"""Each family's native task on a :class:`~playground.architectures.loading.LoadedModel`.

Encoder with a masked-LM head (BERT):
    :func:`fill_mask` -> :class:`FillMaskResult`: top-k tokens for every mask. The user types
    ``[MASK]`` (any case; it becomes the model's own mask token) or picks a word by index or by
    itself; with ``auto_mask=True`` the last word is hidden when neither is given.
Embedding encoder (all-MiniLM-L6-v2):
    :func:`embed` (mean pooling over the attention mask, then L2 normalisation, as
    sentence-transformers does), :func:`similarity` -> :class:`SimilarityResult` (cosine with each
    candidate) and :func:`zero_shot` -> :class:`ZeroShotResult` (cosine with each label's
    description, turned into probabilities by a softmax over ``cosine * 20``, the scale the model was
    trained with).
Encoder-decoder (T5, FLAN-T5):
    :func:`text_to_text` -> :class:`TextToTextResult` (an instruction applied to the text, greedy) and
    :func:`span_corruption` -> :class:`SpanCorruptionResult` (spans replaced by sentinels, the model's
    output parsed back into one fill per sentinel).
Decoder (SmolLM2, GPT-2):
    :func:`next_token` -> :class:`NextTokenResult` (top-k of the next-token distribution),
    :func:`step` -> :class:`StepResult` (append the chosen or most likely token, return the new text
    and the distribution that follows it) and :func:`continue_text` -> :class:`Continuation`
    (greedy or seeded sampling, with the top alternatives at every step).

Each function checks that the model has the right head (else UnsupportedTaskError), refuses bad
input with InvalidInputError or InvalidParameterError, and reports truncation to the context in
``note``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from playground.architectures.loading import LoadedModel
from playground.architectures.objectives import SpanCorruptionExample, parse_span_output, span_corruption_example
from playground.architectures.text import Word, check_text, find_words, parse_labels, parse_lines, pick_word
from playground.architectures.tokens import encode
from playground.backends.base import TokenProbability
from playground.errors import InvalidInputError, InvalidParameterError, NoMaskError, UnsupportedTaskError

MAX_TOP_K = 50
MAX_CONTINUATION_TOKENS = 128
MAX_OUTPUT_TOKENS = 128  # text-to-text
EMBEDDING_SCALE = 20.0  # all-MiniLM-L6-v2 was trained with MultipleNegativesRankingLoss(scale=20)
_TYPED_MASK = re.compile(r"\[mask\]", re.IGNORECASE)

DEFAULT_TEXT = "The capital of France is Paris, a city famous for its museums."
DEFAULT_CANDIDATES = (
    "Paris is the French capital and has many museums.",
    "France's capital city is known for its art galleries.",
    "The recipe needs two eggs and a cup of flour.",
    "The football match ended in a draw.",
)
DEFAULT_LABELS = (
    ("travel", "This text is about travel, cities and places to visit."),
    ("cooking", "This text is about cooking, food and recipes."),
    ("sport", "This text is about sport, games and athletes."),
    ("science", "This text is about science and technology."),
)
DEFAULT_INSTRUCTION = "Translate English to German:"


def _require(loaded: LoadedModel, heads: tuple[str, ...], task: str, suggestion: str) -> None:
    if loaded.head not in heads:
        raise UnsupportedTaskError(f"{loaded.spec.name} is {_article(loaded.family)} {loaded.family} model "
                                   f"without the head {task} needs; {suggestion}.")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _top_k(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOP_K:
        raise InvalidParameterError(f"top_k must be a whole number between 1 and {MAX_TOP_K}, not {value!r}.")
    return value


def _distribution(tokenizer, probs, k: int) -> tuple[TokenProbability, ...]:
    import torch

    top = torch.topk(probs, k)
    return tuple(TokenProbability(int(i), tokenizer.decode([int(i)]), float(p))
                 for p, i in zip(top.values.tolist(), top.indices.tolist()))


# ---------------------------------------------------------------- fill-mask


@dataclass(frozen=True)
class MaskPrediction:
    """The candidates for one mask, most likely first, and the text with this mask filled by the best one."""

    position: int  # token index of the mask in the model's input
    candidates: tuple[TokenProbability, ...]
    filled: str


@dataclass(frozen=True)
class FillMaskResult:
    model_id: str
    masked_text: str  # the text as the model read it, with its own mask token
    hidden_word: str  # the word the user (or auto_mask) hid; "" when [MASK] was typed
    predictions: tuple[MaskPrediction, ...]
    filled_text: str  # every mask replaced by its most likely token
    note: str = ""


def maskable_words(text: str, mask_token: str = "[MASK]") -> list[Word]:
    """The words fill-mask can hide, numbered from 0 (words inside a typed mask such as [MASK] are left out)."""
    masks = [(m.start(), m.end()) for m in re.finditer(re.escape(mask_token), text)]
    masks += [(m.start(), m.end()) for m in _TYPED_MASK.finditer(text)]
    words = [w for w in find_words(text)
             if any(c.isalnum() for c in w.text) and not any(s <= w.start and w.end <= e for s, e in masks)]
    return [Word(i, w.text, w.start, w.end) for i, w in enumerate(words)]


def apply_mask(text: str, mask_token: str, mask: int | str | None = None, auto_mask: bool = False
               ) -> tuple[str, str, str]:
    """(masked text, hidden word, note).

    A typed ``[MASK]`` (any case) becomes ``mask_token``; ``mask`` hides one more word, chosen by its
    number in :func:`maskable_words` or by itself; with neither, ``auto_mask`` hides the last word,
    else NoMaskError.
    """
    check_text(text)
    words = maskable_words(text, mask_token)
    if mask is not None and mask != "":
        if isinstance(mask, str) and mask.strip().isdigit():
            mask = int(mask)
        word = pick_word(text, mask, words)
        text = text[:word.start] + mask_token + text[word.end:]
        return _TYPED_MASK.sub(lambda _: mask_token, text), word.text, ""
    masked = _TYPED_MASK.sub(lambda _: mask_token, text)
    if mask_token in masked:
        return masked, "", ""
    if not words:
        raise NoMaskError(f"The text has no {mask_token} and no word that could be hidden: type a sentence "
                          f"with {mask_token} where a word should be predicted.")
    if not auto_mask:
        raise NoMaskError(f"The text has no {mask_token}: type {mask_token} where a word should be predicted, "
                          f"or pick a word to hide (by its number or the word itself).")
    word = words[-1]
    note = (f"There was no {mask_token} in the text, so its last word {word.text!r} was hidden; type "
            f"{mask_token} or pick a word to choose another.")
    return text[:word.start] + mask_token + text[word.end:], word.text, note


def fill_mask(loaded: LoadedModel, text: str, mask: int | str | None = None, top_k: int = 5,
              auto_mask: bool = False) -> FillMaskResult:
    """Top-``top_k`` tokens for every mask of ``text`` (see :func:`apply_mask` for how masks are made)."""
    import torch

    _require(loaded, ("masked_lm",), "fill-mask", "pick an encoder with a masked-LM head such as BERT")
    _top_k(top_k)
    tokenizer = loaded.tokenizer
    mask_token = tokenizer.mask_token
    masked_text, hidden, note = apply_mask(text, mask_token, mask, auto_mask)
    encoded = encode(loaded, masked_text)
    positions = [i for i, token_id in enumerate(encoded.ids) if token_id == tokenizer.mask_token_id]
    if not positions:
        raise NoMaskError(f"The {mask_token} lies beyond the first {loaded.max_length} tokens "
                          f"{loaded.spec.name} reads: move it earlier or shorten the text.")
    with torch.inference_mode():
        logits = loaded.model(input_ids=torch.tensor([encoded.ids], device=loaded.device)).logits[0, positions]
    probs = torch.softmax(logits.float(), dim=-1)
    predictions = []
    filled_all = masked_text
    for n, position in enumerate(positions):
        candidates = _distribution(tokenizer, probs[n], min(top_k, probs.shape[-1]))
        best = candidates[0].token.strip()
        filled = _replace_nth(masked_text, mask_token, n, best)
        filled_all = filled_all.replace(mask_token, best, 1)
        predictions.append(MaskPrediction(position, candidates, filled))
    notes = [n for n in (note, encoded.note) if n]
    return FillMaskResult(loaded.model_id, masked_text, hidden, tuple(predictions), filled_all, " ".join(notes))


def _replace_nth(text: str, old: str, n: int, new: str) -> str:
    start = -1
    for _ in range(n + 1):
        start = text.find(old, start + 1)
    return text[:start] + new + text[start + len(old):] if start >= 0 else text


# ---------------------------------------------------------------- sentence embeddings


@dataclass(frozen=True)
class ScoredText:
    text: str
    score: float  # cosine similarity with the input, -1 to 1
    rank: int  # 1 for the most similar


@dataclass(frozen=True)
class SimilarityResult:
    model_id: str
    text: str
    scores: tuple[ScoredText, ...]  # in the order the candidates were given
    note: str = ""

    @property
    def ranked(self) -> list[ScoredText]:
        return sorted(self.scores, key=lambda s: s.rank)


@dataclass(frozen=True)
class LabelScore:
    label: str
    description: str
    similarity: float  # cosine between the text and the description
    probability: float  # softmax over the labels of similarity * EMBEDDING_SCALE


@dataclass(frozen=True)
class ZeroShotResult:
    model_id: str
    text: str
    labels: tuple[LabelScore, ...]  # most probable first
    scale: float
    note: str = ""

    @property
    def best(self) -> LabelScore:
        return self.labels[0]


def embed(loaded: LoadedModel, texts: Sequence[str]):
    """L2-normalised mean-pooled embeddings (a float32 tensor, one row per text)."""
    import torch

    _require(loaded, ("embedding",), "sentence embeddings", "pick an embedding encoder such as all-MiniLM-L6-v2")
    batch = loaded.tokenizer(list(texts), padding=True, truncation=True, max_length=loaded.max_length,
                             return_tensors="pt").to(loaded.device)
    with torch.inference_mode():
        hidden = loaded.model(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1).cpu()


def _truncation_note(loaded: LoadedModel, texts: Sequence[str]) -> str:
    lengths = [len(loaded.tokenizer(t)["input_ids"]) for t in texts]
    longest = max(lengths)
    if longest <= loaded.max_length:
        return ""
    return (f"A text is {longest:,} tokens for {loaded.spec.name}, which reads {loaded.max_length:,}; "
            f"longer texts were truncated.")


def similarity(loaded: LoadedModel, text: str, candidates: Sequence[str] | str = DEFAULT_CANDIDATES
               ) -> SimilarityResult:
    """Cosine similarity between ``text`` and each candidate sentence."""
    check_text(text)
    items = parse_lines(candidates)
    vectors = embed(loaded, [text, *items])
    scores = (vectors[1:] @ vectors[0]).tolist()
    order = sorted(range(len(items)), key=lambda i: -scores[i])
    rank = {i: r + 1 for r, i in enumerate(order)}
    return SimilarityResult(loaded.model_id, text,
                            tuple(ScoredText(item, float(score), rank[i]) for i, (item, score) in
                                  enumerate(zip(items, scores))),
                            _truncation_note(loaded, [text, *items]))


def zero_shot(loaded: LoadedModel, text: str, labels=DEFAULT_LABELS, scale: float = EMBEDDING_SCALE
              ) -> ZeroShotResult:
    """Rank ``labels`` (``label: description`` lines, a mapping or pairs) by similarity to ``text``."""
    check_text(text)
    pairs = parse_labels(labels)
    vectors = embed(loaded, [text, *(description for _, description in pairs)])
    sims = (vectors[1:] @ vectors[0]).tolist()
    top = max(sims)
    weights = [math.exp(scale * (s - top)) for s in sims]
    total = sum(weights)
    scored = sorted((LabelScore(label, description, float(s), w / total)
                     for (label, description), s, w in zip(pairs, sims, weights)), key=lambda x: -x.probability)
    return ZeroShotResult(loaded.model_id, text, tuple(scored), scale, _truncation_note(loaded, [text]))


# ---------------------------------------------------------------- encoder-decoder


@dataclass(frozen=True)
class TextToTextResult:
    model_id: str
    instruction: str
    model_input: str  # what the encoder read
    output: str  # what the decoder wrote (greedy)
    output_tokens: int
    note: str = ""


@dataclass(frozen=True)
class SpanFill:
    """One sentinel: the span it hid, and what the model wrote for it (``found`` False: it did not write it)."""

    sentinel: str
    original: str
    predicted: str
    found: bool

    @property
    def correct(self) -> bool:
        return self.found and self.predicted.strip().lower() == self.original.strip().lower()


@dataclass(frozen=True)
class SpanCorruptionResult:
    model_id: str
    example: SpanCorruptionExample  # tokens with roles, input with sentinels, target format
    output: str  # the model's raw output (special tokens kept)
    fills: tuple[SpanFill, ...]
    note: str = ""


def _max_new(value: int, limit: int, name: str = "max_new_tokens") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise InvalidParameterError(f"{name} must be a whole number between 1 and {limit}, not {value!r}.")
    return value


def instruction_input(instruction: str, text: str) -> str:
    """The encoder's input: ``{text}`` in the instruction is replaced by the text, else the text follows it."""
    instruction = (instruction or "").strip()
    if not instruction:
        return text
    if "{text}" in instruction:
        return instruction.replace("{text}", text)
    return f"{instruction} {text}"


def text_to_text(loaded: LoadedModel, text: str, instruction: str = DEFAULT_INSTRUCTION, max_new_tokens: int = 48
                 ) -> TextToTextResult:
    """Greedy text-to-text: the instruction and the text in, the decoder's answer out."""
    import torch

    _require(loaded, ("seq2seq",), "text-to-text", "pick an encoder-decoder such as FLAN-T5")
    check_text(text)
    _max_new(max_new_tokens, MAX_OUTPUT_TOKENS)
    model_input = instruction_input(instruction, text)
    encoded = encode(loaded, model_input)
    ids = torch.tensor([encoded.ids], device=loaded.device)
    with torch.inference_mode():
        out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                    do_sample=False)[0].tolist()
    generated = out[1:]  # the decoder start token comes first
    return TextToTextResult(loaded.model_id, instruction, model_input,
                            loaded.tokenizer.decode(generated, skip_special_tokens=True).strip(), len(generated),
                            encoded.note)


def span_corruption(loaded: LoadedModel, text: str, seed: int = 0, noise_density: float = 0.15,
                    mean_span_length: float = 3.0, word_spans: Sequence[tuple[int, int]] | None = None,
                    max_new_tokens: int | None = None) -> SpanCorruptionResult:
    """T5's pre-training task live: corrupt ``text``, let the model fill the sentinels, parse its fills."""
    import torch

    _require(loaded, ("seq2seq",), "span corruption", "pick an encoder-decoder such as FLAN-T5")
    check_text(text)
    encoded = encode(loaded, text)
    source = loaded.tokenizer.decode(encoded.ids, skip_special_tokens=True) if encoded.truncated else text
    example = span_corruption_example(loaded.tokenizer, source, seed, noise_density, mean_span_length, word_spans)
    if not example.input_ids:
        raise UnsupportedTaskError(f"The tokenizer of {loaded.spec.name} has no <extra_id_N> sentinel tokens.")
    limit = max_new_tokens or min(len(example.target_ids) + 8, MAX_OUTPUT_TOKENS)
    _max_new(limit, MAX_OUTPUT_TOKENS)
    ids = torch.tensor([example.input_ids], device=loaded.device)
    with torch.inference_mode():
        out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=limit,
                                    do_sample=False)[0].tolist()
    output = loaded.tokenizer.decode(out[1:], skip_special_tokens=False)
    for marker in (loaded.tokenizer.pad_token, loaded.tokenizer.eos_token):
        if marker:
            output = output.replace(marker, "")
    output = output.strip()
    parsed = parse_span_output(output, len(example.spans))
    fills = tuple(SpanFill(span.sentinel, span.text, fill or "", fill is not None)
                  for span, fill in zip(example.spans, parsed))
    notes = [n for n in (encoded.note, example.note) if n]
    if fills and not any(f.found for f in fills):
        notes.append("The model wrote none of the sentinels, so no span could be read from its output.")
    return SpanCorruptionResult(loaded.model_id, example, output, fills, " ".join(notes))


# ---------------------------------------------------------------- decoder


@dataclass(frozen=True)
class NextTokenResult:
    model_id: str
    text: str
    candidates: tuple[TokenProbability, ...]  # most likely first
    context_tokens: int  # tokens the model read
    note: str = ""


@dataclass(frozen=True)
class StepResult:
    """One step: ``chosen`` (picked from ``chosen_from``) was appended; ``distribution`` is what comes next."""

    model_id: str
    previous_text: str
    text: str
    chosen: TokenProbability
    chosen_from: tuple[TokenProbability, ...]
    distribution: tuple[TokenProbability, ...]
    note: str = ""


@dataclass(frozen=True)
class ContinuationStep:
    token: TokenProbability  # the token generated at this step
    alternatives: tuple[TokenProbability, ...]  # the most likely tokens at this step


@dataclass(frozen=True)
class Continuation:
    model_id: str
    text: str
    continuation: str
    steps: tuple[ContinuationStep, ...]
    finish_reason: str  # "stop" (end of text) or "length"
    sampled: bool
    seed: int | None
    note: str = ""

    @property
    def full_text(self) -> str:
        return self.text + self.continuation


def _next_probs(loaded: LoadedModel, ids: Sequence[int]):
    import torch

    from playground.architectures.attention import _accepts

    kwargs = {"logits_to_keep": 1} if _accepts(loaded.model, "logits_to_keep") else {}
    with torch.inference_mode():
        logits = loaded.model(input_ids=torch.tensor([list(ids)], device=loaded.device), **kwargs).logits[0, -1]
    return torch.softmax(logits.float(), dim=-1).cpu()


def _decoder_ids(loaded: LoadedModel, text: str):
    _require(loaded, ("causal_lm",), "next-token prediction", "pick a decoder such as SmolLM2")
    return encode(loaded, text)


def next_token(loaded: LoadedModel, text: str, top_k: int = 10) -> NextTokenResult:
    """The ``top_k`` most likely next tokens after ``text`` (token, id, probability)."""
    _top_k(top_k)
    encoded = _decoder_ids(loaded, text)
    probs = _next_probs(loaded, encoded.ids)
    return NextTokenResult(loaded.model_id, text, _distribution(loaded.tokenizer, probs, top_k), len(encoded.ids),
                           encoded.note)


def _sample(probs, temperature: float, top_k: int, seed: int | None) -> int:
    import torch

    logits = torch.log(probs.clamp(min=1e-12)) / temperature
    if top_k and top_k < logits.shape[-1]:
        threshold = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))


def _temperature(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
        raise InvalidParameterError(f"temperature must be between 0 (greedy) and 2, not {value!r}.")
    return float(value)


def step(loaded: LoadedModel, text: str, choice: int | None = None, top_k: int = 10, temperature: float = 0.0,
         seed: int | None = None) -> StepResult:
    """Append one token to ``text``: ``choice`` (a token id), else the most likely (or a sampled) one.

    Returns the new text and the distribution for the token after it, so a UI can keep stepping.
    """
    _top_k(top_k)
    temperature = _temperature(temperature)
    encoded = _decoder_ids(loaded, text)
    probs = _next_probs(loaded, encoded.ids)
    tokenizer = loaded.tokenizer
    if choice is not None:
        if isinstance(choice, bool) or not isinstance(choice, int) or not 0 <= choice < probs.shape[-1]:
            raise InvalidInputError(f"Token id {choice!r} is not in the vocabulary of {loaded.spec.name} "
                                    f"(0 to {probs.shape[-1] - 1}).")
        chosen_id = choice
    elif temperature > 0:
        chosen_id = _sample(probs, temperature, 0, seed)
    else:
        chosen_id = int(probs.argmax())
    chosen = TokenProbability(chosen_id, tokenizer.decode([chosen_id]), float(probs[chosen_id]))
    new_text = text + chosen.token
    following = _distribution(tokenizer, _next_probs(loaded, _decoder_ids(loaded, new_text).ids), top_k)
    return StepResult(loaded.model_id, text, new_text, chosen, _distribution(tokenizer, probs, top_k), following,
                      encoded.note)


def continue_text(loaded: LoadedModel, text: str, max_new_tokens: int = 20, temperature: float = 0.0,
                  top_k: int = 50, seed: int | None = None, alternatives: int = 5,
                  token_limit: int | None = None) -> Continuation:
    """Continue ``text`` greedily (temperature 0) or by seeded sampling, one cached forward pass per token."""
    import torch

    limit = min(MAX_CONTINUATION_TOKENS, token_limit or MAX_CONTINUATION_TOKENS)
    _max_new(max_new_tokens, limit)
    temperature = _temperature(temperature)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise InvalidParameterError(f"top_k must be 0 (off) or a positive whole number, not {top_k!r}.")
    _top_k(alternatives)
    encoded = _decoder_ids(loaded, text)
    if len(encoded.ids) + max_new_tokens > loaded.context_length:
        raise InvalidParameterError(
            f"{len(encoded.ids)} tokens of text plus {max_new_tokens} new ones exceed the context of "
            f"{loaded.context_length:,} tokens of {loaded.spec.name}; shorten the text or ask for fewer tokens.")
    tokenizer, model = loaded.tokenizer, loaded.model
    eos = set(_as_list(getattr(model.generation_config, "eos_token_id", None)) +
              _as_list(getattr(tokenizer, "eos_token_id", None)))
    generator = torch.Generator().manual_seed(seed) if seed is not None and temperature > 0 else None
    steps, generated = [], []
    finish = "length"
    ids = torch.tensor([list(encoded.ids)], device=loaded.device)
    past = None
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            out = model(input_ids=ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            probs = torch.softmax(out.logits[0, -1].float(), dim=-1).cpu()
            if temperature > 0:
                logits = torch.log(probs.clamp(min=1e-12)) / temperature
                if top_k and top_k < logits.shape[-1]:
                    logits = logits.masked_fill(logits < torch.topk(logits, top_k).values[-1], float("-inf"))
                token_id = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))
            else:
                token_id = int(probs.argmax())
            if token_id in eos:
                finish = "stop"
                break
            generated.append(token_id)
            steps.append(ContinuationStep(TokenProbability(token_id, tokenizer.decode([token_id]),
                                                           float(probs[token_id])),
                                          _distribution(tokenizer, probs, alternatives)))
            ids = torch.tensor([[token_id]], device=loaded.device)
    return Continuation(loaded.model_id, text, tokenizer.decode(generated, skip_special_tokens=True), tuple(steps),
                        finish, temperature > 0, seed, encoded.note)


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
