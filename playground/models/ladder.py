"""The quantization ladder: one model in every GGUF type from F32 down to Q2_K, measured side by side.

For each type, :func:`build_ladder` quantizes the source GGUF with llama.cpp's
own quantizer (:func:`playground.models.quantize.quantize_gguf`), notes the
file's size and bits per weight, and scores it with
llama-cpp-python on one bundled text written for this project
(``examples/quantization/perplexity.txt``):

- **perplexity**: exp of the mean negative log-likelihood of each next token;
- **top-1 agreement with F32**: the share of positions where the type's most
  likely next token is the F32 model's;
- **KL to F32**: the mean Kullback-Leibler divergence of the type's next-token
  distribution from the F32 one, in nats per token;
- **decode tokens/s**: :data:`DECODE_TOKENS` greedy tokens after a fixed prompt,
  the faster of :data:`SPEED_ROUNDS` rounds timed in this build (the ratio to
  F32 is the figure to read). llama.cpp's threads wait for each other at every
  token, so another program on the cores can make a speed ten times slower: the
  share of the CPU other programs took while each speed was timed is kept with
  it, and above :data:`BUSY_PCT` the speed is marked unreliable.

Size is the file's; bits per weight are the tensors' bytes over their weights as
llama.cpp counts them when it loads the file (reading the GGUF header with the
``gguf`` package costs seconds per file for a large vocabulary).

Every type reads the same token ids (the text tokenized once by the F32 model,
at most :data:`MAX_TEXT_TOKENS` of them) and decodes greedily, so two builds of
one ladder differ only by the CPU's rounding and its load. F32 is always built:
it is the reference. Each type is quantized from the source file; a quantized
source (the packaged SmolLM2 is Q4_1) is dequantized tensor by tensor first, so
every rung carries the source's rounding error too: the result names the source
and its type, and :attr:`LadderResult.requantized` says so.

The work is bounded and leaves nothing behind: one ladder builds at a time per
work dir (an ``flock`` that other threads and processes wait on, cancellably),
the quantized files (hundreds of MB each) are deleted as soon as they are
scored, so at most one exists at a time, and what stays is one small JSON file
per ladder in ``<work_dir>/<key>/``, the key being the source file's identity
(name, size, modification time), the text's hash and the type list. A second
build of the same ladder reads that file and does no work; callers that asked
at the same moment wait for the first and read its result.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

from playground.atomic import atomic_write_json
from playground.errors import InvalidInputError, InvalidParameterError, ModelUnavailableError, PlaygroundError, \
    SaveError
from playground.models.gguf_info import GGUFFacts, read_gguf_facts
from playground.models.quantize import QUANT_TYPE_NAMES, quant_type, quantize_gguf

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, so builds there are not serialised
    fcntl = None  # type: ignore[assignment]

TEXT_PATH = Path(__file__).resolve().parents[2] / "examples" / "quantization" / "perplexity.txt"
REFERENCE = "F32"
MAX_TEXT_TOKENS = 512  # positions scored: the bundled text is ~520 tokens for SmolLM2's tokenizer
MIN_TEXT_TOKENS = 16
MAX_TEXT_CHARS = 20_000  # a text longer than this is refused before it is tokenized
DECODE_PROMPT_TOKENS = 16  # the decode-speed prompt: the text's first tokens
DECODE_TOKENS = 32  # greedy tokens timed per type
BATCH = 64  # tokens per llama_decode call while scoring
SCORING_VERSION = 1  # part of the cache key: change it when the way a rung is measured changes
RESULT_FILE = "ladder.json"
LOCK_FILE = ".building.lock"
POLL_S = 0.2  # how often a caller waiting for the lock looks at its cancel flag
F32_BYTES_PER_WEIGHT = 4
K_BLOCK = 256  # weights per k-quant super-block: a row must be a multiple of it
BUSY_PCT = 15.0  # above this share of the CPU taken by other programs, a speed is marked unreliable
SPEED_ROUNDS = 2  # decode speed is the faster of this many timed rounds (a busy machine's spikes matter less)


# hold(cancel) -> a context manager giving True once admitted (the app's generation slots; see
# playground.backends.slots), False when cancel was set while waiting.
SlotHolder = Callable[[threading.Event | None], contextlib.AbstractContextManager]


def no_slot(cancel: threading.Event | None = None) -> contextlib.AbstractContextManager:
    """Admitted at once: the slot holder of callers that share the machine with nobody (tests, scripts)."""
    return contextlib.nullcontext(True)


class LadderCancelled(PlaygroundError):
    """The ladder was stopped before it finished; nothing of it was kept."""


@dataclass(frozen=True)
class LadderStep:
    """Where a build is, for a progress bar: ``stage`` is waiting, quantizing, perplexity, speed or done."""

    stage: str
    type_name: str = ""
    index: int = 0  # 1-based position of ``type_name`` in the ladder
    total: int = 0

    def __str__(self) -> str:
        if self.stage == "waiting":
            return "waiting for another ladder to finish"
        if self.stage == "quantizing":
            return f"quantizing {self.type_name} ({self.index} of {self.total})"
        if self.stage == "perplexity":
            return f"scoring {self.type_name}: perplexity... ({self.index} of {self.total})"
        if self.stage == "speed":
            return f"scoring {self.type_name}: decode speed... ({self.index} of {self.total})"
        return "done"


Progress = Callable[[float, LadderStep], None]


@dataclass(frozen=True)
class LadderRung:
    """One GGUF type's figures."""

    type: str
    file_mb: float
    bits_per_weight: float
    decode_tokens_per_s: float
    speed_vs_f32: float  # decode tokens/s over F32's, measured in the same build
    perplexity: float
    top1_agreement_pct: float  # % of positions whose most likely next token is F32's
    kl_to_f32: float  # mean KL(F32 || this type) over the positions, nats per token
    others_cpu_pct: float = 0.0  # % of the CPU other programs used while the speed was timed

    @property
    def speed_reliable(self) -> bool:
        """False when other programs competed for the CPU while the speed was timed (llama.cpp's threads
        wait for each other at every token, so its speed then falls far more than the share taken)."""
        return self.others_cpu_pct < BUSY_PCT

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LadderResult:
    """A finished ladder, as stored in its JSON file."""

    key: str
    source_name: str  # the source GGUF's file name
    source_type: str  # the quantisation the source file declares, e.g. Q4_1
    source_mb: float
    text_name: str
    text_sha256: str
    tokens: int  # token ids scored (the text, cut at MAX_TEXT_TOKENS)
    decode_tokens: int
    threads: int
    seconds: float  # how long the build took
    rungs: tuple[LadderRung, ...]
    source_label: str = ""  # what to call the source (the catalog's model name); the file name when empty
    source_origin: str = ""  # where the source came from: packaged, local, hub (empty when not known)
    hidden_size: int = 0  # the model's width: k-quants need rows that are a multiple of K_BLOCK
    cached: bool = False  # read from the cache by this call (not stored)

    @property
    def requantized(self) -> bool:
        """True when the source is itself quantized, so every rung inherits its rounding error."""
        return self.source_type.upper() not in ("F32", "F16", "BF16", "ALL_F32")

    def rung(self, type_name: str) -> LadderRung:
        wanted = quant_type(type_name).name
        for rung in self.rungs:
            if rung.type == wanted:
                return rung
        raise InvalidParameterError(f"This ladder has no {wanted} rung; it has {', '.join(self.types)}.")

    @property
    def k_quants_fall_back(self) -> bool:
        """True when most matrices are too narrow for k-quant blocks, so llama.cpp stores the ``_K`` types'
        matrices in older formats (Q4_K_M mostly as Q5_0, Q2_K as Q4_0) and their bits per weight stay higher
        than the names say."""
        return bool(self.hidden_size) and self.hidden_size % K_BLOCK != 0 and any("_K" in t for t in self.types)

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(r.type for r in self.rungs)

    def source_note(self) -> str:
        """Where the weights came from, in one sentence (English; the UI composes its own translation)."""
        if self.requantized:
            return (f"source: {self.source_name} ({self.source_type}); every type is re-quantized from its "
                    f"dequantized weights, so each one also carries {self.source_type}'s rounding error")
        return f"source: {self.source_name} ({self.source_type}); every type is quantized from it"

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("cached")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LadderResult":
        data = dict(data)
        data.pop("cached", None)
        rungs = tuple(LadderRung(**rung) for rung in data.pop("rungs"))
        return cls(rungs=rungs, **data)

    CSV_COLUMNS = ("type", "file_mb", "bits_per_weight", "decode_tokens_per_s", "speed_vs_f32", "perplexity",
                   "top1_agreement_pct", "kl_to_f32", "others_cpu_pct", "speed_reliable")

    def csv(self) -> str:
        """The ladder as CSV text (a spreadsheet opens it): one row per type, the stored figures as they are."""
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.CSV_COLUMNS)
        for rung in self.rungs:
            writer.writerow([rung.type, rung.file_mb, rung.bits_per_weight, rung.decode_tokens_per_s,
                             rung.speed_vs_f32, rung.perplexity, rung.top1_agreement_pct, rung.kl_to_f32,
                             rung.others_cpu_pct, "yes" if rung.speed_reliable else "no"])
        return out.getvalue()

    def table(self) -> str:
        """The ladder as a plain-text table (for the CLI, logs and the curious)."""
        head = f"{'type':<7} {'MB':>7} {'bits/w':>6} {'tok/s':>7} {'×F32':>5} {'ppl':>8} {'top-1':>6} {'KL':>7}"
        lines = [head, "-" * len(head)]
        for r in self.rungs:
            lines.append(f"{r.type:<7} {r.file_mb:7.1f} {r.bits_per_weight:6.2f} {r.decode_tokens_per_s:7.1f} "
                         f"{r.speed_vs_f32:5.2f} {r.perplexity:8.2f} {r.top1_agreement_pct:5.1f}% "
                         f"{r.kl_to_f32:7.4f}" + ("" if r.speed_reliable else
                                                  f"  (speed: others used {r.others_cpu_pct:.0f}% of the CPU)"))
        lines.append(f"{self.source_note()}; {self.tokens} tokens of {self.text_name}; {self.threads} threads")
        return "\n".join(lines)


# --------------------------------------------------------------------------- inputs


def ladder_types(types: Sequence[str] | None) -> tuple[str, ...]:
    """The types to build, in the ladder's order (F32 first, always there: it is the reference).

    Unknown names are refused with the list of choices; an empty selection is refused too.
    """
    if types is None:
        return QUANT_TYPE_NAMES
    if isinstance(types, str):
        types = [types]
    chosen = {quant_type(name).name for name in types}
    if not chosen:
        raise InvalidParameterError(f"Choose at least one GGUF type: {', '.join(QUANT_TYPE_NAMES)}.").keyed(
            "ladder.error.no_types", types=", ".join(QUANT_TYPE_NAMES))
    chosen.add(REFERENCE)
    return tuple(name for name in QUANT_TYPE_NAMES if name in chosen)


def bundled_text() -> str:
    return TEXT_PATH.read_text(encoding="utf-8")


def check_text(text: str | None) -> str:
    text = (text or "").strip()
    if not text:
        raise InvalidInputError("The text to score is empty: give a few sentences of prose.")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInputError(f"The text to score has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}. "
                                f"Only its first {MAX_TEXT_TOKENS} tokens are scored anyway: shorten it.")
    return text


def ladder_key(source: Path, text: str, types: Sequence[str]) -> str:
    """The cache key: the source file's identity (name, size, mtime), the text's hash, the types, the method."""
    stat = Path(source).stat()
    identity = {"source": Path(source).name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "text": hashlib.sha256(text.encode("utf-8")).hexdigest(), "types": list(types),
                "tokens": MAX_TEXT_TOKENS, "decode": DECODE_TOKENS, "version": SCORING_VERSION}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


# --------------------------------------------------------------------------- scoring with llama.cpp


@dataclass
class _Reference:
    """What the F32 model said: the token ids, its top-1 choices and its log-probabilities (float16)."""

    tokens: list[int]
    top1: "object"  # numpy int array, one per scored position
    logprobs: "object"  # numpy float16 array, positions x vocabulary


@dataclass(frozen=True)
class _Scores:
    file_mb: float
    bits_per_weight: float
    perplexity: float
    agreement_pct: float
    kl: float
    tokens_per_s: float
    others_cpu_pct: float


def _quiet_llama() -> None:
    """llama.cpp logs every tensor it quantizes; keep the app's log for errors, as Llama(verbose=False) does."""
    import logging

    import llama_cpp  # noqa: F401  (sets up the logger the next line names)

    logger = logging.getLogger("llama-cpp-python")
    if logger.level < logging.ERROR:
        logger.setLevel(logging.ERROR)


def _log_softmax(logits):
    import numpy as np

    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class _Scorer:
    """One GGUF file opened in llama.cpp for scoring; a context manager that closes it."""

    def __init__(self, path: Path, threads: int, n_ctx: int):
        from playground.backends.llama_loading import llama_class

        Llama = llama_class()
        self.path = path
        try:
            self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=BATCH, n_ubatch=BATCH, n_threads=threads,
                             n_threads_batch=threads, seed=0, verbose=False)
        except Exception as exc:
            raise PlaygroundError(f"llama.cpp could not load the {path.stem} file it just wrote: {exc}") from None
        self.n_vocab = int(self.llm.n_vocab())
        self.ctx = self.llm.ctx

    @property
    def bits_per_weight(self) -> float:
        """The tensors' bytes over their weights, as llama.cpp counts them when it loads the file."""
        import llama_cpp

        params = llama_cpp.llama_model_n_params(self.llm.model)
        return llama_cpp.llama_model_size(self.llm.model) * 8 / params if params else 0.0

    def __enter__(self) -> "_Scorer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.llm.close()

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def _clear(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)

    def _decode(self, batch, tokens: Sequence[int], start: int, all_logits: bool) -> None:
        import llama_cpp

        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = all_logits or i == len(tokens) - 1
        failed = llama_cpp.llama_decode(self.ctx, batch)
        if failed:
            raise PlaygroundError(f"llama.cpp could not evaluate the text (llama_decode returned {failed}).")

    def _logits(self, rows: int):
        import llama_cpp
        import numpy as np

        pointer = llama_cpp.llama_get_logits(self.ctx)
        array = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                                      shape=(rows, self.n_vocab))
        return np.array(array, dtype=np.float32)

    @contextlib.contextmanager
    def _batch(self) -> Iterator[object]:
        import llama_cpp

        batch = llama_cpp.llama_batch_init(BATCH, 0, 1)
        try:
            yield batch
        finally:
            llama_cpp.llama_batch_free(batch)

    def next_token_logprobs(self, tokens: Sequence[int], cancel: threading.Event | None) -> Iterator[tuple]:
        """(first position, log-probabilities) for each block of positions 0..len-2 (predicting tokens 1..len-1)."""
        self._clear()
        with self._batch() as batch:
            for start in range(0, len(tokens) - 1, BATCH):
                _check(cancel)
                block = list(tokens[start:min(start + BATCH, len(tokens) - 1)])
                self._decode(batch, block, start, all_logits=True)
                yield start, _log_softmax(self._logits(len(block)))

    def decode_speed(self, prompt: Sequence[int], cancel: threading.Event | None) -> float:
        """Greedy tokens per second over DECODE_TOKENS single-token steps after ``prompt``: the best of
        SPEED_ROUNDS rounds, each from an empty cache."""
        import numpy as np

        best = 0.0
        with self._batch() as batch:
            for _ in range(SPEED_ROUNDS):
                self._clear()
                self._decode(batch, list(prompt), 0, all_logits=False)
                token = int(np.argmax(self._logits(1)[0]))
                started = time.perf_counter()
                for step in range(DECODE_TOKENS):
                    _check(cancel)
                    self._decode(batch, [token], len(prompt) + step, all_logits=False)
                    token = int(np.argmax(self._logits(1)[0]))
                elapsed = time.perf_counter() - started
                best = max(best, DECODE_TOKENS / elapsed if elapsed > 0 else 0.0)
        return best


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise LadderCancelled("The ladder was stopped before it finished; nothing of it was kept.")


def _score(scorer: _Scorer, reference: _Reference | None, text: str, cancel, on_speed: Callable[[], None]
           ) -> tuple[_Scores, _Reference]:
    """Perplexity, agreement and KL against ``reference`` (None: this is F32, which becomes the reference)."""
    import numpy as np

    if reference is None:
        tokens = scorer.tokenize(text)[:MAX_TEXT_TOKENS]
        if len(tokens) < MIN_TEXT_TOKENS:
            raise InvalidInputError(f"The text to score is only {len(tokens)} tokens; give at least "
                                    f"{MIN_TEXT_TOKENS}.")
        positions = len(tokens) - 1
        top1 = np.zeros(positions, dtype=np.int64)
        logprobs = np.zeros((positions, scorer.n_vocab), dtype=np.float16)
        made = _Reference(tokens, top1, logprobs)
    else:
        tokens, made = reference.tokens, reference
        if scorer.n_vocab != reference.logprobs.shape[1]:
            raise PlaygroundError("A quantized file has another vocabulary than its F32 reference.")
    targets = np.asarray(tokens[1:], dtype=np.int64)
    nll = agree = kl = 0.0
    for start, block in scorer.next_token_logprobs(tokens, cancel):
        rows = np.arange(start, start + len(block))
        nll -= float(block[np.arange(len(block)), targets[rows]].astype(np.float64).sum())
        choice = block.argmax(axis=1)
        if reference is None:
            made.top1[rows] = choice
            made.logprobs[rows] = block.astype(np.float16)
            agree += len(block)
        else:
            agree += float((choice == reference.top1[rows]).sum())
            ref = reference.logprobs[rows].astype(np.float32)
            kl += float((np.exp(ref) * (ref - block)).sum(dtype=np.float64))
    positions = len(tokens) - 1
    on_speed()
    from playground.bench.core import CpuWatch

    watch = CpuWatch()
    speed = scorer.decode_speed(tokens[:DECODE_PROMPT_TOKENS], cancel)
    others = watch.others_share()
    return _Scores(scorer.path.stat().st_size / 1e6, scorer.bits_per_weight, math.exp(nll / positions),
                   100.0 * agree / positions, max(0.0, kl / positions), speed,
                   100.0 * others if others is not None else 0.0), made


# --------------------------------------------------------------------------- the ladder


@contextlib.contextmanager
def _build_lock(work_dir: Path, cancel: threading.Event | None, waiting: Callable[[], None]) -> Iterator[None]:
    """Hold the work dir's build lock (an flock: other threads and processes wait too), cancellably."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(work_dir / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
    told = False
    try:
        while fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    waiting()
                    told = True
                _check(cancel)
                time.sleep(POLL_S)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_scratch(folder: Path) -> None:
    """Delete the quantized files (and any half-written ones) in a ladder's folder; the JSON stays."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name != RESULT_FILE and (path.suffix == ".gguf" or ".partial-" in path.name):
            with contextlib.suppress(OSError):
                path.unlink()


def read_cached(work_dir: Path, key: str) -> LadderResult | None:
    """The stored ladder for ``key``, or None (missing or unreadable: it is built again)."""
    try:
        data = json.loads((Path(work_dir) / key / RESULT_FILE).read_text(encoding="utf-8"))
        return replace(LadderResult.from_dict(data), cached=True)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def build_ladder(source_gguf: str | Path, work_dir: str | Path, types: Sequence[str] | None = None,
                 text: str | None = None, threads: int = 0, progress: Progress | None = None,
                 cancel: threading.Event | None = None, *, slot: SlotHolder = no_slot,
                 make_room: Callable[[int], object] | None = None, source_facts: GGUFFacts | None = None,
                 source_label: str = "", source_origin: str = "") -> LadderResult:
    """The ladder of ``source_gguf`` over ``types`` (all seven when None), cached under ``work_dir``.

    ``text`` is the text to score (the bundled one when None); ``threads`` llama.cpp's threads (0: one per
    CPU). ``progress(fraction, LadderStep)`` hears each step; setting ``cancel`` stops the build between
    steps with :class:`LadderCancelled`. ``slot`` is held while each type is quantized and scored (the app's
    generation slots, so chats get their turn between types); ``make_room(bytes)`` is asked for the space the
    largest quantized file takes before any is written (the data dir's budget). ``source_facts`` spares
    reading the source's header again when the caller has it; ``source_label`` and ``source_origin`` are
    stored with the result to say where its weights came from.
    """
    source, work_dir = Path(source_gguf), Path(work_dir)
    chosen = ladder_types(types)
    text_name = TEXT_PATH.name if text is None else "the given text"
    text = check_text(bundled_text() if text is None else text)
    if not source.is_file():
        raise PlaygroundError(f"There is no GGUF file {source.name} to build a ladder from.")
    key = ladder_key(source, text, chosen)
    cached = read_cached(work_dir, key)
    if cached is not None:
        return cached
    report = progress or (lambda fraction, step: None)
    with _build_lock(work_dir, cancel, lambda: report(0.0, LadderStep("waiting"))):
        cached = read_cached(work_dir, key)  # built by whoever held the lock while this call waited
        if cached is not None:
            return cached
        facts = source_facts if source_facts is not None else read_gguf_facts(source)  # refuses a damaged file
        if make_room is not None:
            make_room(facts.parameters * F32_BYTES_PER_WEIGHT)
        threads = int(threads or 0) or (os.cpu_count() or 1)
        started = time.monotonic()
        measured, tokens = _measure(source, work_dir / key, facts, chosen, text, threads, report, cancel, slot)
        base_speed = measured[0][1].tokens_per_s or 1.0
        rungs = tuple(LadderRung(
            type=name, file_mb=round(scores.file_mb, 2), bits_per_weight=round(scores.bits_per_weight, 3),
            decode_tokens_per_s=round(scores.tokens_per_s, 2),
            speed_vs_f32=round(scores.tokens_per_s / base_speed, 3), perplexity=round(scores.perplexity, 4),
            top1_agreement_pct=round(scores.agreement_pct, 2), kl_to_f32=round(scores.kl, 5),
            others_cpu_pct=round(scores.others_cpu_pct, 1),
        ) for name, scores in measured)
        result = LadderResult(
            key=key, source_name=source.name, source_type=facts.file_type, source_mb=round(facts.file_size_mb, 2),
            text_name=text_name, text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), tokens=tokens,
            decode_tokens=DECODE_TOKENS, threads=threads, seconds=round(time.monotonic() - started, 2),
            rungs=rungs, source_label=source_label or source.stem, source_origin=source_origin,
            hidden_size=facts.hidden_size)
        atomic_write_json(work_dir / key / RESULT_FILE, result.as_dict(), "the quantization ladder's results")
        report(1.0, LadderStep("done", total=len(chosen)))
        return result


def _measure(source: Path, folder: Path, facts: GGUFFacts, types: tuple[str, ...], text: str, threads: int,
             report: Progress, cancel: threading.Event | None, slot: SlotHolder
             ) -> tuple[list[tuple[str, _Scores]], int]:
    """Quantize and score each type in turn, one file on disk at a time; ([(type, scores)], tokens scored)."""
    _quiet_llama()
    largest = facts.parameters * F32_BYTES_PER_WEIGHT
    folder.mkdir(parents=True, exist_ok=True)
    _remove_scratch(folder)  # what a killed build left
    free = shutil.disk_usage(folder).free
    if free < largest * 1.1:
        raise SaveError(f"The server's disk has {free / 1e9:.1f} GB free; the F32 file of this model needs about "
                        f"{largest / 1e9:.1f} GB while it is scored. Free some space and try again.")
    n_ctx = max(MAX_TEXT_TOKENS, DECODE_PROMPT_TOKENS + DECODE_TOKENS) + BATCH
    if facts.context_length:
        n_ctx = min(n_ctx, facts.context_length)
    total = len(types)
    reference: _Reference | None = None
    measured: list[tuple[str, _Scores]] = []
    try:
        for index, type_name in enumerate(types, start=1):
            def at(stage: str, part: float, index=index, type_name=type_name) -> None:
                report((index - 1 + part) / total, LadderStep(stage, type_name, index, total))

            at("quantizing", 0.0)
            with slot(cancel) as admitted:
                _check(cancel)
                if not admitted:  # pragma: no cover - a slot refuses only when cancel is set
                    raise LadderCancelled("The ladder was stopped before it finished; nothing of it was kept.")
                target = folder / f"{type_name}.gguf"
                try:
                    quantize_gguf(source, target, type_name, threads)
                    at("perplexity", 0.4)
                    with _Scorer(target, threads, n_ctx) as scorer:
                        scores, reference = _score(scorer, reference, text, cancel, lambda: at("speed", 0.8))
                finally:
                    with contextlib.suppress(OSError):
                        target.unlink()
            measured.append((type_name, scores))
    finally:
        _remove_scratch(folder)
    assert reference is not None
    return measured, len(reference.tokens)


def cached_ladder(source_gguf: str | Path, work_dir: str | Path, types: Sequence[str] | None = None,
                  text: str | None = None) -> LadderResult | None:
    """The stored ladder :func:`build_ladder` would return for these arguments, or None; never builds."""
    source = Path(source_gguf)
    if not source.is_file():
        return None
    text = check_text(bundled_text() if text is None else text)
    return read_cached(Path(work_dir), ladder_key(source, text, ladder_types(types)))


# --------------------------------------------------------------------------- the Quantization tab's controller


class QuantizationLadder:
    """The Quantization tab's controller: a catalog model id in, its ladder out.

    ``engines`` is the app's engine provider (``catalog``, ``resolve(model_id, "gguf")``, ``gguf_facts``);
    ladders are kept under ``work_dir`` (the data dir's ``ladder/``). ``slot`` is held while each type is
    quantized and scored, ``make_room(bytes)`` is the data dir's budget.
    """

    def __init__(self, engines, work_dir: Path, threads: int = 0, *, slot: SlotHolder = no_slot,
                 make_room: Callable[[int], object] | None = None) -> None:
        self.engines = engines
        self.work_dir = Path(work_dir)
        self.threads = threads
        self.slot = slot
        self.make_room = make_room

    def models(self) -> list:
        """The catalog's models that have a GGUF source."""
        return self.engines.catalog.with_gguf()

    def _source(self, model_id: str, progress=None):
        spec = self.engines.spec(model_id)
        if not spec.has_gguf:
            raise InvalidParameterError(f"{spec.name} has no GGUF source, so llama.cpp cannot quantize it; choose "
                                        f"one of: {', '.join(m.id for m in self.models())}.")
        return spec, self.engines.resolve(model_id, "gguf", progress)

    def cached(self, model_id: str, types: Sequence[str] | None = None) -> LadderResult | None:
        """The model's stored ladder for ``types``, or None (nothing is built or downloaded)."""
        spec = self.engines.spec(model_id)
        resolver = self.engines.resolver
        if not spec.has_gguf or not (resolver.offline or resolver.is_available_offline(spec, "gguf")):
            return None  # resolving would download it
        try:
            _, weights = self._source(model_id)
        except ModelUnavailableError:
            return None
        return cached_ladder(weights.path, self.work_dir, types)

    def build(self, model_id: str, types: Sequence[str] | None = None, progress: Progress | None = None,
              cancel: threading.Event | None = None) -> LadderResult:
        """The model's ladder over ``types`` (all seven when None): from the cache, or built now."""
        chosen = ladder_types(types)  # a bad type name is refused before anything is resolved
        spec, weights = self._source(model_id)
        return build_ladder(weights.path, self.work_dir, chosen, None, self.threads, progress, cancel,
                            slot=self.slot, make_room=self.make_room,
                            source_facts=self.engines.gguf_facts(model_id), source_label=spec.name,
                            source_origin=weights.origin)
