"""Load one catalog model for the Architectures tab: transformers, eager attention, safetensors only.

:func:`load_model` turns a :class:`~playground.models.catalog.ModelSpec` into a
:class:`LoadedModel` (model, tokenizer and what the tab needs to know about
them). The class to load follows the catalog's ``head``:

========== ============================= ==========================================
head       transformers class            native task in the tab
========== ============================= ==========================================
masked_lm  AutoModelForMaskedLM          fill-mask
embedding  AutoModel                     sentence similarity, zero-shot labels
seq2seq    AutoModelForSeq2SeqLM         text-to-text, span corruption
causal_lm  AutoModelForCausalLM          next-token distribution, continuation
========== ============================= ==========================================

Weights come from the :class:`~playground.models.sources.SourceResolver`
(packaged, then ``PLAYGROUND_MODELS_DIR``, then the Hub), preferring
transformers weights available offline, then a GGUF file available offline
(dequantised once by
:func:`~playground.backends.transformers_engine.load_gguf_as_transformers`,
which keeps a safetensors copy in the data dir), then anything. Models load
with ``attn_implementation="eager"`` so they can return attention weights,
``use_safetensors=True`` and never with remote code. torch and transformers
are imported inside the functions.

The :class:`~playground.architectures.lab.ArchitectureLab` calls this through
the process-wide model cache; call it directly only in tests or scripts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground.errors import ModelUnavailableError, PlaygroundError, UnsupportedTaskError
from playground.models.catalog import ModelSpec
from playground.models.sources import ResolvedWeights, SourceResolver

HEADS = ("masked_lm", "embedding", "seq2seq", "causal_lm")


@dataclass(eq=False)
class LoadedModel:
    """A model ready for the tab's tasks; shared by every user, so treat it as read-only."""

    spec: ModelSpec
    model: Any  # a torch.nn.Module in eval mode
    tokenizer: Any  # a transformers tokenizer
    weights: ResolvedWeights
    device: str  # "cpu" or "cuda"
    context_length: int  # positions the model can read (from its config, else the catalog)
    max_length: int  # tokens fed to it (the context, or sentence-transformers' max_seq_length)

    @property
    def model_id(self) -> str:
        return self.spec.id

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def head(self) -> str:
        return self.spec.head

    def memory_bytes(self) -> int:
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        buffers = sum(b.numel() * b.element_size() for b in self.model.buffers())
        return params + buffers


def _auto_class(head: str):
    import transformers

    names = {"masked_lm": "AutoModelForMaskedLM", "embedding": "AutoModel",
             "seq2seq": "AutoModelForSeq2SeqLM", "causal_lm": "AutoModelForCausalLM"}
    return getattr(transformers, names[head])


def context_of(model, spec: ModelSpec) -> int:
    """Positions the model can read: its config's learned limit, else the catalog's figure (T5 has none)."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return int(spec.context_length)


def _sentence_max_length(folder: Path) -> int | None:
    """sentence-transformers' ``max_seq_length`` for an embedding model folder, if it has one."""
    path = folder / "sentence_bert_config.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def load_model(spec: ModelSpec, resolver: SourceResolver, data_dir: Path, cuda: bool = False, bf16: bool = False,
               threads: int | None = None, progress=None) -> LoadedModel:
    """Resolve and load ``spec``; raises ModelUnavailableError, UnsupportedTaskError or PlaygroundError."""
    if spec.head not in HEADS:
        raise UnsupportedTaskError(f"{spec.name} has a {spec.head!r} head; the Architectures tab knows {HEADS}.")
    weights = resolver.resolve_for_transformers(spec, progress)
    import torch
    from transformers import AutoTokenizer

    from playground.backends.transformers_engine import device_for
    from playground.models.conversion import load_gguf_as_transformers

    if threads:
        torch.set_num_threads(threads)
    if weights.format == "gguf":
        if spec.head != "causal_lm":
            raise UnsupportedTaskError(f"{spec.name}: only decoder GGUF files can be loaded with transformers.")
        model, tokenizer, _ = load_gguf_as_transformers(weights, data_dir, progress)
        model.set_attn_implementation("eager")  # the attention maps need the weights sdpa does not return
    else:
        try:
            model = _auto_class(spec.head).from_pretrained(
                weights.path, dtype="float32", use_safetensors=True, attn_implementation="eager")
            tokenizer = AutoTokenizer.from_pretrained(weights.path)
        except (ModelUnavailableError, UnsupportedTaskError):
            raise
        except Exception as exc:  # a folder without safetensors, an unknown architecture, a broken file
            raise PlaygroundError(
                f"transformers could not load {spec.name} from {weights.detail}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no details'}"
            ) from None
    device = device_for(cuda, bf16)
    model = model.to(device=device.device, dtype=device.dtype).eval()
    context = context_of(model, spec)
    max_length = context
    if spec.head == "embedding" and weights.path.is_dir():
        max_length = min(context, _sentence_max_length(weights.path) or context)
    return LoadedModel(spec, model, tokenizer, weights, device.device, context, max_length)


CACHE_PREFIX = "architecture"


def load_shared(engines, model_id: str, progress=None) -> LoadedModel:
    """``model_id`` loaded once for the whole app, through the engine provider's shared model cache.

    Everything that needs a family-native transformers model (the Architectures tab, the Prompt
    Lab's sentence embedder) calls this, so each model is in memory once and counts against the budget.
    """
    spec = engines.catalog.get(model_id)
    hardware = engines.hardware

    def loader():
        loaded = load_model(spec, engines.resolver, engines.settings.data_dir, cuda=hardware.cuda, bf16=hardware.bf16,
                            threads=hardware.cpu_threads, progress=progress)
        return loaded, loaded.memory_bytes()

    return engines.cache.get_or_load((CACHE_PREFIX, model_id), loader)
