"""The facts card of a loaded model, computed from the model and its config (not copied from the catalog).

:func:`model_facts` returns :class:`ModelFacts`:

- parameters: total (tied matrices counted once), embedding and non-embedding. *Embedding*
  parameters are those of every ``nn.Embedding`` (tokens, learned positions, segments, T5's
  relative-position buckets) plus the output projection onto the vocabulary where it has
  weights of its own (an untied matrix, a bias); the rest is *non-embedding* (the count
  scaling laws use);
- shape: layers (and decoder layers for an encoder-decoder), hidden size, attention heads,
  key/value heads (fewer than heads means grouped-query attention), vocabulary, context length;
- the pre-training objective from the catalog, with a human name and explanation (:data:`OBJECTIVES`);
- memory for the weights alone at fp32, bf16, int8 and 4-bit (:class:`MemoryEstimate`);
- the tokenizer's class and algorithm (BPE, WordPiece, SentencePiece Unigram, ...).

``ModelFacts.rows()`` lists ``(field, value)`` pairs, with values formatted for a table;
the UI translates the field names.
"""

from __future__ import annotations

from dataclasses import dataclass

from playground.architectures.loading import LoadedModel
from playground.architectures.tokens import tokenizer_kind

# objective code (catalog) -> (human name, what the model learnt to do)
OBJECTIVES: dict[str, tuple[str, str]] = {
    "masked_lm": (
        "Masked language modelling",
        "About 15% of the tokens are chosen; most become [MASK] and the model predicts the originals "
        "from the words on both sides.",
    ),
    "contrastive_embedding": (
        "Contrastive sentence embedding",
        "Sentences that mean the same are pulled together and unrelated ones pushed apart, so the "
        "average of the token vectors is a sentence embedding compared by cosine similarity.",
    ),
    "span_corruption": (
        "Span corruption",
        "Spans of about 3 tokens (15% in all) are cut out and replaced by sentinels <extra_id_0>, "
        "<extra_id_1>, ...; the decoder writes each sentinel followed by the tokens it replaced.",
    ),
    "causal_lm": (
        "Causal language modelling",
        "Every token is predicted from the tokens to its left only, so the model learns to continue text.",
    ),
}

PRECISIONS: tuple[tuple[str, int], ...] = (("fp32", 32), ("bf16", 16), ("int8", 8), ("4-bit", 4))


def human_bytes(size: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as download sizes are shown)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def human_count(n: int) -> str:
    """134515008 -> '134.5M'."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(n)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes the weights take at one precision (activations, KV cache and overheads not included)."""

    precision: str  # "fp32", "bf16", "int8" or "4-bit"
    bits: int
    bytes: int

    @property
    def human(self) -> str:
        return human_bytes(self.bytes)


@dataclass(frozen=True)
class ModelFacts:
    model_id: str
    name: str
    family: str
    architecture: str  # the transformers class, e.g. "LlamaForCausalLM"
    model_type: str  # the config's model_type, e.g. "llama"
    total_parameters: int
    embedding_parameters: int
    non_embedding_parameters: int
    tied_embeddings: bool  # the output projection shares the input embedding matrix
    layers: int  # transformer blocks (the encoder's for an encoder-decoder)
    decoder_layers: int  # 0 unless encoder-decoder
    hidden_size: int
    attention_heads: int
    kv_heads: int  # fewer than attention_heads: grouped-query attention
    head_dim: int
    vocab_size: int  # rows of the embedding matrix (config)
    tokenizer_size: int  # tokens the tokenizer knows (may be smaller than vocab_size: padding rows)
    context_length: int
    objective: str  # catalog code: masked_lm, contrastive_embedding, span_corruption, causal_lm
    objective_name: str
    objective_description: str
    memory: tuple[MemoryEstimate, ...]  # fp32, bf16, int8, 4-bit
    tokenizer_class: str
    tokenizer_kind: str  # "Byte-level BPE", "WordPiece", "SentencePiece Unigram", ...
    loaded_from: str  # where the weights came from (catalog source description)

    def memory_for(self, precision: str) -> MemoryEstimate:
        return next(m for m in self.memory if m.precision == precision)

    def rows(self) -> list[tuple[str, str]]:
        """(field name, formatted value) pairs for a facts table."""
        rows = [
            ("architecture", self.architecture),
            ("total_parameters", f"{self.total_parameters:,} ({human_count(self.total_parameters)})"),
            ("embedding_parameters", f"{self.embedding_parameters:,}"),
            ("non_embedding_parameters", f"{self.non_embedding_parameters:,}"),
            ("layers", str(self.layers) if not self.decoder_layers
             else f"{self.layers} encoder + {self.decoder_layers} decoder"),
            ("hidden_size", str(self.hidden_size)),
            ("attention_heads", f"{self.attention_heads} (key/value heads: {self.kv_heads})"),
            ("vocab_size", f"{self.vocab_size:,}"),
            ("context_length", f"{self.context_length:,}"),
            ("objective", self.objective_name),
            ("tokenizer", f"{self.tokenizer_kind} ({self.tokenizer_class})"),
        ]
        rows += [(f"memory_{m.precision}", m.human) for m in self.memory]
        return rows


def count_parameters(model) -> tuple[int, int]:
    """(total, embedding) parameter counts; a parameter shared by two modules is counted once."""
    import torch

    embedding_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            embedding_ids.update(id(p) for p in module.parameters(recurse=False))
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        embedding_ids.update(id(p) for p in output.parameters(recurse=False))
    total = embedding = 0
    for parameter in model.parameters():  # deduplicated: tied weights appear once
        total += parameter.numel()
        if id(parameter) in embedding_ids:
            embedding += parameter.numel()
    return total, embedding


def _config_int(config, *names: str, default: int = 0) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def _tied(model) -> bool:
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return output is not None and output.weight is model.get_input_embeddings().weight


def memory_estimates(parameters: int) -> tuple[MemoryEstimate, ...]:
    return tuple(MemoryEstimate(name, bits, parameters * bits // 8) for name, bits in PRECISIONS)


def model_facts(loaded: LoadedModel) -> ModelFacts:
    """The facts card of ``loaded``."""
    model, config, spec = loaded.model, loaded.model.config, loaded.spec
    total, embedding = count_parameters(model)
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    layers = _config_int(config, "num_hidden_layers", "n_layer", "num_layers")
    decoder_layers = _config_int(config, "num_decoder_layers", default=layers) if encoder_decoder else 0
    hidden = _config_int(config, "hidden_size", "n_embd", "d_model")
    heads = _config_int(config, "num_attention_heads", "n_head", "num_heads")
    kv_heads = _config_int(config, "num_key_value_heads", default=heads) or heads
    head_dim = _config_int(config, "head_dim", "d_kv", default=hidden // heads if heads else 0)
    name, description = OBJECTIVES.get(spec.objective, (spec.objective, ""))
    tokenizer = loaded.tokenizer
    return ModelFacts(
        model_id=spec.id, name=spec.name, family=spec.family, architecture=type(model).__name__,
        model_type=str(getattr(config, "model_type", "")), total_parameters=total, embedding_parameters=embedding,
        non_embedding_parameters=total - embedding, tied_embeddings=_tied(model), layers=layers,
        decoder_layers=decoder_layers, hidden_size=hidden, attention_heads=heads, kv_heads=kv_heads,
        head_dim=head_dim, vocab_size=_config_int(config, "vocab_size"), tokenizer_size=len(tokenizer),
        context_length=loaded.context_length, objective=spec.objective, objective_name=name,
        objective_description=description, memory=memory_estimates(total),
        tokenizer_class=type(tokenizer).__name__, tokenizer_kind=tokenizer_kind(tokenizer),
        loaded_from=loaded.weights.detail,
    )
