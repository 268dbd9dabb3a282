"""The Prompt Lab's tables as CSV files to download: one small folder per owner, inside the data dir's budget.

An evaluation's scores and examples and a side-by-side comparison can be
downloaded as CSV (UTF-8 with a byte-order mark, so spreadsheets read accents
right). Each owner keeps at most one file of each kind: the next evaluation
replaces the last one (written atomically, so a download in progress keeps
the old file). The owner's folder is named by a hash of the owner id, never
by anything a person types, and the bytes are counted against the data dir's
budget before they are written.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Callable, Sequence

from playground.atomic import atomic_write_bytes
from playground.errors import InvalidParameterError

TABLES = ("scores", "examples", "columns")  # the kinds of table a person can download
TABLES_DIR = "lab-tables"  # under the data dir
MAX_TABLE_BYTES = 32 * 1024 * 1024  # one CSV file at most (200 examples x 5 strategies with long prompts fit)


def csv_bytes(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    """The table as CSV text in UTF-8 with a byte-order mark; None cells are empty."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(headers)
    for row in rows:
        writer.writerow(["" if cell is None else cell for cell in row])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


class TableFiles:
    """Writes the Prompt Lab's CSV downloads under ``data_dir/lab-tables/<owner hash>/``."""

    def __init__(self, data_dir: Path, make_room: Callable[[int], object] | None = None) -> None:
        self.root = Path(data_dir) / TABLES_DIR
        self.make_room = make_room  # the data dir's budget (the job manager's make_room: busy runs stay)

    def folder(self, owner: str) -> Path:
        return self.root / hashlib.sha256(f"owner:{owner}".encode()).hexdigest()[:24]

    def write(self, owner: str, kind: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
        """The owner's CSV of this kind, replacing their previous one; raises a PlaygroundError when it is too
        large or the data dir's budget has no room for it."""
        if kind not in TABLES:
            raise InvalidParameterError(f"Unknown table {kind!r}; choose one of {', '.join(TABLES)}.")
        data = csv_bytes(headers, rows)
        if len(data) > MAX_TABLE_BYTES:
            raise InvalidParameterError(f"The {kind} table has {len(data):,} bytes as CSV; the limit is "
                                        f"{MAX_TABLE_BYTES:,}. Evaluate fewer examples.")
        if self.make_room is not None:
            self.make_room(len(data))
        path = self.folder(owner) / f"prompt-lab-{kind}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data, f"the {kind} table")
        return path
