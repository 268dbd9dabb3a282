"""Hugging Face Hub data sets for fine-tuning: check a ``hub:owner/name`` id, fetch its data files, read them.

A data id comes from anyone in the room, so it must never reach a file of the
server. ``datasets.load_dataset(id)`` would read a local folder named like the
id, scan the working directory for a builder name (``text``, ``csv``) or follow
a URL, so it is never given the id. Instead:

1. :func:`check_hub_dataset_id` accepts only an ``owner/name`` repo id
   (huggingface_hub's own validation, with exactly one ``/``); a path, a URL or
   a builder name is refused with a message that says what to give instead;
2. :func:`fetch_hub_dataset` lists the repo's files on the Hub (or, offline, in
   the Hub cache), picks the data files of one format (Parquet, JSON Lines, CSV,
   TSV), refuses a data set over the size cap before anything is downloaded, and
   downloads only those files with ``snapshot_download`` into the cache under
   the app's data dir;
3. :func:`load_hub_dataset` reads them with the packaged ``datasets`` builder of
   their format, splits named from the file names by ``datasets``' own rules,
   its cache also under the data dir.

Offline (``Settings.offline`` / ``HF_HUB_OFFLINE``) only the cache is used. No
message shows a server path: the data set is named by the id the user gave.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from playground.errors import DataFileError, disk_full_error, is_disk_full, redact_server_paths, server_locations

EXAMPLE_ID = "knkarthick/dialogsum"
# What a workshop user may make the server download for one data set (the files of the format read).
HUB_DATA_MAX_BYTES = 200_000_000
HUB_DATA_MAX_FILES = 64
MAX_ID_SHOWN = 120  # characters of a refused id repeated in its message


@dataclass(frozen=True)
class DataFormat:
    """One kind of data file the app reads from a Hub repo, and the packaged ``datasets`` builder that reads it."""

    name: str  # for messages
    suffixes: tuple[str, ...]
    builder: str
    options: Mapping[str, Any] = field(default_factory=dict)


# Preferred first: a repo that holds the same rows as Parquet and CSV is read from the Parquet files.
DATA_FORMATS = (
    DataFormat("Parquet", (".parquet",), "parquet"),
    DataFormat("JSON Lines", (".jsonl", ".json"), "json"),
    DataFormat("CSV", (".csv",), "csv"),
    DataFormat("TSV", (".tsv",), "csv", MappingProxyType({"sep": "\t"})),
)
# JSON files that describe a data set rather than hold its rows.
METADATA_FILES = frozenset({"dataset_infos.json", "dataset_info.json", "dataset_dict.json", "state.json"})


@dataclass(frozen=True)
class HubDataSource:
    """Where Hub data sets are cached (under the app's data dir) and how they may be fetched."""

    cache_dir: Path  # <data dir>/datasets: "hub" holds the downloaded files, "arrow" the datasets cache
    offline: bool  # only the cache, never the network
    max_bytes: int = HUB_DATA_MAX_BYTES
    max_files: int = HUB_DATA_MAX_FILES
    endpoint: str | None = None  # the Hub's address (None: huggingface_hub's own, HF_ENDPOINT)

    @classmethod
    def in_data_dir(cls, data_dir: str | os.PathLike, offline: bool, **options: Any) -> "HubDataSource":
        """The source that caches under ``data_dir/datasets``."""
        return cls(Path(data_dir) / "datasets", offline, **options)

    @classmethod
    def from_settings(cls, settings=None) -> "HubDataSource":
        """The running app's source: its data dir and offline setting (from the environment when not given)."""
        if settings is None:
            from playground.config import Settings

            settings = Settings.load()
        return cls.in_data_dir(settings.data_dir, settings.offline)

    @property
    def hub_cache(self) -> Path:
        return self.cache_dir / "hub"

    @property
    def arrow_cache(self) -> Path:
        return self.cache_dir / "arrow"


def hub_source_for(data_dir: str | os.PathLike, resolver=None) -> HubDataSource:
    """The Hub data source of a run in ``data_dir``: offline exactly when the model resolver is (without one,
    when the app's settings say so)."""
    if resolver is not None and hasattr(resolver, "offline"):
        return HubDataSource.in_data_dir(data_dir, bool(resolver.offline))
    from playground.config import Settings

    return HubDataSource.in_data_dir(data_dir, Settings.load().offline)


@dataclass(frozen=True)
class HubDataFiles:
    """The data files of one Hub dataset, on disk in the Hub cache."""

    dataset_id: str
    folder: Path  # the cached snapshot
    files: tuple[str, ...]  # paths inside the repo
    format: DataFormat
    total_bytes: int


# ------------------------------------------------------------------------------ the id


def _shown(text: str) -> str:
    return repr(text if len(text) <= MAX_ID_SHOWN else text[:MAX_ID_SHOWN] + "…")


def _looks_like_path(text: str) -> bool:
    return (text.startswith(("/", "\\", "~", ".")) or "\\" in text
            or (len(text) >= 2 and text[1] == ":" and text[0].isalpha()))


def _hub_url_id(text: str) -> str | None:
    """``owner/name`` of a huggingface.co/datasets/owner/name address, to suggest it."""
    for marker in ("huggingface.co/datasets/", "hf.co/datasets/", "hf://datasets/"):
        if marker in text:
            parts = text.split(marker, 1)[1].split("?")[0].split("#")[0].strip("/").split("/")
            if len(parts) >= 2 and parts[0] and parts[1]:
                return f"{parts[0]}/{parts[1].split('@')[0]}"
    return None


def check_hub_dataset_id(text: str) -> str:
    """The Hub dataset id in ``text`` (what follows ``hub:``), stripped; raises DataFileError saying what is wrong.

    Only ``owner/name`` passes: letters, digits, ``-``, ``_`` and ``.``, as the Hub itself allows
    (``huggingface_hub.utils.validate_repo_id``). Paths, addresses and builder names are refused.
    """
    dataset_id = str(text or "").strip()
    example = f"hub:{EXAMPLE_ID}"
    upload = "To use a file of your own, upload it instead."
    if not dataset_id:
        raise DataFileError(f"data 'hub:' needs a dataset id after it, e.g. {example}.")
    if "://" in dataset_id or dataset_id.lower().startswith(("hf:", "http:", "https:", "www.")):
        suggestion = _hub_url_id(dataset_id)
        hint = f" (for that address: hub:{suggestion})" if suggestion else ""
        raise DataFileError(f"{_shown(dataset_id)} is an address, not a Hub dataset id: give just owner/name after "
                            f"hub:{hint}, e.g. {example}.")
    if _looks_like_path(dataset_id):
        raise DataFileError(f"{_shown(dataset_id)} looks like a file path, but a Hub dataset id is owner/name, "
                            f"e.g. {example}; data is never read from the server's folders. {upload}")
    if "/" not in dataset_id:
        raise DataFileError(f"{_shown(dataset_id)} is not a Hub dataset id: give the owner and the name, "
                            f"e.g. {example}. {upload}")
    if dataset_id.count("/") > 1:
        raise DataFileError(f"{_shown(dataset_id)} has more than one '/': a Hub dataset id is owner/name, "
                            f"e.g. {example}.")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(dataset_id)
        # The Hub's names are ASCII and each part is short; the validator alone allows any letter and a long owner.
        if not dataset_id.isascii() or any(len(part) > 96 for part in dataset_id.split("/")):
            raise HFValidationError(dataset_id)
    except HFValidationError:
        raise DataFileError(f"{_shown(dataset_id)} is not a valid Hub dataset id: owner and name use letters, "
                            f"digits, '-', '_' and '.', do not start or end with '-' or '.', hold no '--' or '..', "
                            f"and are at most 96 characters each, e.g. {example}.") from None
    return dataset_id


# ------------------------------------------------------------------------------ fetching


def choose_data_files(listing: Sequence[tuple[str, int | None]]) -> tuple[DataFormat, list[tuple[str, int]]] | None:
    """The format to read and its files (path, bytes) among a repo's files; None when none is readable."""
    for data_format in DATA_FORMATS:
        chosen = []
        for path, size in listing:
            pure = PurePosixPath(path)
            if pure.suffix.lower() not in data_format.suffixes or pure.name in METADATA_FILES:
                continue
            if any(part.startswith(".") for part in pure.parts):
                continue
            chosen.append((path, int(size or 0)))
        if chosen:
            return data_format, sorted(chosen)
    return None


def _message_text(exc: BaseException, source: HubDataSource) -> str:
    """The first line of the deepest cause of ``exc`` (where the real reason is), server paths hidden."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0][:200].rstrip('.')}" if lines else type(exc).__name__
    return redact_server_paths(text, server_locations([("<Hub data cache>", source.cache_dir)]))


def _listing(dataset_id: str, source: HubDataSource) -> tuple[list[tuple[str, int | None]], bool, str]:
    """(path, bytes) of the repo's files, whether they came from the cache, and why the Hub was not used."""
    from huggingface_hub import HfApi, get_cached_repo_tree
    from huggingface_hub.errors import (CachedRepoTreeNotFoundError, GatedRepoError, HfHubHTTPError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    where = f"Hub dataset {dataset_id!r}"
    reason = "the app is offline"
    if not source.offline:
        try:
            info = HfApi(endpoint=source.endpoint).dataset_info(dataset_id, files_metadata=True)
            return [(s.rfilename, s.lfs.size if s.lfs else s.size) for s in info.siblings or []], False, ""
        except GatedRepoError:
            raise DataFileError(f"The {where} is gated: accept its conditions on huggingface.co and give the server "
                                f"a token (HF_TOKEN), or choose another data set.") from None
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise DataFileError(f"The Hub has no dataset {dataset_id!r} (or it is private). Check the owner and the "
                                f"name, e.g. hub:{EXAMPLE_ID}.") from None
        except OfflineModeIsEnabled:
            reason = "HF_HUB_OFFLINE is set"
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            reason = f"the Hub answered {status or 'an error'}"
        except Exception as exc:  # the network: no route, no name, a timeout
            reason = f"the Hub could not be reached ({type(exc).__name__})"
    try:
        tree = get_cached_repo_tree(dataset_id, repo_type="dataset", cache_dir=source.hub_cache)
    except CachedRepoTreeNotFoundError:
        raise DataFileError(f"The {where} is not in the app's Hub cache and {reason}. Go online once to download "
                            f"it (unset HF_HUB_OFFLINE / PLAYGROUND_OFFLINE), or upload its rows as a JSONL or CSV "
                            f"file.") from None
    except Exception as exc:  # a damaged cache entry
        raise DataFileError(f"The app's cached copy of the {where} cannot be read ({_message_text(exc, source)}) "
                            f"and {reason}. Go online to download it again.") from None
    return [(f.path, f.size) for f in tree], True, reason


def fetch_hub_dataset(dataset_id: str, source: HubDataSource) -> HubDataFiles:
    """The data files of a Hub dataset, downloaded into (or found in) the cache under the data dir.

    Raises DataFileError for an invalid id, a missing or gated repo, a repo without readable
    data files, data over ``source.max_bytes`` / ``source.max_files`` (checked from the file
    list before any download), a Hub out of reach with nothing cached, or a full disk.
    """
    dataset_id = check_hub_dataset_id(dataset_id)
    where = f"Hub dataset {dataset_id!r}"
    listing, from_cache, reason = _listing(dataset_id, source)
    chosen = choose_data_files(listing)
    if chosen is None:
        names = ", ".join(sorted(p for p, _ in listing)[:6]) or "none"
        readable = ", ".join(f.name for f in DATA_FORMATS)
        raise DataFileError(f"The {where} has no data files this app can read ({readable}); its files: {names}. "
                            f"Choose a data set with such files (the Hub's dataset viewer shows them).")
    data_format, files = chosen
    total = sum(size for _, size in files)
    if total > source.max_bytes:
        raise DataFileError(f"The {where} has {total / 1e6:,.0f} MB of {data_format.name} files; this server takes "
                            f"at most {source.max_bytes / 1e6:,.0f} MB per data set. Choose a smaller data set, or "
                            f"download the rows you need and upload them as a JSONL or CSV file.")
    if len(files) > source.max_files:
        raise DataFileError(f"The {where} has {len(files):,} {data_format.name} files; this server takes at most "
                            f"{source.max_files:,} per data set. Choose a smaller data set, or upload its rows as a "
                            f"JSONL or CSV file.")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(dataset_id, repo_type="dataset", cache_dir=source.hub_cache,
                                   allow_patterns=[path for path, _ in files], local_files_only=from_cache,
                                   endpoint=source.endpoint, max_workers=4)
    except Exception as exc:
        if is_disk_full(exc):
            raise disk_full_error(f"the {where}") from None
        if from_cache:
            raise DataFileError(f"The app's Hub cache holds only part of the {where} and {reason}. Go online to "
                                f"finish the download.") from None
        raise DataFileError(f"Could not download the {where}: {_message_text(exc, source)}. Try again, or upload "
                            f"its rows as a JSONL or CSV file.") from None
    folder_path = Path(folder)
    missing = [path for path, _ in files if not (folder_path / path).is_file()]
    if missing:
        raise DataFileError(f"The download of the {where} is incomplete ({missing[0]} is missing). Go online and "
                            f"try again.")
    return HubDataFiles(dataset_id, folder_path, tuple(path for path, _ in files), data_format, total)


# ------------------------------------------------------------------------------ reading


def split_files(fetched: HubDataFiles) -> dict[str, list[str]]:
    """Split name -> the data files on disk, by ``datasets``' own naming rules (train*.csv, data/test-0000*...)."""
    from datasets.data_files import get_data_patterns, resolve_pattern

    base = str(fetched.folder)
    wanted = {str((fetched.folder / path).absolute()) for path in fetched.files}
    splits: dict[str, list[str]] = {}
    for split, patterns in get_data_patterns(base).items():
        found: list[str] = []
        for pattern in patterns:
            try:
                paths = resolve_pattern(pattern, base, allowed_extensions=list(fetched.format.suffixes))
            except FileNotFoundError:  # a pattern of the split that matches none of the chosen files
                continue
            for path in paths:
                local = str(Path(path.removeprefix("file://")).absolute())
                if local in wanted and local not in found:  # only the files chosen, inside the snapshot
                    found.append(local)
        if found:
            splits[split] = sorted(found)
    if not splits:  # names datasets does not recognise: everything is training data
        splits["train"] = sorted(wanted)
    return splits


def load_hub_dataset(dataset_id: str, source: HubDataSource) -> Mapping[str, Any]:
    """Split name -> ``datasets.Dataset`` of a Hub dataset (fetched with :func:`fetch_hub_dataset`)."""
    fetched = fetch_hub_dataset(dataset_id, source)
    where = f"Hub dataset {fetched.dataset_id!r}"
    try:
        import datasets

        data_files = split_files(fetched)
        loaded = datasets.load_dataset(fetched.format.builder, data_files=data_files,
                                       cache_dir=str(source.arrow_cache), **dict(fetched.format.options))
    except DataFileError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise disk_full_error(f"the {where} in the datasets cache") from None
        raise DataFileError(f"The {fetched.format.name} files of the {where} could not be read: "
                            f"{_message_text(exc, source)}.") from None
    return loaded if isinstance(loaded, Mapping) else {"train": loaded}
