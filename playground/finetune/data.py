"""Fine-tuning data: load a source, map its columns, split it, and turn rows into prompt/completion pairs.

Sources (the config's ``data``):

- a bundled name (:data:`BUNDLED_DATA`): ``dialogues`` (dialogue summaries
  written for the project, ``examples/finetune/data/dialogues.jsonl``),
  ``dialogues-small`` (the Prompt Lab's 16 dialogues, for a smoke test) and
  ``sentiment`` (labelled sentences for the classifier);
- a JSONL or CSV file with ``input_column`` / ``target_column``, read by the
  Prompt Lab's row reader (:func:`playground.prompting.data.read_rows`), so a
  malformed line, a missing or empty column is reported with its line number;
- ``hub:owner/name``: a Hugging Face dataset, fetched by
  :mod:`playground.finetune.hub_data` (the id must be a Hub repo id, never a
  path; the download is size-capped and cached under the data dir; offline
  uses only that cache).

The page (and its API) gives only bundled names, uploads and Hub ids; a file
path comes only from the CLI's YAML (a deployer's own data). Messages name a
file by its own name (:func:`data_label`), never by a server path.

Splits: a ``split`` column (train/demo, validation, test) is honoured; without
one, the test rows are carved out with the seed (``test_fraction``). The
validation rows are carved from the training rows (``validation_fraction``)
unless the data has its own. An empty data set or an empty split is an error
that says what to do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from playground.errors import DataFileError
from playground.finetune.config import AUTO_TEMPLATE, FinetuneConfig
from playground.finetune.data_ids import BUNDLED_DATA, DATA_SUFFIXES, HUB_PREFIX, PREFERENCE_FIELDS, data_label
from playground.finetune.hub_data import HubDataSource, check_hub_dataset_id, load_hub_dataset
from playground.finetune.methods import get_method
from playground.finetune.templates import FinetuneTemplate, TemplateSet, load_templates
from playground.prompting.data import UploadLimits, read_rows

TRAIN, VALIDATION, TEST = "train", "validation", "test"
# How split names found in files and Hub datasets map onto the three splits.
SPLIT_ALIASES = MappingProxyType({
    "train": TRAIN, "training": TRAIN, "demo": TRAIN,
    "validation": VALIDATION, "valid": VALIDATION, "val": VALIDATION, "dev": VALIDATION,
    "test": TEST, "testing": TEST,
})
# Files given by path (the CLI, a deployer's data) may be larger than a browser upload.
FILE_LIMITS = UploadLimits(max_bytes=50_000_000, max_rows=200_000, max_field_chars=50_000)


@dataclass(frozen=True)
class Record:
    """One usable row: mapped input and target, where it came from, and the row itself."""

    input: str
    target: str
    line: int  # 1-based line in its file (row number within its split for Hub data)
    split: str = ""  # train | validation | test, or "" when the source does not say
    row: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DataSplits:
    """The three splits of a run, and the label set when training a classifier."""

    train: tuple[Record, ...]
    validation: tuple[Record, ...]
    test: tuple[Record, ...]
    source: str
    labels: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        return {TRAIN: len(self.train), VALIDATION: len(self.validation), TEST: len(self.test)}


@dataclass(frozen=True)
class PromptPair:
    """A record after its template: the prompt the model reads and the completion it should write."""

    prompt: str
    completion: str
    record: Record


# ------------------------------------------------------------------------------ columns and template


def columns_for(config: FinetuneConfig) -> tuple[str, str]:
    """(input column, target column): the config's, else the bundled data set's; a preference method's are
    always ``prompt`` and ``chosen`` (its ``rejected`` is checked by :func:`check_preference_records`)."""
    if get_method(config.method).preference:
        return PREFERENCE_FIELDS[0], PREFERENCE_FIELDS[1]
    bundled = BUNDLED_DATA.get(config.data)
    input_column = config.input_column or (bundled.input_column if bundled else "")
    target_column = config.target_column or (bundled.target_column if bundled else "")
    if not input_column or not target_column:
        raise DataFileError(f"Name the columns of {data_label(config.data)!r}: set input_column and "
                            f"target_column.")
    return input_column, target_column


def template_for(config: FinetuneConfig, templates: TemplateSet | None = None) -> FinetuneTemplate:
    """The config's template; ``auto`` is the bundled data set's own, else ``plain``."""
    templates = templates or load_templates()
    template_id = config.template
    if get_method(config.method).preference:
        template_id = "plain"  # a preference pair's prompt is what the model reads (the trainer applies no template)
    if template_id == AUTO_TEMPLATE:
        bundled = BUNDLED_DATA.get(config.data)
        template_id = bundled.template if bundled and not get_method(config.method).label_head else "plain"
    return templates.get(template_id)


# ------------------------------------------------------------------------------ reading sources


def _text(row: Mapping[str, Any], column: str, line: int, where: str, limits: UploadLimits) -> str:
    if column not in row:
        fields = ", ".join(map(str, row)) or "none"
        raise DataFileError(f"{where}line {line} has no {column!r} column (its columns: {fields}). Check "
                            f"input_column and target_column.", line=line)
    value = row[column]
    if isinstance(value, (dict, list)):
        raise DataFileError(f"{where}line {line}: the {column!r} value must be text, not {type(value).__name__}.",
                            line=line)
    text = "" if value is None else str(value).strip()
    if not text:
        raise DataFileError(f"{where}line {line}: the {column!r} value is empty. Fill it in or remove the row.",
                            line=line)
    if len(text) > limits.max_field_chars:
        raise DataFileError(f"{where}line {line}: the {column!r} value has {len(text):,} characters; the limit is "
                            f"{limits.max_field_chars:,}.", line=line)
    return text


def _split_of(row: Mapping[str, Any], line: int, where: str) -> str:
    if "split" not in row or row["split"] in (None, ""):
        return ""
    name = str(row["split"]).strip().lower()
    if name not in SPLIT_ALIASES:
        raise DataFileError(f"{where}line {line}: split {row['split']!r} is not one of train, validation, test.",
                            line=line)
    return SPLIT_ALIASES[name]


def records_from_rows(rows: Sequence[tuple[int, Mapping[str, Any]]], input_column: str, target_column: str,
                      where: str = "", limits: UploadLimits = FILE_LIMITS) -> list[Record]:
    """Records of (line, row) pairs; raises DataFileError naming the line of a missing or empty column."""
    if not rows:
        raise DataFileError(f"{where or 'The data '}holds no examples.")
    records = []
    for line, row in rows:
        records.append(Record(_text(row, input_column, line, where, limits),
                              _text(row, target_column, line, where, limits),
                              line, _split_of(row, line, where), dict(row)))
    return records


def read_file_records(path: str | Path, input_column: str, target_column: str,
                      limits: UploadLimits = FILE_LIMITS) -> list[Record]:
    """The records of a JSONL or CSV file; problems come back as DataFileError with the line number."""
    path = Path(path).expanduser()
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise DataFileError(f"{path.name} is {size / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB."
                                ).keyed("error.named_file_too_big", name=path.name, mb=size / 1e6,
                                        limit=limits.max_bytes / 1e6)
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(f"The data file {path.name} does not exist.") from None
    except OSError as exc:
        raise DataFileError(f"Cannot read {path.name}: {exc.strerror or exc}.") from None
    try:
        rows = read_rows(data, path.name, limits)
    except DataFileError as exc:
        raise DataFileError(f"{path.name}: {exc}", line=exc.line) from None
    return records_from_rows(rows, input_column, target_column, f"{path.name} ", limits)


@dataclass(frozen=True)
class DataFileSummary:
    """What an uploaded file holds, once it reads: its own name, its rows and its columns (in file order)."""

    name: str
    rows: int
    columns: tuple[str, ...]


def data_file_columns(path: str | Path, limits: UploadLimits = FILE_LIMITS) -> list[str]:
    """The columns of a JSONL or CSV file (an upload), after checking that it reads; raises DataFileError
    naming the file by its own name."""
    return list(check_data_file(path, limits).columns)


def check_data_file(path: str | Path, limits: UploadLimits = FILE_LIMITS) -> DataFileSummary:
    """Check a JSONL or CSV file (an upload) before anything else looks at it: its kind, size, encoding, rows;
    raises DataFileError naming the file by its own name (never the server's path)."""
    path = Path(path)
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise DataFileError(f"{path.name} is not a JSONL or CSV file: upload one of {', '.join(DATA_SUFFIXES)}.")
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise DataFileError(f"{path.name} is {size / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB."
                                ).keyed("error.named_file_too_big", name=path.name, mb=size / 1e6,
                                        limit=limits.max_bytes / 1e6)
        data = path.read_bytes()
    except OSError as exc:
        raise DataFileError(f"Cannot read the uploaded {path.name}: {exc.strerror or type(exc).__name__}. Upload "
                            f"it again.") from None
    try:
        rows = read_rows(data, path.name, limits)
    except DataFileError as exc:
        raise DataFileError(f"{path.name} cannot be used: {exc}", line=exc.line) from None
    names: dict[str, None] = {}
    for _, row in rows:
        names.update(dict.fromkeys(map(str, row)))
    return DataFileSummary(path.name, len(rows), tuple(names))


def records_from_dataset_dict(dataset_dict: Mapping[str, Any], input_column: str, target_column: str,
                              where: str = "", limits: UploadLimits = FILE_LIMITS) -> list[Record]:
    """Records of a ``datasets.DatasetDict`` (or a mapping of split name to rows), splits mapped by name."""
    records: list[Record] = []
    for split_name, rows in dataset_dict.items():
        split = SPLIT_ALIASES.get(str(split_name).lower())
        if split is None:
            continue  # e.g. "unsupervised": not part of a supervised run
        for index, row in enumerate(rows, start=1):
            if len(records) >= limits.max_rows:
                raise DataFileError(f"{where}has more than {limits.max_rows:,} rows; the limit is "
                                    f"{limits.max_rows:,}.")
            row = dict(row)
            tag = f"{where}{split_name} "
            records.append(Record(_text(row, input_column, index, tag, limits),
                                  _text(row, target_column, index, tag, limits), index, split, row))
    if not records:
        raise DataFileError(f"{where}has no train, validation or test rows (splits: "
                            f"{', '.join(map(str, dataset_dict)) or 'none'}).")
    return records


def read_hub_records(dataset_id: str, input_column: str, target_column: str,
                     limits: UploadLimits = FILE_LIMITS, hub: HubDataSource | None = None) -> list[Record]:
    """The records of a Hugging Face dataset, fetched from the Hub (or, offline, its cache) through ``hub``.

    ``hub`` says where the cache is (under the app's data dir) and whether the network may be
    used; by default the app's settings from the environment.
    """
    dataset_id = check_hub_dataset_id(dataset_id)
    loaded = load_hub_dataset(dataset_id, hub or HubDataSource.from_settings())
    return records_from_dataset_dict(loaded, input_column, target_column, f"Hub dataset {dataset_id} ", limits)


def check_preference_records(records: Sequence[Record], source: str,
                             limits: UploadLimits = FILE_LIMITS) -> list[Record]:
    """Preference pairs: every record (prompt in ``input``, chosen in ``target``) also has a non-empty
    ``rejected`` text within the field limit that differs from its chosen one; DataFileError naming the line."""
    where = f"{source} "
    rejected_field = PREFERENCE_FIELDS[2]
    for record in records:
        rejected = _text(record.row, rejected_field, record.line, where, limits)
        if rejected == record.target:
            raise DataFileError(f"{where}line {record.line}: 'chosen' and 'rejected' are the same text, so there "
                                f"is no preference to learn. Change one or remove the row.", line=record.line)
    return list(records)


def rejected_of(record: Record) -> str:
    """The rejected answer of a preference pair (checked by :func:`check_preference_records`)."""
    return str(record.row[PREFERENCE_FIELDS[2]]).strip()


def load_records(config: FinetuneConfig, limits: UploadLimits | None = None,
                 hub: HubDataSource | None = None) -> list[Record]:
    """Every record of the config's source, columns mapped and checked (``hub``: see :func:`read_hub_records`).

    A preference method's records are preference pairs (fields prompt, chosen, rejected)."""
    limits = limits or FILE_LIMITS
    records = _load_records(config, limits, hub)
    if get_method(config.method).preference:
        return check_preference_records(records, data_label(config.data), limits)
    return records


def _load_records(config: FinetuneConfig, limits: UploadLimits, hub: HubDataSource | None) -> list[Record]:
    input_column, target_column = columns_for(config)
    if config.data in BUNDLED_DATA:
        bundled = BUNDLED_DATA[config.data]
        if not bundled.path.is_file():
            raise DataFileError(f"The bundled data set {config.data!r} is missing from this installation; "
                                f"reinstall the project or choose another data set.")
        return read_file_records(bundled.path, input_column, target_column, limits)
    if config.data.startswith(HUB_PREFIX):
        return read_hub_records(config.data[len(HUB_PREFIX):], input_column, target_column, limits, hub)
    return read_file_records(config.data, input_column, target_column, limits)


# ------------------------------------------------------------------------------ splitting


def _carve(records: list[Record], fraction: float, rng: random.Random) -> tuple[list[Record], list[Record]]:
    """(kept, carved): ``fraction`` of ``records`` (at least one) picked with ``rng``."""
    count = max(1, round(len(records) * fraction))
    order = list(range(len(records)))
    rng.shuffle(order)
    carved = set(order[:count])
    return [r for i, r in enumerate(records) if i not in carved], [r for i, r in enumerate(records) if i in carved]


def split_records(records: Sequence[Record], config: FinetuneConfig, source: str = "") -> DataSplits:
    """Train, validation and test splits; raises DataFileError for an empty data set or split."""
    source = source or data_label(config.data)
    if not records:
        raise DataFileError(f"The data {source!r} holds no examples.")
    rng = random.Random(config.seed)
    has_splits = any(r.split for r in records)
    if has_splits:
        untagged = [r for r in records if not r.split]
        if untagged:
            raise DataFileError(f"Line {untagged[0].line} of {source!r} has no split while other rows do; give "
                                f"every row a split (train, validation or test) or none.", line=untagged[0].line)
        train = [r for r in records if r.split == TRAIN]
        validation = [r for r in records if r.split == VALIDATION]
        test = [r for r in records if r.split == TEST]
        if not test:
            raise DataFileError(f"The data {source!r} has no rows with split 'test'; mark some rows as test "
                                f"(or remove the split column to have them carved out).")
    else:
        if len(records) < 2:
            raise DataFileError(f"The data {source!r} has only {len(records)} row; it needs rows to train on and "
                                f"rows to test on.")
        train, test = _carve(list(records), config.test_fraction, rng)
        validation = []
    if not train:
        raise DataFileError(f"The data {source!r} has no training rows (split train). Add some.")
    if not validation and config.validation_fraction > 0:
        if len(train) < 2:
            raise DataFileError(f"The data {source!r} has only {len(train)} training row, too few to hold out "
                                f"validation rows; add rows or set validation_fraction to 0.")
        train, validation = _carve(train, config.validation_fraction, rng)
    if config.test_limit:
        test = test[:config.test_limit]
    labels: tuple[str, ...] = ()
    if get_method(config.method).label_head:
        labels = tuple(sorted({r.target for r in train}))
        if len(labels) < 2:
            raise DataFileError(f"The training rows of {source!r} have {len(labels)} label ({', '.join(labels)}); "
                                f"a classifier needs at least two.")
        for record in validation + test:
            if record.target not in labels:
                raise DataFileError(f"Line {record.line}: the label {record.target!r} never occurs in the training "
                                    f"rows ({', '.join(labels)}).", line=record.line)
    return DataSplits(tuple(train), tuple(validation), tuple(test), source, labels)


def load_splits(config: FinetuneConfig, limits: UploadLimits | None = None,
                hub: HubDataSource | None = None) -> DataSplits:
    """Load the config's source and split it (the one call the trainer makes)."""
    return split_records(load_records(config, limits, hub), config)


# ------------------------------------------------------------------------------ prompt / completion


def format_pairs(records: Sequence[Record], template: FinetuneTemplate) -> list[PromptPair]:
    """Each record through the template."""
    pairs = []
    for record in records:
        prompt, completion = template.render(record.input, record.target, record.row)
        if not prompt:
            raise DataFileError(f"Line {record.line}: template {template.id!r} made an empty prompt.",
                                line=record.line)
        pairs.append(PromptPair(prompt, completion, record))
    return pairs


def preview(config: FinetuneConfig, count: int = 3, split: str = TRAIN,
            limits: UploadLimits | None = None, hub: HubDataSource | None = None) -> list[dict[str, Any]]:
    """The first ``count`` examples of a split as the model will see them (before tokenisation)."""
    splits = load_splits(config, limits, hub)
    records = {TRAIN: splits.train, VALIDATION: splits.validation, TEST: splits.test}[split]
    template = template_for(config)
    return [{"line": p.record.line, "split": split, "prompt": p.prompt, "completion": p.completion}
            for p in format_pairs(records[:max(count, 0)], template)]
