"""A run's result: the files a finished fine-tuning run leaves in its folder, and one typed record of them.

The trainer writes it (:meth:`RunResult.save`), and every reader takes it from
here: the Fine-tune tab's session (metrics, samples, the loss curve), the
downloads (:mod:`~playground.finetune.export`), the Prompt Lab's fine-tuned
models (:mod:`~playground.finetune.finetuned`), the data dir's budget and the
CLI. Beside the run store's own files (``config.yaml``, ``status.json``,
``progress.jsonl``, ...: :mod:`~playground.finetune.runs`) a run's folder holds:

- ``adapter/`` or ``model/`` (what the method saves: :attr:`Method.saves`): the
  weights as safetensors, the tokenizer, and ``playground.json`` (:class:`ResultInfo`:
  enough to rebuild the base and load the result back);
- ``samples.jsonl``: base and tuned answers to the first test examples, with
  per-example ROUGE (or correctness for a classifier), and where llama.cpp could
  serve the run, the fine-tuned model's answers on the quantised base with its
  adapter (``quantized_output``, ``quantized_rouge1``, ...);
- ``gguf/adapter.gguf``: the adapter as a llama.cpp LoRA adapter, when the run
  answered on llama.cpp (:mod:`~playground.finetune.gguf_adapter`);
- ``metrics.json``: :class:`RunMetrics`;
- ``downloads/``: the files built for download, once each
  (``<run id>-adapter.zip``, ``<run id>-merged.zip``, and for llama.cpp
  ``<run id>-adapter.gguf`` and ``<run id>-<TYPE>.gguf``: :mod:`~playground.finetune.gguf_export`;
  a lock on ``downloads/.lock`` while one is built).

Each is written atomically, weights first and metrics last, so a reader sees a
whole result or none. Missing or damaged files read as empty (a run still in
progress has none).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from playground.atomic import atomic_directory, atomic_write_json, atomic_write_jsonl
from playground.errors import PlaygroundError, TrainingError
from playground.finetune.forgetting import FORGETTING_TASKS, ForgettingReport
from playground.finetune.gguf_samples import BASE, QUANTIZED, TRANSFORMERS, TUNED, SampleEngine
from playground.finetune.methods import ADAPTER_DIR, MODEL_DIR, get_method
from playground.finetune.usage import weights_bytes
from playground.finetune.weights import ENCODER

INFO_FILE = "playground.json"  # beside the weights: base model, method, labels
SAMPLES_FILE = "samples.jsonl"
METRICS_FILE = "metrics.json"
DOWNLOADS_DIR = "downloads"
DOWNLOAD_LOCK = ".lock"  # in downloads/: held while an archive is built, and while the run is being removed
ROUGE_NAMES = ("rouge1", "rouge2", "rougeL")
ROUGE_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}


def _fields(cls, data: Mapping[str, Any]) -> dict[str, Any]:
    """The known keys of ``data`` for a record class (older or foreign files may lack some or carry others)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class ResultInfo:
    """What ``playground.json`` records beside the weights: enough to rebuild the base and load the result."""

    base_model: str = ""  # the catalog id or folder the run trained
    base_name: str = ""
    family: str = ""
    method: str = ""
    labels: tuple[str, ...] = ()  # a classifier's labels, by id
    target_modules: tuple[str, ...] = ()
    lora_r: int = 0
    lora_alpha: float = 0.0
    max_length: int = 0
    template: str = ""
    data: str = ""
    merged: bool = False  # the adapter merged into its base (a download's folder)

    @classmethod
    def of(cls, trainable, config) -> "ResultInfo":
        """The info of what ``trainable`` (a methods.TrainableModel) became under ``config``."""
        return cls(base_model=config.model, base_name=trainable.source.name, family=trainable.family,
                   method=config.method, labels=tuple(trainable.labels),
                   target_modules=tuple(trainable.target_modules), lora_r=config.lora_r,
                   lora_alpha=config.lora_alpha, max_length=config.max_length, template=config.template,
                   data=config.data)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ResultInfo":
        values = _fields(cls, data)
        for name in ("labels", "target_modules"):
            values[name] = tuple(values.get(name) or ())
        for name in ("base_model", "base_name", "family", "method", "template", "data"):
            values[name] = str(values.get(name) or "")
        return cls(**values)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def to_json(self) -> dict[str, Any]:
        data = {"base_model": self.base_model, "base_name": self.base_name, "family": self.family,
                "method": self.method, "labels": list(self.labels), "label2id": self.label2id,
                "target_modules": list(self.target_modules), "lora_r": self.lora_r, "lora_alpha": self.lora_alpha,
                "max_length": self.max_length, "template": self.template, "data": self.data}
        if self.merged:
            data["merged"] = True
        return data

    def write(self, folder: Path) -> None:
        """Into a folder being assembled (inside :func:`~playground.atomic.atomic_directory`)."""
        (Path(folder) / INFO_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


def read_info(folder: Path) -> ResultInfo:
    """The ``playground.json`` of an adapter or model folder written by a run; PlaygroundError otherwise."""
    path = Path(folder) / INFO_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlaygroundError(f"{Path(folder).name} has no {INFO_FILE}: it was not written by a fine-tuning run "
                              f"of the playground.") from None
    except (OSError, ValueError) as exc:
        raise PlaygroundError(f"Cannot read {path.name}: {getattr(exc, 'strerror', None) or exc}.") from None
    if not isinstance(data, Mapping):
        raise PlaygroundError(f"Cannot read {path.name}: it holds no record.")
    return ResultInfo.from_json(data)


@dataclass(frozen=True)
class RunMetrics:
    """What ``metrics.json`` holds: the run's figures, before and after. Every field has a default, so a
    file from an older run (or a job that writes only some of them) still reads."""

    model: str = ""
    method: str = ""
    family: str = ""
    trainable_parameters: int = 0
    total_parameters: int = 0
    trainable_share: float = 0.0
    steps: int = 0
    epochs: float = 0.0
    train_losses: tuple[float, ...] = ()  # one per logged step
    eval_loss: float | None = None  # the last validation loss
    test_loss_before: float | None = None
    test_loss_after: float | None = None
    tokens_per_s: float | None = None
    tokens_seen: int = 0
    padding_share: float = 0.0
    truncated: int = 0  # training examples cut at max_length
    data: Mapping[str, Any] = field(default_factory=dict)  # the source and each split's token statistics
    train_duration_s: float = 0.0
    duration_s: float = 0.0
    costs: Mapping[str, Any] = field(default_factory=dict)  # costs.CostReport.as_dict()
    output_dir: str = ""  # adapter or model
    sample_count: int = 0  # test examples answered before and after
    # a classifier: accuracy on the test split
    labels: tuple[str, ...] = ()
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    # a generative model: mean ROUGE of the samples (None without samples)
    rouge_before: Mapping[str, float] | None = None
    rouge_after: Mapping[str, float] | None = None
    rougeL_improvement: float | None = None
    # What produced the answers: the engine of the base and fine-tuned columns (transformers | llama.cpp; ""
    # in runs older than the choice, which all answered on transformers), and per system (base, tuned,
    # quantized) its SampleEngine as JSON.
    sample_engine: str = ""
    engines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The fine-tuned model on the quantised base with its adapter (llama.cpp): mean ROUGE, or None and the
    # reason there is no such column ("" in older runs, which never had one).
    rouge_quantized: Mapping[str, float] | None = None
    quantized_unavailable: str = ""
    # What the run used (playground.finetune.usage): its process's peak memory and what that peak measures
    # (cuda: torch's allocator; rss: the process's resident size), and the saved weights' size on disk (written
    # by RunResult.save). None in older runs.
    peak_memory_bytes: int | None = None
    peak_memory_kind: str = ""
    weights_bytes: int | None = None
    # The catastrophic forgetting check (ForgettingReport.to_json; empty when the run had it off or is older).
    forgetting: Mapping[str, Any] = field(default_factory=dict)

    @property
    def forgetting_report(self) -> ForgettingReport | None:
        return ForgettingReport.from_json(self.forgetting)
    # Wall-clock seconds per section of the run (progress.RUN_SECTIONS: load, base_scoring, training,
    # tuned_scoring, save); empty in runs older than the figure.
    phase_seconds: Mapping[str, float] = field(default_factory=dict)
    # A preference run (dpo): reward accuracy and margin on the held-out pairs before and after, and DPO's implicit
    # reward (preference.PreferenceMetrics.to_json); None for the other methods.
    preference: Mapping[str, Any] | None = None

    @property
    def classifier(self) -> bool:
        return self.family == ENCODER

    def engine_of(self, system: str) -> SampleEngine | None:
        """What answered for ``system`` (base, tuned or quantized); older runs answered on transformers."""
        engine = SampleEngine.from_json(self.engines.get(system))
        if engine is None and not self.engines and system in (BASE, TUNED):
            return SampleEngine(TRANSFORMERS)
        return engine

    @property
    def quantization_points(self) -> float | None:
        """ROUGE-L points the fine-tune keeps or loses on the quantised base (quantized - tuned)."""
        if not self.rouge_quantized or not self.rouge_after:
            return None
        return round(100 * (self.rouge_quantized["rougeL"] - self.rouge_after["rougeL"]), 2)

    @property
    def train_loss_first(self) -> float | None:
        return self.train_losses[0] if self.train_losses else None

    @property
    def train_loss_last(self) -> float | None:
        return self.train_losses[-1] if self.train_losses else None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RunMetrics":
        values = _fields(cls, data)
        for name in ("train_losses", "labels"):
            values[name] = tuple(values.get(name) or ())
        for name in ("data", "costs", "forgetting"):
            values[name] = dict(values.get(name) or {})
        values["phase_seconds"] = {str(k): float(v) for k, v in dict(values.get("phase_seconds") or {}).items()
                                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        values["engines"] = {str(k): dict(v) for k, v in dict(values.get("engines") or {}).items()
                             if isinstance(v, Mapping)}
        for name in ("sample_engine", "quantized_unavailable", "peak_memory_kind"):
            values[name] = str(values.get(name) or "")
        values["preference"] = dict(values["preference"]) if isinstance(values.get("preference"), Mapping) else None
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The JSON of metrics.json and of the run's ``done`` event."""
        data: dict[str, Any] = {
            "model": self.model, "method": self.method, "family": self.family,
            "trainable_parameters": self.trainable_parameters, "total_parameters": self.total_parameters,
            "trainable_share": self.trainable_share, "steps": self.steps, "epochs": self.epochs,
            "train_loss_first": self.train_loss_first, "train_loss_last": self.train_loss_last,
            "train_losses": list(self.train_losses), "eval_loss": self.eval_loss,
            "test_loss_before": self.test_loss_before, "test_loss_after": self.test_loss_after,
            "tokens_per_s": self.tokens_per_s, "tokens_seen": self.tokens_seen, "padding_share": self.padding_share,
            "truncated": self.truncated, "data": dict(self.data), "train_duration_s": self.train_duration_s,
            "duration_s": self.duration_s, "costs": dict(self.costs), "output_dir": self.output_dir,
            "sample_count": self.sample_count, "phase_seconds": dict(self.phase_seconds),
        }
        if self.classifier:
            data.update(labels=list(self.labels), accuracy_before=self.accuracy_before,
                        accuracy_after=self.accuracy_after)
        else:
            data.update(rouge_before=_plain(self.rouge_before), rouge_after=_plain(self.rouge_after),
                        rougeL_improvement=self.rougeL_improvement, sample_engine=self.sample_engine,
                        engines={k: dict(v) for k, v in self.engines.items()},
                        rouge_quantized=_plain(self.rouge_quantized))
        data["quantized_unavailable"] = self.quantized_unavailable
        data.update(peak_memory_bytes=self.peak_memory_bytes, peak_memory_kind=self.peak_memory_kind,
                    weights_bytes=self.weights_bytes, forgetting=dict(self.forgetting))
        if self.preference is not None:
            data["preference"] = dict(self.preference)
        return data


def _plain(value: Mapping[str, float] | None) -> dict[str, float] | None:
    return None if value is None else dict(value)


@dataclass(frozen=True)
class RunResult:
    """The result files of one run's folder."""

    run_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    @property
    def samples_file(self) -> Path:
        return self.run_dir / SAMPLES_FILE

    @property
    def metrics_file(self) -> Path:
        return self.run_dir / METRICS_FILE

    @property
    def downloads_dir(self) -> Path:
        return self.run_dir / DOWNLOADS_DIR

    @property
    def weights_dir(self) -> Path | None:
        """The saved weights: ``adapter/``, else ``model/`` (a method that trains every weight), else None."""
        return next((self.run_dir / name for name in (ADAPTER_DIR, MODEL_DIR) if (self.run_dir / name).is_dir()),
                    None)

    @property
    def adapter_dir(self) -> Path | None:
        """The saved adapter, when the run saved one."""
        folder = self.run_dir / ADAPTER_DIR
        return folder if folder.is_dir() else None

    def info(self) -> ResultInfo:
        """The saved weights' ``playground.json``; PlaygroundError when the run saved none."""
        folder = self.weights_dir
        if folder is None:
            raise PlaygroundError("This run saved no weights.")
        return read_info(folder)

    def has_info(self) -> bool:
        folder = self.weights_dir
        return folder is not None and (folder / INFO_FILE).is_file()

    def metrics(self) -> RunMetrics | None:
        """The run's metrics, or None before they exist (or when they cannot be read)."""
        try:
            data = json.loads(self.metrics_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return RunMetrics.from_json(data) if isinstance(data, Mapping) else None

    def samples(self) -> list[dict[str, Any]]:
        """The before/after rows of samples.jsonl, or [] before it exists (a half-written last line is left out)."""
        try:
            text = self.samples_file.read_text(encoding="utf-8")
        except OSError:
            return []
        rows = []
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def archive_path(self, kind: str) -> Path:
        """Where the run keeps its download of ``kind`` (``adapter``, ``model`` or ``merged``)."""
        return self.downloads_dir / f"{self.run_dir.name}-{kind}.zip"

    # -- the trainer's writes ---------------------------------------------------------------------------
    def save(self, trainable, config, samples: Iterable[dict], metrics: RunMetrics,
             weights: bool = True) -> RunMetrics:
        """Write the weights (with tokenizer and info), the samples and the metrics, each atomically, in that
        order: a reader that finds metrics.json finds the rest. ``weights`` False: the run saved them already
        (to convert its adapter for llama.cpp). Returns the metrics as written (with the weights' size)."""
        if weights:
            self.save_weights(trainable, config)
        metrics = dataclasses.replace(metrics, weights_bytes=weights_bytes(self.weights_dir))
        atomic_write_jsonl(self.samples_file, samples, "the before/after samples")
        atomic_write_json(self.metrics_file, metrics.to_json(), "the metrics")
        return metrics

    def save_weights(self, trainable, config) -> Path:
        """The adapter (or the whole model) with its tokenizer and ``playground.json``, atomically."""
        method = get_method(config.method)
        target = self.run_dir / method.saves
        what = "the adapter" if method.adapter else "the fine-tuned model"
        with atomic_directory(target, what) as partial:
            try:
                trainable.model.save_pretrained(partial, safe_serialization=True)
                trainable.tokenizer.save_pretrained(partial)
                ResultInfo.of(trainable, config).write(partial)
            except OSError:
                raise
            except Exception as exc:  # a model that refuses to serialise: say so, leave nothing behind
                raise TrainingError(f"Could not save {what}: {type(exc).__name__}: {str(exc)[:300]}") from None
        return target


# ------------------------------------------------------------------------------ read back for display


@dataclass(frozen=True)
class LossPoint:
    step: int
    loss: float
    kind: str  # "train" or "validation"


def loss_points(events: Iterable[Mapping[str, Any]]) -> list[LossPoint]:
    """Train losses from step events and validation losses from eval events, in order."""
    points = []
    for event in events:
        kind = event.get("event")
        if kind == "step" and event.get("loss") is not None:
            points.append(LossPoint(int(event["step"]), float(event["loss"]), "train"))
        elif kind == "eval" and event.get("eval_loss") is not None:
            points.append(LossPoint(int(event["step"]), float(event["eval_loss"]), "validation"))
    return points


# The systems' names in the before/after table and chart, by their field prefix in samples.jsonl.
SYSTEM_NAMES = {BASE: "base", TUNED: "fine-tuned", QUANTIZED: "fine-tuned, quantized"}
QUANTIZATION_COLUMN = "quantization (ROUGE-L points)"
# A preference pair's column: beta x (log p(chosen) - log p(rejected)), base → tuned.
MARGIN_COLUMN = "margin"


def comparison_rows(samples: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per test example: reference, base and fine-tuned outputs and their scores, best gain first.

    Each ROUGE cell reads "base → tuned" in percent (three narrow columns instead of six, so the texts keep
    their width); the gain is in ROUGE-L points, a number the table can sort by. Samples with the fine-tuned
    model's answers on the quantised base add them as a third system: the cells read "base → tuned →
    quantized", and a column gives what quantisation costs the fine-tune in ROUGE-L points (quantized - tuned).
    """
    rows = []
    for sample in samples:
        quantized = "quantized_output" in sample
        row = {"#": int(sample.get("index", 0)) + 1, "reference": sample.get("reference", ""),
               SYSTEM_NAMES[BASE]: sample.get("base_output", ""), SYSTEM_NAMES[TUNED]: sample.get("tuned_output", "")}
        if quantized:
            row[SYSTEM_NAMES[QUANTIZED]] = sample.get("quantized_output", "")
        if "rejected" in sample:  # a preference pair: the reference is the chosen answer
            row["rejected"] = sample.get("rejected", "")
            row[MARGIN_COLUMN] = " → ".join(_signed(sample.get(f"{s}_margin")) for s in (BASE, TUNED))
        if "base_rougeL" in sample:
            systems = (BASE, TUNED, QUANTIZED) if quantized else (BASE, TUNED)
            for name, label in ROUGE_LABELS.items():
                row[label] = " → ".join(_percent(sample.get(f"{system}_{name}")) for system in systems)
            improvement = sample.get("improvement")
            row["ROUGE-L gain"] = None if improvement is None else round(100 * improvement, 1)
            if quantized:
                tuned, after = sample.get("tuned_rougeL"), sample.get("quantized_rougeL")
                row[QUANTIZATION_COLUMN] = None if tuned is None or after is None else round(100 * (after - tuned), 1)
        else:
            row["base correct"] = sample.get("base_correct")
            row["tuned correct"] = sample.get("tuned_correct")
            row["improvement"] = sample.get("improvement")
        row["input"] = sample.get("input", "")  # last: the longest text, and the reader's context
        rows.append(row)
    return sorted(rows, key=lambda r: -(_gain(r) or 0))


def _gain(row: Mapping[str, Any]) -> float | None:
    return row.get("ROUGE-L gain", row.get("improvement"))


def _percent(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}"


def _signed(value: Any) -> str:
    return "–" if value is None else f"{float(value):+.2f}"


def aggregate_rows(metrics: RunMetrics | None) -> list[dict[str, Any]]:
    """Before/after aggregate scores in percent (one bar each): ROUGE-1/2/L for generation (with a third bar
    per metric for the fine-tuned model on the quantised base, when the run has it), accuracy for a
    classifier; none without metrics."""
    rows: list[dict[str, Any]] = []
    if metrics is None:
        return rows
    if metrics.preference:  # a preference run: its reward accuracy on the held-out pairs first
        for system, bar, key in ((BASE, "reward acc base", "accuracy_before"),
                                 (TUNED, "reward acc tuned", "accuracy_after")):
            rows.append({"bar": bar, "metric": "reward_accuracy", "model": SYSTEM_NAMES[system],
                         "score": round(100 * float(metrics.preference.get(key) or 0.0), 2)})
    before, after = metrics.rouge_before, metrics.rouge_after
    if before and after:
        systems = [(BASE, "base", before), (TUNED, "tuned", after)]
        if metrics.rouge_quantized:
            systems.append((QUANTIZED, "quant", metrics.rouge_quantized))
        for name in ROUGE_NAMES:  # short bar names: six to nine of them share half the page width
            short = ROUGE_LABELS[name].replace("ROUGE", "R")
            for system, bar, scores in systems:
                rows.append({"bar": f"{short} {bar}", "metric": name, "model": SYSTEM_NAMES[system],
                             "score": round(100 * scores[name], 2)})
    elif metrics.accuracy_before is not None and metrics.accuracy_after is not None:
        rows.append({"bar": "accuracy base", "metric": "accuracy", "model": "base",
                     "score": round(100 * metrics.accuracy_before, 2)})
        rows.append({"bar": "accuracy tuned", "metric": "accuracy", "model": "fine-tuned",
                     "score": round(100 * metrics.accuracy_after, 2)})
    return rows


# The run comparison's columns, in order (the page names them ft.runcol.<name> in its language): what was trained,
# what it cost (trainable share, weights on disk, peak memory, wall time, training speed), how it trained (the
# final losses) and what it gained on its own task next to what it lost on the Prompt Lab's other tasks.
RUN_COLUMNS = ("name", "status", "model", "method", "lora_r", "trainable_share", "adapter_mb", "peak_memory_mb",
               "duration_s", "tokens_per_s", "steps", "train_loss", "validation_loss", "rougeL_before",
               "rougeL_after", "rougeL_gain", "accuracy_before", "accuracy_after", "forgetting",
               *(f"forgetting_{task}" for task in FORGETTING_TASKS))
ALWAYS_SHOWN = ("name", "status", "model", "method")
MISSING = "—"  # how the page shows a figure a run does not have (still running, older, another kind of run)
# What the runs chart can show: one bar per run for a column, or the gain and the forgetting side by side.
GAIN_AND_FORGETTING = "gain_and_forgetting"
CHART_METRICS = (GAIN_AND_FORGETTING, "rougeL_gain", "forgetting", "rougeL_after", "accuracy_after",
                 "validation_loss", "train_loss", "duration_s", "tokens_per_s", "peak_memory_mb", "adapter_mb",
                 "trainable_share")
MAX_COMPARED = 12  # runs in one comparison (the picker offers every run; the table and chart take this many)


def run_row(record) -> dict[str, Any]:
    """One run (a RunRecord) for the run comparison: its name, config and, once finished, its figures
    (None where the run has no such figure)."""
    metrics = RunResult(record.path).metrics() if record.status == "succeeded" else None
    if metrics is None and isinstance(record.metrics, Mapping):
        metrics = RunMetrics.from_json(record.metrics)
    config = record.config or {}
    method = str(config.get("method", ""))

    def percent(scores, name="rougeL"):
        return None if not scores or name not in scores else round(100 * float(scores[name]), 1)

    before = percent(metrics.rouge_before) if metrics else None
    after = percent(metrics.rouge_after) if metrics else None
    forgetting = metrics.forgetting_report if metrics else None
    weights = metrics.weights_bytes if metrics and metrics.weights_bytes else None
    if weights is None and metrics is not None:  # runs older than the record's own figure
        weights = weights_bytes(RunResult(record.path).weights_dir)
    row = {
        "name": record.name or record.id, "status": record.status, "model": str(config.get("model", "")),
        "method": method, "lora_r": _rank(method, config.get("lora_r")),
        "trainable_share": round(100 * metrics.trainable_share, 3) if metrics and metrics.trainable_share else None,
        "adapter_mb": round(weights / 1e6, 2) if weights else None,
        "peak_memory_mb": round(metrics.peak_memory_bytes / 1e6) if metrics and metrics.peak_memory_bytes else None,
        "duration_s": round(metrics.duration_s) if metrics and metrics.duration_s else None,
        "tokens_per_s": round(metrics.tokens_per_s, 1) if metrics and metrics.tokens_per_s else None,
        "steps": metrics.steps if metrics else record.step,
        "train_loss": _rounded(metrics.train_loss_last if metrics else record.loss),
        "validation_loss": _rounded(metrics.eval_loss if metrics else record.eval_loss),
        "rougeL_before": before, "rougeL_after": after,
        "rougeL_gain": None if before is None or after is None else round(after - before, 1),
        "accuracy_before": percent({"a": metrics.accuracy_before}, "a") if metrics and metrics.accuracy_before
        is not None else None,
        "accuracy_after": percent({"a": metrics.accuracy_after}, "a") if metrics and metrics.accuracy_after
        is not None else None,
        "forgetting": forgetting.mean_change if forgetting else None,
    }
    for task in FORGETTING_TASKS:
        row[f"forgetting_{task}"] = forgetting.change_of(task) if forgetting else None
    return row


def _rank(method: str, rank: Any) -> int | None:
    """The LoRA rank of a run whose method trains LoRA matrices (None for any other method)."""
    from playground.finetune.methods import TABLE

    entry = TABLE.get(method)
    if entry is None or not entry.adapter or entry.adapter_kind != "LoRA" or rank is None:
        return None
    try:
        return int(rank)
    except (TypeError, ValueError):
        return None


def run_rows(records: Iterable[Any], chosen: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The run comparison: one row per run (in the records' order: newest first), columns RUN_COLUMNS; a column
    empty for every run (accuracy for generation runs, ROUGE for classifiers, forgetting with the check off) is
    left out. ``chosen`` (run ids) keeps only those runs; None keeps the first MAX_COMPARED."""
    records = list(records)
    if chosen is None:
        records = records[:MAX_COMPARED]
    else:
        wanted = set(chosen)
        records = [r for r in records if r.id in wanted][:MAX_COMPARED]
    rows = [run_row(record) for record in records]
    kept = [c for c in RUN_COLUMNS if c in ALWAYS_SHOWN or any(row[c] is not None for row in rows)]
    return [{c: row[c] for c in kept} for row in rows]


def shown_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows as the page shows them: a missing figure reads MISSING ("—") instead of an empty cell."""
    return [{c: MISSING if v is None else v for c, v in row.items()} for row in rows]


def chart_rows(rows: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The runs chart's bars (oldest run first, the order a sweep ran in): {"run", "series", "value"} per run
    that has the figure; the gain and the forgetting side by side for GAIN_AND_FORGETTING."""
    if metric not in CHART_METRICS:
        raise PlaygroundError(f"The runs chart shows one of: {', '.join(CHART_METRICS)}; not {metric!r}.")
    series = ("rougeL_gain", "forgetting") if metric == GAIN_AND_FORGETTING else (metric,)
    bars = []
    for row in reversed(list(rows)):
        for name in series:
            value = row.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                bars.append({"run": str(row["name"]), "series": name, "value": float(value)})
    return bars


def _rounded(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def table_csv(rows: Iterable[Mapping[str, Any]], headers: Mapping[str, str] | None = None) -> str:
    """Rows as CSV text (UTF-8 with a BOM, so spreadsheet programs read accents right), the columns of the
    first row renamed by ``headers``; empty cells for None."""
    import csv
    import io

    rows = list(rows)
    out = io.StringIO()
    if rows:
        columns = list(rows[0])
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([(headers or {}).get(c, c) for c in columns])
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return "\ufeff" + out.getvalue()
