"""The Prompt Lab's CSV downloads: one file of each kind per owner, in the data dir's budget."""

from __future__ import annotations

import pytest

from playground.errors import InvalidParameterError
from playground.prompting import exports
from playground.prompting.exports import TableFiles, csv_bytes


def test_csv_bytes_quote_commas_keep_accents_and_leave_none_empty():
    data = csv_bytes(["Estratégia", "Resposta"], [["few-shot (k=3, fixas)", None], ["zero-shot", "positivo"]])
    assert data.startswith("\ufeff".encode())  # spreadsheets read the accents right
    assert data.decode("utf-8-sig").splitlines() == ["Estratégia,Resposta", '"few-shot (k=3, fixas)",',
                                                     "zero-shot,positivo"]


def test_each_owner_keeps_one_file_of_each_kind_and_the_budget_is_asked_first(tmp_path):
    asked = []
    files = TableFiles(tmp_path, make_room=asked.append)
    first = files.write("alice", "scores", ["a"], [[1]])
    again = files.write("alice", "scores", ["a"], [[2]])
    other = files.write("bob", "scores", ["a"], [[3]])
    assert first == again and first.read_text(encoding="utf-8-sig") == "a\n2\n"  # replaced, not added
    assert other.parent != first.parent and "alice" not in str(first)  # folders named by a hash of the owner
    assert first.parent.parent == tmp_path / exports.TABLES_DIR
    assert asked == [len(csv_bytes(["a"], [[1]]))] * 3
    assert sorted(p.name for p in first.parent.iterdir()) == ["prompt-lab-scores.csv"]  # no partial files left


def test_unknown_kinds_and_oversized_tables_are_refused(tmp_path, monkeypatch):
    files = TableFiles(tmp_path)
    with pytest.raises(InvalidParameterError, match="Unknown table"):
        files.write("alice", "../secrets", ["a"], [])
    monkeypatch.setattr(exports, "MAX_TABLE_BYTES", 10)
    with pytest.raises(InvalidParameterError, match="the limit is 10"):
        files.write("alice", "examples", ["a"], [["x" * 20]])
    assert not (tmp_path / exports.TABLES_DIR).exists()
