"""Facts about a GGUF file, read from its header with the ``gguf`` package.

Used to show what a quantised model is (architecture, quantisation type, size,
bits per weight, context length) and to refuse a truncated or corrupted file
with a clear message before llama.cpp or transformers try to load it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from playground.atomic import atomic_write_text
from playground.errors import InvalidGGUFError, SaveError, redact_server_paths

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GGUFFacts:
    path: Path
    name: str
    architecture: str
    file_type: str  # the quantisation the file declares, e.g. Q4_1
    tensor_types: dict[str, int] = field(default_factory=dict)  # tensor type -> number of tensors
    file_size_bytes: int = 0
    parameters: int = 0
    tensor_bytes: int = 0
    context_length: int = 0
    layers: int = 0
    hidden_size: int = 0
    attention_heads: int = 0
    kv_heads: int = 0
    vocab_size: int = 0
    tokenizer_model: str = ""
    chat_template: str = ""

    @property
    def bits_per_weight(self) -> float:
        return self.tensor_bytes * 8 / self.parameters if self.parameters else 0.0

    @property
    def file_size_mb(self) -> float:
        return self.file_size_bytes / 1e6

    def as_rows(self) -> list[tuple[str, str]]:
        types = ", ".join(f"{k}×{v}" for k, v in sorted(self.tensor_types.items(), key=lambda kv: -kv[1]))
        return [
            ("name", self.name),
            ("architecture", self.architecture),
            ("quantisation", self.file_type),
            ("tensor types", types),
            ("file size", f"{self.file_size_mb:.1f} MB"),
            ("parameters", f"{self.parameters / 1e6:.1f} M"),
            ("bits per weight", f"{self.bits_per_weight:.2f}"),
            ("context length", f"{self.context_length:,}"),
            ("layers", str(self.layers)),
            ("hidden size", str(self.hidden_size)),
            ("attention heads / KV heads", f"{self.attention_heads} / {self.kv_heads}"),
            ("vocabulary", f"{self.vocab_size:,} ({self.tokenizer_model})"),
            ("chat template", "yes" if self.chat_template else "no"),
        ]


def field_value(reader, key: str, default=None):
    """A scalar metadata value of an open GGUF reader (a string decoded), or ``default`` when absent."""
    f = reader.fields.get(key)
    if f is None or not f.data:
        return default
    part = f.parts[f.data[0]]
    try:
        return bytes(part).decode("utf-8") if f.types and f.types[0].name == "STRING" else part.tolist()[0]
    except (UnicodeDecodeError, IndexError):
        return default


def open_gguf(path: str | Path):
    """The gguf package's reader over ``path`` (memory-mapped); InvalidGGUFError for a missing, damaged or
    empty file. Parsing the header of a large vocabulary takes seconds: open a file once per use."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise InvalidGGUFError(f"GGUF file not found: {path.name}")
    try:
        reader = GGUFReader(path, "r")
        if not reader.tensors:
            raise ValueError("no tensors")
    except Exception as exc:
        raise InvalidGGUFError(f"{path.name} is damaged or truncated and cannot be read ({type(exc).__name__}: "
                               f"{redact_server_paths(str(exc))[:160]}).") from None
    return reader


def read_gguf_facts(path: str | Path) -> GGUFFacts:
    """Read and check a GGUF file; raises InvalidGGUFError when it is not a complete GGUF."""
    path = Path(path)
    if not path.is_file():
        raise InvalidGGUFError(f"GGUF file not found: {path.name}")
    size = path.stat().st_size
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise InvalidGGUFError(
            f"{path.name} is not a GGUF file (it starts with {magic!r}, not b'GGUF'). "
            "Download it again or pick another file."
        )
    try:
        from gguf import GGUFReader, LlamaFileType

        reader = GGUFReader(path, "r")
        tensors = list(reader.tensors)
    except Exception as exc:
        raise InvalidGGUFError(
            f"{path.name} ({size / 1e6:.1f} MB) is damaged or truncated and cannot be read "
            f"({type(exc).__name__}: {redact_server_paths(str(exc))[:160]}). Download it again."
        ) from None
    if not tensors:
        raise InvalidGGUFError(
            f"{path.name} has a GGUF header but holds no tensors, so it is not a model. "
            "Download it again or pick another file."
        )
    end = max(int(t.data_offset) + int(t.n_bytes) for t in tensors)
    if end > size:
        raise InvalidGGUFError(
            f"{path.name} is truncated: its tensors need {end / 1e6:.1f} MB but the file has "
            f"{size / 1e6:.1f} MB. Download it again."
        )
    arch = field_value(reader, "general.architecture", "unknown")
    file_type = field_value(reader, "general.file_type")
    try:
        file_type_name = LlamaFileType(file_type).name.replace("MOSTLY_", "") if file_type is not None else "?"
    except ValueError:
        file_type_name = f"type {file_type}"
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return GGUFFacts(
        path=path,
        name=field_value(reader, "general.name", path.stem),
        architecture=arch,
        file_type=file_type_name,
        tensor_types=dict(Counter(t.tensor_type.name for t in tensors)),
        file_size_bytes=size,
        parameters=sum(int(t.n_elements) for t in tensors),
        tensor_bytes=sum(int(t.n_bytes) for t in tensors),
        context_length=int(field_value(reader, f"{arch}.context_length", 0) or 0),
        layers=int(field_value(reader, f"{arch}.block_count", 0) or 0),
        hidden_size=int(field_value(reader, f"{arch}.embedding_length", 0) or 0),
        attention_heads=int(field_value(reader, f"{arch}.attention.head_count", 0) or 0),
        kv_heads=int(field_value(reader, f"{arch}.attention.head_count_kv", 0) or 0),
        vocab_size=len(tokens.data) if tokens is not None else 0,
        tokenizer_model=field_value(reader, "tokenizer.ggml.model", "") or "",
        chat_template=field_value(reader, "tokenizer.chat_template", "") or "",
    )


def _cache_file(cache_dir: Path, path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    return cache_dir / f"{key}.json"


def cached_gguf_facts(path: str | Path, cache_dir: Path | None) -> GGUFFacts:
    """``read_gguf_facts`` remembered on disk: parsing a large vocabulary takes seconds, a JSON file does not.

    The cache key includes the file's size and modification time, so a replaced file is read again.
    """
    path = Path(path)
    if cache_dir is None or not path.is_file():
        return read_gguf_facts(path)
    cache_file = _cache_file(Path(cache_dir), path)
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
        data["path"] = Path(data["path"])
        return GGUFFacts(**data)
    except (OSError, ValueError, TypeError):
        pass
    facts = read_gguf_facts(path)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        data = asdict(facts)
        data["path"] = str(facts.path)
        atomic_write_text(cache_file, json.dumps(data), "the GGUF facts cache")
    except (OSError, SaveError):
        pass  # a read-only data dir only costs speed
    return facts
