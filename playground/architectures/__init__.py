"""Model facts, tokenisation, attention maps and pre-training objectives (the Architectures tab's logic).

The same text goes to up to three models, one per family, each doing its native task:

=============================== ============================ =========================================
family (catalog ``head``)       example                      native task
=============================== ============================ =========================================
encoder (``masked_lm``)         BERT (Hub only)              fill-mask: top-k tokens per [MASK]
encoder (``embedding``)         all-MiniLM-L6-v2 (packaged)  cosine similarity, zero-shot labels
encoder-decoder (``seq2seq``)   FLAN-T5 (Hub only)           text-to-text, span corruption live
decoder (``causal_lm``)         SmolLM2-135M (packaged GGUF) next-token top-k, stepping, continuation
=============================== ============================ =========================================

Start from :class:`ArchitectureLab` (``services.architectures`` in the app): it loads models once
through the shared model cache and exposes every capability by model id, plus
:meth:`ArchitectureLab.run_all`, which runs the whole tab for several models and returns a
:class:`Comparison` of :class:`ModelReport` (one per model, with an ``error`` instead of results
when that model could not load or run).

For the encoder-decoder's attention on the span-corruption task, pass the corrupted input and its
target: ``lab.attention(model_id, result.example.model_input, target=result.example.target)``
(sentinels are special tokens, so both tokenise back to what the model saw).

Modules (none imports torch, transformers or gradio at import time):

- :mod:`~playground.architectures.lab`: ArchitectureLab, CompareOptions, ModelReport, Comparison;
- :mod:`~playground.architectures.loading`: LoadedModel and load_model (eager attention, safetensors);
- :mod:`~playground.architectures.facts`: ModelFacts (parameters, shape, objective, memory, tokenizer);
- :mod:`~playground.architectures.tokens`: Tokenization and TokenPiece, encode (truncation to the context);
- :mod:`~playground.architectures.attention`: AttentionMaps (every layer and head, once) and AttentionView;
- :mod:`~playground.architectures.masks`: MaskPatterns (bidirectional, causal, encoder-decoder);
- :mod:`~playground.architectures.objectives`: MLM / causal LM / span corruption / contrastive examples;
- :mod:`~playground.architectures.tasks`: fill-mask, embeddings, similarity, zero-shot, text-to-text,
  span corruption, next token, step, continuation;
- :mod:`~playground.architectures.text`: checking and parsing the user's text, words, spans, labels.

Errors are :class:`~playground.errors.PlaygroundError` subclasses with actionable messages:
InvalidInputError (empty or over-long text, a word or span that is not there), NoMaskError,
UnsupportedTaskError (a task the model's head cannot do), InvalidParameterError and
ModelUnavailableError (weights not found, e.g. a Hub-only model offline).
"""

from playground.architectures.attention import AttentionMaps, AttentionView
from playground.architectures.facts import OBJECTIVES, MemoryEstimate, ModelFacts
from playground.architectures.lab import ArchitectureLab, CompareOptions, Comparison, ModelReport
from playground.architectures.loading import LoadedModel
from playground.architectures.masks import MaskMatrix, MaskPatterns, mask_patterns
from playground.architectures.objectives import (
    ROLES,
    CorruptedSpan,
    ObjectiveExample,
    ObjectiveToken,
    Prediction,
    SpanCorruptionExample,
)
from playground.architectures.tasks import (
    DEFAULT_CANDIDATES,
    DEFAULT_INSTRUCTION,
    DEFAULT_LABELS,
    DEFAULT_TEXT,
    Continuation,
    ContinuationStep,
    FillMaskResult,
    LabelScore,
    MaskPrediction,
    NextTokenResult,
    ScoredText,
    SimilarityResult,
    SpanCorruptionResult,
    SpanFill,
    StepResult,
    TextToTextResult,
    ZeroShotResult,
)
from playground.architectures.tokens import TokenPiece, Tokenization

__all__ = [
    "ArchitectureLab", "CompareOptions", "Comparison", "ModelReport", "LoadedModel",
    "ModelFacts", "MemoryEstimate", "OBJECTIVES", "Tokenization", "TokenPiece",
    "AttentionMaps", "AttentionView", "MaskMatrix", "MaskPatterns", "mask_patterns",
    "ObjectiveExample", "ObjectiveToken", "Prediction", "SpanCorruptionExample", "CorruptedSpan", "ROLES",
    "FillMaskResult", "MaskPrediction", "SimilarityResult", "ScoredText", "ZeroShotResult", "LabelScore",
    "TextToTextResult", "SpanCorruptionResult", "SpanFill", "NextTokenResult", "StepResult", "Continuation",
    "ContinuationStep", "DEFAULT_TEXT", "DEFAULT_CANDIDATES", "DEFAULT_LABELS", "DEFAULT_INSTRUCTION",
]
