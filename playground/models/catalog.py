"""The model catalog: a YAML data file read into ``ModelSpec`` dataclasses.

The catalog is the single list of models the app offers. Each entry names its
family, size, licence and the places its weights can come from; nothing else
in the code hard-codes a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
import yaml

from playground.errors import PlaygroundError, UnknownModelError

CATALOG_FILE = Path(__file__).with_name("catalog.yaml")
FAMILIES = ("encoder", "encoder-decoder", "decoder")
SOURCE_KINDS = ("packaged_file", "packaged_call", "hub", "hub_gguf")
FORMATS = ("gguf", "transformers")


@dataclass(frozen=True)
class Source:
    """One place the weights of a model may come from."""

    kind: str
    format: str
    package: str = ""
    file: str = ""
    call: str = ""
    repo: str = ""

    @property
    def is_packaged(self) -> bool:
        return self.kind.startswith("packaged")

    @property
    def is_hub(self) -> bool:
        return self.kind.startswith("hub")

    def describe(self) -> str:
        if self.kind == "packaged_file":
            return f"PyPI package {self.package.replace('_', '-')} ({self.file})"
        if self.kind == "packaged_call":
            return f"PyPI package {self.package.replace('_', '-')}"
        if self.kind == "hub_gguf":
            return f"Hub {self.repo} ({self.file})"
        return f"Hub {self.repo}"


@dataclass(frozen=True)
class ModelSpec:
    """What the app knows about a model before loading it."""

    id: str
    name: str
    family: str
    parameters: int
    license: str
    chat_template: bool
    context_length: int
    objective: str
    head: str
    lora_targets: tuple[str, ...]
    description: str
    sources: tuple[Source, ...] = field(default_factory=tuple)

    @property
    def gguf_sources(self) -> tuple[Source, ...]:
        return tuple(s for s in self.sources if s.format == "gguf")

    @property
    def has_gguf(self) -> bool:
        return bool(self.gguf_sources)

    @property
    def is_generative(self) -> bool:
        return self.head in ("causal_lm", "seq2seq")

    @property
    def hub_repo(self) -> str:
        """The transformers repo on the Hub, if any (used for local-folder names too)."""
        return next((s.repo for s in self.sources if s.kind == "hub"), "")

    @property
    def parameters_label(self) -> str:
        n = self.parameters
        return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"

    def picker_label(self, on_this_machine: bool) -> str:
        """How a model picker names this model: its name and size, and "Hub" after a model whose weights must be
        fetched first (a name, the same in every language, so a label built before anyone's language is known
        needs no translation; short enough for the narrow pickers of the Prompt Lab's columns)."""
        return f"{self.name} · {self.parameters_label}" + ("" if on_this_machine else " · Hub")


def _spec_from_dict(entry: dict, where: str) -> ModelSpec:
    known = {f.name for f in fields(ModelSpec)}
    unknown = set(entry) - known
    if unknown:
        raise PlaygroundError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}.")
    missing = known - set(entry) - {"sources"}
    if missing:
        raise PlaygroundError(f"{where}: missing keys {sorted(missing)}.")
    if entry["family"] not in FAMILIES:
        raise PlaygroundError(f"{where}: family must be one of {FAMILIES}, not {entry['family']!r}.")
    source_keys = {f.name for f in fields(Source)}
    sources = []
    for i, raw in enumerate(entry.get("sources") or []):
        bad = set(raw) - source_keys
        if bad:
            raise PlaygroundError(f"{where} source {i}: unknown keys {sorted(bad)}.")
        source = Source(**raw)
        if source.kind not in SOURCE_KINDS or source.format not in FORMATS:
            raise PlaygroundError(f"{where} source {i}: kind must be in {SOURCE_KINDS}, format in {FORMATS}.")
        sources.append(source)
    values = dict(entry)
    values["lora_targets"] = tuple(entry["lora_targets"])
    values["sources"] = tuple(sources)
    return ModelSpec(**values)


@dataclass(frozen=True)
class Catalog:
    models: tuple[ModelSpec, ...]

    @classmethod
    def load(cls, path: Path = CATALOG_FILE) -> "Catalog":
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        unknown = set(data) - {"models"}
        if unknown:
            raise PlaygroundError(f"{path}: unknown top-level keys {sorted(unknown)}.")
        specs = [_spec_from_dict(e, f"{path} entry {i}") for i, e in enumerate(data.get("models") or [])]
        ids = [s.id for s in specs]
        if len(ids) != len(set(ids)):
            raise PlaygroundError(f"{path}: duplicate model ids.")
        return cls(tuple(specs))

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.models]

    def get(self, model_id: str) -> ModelSpec:
        for spec in self.models:
            if spec.id == model_id:
                return spec
        raise UnknownModelError(
            f"Unknown model id {model_id!r}. Choose one of: {', '.join(self.ids)}."
        ).keyed("error.unknown_model", model=model_id, choices=", ".join(self.ids))

    def with_gguf(self) -> list[ModelSpec]:
        return [m for m in self.models if m.has_gguf]

    def by_family(self, family: str) -> list[ModelSpec]:
        return [m for m in self.models if m.family == family]
