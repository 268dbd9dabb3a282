"""What a run produced, read back for display: the loss curve, the before/after samples and the metrics.

The trainer writes ``progress.jsonl`` (events), ``samples.jsonl`` (one row per
test example: reference, base and fine-tuned outputs, their ROUGE) and
``metrics.json``; this module turns them into plain rows for a chart or a
table. Missing files give empty results (a run still in progress has none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from playground.finetune.train import METRICS_FILE, SAMPLES_FILE

ROUGE_NAMES = ("rouge1", "rouge2", "rougeL")


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


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's metrics.json, or {} before it exists (or if it cannot be read)."""
    try:
        return json.loads((Path(run_dir) / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def read_samples(run_dir: Path) -> list[dict[str, Any]]:
    """The before/after rows of samples.jsonl, or [] before it exists."""
    try:
        text = (Path(run_dir) / SAMPLES_FILE).read_text(encoding="utf-8")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


ROUGE_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}


def comparison_rows(samples: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per test example: reference, base and fine-tuned outputs and their scores, best gain first.

    Each ROUGE cell reads "base → tuned" in percent (three narrow columns instead of six, so the texts keep
    their width); the gain is in ROUGE-L points, a number the table can sort by.
    """
    rows = []
    for sample in samples:
        row = {"#": int(sample.get("index", 0)) + 1, "reference": sample.get("reference", ""),
               "base": sample.get("base_output", ""), "fine-tuned": sample.get("tuned_output", "")}
        if "base_rougeL" in sample:
            for name, label in ROUGE_LABELS.items():
                row[label] = f"{_percent(sample.get(f'base_{name}'))} → {_percent(sample.get(f'tuned_{name}'))}"
            improvement = sample.get("improvement")
            row["ROUGE-L gain"] = None if improvement is None else round(100 * improvement, 1)
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


def aggregate_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Before/after aggregate scores in percent (one bar each): ROUGE-1/2/L for generation, accuracy for a classifier."""
    rows = []
    before, after = metrics.get("rouge_before"), metrics.get("rouge_after")
    if before and after:
        for name in ROUGE_NAMES:  # short bar names: six of them share half the page width
            short = ROUGE_LABELS[name].replace("ROUGE", "R")
            rows.append({"bar": f"{short} base", "metric": name, "model": "base",
                         "score": round(100 * before[name], 2)})
            rows.append({"bar": f"{short} tuned", "metric": name, "model": "fine-tuned",
                         "score": round(100 * after[name], 2)})
    elif metrics.get("accuracy_before") is not None and metrics.get("accuracy_after") is not None:
        rows.append({"bar": "accuracy base", "metric": "accuracy", "model": "base",
                     "score": round(100 * metrics["accuracy_before"], 2)})
        rows.append({"bar": "accuracy tuned", "metric": "accuracy", "model": "fine-tuned",
                     "score": round(100 * metrics["accuracy_after"], 2)})
    return rows
