"""Labelled examples: the bundled sets in ``examples/data/`` and files people upload.

Every bundled file is JSONL, one example per line, with the task's input and
target fields, an optional ``rationale`` (a worked explanation, used by
few-shot chain-of-thought) and a ``split``: ``demo`` rows form the pool that
few-shot demonstrations are drawn from, ``test`` rows are what evaluations run
over. All of it was written for this project.

Uploads are JSONL or CSV with a column mapping (input column, label column,
optional rationale column). A CSV may separate its columns with ``,``, ``;``,
tabs or ``|``: :func:`detect_separator` finds which (the csv module's sniffer,
checked against the rows), a ``.tsv`` is tab-separated, and a row that does
not fit says which separator it was read with. Problems come back as ``DataFileError`` with the
line number: a line that is not JSON, a missing column, an empty value, a label
the task does not know, a file over the size or row limit.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from playground.errors import DataFileError
from playground.prompting.extraction import canonical_date, canonical_number, normalize_choice, normalize_label, \
    normalize_word
from playground.prompting.tasks import TaskSpec, get_task

SPLITS = ("demo", "test")
# The column separators a CSV may use, and how messages name them.
CSV_SEPARATORS = {",": "commas ','", ";": "semicolons ';'", "\t": "tabs", "|": "pipes '|'"}
SNIFF_LINES = 50  # lines of a CSV looked at to find its separator
SNIFF_CHARS = 64_000


@dataclass(frozen=True)
class Example:
    """One labelled example: the input, the expected output and, optionally, a worked rationale."""

    input: str
    target: str
    rationale: str = ""
    line: int = 0  # where it came from in its file (1-based), for messages and tables


@dataclass(frozen=True)
class LabelledSet:
    """Examples of one task to evaluate on, and the pool few-shot demonstrations come from."""

    task: TaskSpec
    examples: tuple[Example, ...]
    demos: tuple[Example, ...]
    source: str  # a file name, for reports

    def limited(self, count: int | None) -> "LabelledSet":
        """The same set with at most ``count`` evaluation examples (all when None)."""
        if count is None or count >= len(self.examples):
            return self
        return LabelledSet(self.task, self.examples[:max(count, 0)], self.demos, self.source)


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns of an uploaded file hold the input, the label and (optionally) a rationale."""

    input: str
    label: str
    rationale: str | None = None


@dataclass(frozen=True)
class UploadLimits:
    """Limits on uploaded files (the workshop server takes files from many people)."""

    max_bytes: int = 2_000_000
    max_rows: int = 2_000
    max_field_chars: int = 20_000


# --------------------------------------------------------------------------- checking values


def check_target(value: str, task: TaskSpec, line: int, column: str) -> str:
    """The target written canonically for ``task``; raises DataFileError naming the line."""
    if task.answer_kind == "label":
        label = normalize_label(value, task.labels)
        if label is None:
            raise DataFileError(f"Line {line}: the {column!r} value {value[:40]!r} is not one of the labels "
                                f"{', '.join(task.labels)}.", line=line)
        return label
    if task.answer_kind == "number":
        number = canonical_number(value)
        if number is None:
            raise DataFileError(f"Line {line}: the {column!r} value {value[:40]!r} is not a number.", line=line)
        return number
    if task.answer_kind == "date":
        date = canonical_date(value)
        if date is None:
            raise DataFileError(f"Line {line}: the {column!r} value {value[:40]!r} is not a date (write it as "
                                f"YYYY-MM-DD, e.g. 2027-03-01).", line=line)
        return date
    if task.answer_kind == "word":
        word = normalize_word(value)
        if word is None:
            raise DataFileError(f"Line {line}: the {column!r} value {value[:40]!r} is not one word of letters.",
                                line=line)
        return word
    if task.answer_kind == "choice":
        letter = normalize_choice(value, task.labels)
        if letter is None:
            raise DataFileError(f"Line {line}: the {column!r} value {value[:40]!r} is not one of the choice "
                                f"letters {', '.join(task.labels)}.", line=line)
        return letter
    return value


def _text_value(row: dict, column: str, line: int, limits: UploadLimits, required: bool = True) -> str:
    if column not in row:
        fields = ", ".join(map(str, row)) or "none"
        raise DataFileError(f"Line {line} has no {column!r} field (its fields: {fields}).", line=line)
    value = row[column]
    if value is None:
        value = ""
    if isinstance(value, (dict, list)):
        raise DataFileError(f"Line {line}: the {column!r} field must be text, not {type(value).__name__}.",
                            line=line)
    text = str(value).strip()
    if required and not text:
        raise DataFileError(f"Line {line}: the {column!r} field is empty.", line=line)
    if len(text) > limits.max_field_chars:
        raise DataFileError(f"Line {line}: the {column!r} field has {len(text):,} characters; the limit is "
                            f"{limits.max_field_chars:,}.", line=line)
    return text


# --------------------------------------------------------------------------- reading rows


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataFileError(f"The file is not UTF-8 text (line {line}, byte {exc.start}). Save it as UTF-8.",
                            line=line) from None


def detect_format(filename: str | None, text: str) -> str:
    """"jsonl" or "csv", from the file name's extension, else from the first character."""
    suffix = Path(filename or "").suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict]]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataFileError(f"Line {number} is not valid JSON: {exc.msg} (column {exc.colno}).",
                                line=number) from None
        if not isinstance(row, dict):
            raise DataFileError(f"Line {number} must be a JSON object like {{\"text\": ..., \"label\": ...}}, "
                                f"not {type(row).__name__}.", line=number)
        yield number, row


def _sample(text: str) -> tuple[str, bool]:
    """The first complete lines of ``text`` (at most SNIFF_LINES lines, about SNIFF_CHARS characters), and
    whether that is the whole text."""
    lines = text[:SNIFF_CHARS].splitlines(keepends=True)
    if len(text) > SNIFF_CHARS and lines:
        lines = lines[:-1]  # the last one may be cut
    sample = "".join(lines[:SNIFF_LINES])
    return sample, len(sample) == len(text)


def _fits(sample: str, separator: str, whole: bool) -> int:
    """The number of columns when every row of ``sample`` has as many values as its header (two or more), else 0."""
    try:
        rows = [r for r in csv.reader(io.StringIO(sample, newline=""), delimiter=separator)
                if any(v.strip() for v in r)]
    except csv.Error:
        return 0
    if not rows:
        return 0
    width = len(rows[0])
    body = rows[1:] if whole else rows[1:-1]  # a quoted value may run past the end of a sample
    return width if width > 1 and all(len(r) == width for r in body) else 0


def detect_separator(text: str, filename: str | None = None) -> str:
    """The column separator of a CSV text: tab for a ``.tsv``; else one of ``, ; tab |``.

    The csv module's sniffer proposes one from the first lines and the rows confirm it (every row
    has as many values as the header); when the sniffer cannot tell, the separator every row agrees
    on wins; when none fits, the one seen most in the header (so the row that breaks it is named).
    A file of one column reads with ``,``.
    """
    if Path(filename or "").suffix.lower() == ".tsv":
        return "\t"
    sample, whole = _sample(text)
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters="".join(CSV_SEPARATORS)).delimiter
    except csv.Error:
        sniffed = ""
    if sniffed in CSV_SEPARATORS and _fits(sample, sniffed, whole):
        return sniffed
    widths = {separator: _fits(sample, separator, whole) for separator in CSV_SEPARATORS}
    fitting = [separator for separator, width in widths.items() if width]
    if fitting:
        return max(fitting, key=lambda separator: widths[separator])
    header = sample.splitlines()[0] if sample else ""
    seen = max(CSV_SEPARATORS, key=header.count)
    return seen if header.count(seen) else ","


def _csv_rows(text: str, delimiter: str) -> Iterator[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1  # the line the record being read starts on
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        if len(set(header)) != len(header) or not all(header):
            raise DataFileError("Line 1: the CSV header needs a distinct, non-empty name for every column.", line=1)
        start = reader.line_num + 1
        for values in reader:
            line = start
            start = reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise DataFileError(f"Line {line} has {len(values)} values but the header names {len(header)} "
                                    f"columns (read with {CSV_SEPARATORS[delimiter]} between columns). Give every "
                                    f"row the header's columns, and quote values that hold the separator.",
                                    line=line)
            yield line, dict(zip(header, values))
    except csv.Error as exc:
        if "end of data" in str(exc):
            raise DataFileError(f"Line {start} is not valid CSV: a quoted value that starts there is never "
                                f"closed.", line=start) from None
        raise DataFileError(f"Line {reader.line_num} is not valid CSV: {exc}.", line=reader.line_num) from None


def read_rows(data: bytes, filename: str | None = None,
              limits: UploadLimits = UploadLimits()) -> list[tuple[int, dict]]:
    """(line number, row) pairs of a JSONL or CSV file, after the size and row limits."""
    if len(data) > limits.max_bytes:
        raise DataFileError(f"The file is {len(data) / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB. "
                            f"Upload fewer examples.").keyed("error.file_too_big", mb=len(data) / 1e6,
                                                             limit=limits.max_bytes / 1e6)
    text = _decode(data)
    fmt = detect_format(filename, text)
    rows = _jsonl_rows(text) if fmt == "jsonl" else _csv_rows(text, detect_separator(text, filename))
    result: list[tuple[int, dict]] = []
    for line, row in rows:
        if len(result) >= limits.max_rows:
            raise DataFileError(f"The file has more than {limits.max_rows:,} rows (line {line} is row "
                                f"{limits.max_rows + 1:,}); the limit is {limits.max_rows:,}. Upload fewer "
                                f"examples.", line=line)
        result.append((line, row))
    if not result:
        raise DataFileError("The file holds no examples.")
    return result


def file_columns(data: bytes, filename: str | None = None, limits: UploadLimits = UploadLimits()) -> list[str]:
    """The column names of an uploaded file (for the column-mapping dropdowns), in file order."""
    names: dict[str, None] = {}
    for _, row in read_rows(data, filename, limits):
        names.update(dict.fromkeys(map(str, row)))
    return list(names)


def parse_labelled_file(data: bytes | str | Path, mapping: ColumnMapping, task: TaskSpec | str,
                        filename: str | None = None, limits: UploadLimits = UploadLimits()
                        ) -> tuple[Example, ...]:
    """The examples of an uploaded JSONL or CSV file; raises DataFileError with the line of any problem.

    ``data`` is the file's bytes, or a path to read. Targets are checked against the task
    (a known label, a number) and written canonically.
    """
    task = get_task(task) if isinstance(task, str) else task
    if isinstance(data, (str, Path)):
        path = Path(data)
        filename = filename or path.name
        try:
            size = path.stat().st_size
            if size > limits.max_bytes:
                raise DataFileError(f"The file is {size / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} "
                                    f"MB. Upload fewer examples.").keyed("error.file_too_big", mb=size / 1e6,
                                                                         limit=limits.max_bytes / 1e6)
            data = path.read_bytes()
        except OSError as exc:
            raise DataFileError(f"Cannot read {path.name}: {exc.strerror or exc}.") from None
    if not mapping.input or not mapping.label:
        raise DataFileError("Choose the input column and the label column.")
    examples = []
    rows = read_rows(data, filename, limits)
    if mapping.rationale and not any(mapping.rationale in row for _, row in rows):
        raise DataFileError(f"No row has the rationale column {mapping.rationale!r}; choose another column or "
                            f"none.")
    for line, row in rows:
        text = _text_value(row, mapping.input, line, limits)
        target = check_target(_text_value(row, mapping.label, line, limits), task, line, mapping.label)
        rationale = ""
        if mapping.rationale and mapping.rationale in row:  # optional: a row without it has none
            rationale = _text_value(row, mapping.rationale, line, limits, required=False)
        examples.append(Example(text, target, rationale, line))
    return tuple(examples)


# --------------------------------------------------------------------------- bundled sets


def load_bundled(task: TaskSpec | str, path: Path | None = None) -> LabelledSet:
    """The bundled examples of a task: its ``test`` rows to evaluate on and its ``demo`` rows."""
    task = get_task(task) if isinstance(task, str) else task
    path = path or task.data_path
    limits = UploadLimits(max_bytes=10_000_000, max_rows=100_000)
    examples: list[Example] = []
    demos: list[Example] = []
    for line, row in read_rows(path.read_bytes(), path.name, limits):
        split = row.get("split", "test")
        if split not in SPLITS:
            raise DataFileError(f"{path.name} line {line}: split must be one of {SPLITS}, not {split!r}.", line=line)
        text = _text_value(row, task.input_field, line, limits)
        target = check_target(str(_text_value(row, task.target_field, line, limits)), task, line,
                              task.target_field)
        rationale = _text_value(row, "rationale", line, limits, required=False) if "rationale" in row else ""
        (demos if split == "demo" else examples).append(Example(text, target, rationale, line))
    return LabelledSet(task, tuple(examples), tuple(demos), path.name)


def labelled_set_from_upload(data: bytes | str | Path, mapping: ColumnMapping, task: TaskSpec | str,
                             filename: str | None = None, demo_rows: int = 0,
                             limits: UploadLimits = UploadLimits()) -> LabelledSet:
    """An uploaded file as a LabelledSet.

    With ``demo_rows`` = 0 every row is evaluated and demonstrations come from the task's
    bundled demo pool; otherwise the first ``demo_rows`` rows (with their rationales, if
    mapped) become the demo pool and the rest are evaluated.
    """
    task = get_task(task) if isinstance(task, str) else task
    examples = parse_labelled_file(data, mapping, task, filename, limits)
    name = filename or (Path(data).name if isinstance(data, (str, Path)) else "upload")
    if demo_rows < 0 or demo_rows >= len(examples):
        raise DataFileError(f"demo_rows={demo_rows}: keep at least one of the {len(examples)} rows to evaluate "
                            f"(choose 0 to {len(examples) - 1}).")
    if demo_rows:
        return LabelledSet(task, examples[demo_rows:], examples[:demo_rows], name)
    return LabelledSet(task, examples, load_bundled(task).demos, name)
