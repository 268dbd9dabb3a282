"""What a config's ``data`` may name, and how messages name it.

Three kinds of data id: a bundled set that ships with the project
(:data:`BUNDLED_DATA`: its file, columns, template and whether its target is a
label), ``hub:owner/name`` for a Hugging Face dataset (checked and fetched by
:mod:`playground.finetune.hub_data`), or a JSONL/CSV file (an upload the run
keeps a copy of, or a path in a CLI preset). A message names a file by its own
name (:func:`data_label`), never by a server path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from playground.prompting.tasks import EXAMPLES_DIR

HUB_PREFIX = "hub:"
DATA_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv")


@dataclass(frozen=True)
class BundledData:
    """A data set that ships with the project."""

    name: str
    path: Path
    input_column: str
    target_column: str
    template: str  # the template "auto" picks
    description: str
    labels: bool = False  # the target is a class label (usable by the classifier)
    preference: bool = False  # preference pairs (prompt, chosen, rejected) for a preference method (dpo)


BUNDLED_DATA: Mapping[str, BundledData] = MappingProxyType({
    "dialogues": BundledData(
        "dialogues", EXAMPLES_DIR / "finetune" / "data" / "dialogues.jsonl", "dialogue", "summary",
        "summarize-dialogue", "Everyday dialogues with one- or two-sentence summaries (train and test splits)."),
    "dialogues-small": BundledData(
        "dialogues-small", EXAMPLES_DIR / "data" / "dialogues.jsonl", "dialogue", "summary",
        "summarize-dialogue", "The Prompt Lab's 16 dialogues: a quick smoke test, too few to learn much."),
    "sentiment": BundledData(
        "sentiment", EXAMPLES_DIR / "data" / "sentiment.jsonl", "text", "label", "plain",
        "Short everyday sentences labelled positive, negative or neutral.", labels=True),
    "preferences": BundledData(
        "preferences", EXAMPLES_DIR / "finetune" / "data" / "preferences.jsonl", "prompt", "chosen", "plain",
        "Everyday questions, each with a chosen answer (plain, ending 'Happy tinkering!') and a rejected one "
        "(the same facts without it, often behind a rude opener), for DPO.", preference=True),
})
# The fields of a preference pair (a bundled set, an upload, the Prompt Lab arena's exported votes).
PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")


def data_label(data: str) -> str:
    """How messages and reports name a data source: a bundled name, ``hub:owner/name``, or a file's own name
    (an upload's server path, a deployer's folder, stays out of sight)."""
    if data in BUNDLED_DATA or data.startswith(HUB_PREFIX):
        return data
    return Path(data).name or data
