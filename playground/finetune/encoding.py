"""Tokenise prompt/completion pairs for training, and report what tokenisation did to them.

Each model family gets the inputs its training objective needs:

- **decoder** (causal LM): the prompt goes through the tokenizer's chat
  template when it has one (a user turn, then the assistant's turn holds the
  completion and its end-of-turn token); without one, the prompt and a newline,
  then the completion and the end-of-sequence token. Prompt and completion are
  tokenised separately and concatenated, so the boundary is exact: ``labels``
  are ``-100`` on every prompt token and the loss falls on the completion only.
- **encoder-decoder** (seq2seq): the prompt is the encoder input, the
  completion the ``labels``.
- **encoder** (classifier): the prompt is the input, the label's id the label.

Examples longer than ``max_length`` are cut at the end and counted; one whose
completion is cut away entirely cannot teach anything and is dropped (and
counted). :class:`TokenStats` carries the lengths for a histogram and the share
of padding the batches will carry.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from playground.errors import DataFileError, TrainingError
from playground.finetune.data import DataSplits, PromptPair, format_pairs, template_for
from playground.finetune.weights import DECODER, ENCODER, ENCODER_DECODER

IGNORE_INDEX = -100  # label value the loss skips (transformers' convention)
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TokenStats:
    """What tokenisation did to one split."""

    examples: int  # examples kept
    truncated: int  # examples cut at max_length
    dropped: int  # examples whose completion was cut away entirely (not kept)
    lengths: tuple[int, ...]  # tokens per example before cutting, for a histogram
    max_length: int
    padding_share: float  # padding tokens / all tokens in batches of the run's batch size
    target_tokens: int  # tokens the loss is computed on

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (the histogram's data is ``lengths``)."""
        return {"examples": self.examples, "truncated": self.truncated, "dropped": self.dropped,
                "max_length": self.max_length, "padding_share": round(self.padding_share, 4),
                "target_tokens": self.target_tokens, **length_summary(self.lengths)}


@dataclass(frozen=True)
class EncodedSplit:
    """Model inputs of one split, the pairs they came from (dropped ones left out) and the statistics."""

    features: tuple[dict[str, list[int]], ...]
    pairs: tuple[PromptPair, ...]
    stats: TokenStats

    def dataset(self):
        """A ``datasets.Dataset`` of the features, for the Trainer."""
        import datasets

        return datasets.Dataset.from_list([dict(f) for f in self.features])


# ------------------------------------------------------------------------------ pure arithmetic


def padding_share(lengths: Sequence[int], batch_size: int) -> float:
    """Share of padding when ``lengths`` are batched in order, each batch padded to its longest."""
    padded = 0
    real = 0
    for start in range(0, len(lengths), max(batch_size, 1)):
        chunk = lengths[start:start + batch_size]
        padded += max(chunk) * len(chunk)
        real += sum(chunk)
    return (padded - real) / padded if padded else 0.0


def length_summary(lengths: Sequence[int]) -> dict[str, float]:
    """min, mean, median, 95th percentile and max of token lengths (zeros for none)."""
    if not lengths:
        return {"min": 0, "mean": 0.0, "median": 0.0, "p95": 0, "max": 0}
    ordered = sorted(lengths)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"min": ordered[0], "mean": round(statistics.fmean(ordered), 1),
            "median": float(statistics.median(ordered)), "p95": p95, "max": ordered[-1]}


# ------------------------------------------------------------------------------ text the model reads


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_texts(tokenizer, prompt: str, completion: str) -> tuple[str, str]:
    """(prompt text ending with the assistant's turn header, completion text with its end-of-turn)."""
    messages = [{"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": completion}],
                                         tokenize=False)
    if full.startswith(prompt_text):
        return prompt_text, full[len(prompt_text):]
    # A template that renders the assistant turn differently from its generation prompt.
    return prompt_text, completion + (tokenizer.eos_token or "")


def causal_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a decoder's prompt, exactly as training saw them (generation starts after them)."""
    if has_chat_template(tokenizer):
        text, _ = chat_texts(tokenizer, prompt, "")
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt + "\n", add_special_tokens=True)["input_ids"])


def causal_completion_ids(tokenizer, prompt: str, completion: str) -> list[int]:
    """Token ids of a decoder's completion, ending with the end-of-turn or end-of-sequence token."""
    if has_chat_template(tokenizer):
        _, text = chat_texts(tokenizer, prompt, completion)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids


# ------------------------------------------------------------------------------ per family


def encode_causal(pairs: Sequence[PromptPair], tokenizer, max_length: int, batch_size: int = 1) -> EncodedSplit:
    """Decoder inputs with completion-only labels (-100 on the prompt)."""
    features, kept, lengths, kept_lengths = [], [], [], []
    truncated = dropped = targets = 0
    for pair in pairs:
        prompt_ids = causal_prompt_ids(tokenizer, pair.prompt)
        completion_ids = causal_completion_ids(tokenizer, pair.prompt, pair.completion)
        input_ids = prompt_ids + completion_ids
        labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
        lengths.append(len(input_ids))
        if len(input_ids) > max_length:
            truncated += 1
            input_ids, labels = input_ids[:max_length], labels[:max_length]
        label_count = sum(1 for x in labels if x != IGNORE_INDEX)
        if not label_count:
            dropped += 1
            continue
        targets += label_count
        features.append({"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels})
        kept.append(pair)
        kept_lengths.append(len(input_ids))
    return _finish(features, kept, lengths, kept_lengths, truncated, dropped, targets, max_length, batch_size)


def encode_seq2seq(pairs: Sequence[PromptPair], tokenizer, max_length: int, batch_size: int = 1) -> EncodedSplit:
    """Encoder-decoder inputs: the prompt into the encoder, the completion as labels."""
    features, kept, lengths, kept_lengths = [], [], [], []
    truncated = targets = 0
    for pair in pairs:
        input_ids = list(tokenizer(pair.prompt)["input_ids"])
        labels = list(tokenizer(text_target=pair.completion)["input_ids"])
        lengths.append(len(input_ids))
        if len(input_ids) > max_length or len(labels) > max_length:
            truncated += 1
            input_ids, labels = input_ids[:max_length], labels[:max_length]
        targets += len(labels)
        features.append({"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels})
        kept.append(pair)
        kept_lengths.append(len(input_ids))
    return _finish(features, kept, lengths, kept_lengths, truncated, 0, targets, max_length, batch_size)


def encode_classification(pairs: Sequence[PromptPair], tokenizer, max_length: int, label2id: Mapping[str, int],
                          batch_size: int = 1) -> EncodedSplit:
    """Encoder inputs and label ids (the target column holds the label)."""
    features, kept, lengths, kept_lengths = [], [], [], []
    truncated = 0
    for pair in pairs:
        label = pair.record.target
        if label not in label2id:
            raise DataFileError(f"Line {pair.record.line}: unknown label {label!r} (labels: "
                                f"{', '.join(label2id)}).", line=pair.record.line)
        full = list(tokenizer(pair.prompt)["input_ids"])
        lengths.append(len(full))
        encoded = tokenizer(pair.prompt, truncation=True, max_length=max_length) if len(full) > max_length else None
        input_ids = list(encoded["input_ids"]) if encoded is not None else full
        truncated += encoded is not None
        features.append({"input_ids": input_ids, "attention_mask": [1] * len(input_ids),
                         "labels": label2id[label]})
        kept.append(pair)
        kept_lengths.append(len(input_ids))
    return _finish(features, kept, lengths, kept_lengths, truncated, 0, len(kept), max_length, batch_size)


def encode_pairs(pairs: Sequence[PromptPair], tokenizer, family: str, max_length: int, batch_size: int = 1,
                 label2id: Mapping[str, int] | None = None) -> EncodedSplit:
    """Inputs for ``family`` (decoder, encoder-decoder, encoder); encoders need ``label2id``."""
    if family == DECODER:
        return encode_causal(pairs, tokenizer, max_length, batch_size)
    if family == ENCODER_DECODER:
        return encode_seq2seq(pairs, tokenizer, max_length, batch_size)
    if label2id is None:
        raise ValueError("an encoder needs label2id")
    return encode_classification(pairs, tokenizer, max_length, label2id, batch_size)


def _finish(features, kept, lengths, kept_lengths, truncated, dropped, targets, max_length, batch_size
            ) -> EncodedSplit:
    stats = TokenStats(examples=len(features), truncated=truncated, dropped=dropped, lengths=tuple(lengths),
                       max_length=max_length, padding_share=padding_share(kept_lengths, batch_size),
                       target_tokens=targets)
    return EncodedSplit(tuple(features), tuple(kept), stats)


def encode_splits(config, splits: DataSplits, trainable) -> dict[str, EncodedSplit]:
    """The run's three splits through its template and the trainable model's tokenizer, by split name.

    Raises TrainingError when no training example keeps any of its target at ``max_length``.
    """
    template = template_for(config)
    label2id = {label: i for i, label in enumerate(trainable.labels)} if trainable.family == ENCODER else None
    encoded = {}
    for name, records in zip(SPLITS, (splits.train, splits.validation, splits.test)):
        encoded[name] = encode_pairs(format_pairs(records, template), trainable.tokenizer, trainable.family,
                                     config.max_length, config.batch_size, label2id)
    if not encoded["train"].features:
        raise TrainingError(f"Every training example lost its whole target at max_length={config.max_length}; "
                            f"raise max_length (the longest example has {max(encoded['train'].stats.lengths)} "
                            f"tokens).")
    return encoded


def data_collator(trainable):
    """The Trainer's collator for the model's family (dynamic padding, labels padded with -100)."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    if trainable.family == ENCODER:
        return DataCollatorWithPadding(trainable.tokenizer)
    # Pads input_ids with the pad token and labels with -100 (decoders and encoder-decoders alike).
    padded = DataCollatorForSeq2Seq(trainable.tokenizer, label_pad_token_id=IGNORE_INDEX, padding=True)
    if trainable.family == DECODER and keeps_label_positions(trainable.model):
        # The output head only where a label is: the same loss, without the prompt's logits (bench: trainer
        # variant "logits on label positions").
        return LabelPositionsOnly(padded)
    return padded


@dataclass(frozen=True)
class LabelPositionsOnly:
    """A decoder's collator that asks for logits only where a label is (``logits_to_keep``, a boolean mask of the
    positions whose next token is a target, with the matching ``shift_labels``), so the output head's matmul and
    the softmax skip the prompt's tokens, which are most of a dialogue's; the loss is the same mean over the same
    target tokens (``tests/finetune/test_label_positions.py``). ``collate`` is the padding collator below it."""

    collate: Any

    def __call__(self, features):
        import torch

        batch = self.collate(features)
        labels = batch.get("labels")
        if labels is None:
            return batch
        shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
        keep = shifted != IGNORE_INDEX
        batch["logits_to_keep"] = keep
        batch["shift_labels"] = shifted[keep]
        return batch


def keeps_label_positions(model) -> bool:
    """Whether ``model`` (or the model under a peft wrapper) takes ``logits_to_keep`` in its forward pass, with
    its rows as long as the batch's (prompt and prefix tuning add virtual tokens, so their rows are longer)."""
    import inspect

    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict):
        active = peft_config.get(getattr(model, "active_adapter", "default"))
        if active is None or getattr(active, "is_prompt_learning", False):
            return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def packing_collator():
    """Padding-free batches for a decoder: the batch's rows concatenated into one row of ``input_ids``, ``labels``
    and ``position_ids`` that restart at 0 for each example (transformers' ``DataCollatorWithFlattening``; the
    first label of each example is -100, so no example is trained to predict the next one's start).

    With no attention mask and no cache, transformers' masking utilities read the example boundaries from the
    restarting position ids and give sdpa/eager attention a block-diagonal causal mask: no token attends across
    examples, so the loss equals the padded batch's (``tests/finetune/test_packing.py``). The model must run
    with ``use_cache=False``: with a cache (a Llama makes one whenever ``use_cache`` is on, in training too),
    the boundaries are not looked for and attention silently crosses the examples. Measured by the bench
    (``trainer variants``): on a CPU it reads no padding, but its one long row makes each example's attention
    span the whole packed row (masked), so it pays only when the batch pads much."""
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)


def preview_encoded(split: EncodedSplit, tokenizer, count: int = 3) -> list[dict[str, Any]]:
    """The first ``count`` examples as the model reads them: the full text and the part the loss is on."""
    rows = []
    for feature, pair in list(zip(split.features, split.pairs))[:max(count, 0)]:
        ids, labels = feature["input_ids"], feature["labels"]
        row = {"line": pair.record.line, "tokens": len(ids),
               "text": tokenizer.decode(ids, skip_special_tokens=False)}
        if isinstance(labels, list):
            row["target_text"] = tokenizer.decode([x for x in labels if x != IGNORE_INDEX], skip_special_tokens=False)
        else:
            row["target_text"] = pair.record.target
        rows.append(row)
    return rows
