"""Facts read from GGUF headers, and refusal of files that are not complete GGUF."""

from __future__ import annotations

import random
import struct

import pytest

from playground.errors import InvalidGGUFError
from playground.models import gguf_info
from playground.models.gguf_info import cached_gguf_facts, read_gguf_facts
from playground.models.sources import SourceResolver


@pytest.fixture(scope="module")
def smollm2_gguf(catalog, tmp_path_factory):
    resolver = SourceResolver(None, offline=True, hub_cache_dir=tmp_path_factory.mktemp("hub"))
    return resolver.resolve(catalog.get("smollm2-135m-instruct"), "gguf").path


@pytest.fixture(scope="module")
def smollm2_facts(smollm2_gguf):
    return read_gguf_facts(smollm2_gguf)


def test_facts_of_packaged_smollm2(smollm2_facts, smollm2_gguf, catalog):
    f = smollm2_facts
    assert f.path == smollm2_gguf
    assert f.architecture == "llama"
    assert f.file_type == "Q4_1"
    assert f.parameters == pytest.approx(134.5e6, rel=0.005)
    assert f.parameters == catalog.get("smollm2-135m-instruct").parameters
    assert f.context_length == 8192
    assert 4 < f.bits_per_weight < 6
    assert f.file_size_bytes == smollm2_gguf.stat().st_size
    assert f.tensor_bytes <= f.file_size_bytes
    assert "Q4_1" in f.tensor_types
    assert (f.layers, f.hidden_size, f.attention_heads, f.kv_heads) == (30, 576, 9, 3)
    assert f.vocab_size == 49152
    assert f.chat_template


def test_rows_for_display(smollm2_facts):
    rows = dict(smollm2_facts.as_rows())
    assert rows["architecture"] == "llama"
    assert rows["quantisation"] == "Q4_1"
    assert rows["context length"] == "8,192"
    assert rows["chat template"] == "yes"


def _refused(path) -> str:
    with pytest.raises(InvalidGGUFError) as info:
        read_gguf_facts(path)
    text = str(info.value)
    assert path.name in text
    return text


def test_truncated_copy_is_refused(smollm2_gguf, tmp_path):
    data = smollm2_gguf.read_bytes()
    path = tmp_path / "half.gguf"
    path.write_bytes(data[: len(data) // 2])
    text = _refused(path)
    assert "truncated" in text or "damaged" in text
    assert "again" in text  # tells the user what to do


def test_header_only_copy_is_refused(smollm2_gguf, tmp_path):
    path = tmp_path / "head.gguf"
    with smollm2_gguf.open("rb") as handle:
        path.write_bytes(handle.read(4096))
    _refused(path)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "random.gguf"
    path.write_bytes(random.Random(1).randbytes(50_000))
    assert "not a GGUF file" in _refused(path)


def test_magic_then_garbage_is_refused(tmp_path):
    path = tmp_path / "garbage.gguf"
    path.write_bytes(b"GGUF" + random.Random(2).randbytes(50_000))
    _refused(path)


def test_valid_header_with_absurd_counts_is_refused(tmp_path):
    path = tmp_path / "absurd.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**40, 10**9) + bytes(64))
    _refused(path)


def test_header_without_tensors_is_refused_clearly(tmp_path):
    path = tmp_path / "empty-model.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    assert "no tensors" in _refused(path)


@pytest.mark.parametrize("content", [b"", b"GGUF"])
def test_empty_or_magic_only_file_is_refused(tmp_path, content):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(content)
    _refused(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(InvalidGGUFError, match="not found"):
        read_gguf_facts(tmp_path / "nothing.gguf")


def test_cached_facts_are_read_once_and_reread_when_the_file_changes(smollm2_gguf, smollm2_facts, tmp_path,
                                                                      monkeypatch):
    import shutil

    copy = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_gguf, copy)
    cache = tmp_path / "facts"
    first = cached_gguf_facts(copy, cache)
    assert first.as_rows() == smollm2_facts.as_rows()
    assert len(list(cache.glob("*.json"))) == 1

    reads = []
    monkeypatch.setattr(gguf_info, "read_gguf_facts", lambda path: reads.append(path))
    assert cached_gguf_facts(copy, cache) == first
    assert reads == []

    monkeypatch.undo()
    with copy.open("r+b") as handle:  # same name, different (now truncated) content
        handle.truncate(copy.stat().st_size // 2)
    with pytest.raises(InvalidGGUFError):
        cached_gguf_facts(copy, cache)
