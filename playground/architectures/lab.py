"""The Architectures tab's entry point: :class:`ArchitectureLab`, one per app, made from the engine provider.

It loads models through the process-wide :class:`~playground.models.cache.ModelCache` under the key
``("architecture", model_id)`` (so every user shares one copy, bounded by the memory budget), keeps a
small byte-bounded LRU of attention maps keyed by ``(model id, text, target, window)`` (so the layer
and head sliders never re-run a model), and offers every capability by model id:

- :meth:`ArchitectureLab.facts`, :meth:`~ArchitectureLab.tokenize`, :meth:`~ArchitectureLab.attention` /
  :meth:`~ArchitectureLab.attention_view`, :meth:`~ArchitectureLab.masks`,
  :meth:`~ArchitectureLab.objective`;
- the native tasks: :meth:`~ArchitectureLab.fill_mask`, :meth:`~ArchitectureLab.similarity`,
  :meth:`~ArchitectureLab.zero_shot`, :meth:`~ArchitectureLab.text_to_text`,
  :meth:`~ArchitectureLab.span_corruption`, :meth:`~ArchitectureLab.next_token`,
  :meth:`~ArchitectureLab.step`, :meth:`~ArchitectureLab.continue_text`;
- :meth:`~ArchitectureLab.run_all`: the whole tab for up to three models (one per family) on one
  text, returning a :class:`Comparison` with one :class:`ModelReport` per model. A model that cannot
  load or run gets its ``error`` message and the others still run.

Text longer than ``settings.max_prompt_chars`` and empty text raise InvalidInputError; text longer
than a model's context is truncated and said so in the results' ``note``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

from playground.architectures import attention as _attention
from playground.architectures import facts as _facts
from playground.architectures import masks as _masks
from playground.architectures import objectives as _objectives
from playground.architectures import tasks as _tasks
from playground.architectures import tokens as _tokens
from playground.architectures.loading import CACHE_PREFIX, LoadedModel, load_shared
from playground.architectures.text import check_text
from playground.errors import InvalidInputError, ModelUnavailableError, PlaygroundError
from playground.models.cache import ModelCache
from playground.models.catalog import FAMILIES, ModelSpec
from playground.models.sources import ProgressCallback

if TYPE_CHECKING:
    from playground.backends.provider import EngineProvider

T = TypeVar("T")
ATTENTION_BUDGET_BYTES = 64 * 2**20
MAX_MODELS = 3


def _option(default, help: str, factory=None):
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class CompareOptions:
    """What :meth:`ArchitectureLab.run_all` does for each model; the help texts become the widgets' info."""

    top_k: int = _option(5, "How many candidate tokens to list for a mask or the next token.")
    candidates: tuple[str, ...] = _option(
        _tasks.DEFAULT_CANDIDATES, "Sentences compared with the input by the embedding model, one per line.")
    labels: tuple[tuple[str, str], ...] = _option(
        _tasks.DEFAULT_LABELS, "Zero-shot labels as 'label: description' lines; the text goes to the closest.")
    mask: int | str | None = _option(
        None, "The word BERT must predict (its number from 0, or the word); type [MASK] in the text instead.")
    auto_mask: bool = _option(True, "Hide the last word when the text has no [MASK] and no word was picked.")
    instruction: str = _option(_tasks.DEFAULT_INSTRUCTION,
                               "Instruction for the encoder-decoder's text-to-text run (empty: skip it).")
    seed: int = _option(0, "Seed for the random choices (masked tokens, corrupted spans); same seed, same choice.")
    word_spans: tuple[tuple[int, int], ...] = _option(
        (), "Word spans to corrupt for T5 (empty: ~15% of the tokens in spans of mean length 3, by the seed).")
    continue_tokens: int = _option(0, "Tokens the decoder continues the text by (0: only the next-token list).")
    attention: bool = _option(True, "Extract attention maps (once per model and text; layers and heads reuse it).")
    max_tokens: int = _option(_attention.DEFAULT_MAX_TOKENS, "The most tokens a heatmap shows.")

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)


@dataclass(frozen=True)
class ModelReport:
    """Everything the tab shows for one model; ``error`` is set when a part (or the load) failed."""

    model_id: str
    name: str
    family: str
    objective: str
    error: str = ""
    # what ``error`` is: "unavailable" (no weights here), "failed" (the load or a part failed), "" (no error)
    error_kind: str = ""
    facts: _facts.ModelFacts | None = None
    tokens: _tokens.Tokenization | None = None
    attention: _attention.AttentionMaps | None = None
    masks: _masks.MaskPatterns | None = None
    objective_example: _objectives.ObjectiveExample | None = None
    fill_mask: _tasks.FillMaskResult | None = None
    similarity: _tasks.SimilarityResult | None = None
    zero_shot: _tasks.ZeroShotResult | None = None
    text_to_text: _tasks.TextToTextResult | None = None
    span_corruption: _tasks.SpanCorruptionResult | None = None
    next_token: _tasks.NextTokenResult | None = None
    continuation: _tasks.Continuation | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class ModelTask:
    """What one chosen model does with the tab's text: its native ``task`` (the catalog's head: masked_lm fills
    [MASK], embedding ranks sentences and labels, seq2seq restores spans and rewrites, causal_lm predicts the
    next token) and whether its weights are here without the network."""

    model_id: str
    name: str
    family: str
    task: str
    available: bool


@dataclass(frozen=True)
class Comparison:
    text: str
    reports: tuple[ModelReport, ...]
    seconds: float

    def report(self, model_id: str) -> ModelReport:
        return next(r for r in self.reports if r.model_id == model_id)

    @property
    def errors(self) -> dict[str, str]:
        return {r.model_id: r.error for r in self.reports if r.error}


def _first_line(exc: BaseException) -> str:
    """A user-facing message: a PlaygroundError's own text, else the exception's type and first line."""
    text = str(exc).strip()
    if isinstance(exc, PlaygroundError):
        return text
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else 'no details'}"


class ArchitectureLab:
    """The logic of the Architectures tab, shared by every user of one app (thread-safe)."""

    def __init__(self, engines: "EngineProvider", attention_budget_bytes: int = ATTENTION_BUDGET_BYTES):
        self.engines = engines
        self.attention_cache = ModelCache(attention_budget_bytes)

    # -- models -----------------------------------------------------------
    @property
    def settings(self):
        return self.engines.settings

    def spec(self, model_id: str) -> ModelSpec:
        return self.engines.catalog.get(model_id)

    def models(self, family: str | None = None) -> list[ModelSpec]:
        """Catalog models this tab can show (all of them), optionally of one family."""
        catalog = self.engines.catalog
        return list(catalog.models) if family is None else catalog.by_family(family)

    def available_offline(self, model_id: str) -> bool:
        """True when the weights are packaged or in the local models folder (no download needed)."""
        return self.engines.resolver.is_available_offline(self.spec(model_id))

    def default_models(self) -> tuple[str, ...]:
        """One model per family whose weights are here without the network (the settings' default decoder first)."""
        chosen = []
        default = self.settings.default_model
        for family in FAMILIES:
            specs = sorted(self.models(family), key=lambda s: s.id != default)
            found = next((s.id for s in specs if self.engines.resolver.is_available_offline(s)), None)
            if found:
                chosen.append(found)
        return tuple(chosen)

    def tasks_for(self, model_ids: Sequence[str | None]) -> tuple[ModelTask, ...]:
        """What each chosen model (unknown ids and empty choices left out) does with the text, so the tab's help
        describes the models actually chosen (an offline encoder may be MiniLM, which has no [MASK] to fill)."""
        tasks = []
        for model_id in model_ids:
            if not model_id:
                continue
            try:
                spec = self.spec(model_id)
            except PlaygroundError:
                continue
            tasks.append(ModelTask(model_id, spec.name, spec.family, spec.head,
                                   self.engines.resolver.is_available_offline(spec)))
        return tuple(tasks)

    def load(self, model_id: str, progress=None) -> LoadedModel:
        """The model, loaded once for the whole app through the shared model cache."""
        return load_shared(self.engines, model_id, progress)

    def loaded(self, model_id: str) -> LoadedModel | None:
        """The model if it is already loaded (never loads)."""
        return self.engines.cache.peek((CACHE_PREFIX, model_id))

    def clear(self) -> None:
        """Forget the cached attention maps (the models stay in the shared cache)."""
        self.attention_cache.clear()

    def _text(self, text: str, what: str = "text") -> str:
        return check_text(text, self.settings.max_prompt_chars, what)

    # -- facts, tokens, attention, masks, objectives ------------------------
    def facts(self, model_id: str) -> _facts.ModelFacts:
        return _facts.model_facts(self.load(model_id))

    def tokenize(self, model_id: str, text: str) -> _tokens.Tokenization:
        return _tokens.tokenize(self.load(model_id), self._text(text))

    def attention(self, model_id: str, text: str, target: str | None = None,
                  max_tokens: int = _attention.DEFAULT_MAX_TOKENS, window_start: int = 0) -> _attention.AttentionMaps:
        """Attention maps of ``model_id`` on ``text``: extracted on the first call, then from the cache."""
        self._text(text)
        if target is not None:
            self._text(target, "target")
        loaded = self.load(model_id)
        key = (model_id, text, target, max_tokens, window_start)

        def extract():
            maps = _attention.extract_attention(loaded, text, target, max_tokens, window_start)
            return maps, maps.nbytes

        return self.attention_cache.get_or_load(key, extract)

    def attention_view(self, model_id: str, text: str, kind: str | None = None, layer: int = 0,
                       head: int | None = None, target: str | None = None,
                       max_tokens: int = _attention.DEFAULT_MAX_TOKENS, window_start: int = 0
                       ) -> _attention.AttentionView:
        """One heatmap (layer, head or the mean of the heads), cut from the cached maps."""
        return self.attention(model_id, text, target, max_tokens, window_start).view(kind, layer, head)

    def masks(self, model_id: str, text: str, target: str | None = None,
              max_tokens: int = _masks.MAX_MASK_TOKENS) -> _masks.MaskPatterns:
        """The family's mask patterns drawn on the model's own tokens of ``text`` (and ``target``)."""
        loaded = self.load(model_id)
        tokens = [t.label for t in _tokens.tokenize(loaded, self._text(text)).tokens]
        target_tokens = None
        if target is not None:
            target_tokens = [t.label for t in _tokens.tokenize(loaded, self._text(target, "target")).tokens]
        return _masks.mask_patterns(loaded.family, tokens, target_tokens, max_tokens)

    def objective(self, model_id: str, text: str, seed: int = 0, objective: str | None = None
                  ) -> _objectives.ObjectiveExample:
        """The pre-training objective (the model's own, or ``objective``) shown on ``text`` with its tokenizer."""
        loaded = self.load(model_id)
        return _objectives.objective_example(objective or loaded.spec.objective, loaded.tokenizer, self._text(text),
                                             seed)

    # -- native tasks -------------------------------------------------------
    def fill_mask(self, model_id: str, text: str, mask: int | str | None = None, top_k: int = 5,
                  auto_mask: bool = False) -> _tasks.FillMaskResult:
        return _tasks.fill_mask(self.load(model_id), self._text(text), mask, top_k, auto_mask)

    def similarity(self, model_id: str, text: str, candidates: Sequence[str] | str = _tasks.DEFAULT_CANDIDATES
                   ) -> _tasks.SimilarityResult:
        return _tasks.similarity(self.load(model_id), self._text(text), candidates)

    def zero_shot(self, model_id: str, text: str, labels=_tasks.DEFAULT_LABELS) -> _tasks.ZeroShotResult:
        return _tasks.zero_shot(self.load(model_id), self._text(text), labels)

    def text_to_text(self, model_id: str, text: str, instruction: str = _tasks.DEFAULT_INSTRUCTION,
                     max_new_tokens: int = 48) -> _tasks.TextToTextResult:
        return _tasks.text_to_text(self.load(model_id), self._text(text), instruction,
                                   min(max_new_tokens, self.settings.request_token_limit))

    def span_corruption(self, model_id: str, text: str, seed: int = 0, noise_density: float = 0.15,
                        mean_span_length: float = 3.0, word_spans: Sequence[tuple[int, int]] | None = None
                        ) -> _tasks.SpanCorruptionResult:
        return _tasks.span_corruption(self.load(model_id), self._text(text), seed, noise_density, mean_span_length,
                                      word_spans)

    def next_token(self, model_id: str, text: str, top_k: int = 10) -> _tasks.NextTokenResult:
        return _tasks.next_token(self.load(model_id), self._text(text), top_k)

    def step(self, model_id: str, text: str, choice: int | None = None, top_k: int = 10, temperature: float = 0.0,
             seed: int | None = None) -> _tasks.StepResult:
        return _tasks.step(self.load(model_id), self._text(text), choice, top_k, temperature, seed)

    def continue_text(self, model_id: str, text: str, max_new_tokens: int = 20, temperature: float = 0.0,
                      top_k: int = 50, seed: int | None = None) -> _tasks.Continuation:
        return _tasks.continue_text(self.load(model_id), self._text(text), max_new_tokens, temperature, top_k, seed,
                                    token_limit=self.settings.request_token_limit)

    # -- the whole tab ------------------------------------------------------
    def run_all(self, text: str = _tasks.DEFAULT_TEXT, model_ids: Sequence[str] | None = None,
                options: CompareOptions | None = None, progress: ProgressCallback | None = None) -> Comparison:
        """Run the tab for each model on ``text``: facts, tokens, masks, objective, attention and native task.

        ``model_ids`` defaults to :meth:`default_models`. Bad text (empty, too long) raises
        InvalidInputError before any model runs; a model that fails gets its ``error`` in its report.
        ``progress(fraction, message)`` hears about loads and downloads (the first run of a model).
        """
        started = time.perf_counter()
        self._text(text)
        options = options or CompareOptions()
        ids = list(dict.fromkeys(model_ids if model_ids is not None else self.default_models()))
        if not ids:
            raise InvalidInputError("Choose at least one model to compare.")
        if len(ids) > MAX_MODELS:
            raise InvalidInputError(f"Compare at most {MAX_MODELS} models at once (one per family).")
        reports = []
        for i, model_id in enumerate(ids):
            if progress:
                progress(i / len(ids), f"Running {model_id}")
            reports.append(self._report(model_id, text, options, progress))
        if progress:
            progress(1.0, "Done")
        return Comparison(text, tuple(reports), time.perf_counter() - started)

    def _report(self, model_id: str, text: str, options: CompareOptions, progress=None) -> ModelReport:
        started = time.perf_counter()
        try:
            spec = self.spec(model_id)
        except PlaygroundError as exc:
            return ModelReport(model_id, model_id, "", "", error=str(exc), error_kind="failed")
        base = dict(model_id=model_id, name=spec.name, family=spec.family, objective=spec.objective)
        try:
            loaded = self.load(model_id, progress)
        except ModelUnavailableError as exc:
            where = "offline" if self.settings.offline else "here"
            return ModelReport(**base, error=f"Not available {where}: {exc}", error_kind="unavailable",
                               seconds=time.perf_counter() - started)
        except Exception as exc:  # one model's failure must not stop the others
            return ModelReport(**base, error=_first_line(exc), error_kind="failed",
                               seconds=time.perf_counter() - started)
        errors: list[str] = []
        parts: dict[str, object] = {}

        def attempt(name: str, run: Callable[[], T]) -> None:
            try:
                parts[name] = run()
            except Exception as exc:
                errors.append(_first_line(exc))

        attempt("facts", lambda: _facts.model_facts(loaded))
        attempt("tokens", lambda: _tokens.tokenize(loaded, text))
        attempt("objective_example",
                lambda: _objectives.objective_example(spec.objective, loaded.tokenizer, text, options.seed))
        if options.attention:
            attempt("attention", lambda: self.attention(model_id, text, max_tokens=options.max_tokens))
        head = spec.head
        if head == "masked_lm":
            attempt("fill_mask", lambda: _tasks.fill_mask(loaded, text, options.mask, options.top_k,
                                                          options.auto_mask))
        elif head == "embedding":
            attempt("similarity", lambda: _tasks.similarity(loaded, text, options.candidates))
            attempt("zero_shot", lambda: _tasks.zero_shot(loaded, text, options.labels))
        elif head == "seq2seq":
            attempt("span_corruption", lambda: _tasks.span_corruption(loaded, text, options.seed,
                                                                      word_spans=options.word_spans or None))
            if options.instruction.strip():
                attempt("text_to_text", lambda: _tasks.text_to_text(loaded, text, options.instruction))
        elif head == "causal_lm":
            attempt("next_token", lambda: _tasks.next_token(loaded, text, options.top_k))
            if options.continue_tokens:
                attempt("continuation", lambda: _tasks.continue_text(
                    loaded, text, options.continue_tokens, token_limit=self.settings.request_token_limit))
        tokens = parts.get("tokens")
        attention = parts.get("attention")
        if tokens is not None:
            target = list(attention.target_tokens) if attention is not None and attention.target_tokens else None
            attempt("masks", lambda: _masks.mask_patterns(spec.family, [t.label for t in tokens.tokens], target,
                                                          options.max_tokens))
        return ModelReport(**base, error=" ".join(errors), error_kind="failed" if errors else "",
                           seconds=time.perf_counter() - started, **parts)  # type: ignore[arg-type]
