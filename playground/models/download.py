"""``python -m playground download [IDS | --all] [--check]``: the offline kit for the models no package ships.

No PyPI package ships FLAN-T5, T5 or a BERT with its masked-LM head, so on a stage without a network the
encoder-decoder column is empty and fill-mask is unavailable. This command fetches, ahead of time, the Hub
weights of catalog models and the DialogSum data set to where the app already looks for them offline:

- a model goes to ``PLAYGROUND_MODELS_DIR/<catalog id>/`` (``--models-dir`` or the setting) when a models folder
  is set, else into the Hub cache (``HF_HUB_CACHE``), which the resolver also reads offline;
- the data set goes to the app's Hub data cache under ``PLAYGROUND_DATA_DIR/datasets/``, where ``hub:`` data
  ids are read offline (:mod:`playground.finetune.hub_data`).

Files come through huggingface_hub's own ``hf_hub_download`` (it honours ``HF_ENDPOINT``, retries a broken
connection from where it stopped, and never leaves a partial file under the final name). Each file is then
verified against the Hub's file API: its size, and its sha256 (LFS files) or git blob sha1 (other files); a
mismatch removes the file and fetches it once more. A model folder in ``PLAYGROUND_MODELS_DIR`` is assembled
in ``PLAYGROUND_MODELS_DIR/.partial-downloads/<id>/`` and renamed into place only once every file is verified,
so an interrupted download never looks like a model (running the command again keeps the files already
verified and fetches the rest); in the Hub cache ``config.json``, which marks a folder as a model, comes last.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from playground.errors import (ModelUnavailableError, PlaygroundError, is_disk_full, redact_server_paths,
                               server_locations)
from playground.models.catalog import Catalog, ModelSpec, Source
from playground.models.sources import _TRANSFORMERS_FILES, SourceResolver, download_command, download_source

DATASET_ID = "knkarthick/dialogsum"  # the data set of the dialogue-summarisation lab (hub:knkarthick/dialogsum)
DATASET_NAMES = ("dialogsum", DATASET_ID, f"hub:{DATASET_ID}")
PARTIAL_FOLDER = ".partial-downloads"
COMMAND = "python -m playground download"
EXIT_FAILED, EXIT_USAGE = 1, 2


class DownloadError(PlaygroundError):
    """A download that could not be made or verified; the message says what to do."""


class HubUnreachableError(DownloadError):
    """The Hub could not be reached at all (so the other downloads of a command are not tried)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub repo as the Hub's file API describes it."""

    path: str
    size: int
    sha256: str = ""  # LFS files
    git_sha1: str = ""  # other files: the git blob id


@dataclass(frozen=True)
class Progress:
    """What a download reports after each file: which item, how many files and bytes of it are done."""

    item: str
    file: str
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    note: str = ""  # "fetched", "kept" (already there and verified), "re-fetched" (failed verification once)

    def line(self) -> str:
        return (f"{self.item}: {self.files_done}/{self.files_total} files, {_mb(self.bytes_done)} of "
                f"{_mb(self.bytes_total)} ({self.file} {self.note})")


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class OfflineStatus:
    """Whether one catalog item works offline right now, from where, and else the command that fetches it."""

    id: str
    name: str
    kind: str  # "model" or "data set"
    family: str
    ready: bool
    where: str  # how the item is found offline ("" when it is not)
    command: str  # what fetches it ("" when ready or when nothing can)
    needs: str  # what is missing, in words ("" when ready)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


# ------------------------------------------------------------------------------ the Hub's file API


def _git_sha1(path: Path) -> str:
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, remote: RemoteFile) -> str:
    """"" when ``path`` is ``remote`` (size, then sha256 or git blob sha1); else what differs."""
    if not path.is_file():
        return "it is missing"
    size = path.stat().st_size
    if size != remote.size:
        return f"it has {size:,} bytes, the Hub's file {remote.size:,}"
    if remote.sha256 and _sha256(path) != remote.sha256:
        return "its sha256 differs from the Hub's"
    if not remote.sha256 and remote.git_sha1 and _git_sha1(path) != remote.git_sha1:
        return "its checksum differs from the Hub's"
    return ""


def _hub_problem(exc: BaseException, what: str, endpoint: str | None) -> DownloadError:
    """One clear message for a failure to reach or read the Hub."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError)

    where = endpoint or constants.ENDPOINT
    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadError(f"HF_HUB_OFFLINE is set, so nothing can be downloaded. Run the command with "
                             f"HF_HUB_OFFLINE=0 (the app itself may stay offline afterwards).")
    if isinstance(exc, GatedRepoError):
        return DownloadError(f"{what} is gated: accept its conditions on the Hub and give a token (HF_TOKEN).")
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadError(f"The Hub at {where} has no {what} (or it is private).")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return DownloadError(f"The Hub at {where} answered {status or 'an error'} for {what}. Try again later.")
    return HubUnreachableError(f"The Hugging Face Hub ({where}) could not be reached ({type(exc).__name__}) for {what}. "
                         f"Connect this machine to the network (or set HF_ENDPOINT to a mirror) and run the command "
                         f"again: files already verified are kept.")


def remote_files(repo: str, repo_type: str = "model", endpoint: str | None = None) -> list[RemoteFile]:
    """The repo's files with their sizes and checksums, from the Hub's file API."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint)
    try:
        if repo_type == "dataset":
            info = api.dataset_info(repo, files_metadata=True)
        else:
            info = api.model_info(repo, files_metadata=True)
    except Exception as exc:
        raise _hub_problem(exc, f"the {repo_type} repo {repo}", endpoint) from None
    files = []
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        size = lfs.size if lfs else sibling.size
        files.append(RemoteFile(sibling.rfilename, int(size or 0), (lfs.sha256 if lfs else "") or "",
                                "" if lfs else (sibling.blob_id or "")))
    return files


def files_to_fetch(source: Source, listing: Sequence[RemoteFile]) -> list[RemoteFile]:
    """The files of ``source`` the app loads: its GGUF file, or a transformers folder's top-level config,
    tokenizer and safetensors files (the resolver's own patterns; nothing pickled). Small files first, so an
    interrupted download keeps them; ``config.json``, which marks a folder as a model, last of all."""
    if source.kind == "hub_gguf":
        chosen = [f for f in listing if f.path == source.file]
    else:
        chosen = [f for f in listing if "/" not in f.path
                  and any(fnmatch.fnmatch(f.path, pattern) for pattern in _TRANSFORMERS_FILES)]
    return sorted(chosen, key=lambda f: (f.path == "config.json", f.size, f.path))


# ------------------------------------------------------------------------------ downloading


@dataclass
class Downloader:
    """Fetches catalog models and the data set for offline use."""

    catalog: Catalog
    models_dir: Path | None  # None: models go to the Hub cache
    data_dir: Path
    endpoint: str | None = None  # None: huggingface_hub's own (HF_ENDPOINT)
    hub_cache_dir: Path | None = None  # None: huggingface_hub's own (HF_HUB_CACHE)
    progress: ProgressCallback | None = None

    @classmethod
    def from_settings(cls, settings, catalog: Catalog | None = None, **options) -> "Downloader":
        return cls(catalog or Catalog.load(), settings.models_dir, Path(settings.data_dir), **options)

    def resolver(self) -> SourceResolver:
        """The resolver the app would use with the Hub out of reach."""
        return SourceResolver(self.models_dir, offline=True, hub_cache_dir=self.hub_cache_dir)

    # -- what is there ---------------------------------------------------
    def check(self) -> list[OfflineStatus]:
        """Each catalog model and the data set: whether it works offline now, and else what fetches it."""
        resolver = self.resolver()
        rows = [self._model_status(spec, resolver) for spec in self.catalog.models]
        return rows + [self._dataset_status()]

    def _model_status(self, spec: ModelSpec, resolver: SourceResolver) -> OfflineStatus:
        packaged = [s for s in spec.sources if s.is_packaged and importlib.util.find_spec(s.package) is not None]
        if packaged:
            return OfflineStatus(spec.id, spec.name, "model", spec.family, True, packaged[0].describe(), "", "")
        try:
            found = resolver.resolve(replace(spec, sources=tuple(s for s in spec.sources if s.is_hub)))
            where = found.detail if found.origin == "local" else f"Hub cache ({found.detail})"
            return OfflineStatus(spec.id, spec.name, "model", spec.family, True, where, "", "")
        except ModelUnavailableError:
            source = download_source(spec)
            command = download_command(spec)
            needs = (f"a download of {source.describe()}" if source else "no source in the catalog works offline")
            return OfflineStatus(spec.id, spec.name, "model", spec.family, False, "", command, needs)

    def _dataset_source(self, offline: bool):
        from playground.finetune.hub_data import HubDataSource

        return HubDataSource.in_data_dir(self.data_dir, offline=offline, endpoint=self.endpoint)

    def _dataset_status(self) -> OfflineStatus:
        from playground.finetune.hub_data import fetch_hub_dataset

        name = f"DialogSum (hub:{DATASET_ID})"
        try:
            fetched = fetch_hub_dataset(DATASET_ID, self._dataset_source(offline=True))
            return OfflineStatus("dialogsum", name, "data set", "-", True,
                                 f"data cache ({len(fetched.files)} files, {_mb(fetched.total_bytes)})", "", "")
        except PlaygroundError:
            return OfflineStatus("dialogsum", name, "data set", "-", False, "", f"{COMMAND} dialogsum",
                                 f"a download of Hub dataset {DATASET_ID}")

    # -- fetching --------------------------------------------------------
    def target_ids(self, ids: Sequence[str], everything: bool) -> list[str]:
        """The ids to fetch (catalog ids and ``dialogsum``), checked; --all: every model not yet offline and the
        data set. Raises UnknownModelError for an id that is neither."""
        if everything:
            status = self.check()
            return [s.id for s in status if not s.ready and s.command]
        chosen = []
        for given in ids:
            name = "dialogsum" if given.lower() in DATASET_NAMES else given
            if name != "dialogsum":
                self.catalog.get(name)  # raises with the list of ids
            if name not in chosen:
                chosen.append(name)
        return chosen

    def fetch(self, item: str, fmt: str | None = None) -> str:
        """Fetch one catalog model or ``dialogsum``; returns where the app now finds it."""
        if item == "dialogsum":
            return self.fetch_dataset()
        spec = self.catalog.get(item)
        source = download_source(spec, fmt)
        if source is None:
            kind = f"{fmt} " if fmt else ""
            raise DownloadError(f"The catalog lists no Hub {kind}source for {spec.id}: nothing to download.")
        if self.resolver().is_available_offline(spec, source.format):
            return f"{self._model_status(spec, self.resolver()).where} (already there; nothing fetched)"
        return self.fetch_model(spec, source)

    def _report(self, item: str, file: str, done: int, total: int, done_bytes: int, total_bytes: int, note: str):
        if self.progress:
            self.progress(Progress(item, file, done, total, done_bytes, total_bytes, note))

    def _fetch_files(self, item: str, repo: str, files: list[RemoteFile], into: dict) -> list[Path]:
        """Download ``files`` with hf_hub_download (``into``: its destination options), verifying each."""
        from huggingface_hub import hf_hub_download

        total_bytes = sum(f.size for f in files)
        done_bytes, paths = 0, []
        for i, remote in enumerate(files, 1):
            note = "fetched"
            for attempt in range(2):
                try:
                    path = Path(hf_hub_download(repo, remote.path, endpoint=self.endpoint, force_download=attempt > 0,
                                                **into))
                except Exception as exc:
                    if is_disk_full(exc):
                        raise DownloadError(f"The disk is full: {item} needs {_mb(total_bytes)}.") from None
                    raise _hub_problem(exc, f"{remote.path} of {repo}", self.endpoint) from None
                problem = verify(path, remote)
                if not problem:
                    break
                _remove_download(path)
                if attempt:
                    raise DownloadError(f"{remote.path} of {repo} failed verification twice ({problem}); it was "
                                        f"removed. Run the command again; if it fails again, the copy the Hub "
                                        f"serves here (HF_ENDPOINT) is damaged.")
                note = "re-fetched"
            done_bytes += remote.size
            paths.append(path)
            self._report(item, remote.path, i, len(files), done_bytes, total_bytes, note)
        return paths

    def fetch_model(self, spec: ModelSpec, source: Source) -> str:
        files = files_to_fetch(source, remote_files(source.repo, endpoint=self.endpoint))
        if not files:
            raise DownloadError(f"{source.describe()} has none of the files the app loads.")
        if self.models_dir is None:
            cache = {"cache_dir": str(self.hub_cache_dir)} if self.hub_cache_dir else {}
            self._fetch_files(spec.id, source.repo, files, cache)
            return f"Hub cache ({source.describe()})"
        final = self.models_dir / spec.id
        staging = self.models_dir / PARTIAL_FOLDER / spec.id
        staging.mkdir(parents=True, exist_ok=True)
        paths = self._fetch_files(spec.id, source.repo, files, {"local_dir": str(staging)})
        final.mkdir(exist_ok=True)
        for remote, path in zip(files, paths):  # each file appears whole (a rename); config.json, last, marks a model
            os.replace(path, final / remote.path)
        shutil.rmtree(staging, ignore_errors=True)  # with huggingface_hub's bookkeeping of the folder
        try:
            (self.models_dir / PARTIAL_FOLDER).rmdir()
        except OSError:  # other downloads still in progress
            pass
        return f"PLAYGROUND_MODELS_DIR/{spec.id}"

    def fetch_dataset(self) -> str:
        from playground.finetune.hub_data import fetch_hub_dataset

        listing = {f.path: f for f in remote_files(DATASET_ID, "dataset", self.endpoint)}
        try:
            fetched = fetch_hub_dataset(DATASET_ID, self._dataset_source(offline=False))
        except PlaygroundError as exc:
            raise DownloadError(str(exc)) from None
        done_bytes = 0
        for i, name in enumerate(fetched.files, 1):
            remote = listing.get(name)
            path = fetched.folder / name
            problem = verify(path, remote) if remote else ""
            if problem:
                _remove_download(path)
                raise DownloadError(f"{name} of Hub dataset {DATASET_ID} failed verification ({problem}); it was "
                                    f"removed. Run {COMMAND} dialogsum again.")
            done_bytes += path.stat().st_size
            self._report("dialogsum", name, i, len(fetched.files), done_bytes, fetched.total_bytes, "verified")
        # What the app will read offline: the cache alone must answer.
        try:
            fetch_hub_dataset(DATASET_ID, self._dataset_source(offline=True))
        except PlaygroundError as exc:
            raise DownloadError(f"The download of Hub dataset {DATASET_ID} is not readable offline: {exc}") from None
        return f"data cache (hub:{DATASET_ID})"


def _remove_download(path: Path) -> None:
    """Remove a downloaded file, and the Hub cache's blob behind it when it is a link."""
    try:
        target = path.resolve()
        path.unlink(missing_ok=True)
        if target != path:
            target.unlink(missing_ok=True)
    except OSError:
        pass


# ------------------------------------------------------------------------------ the command


def status_table(rows: Sequence[OfflineStatus]) -> str:
    """--check's table: one line per item, the command that fetches each missing one in full."""
    headers = ("id", "kind", "offline", "found in / needs")
    body = [(r.id, r.kind if r.kind != "model" else r.family, "yes" if r.ready else "NO",
             r.where if r.ready else f"{r.needs}: {r.command}" if r.command else r.needs) for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers[:-1])]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths + [0])).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths + [0])).rstrip() for row in body]
    missing = [r for r in rows if not r.ready and r.command]
    lines.append("")
    lines.append(f"{len(rows) - len(missing)} of {len(rows)} work offline now."
                 + (f" Everything missing: {COMMAND} --all" if missing else ""))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Fetch catalog models and the DialogSum data set ahead of time, so the app has "
        "them offline (into PLAYGROUND_MODELS_DIR, else the Hub cache; the data set into PLAYGROUND_DATA_DIR).")
    parser.add_argument("ids", nargs="*", help="catalog model ids, and/or 'dialogsum' for the data set")
    parser.add_argument("--all", action="store_true", help="every catalog model not yet offline, and the data set")
    parser.add_argument("--check", action="store_true", help="print what works offline now, and what fetches the "
                        "rest; downloads nothing")
    parser.add_argument("--format", choices=("gguf", "transformers"), default=None,
                        help="which Hub source of a model to fetch (default: the catalog's first)")
    parser.add_argument("--models-dir", type=Path, default=None, help="where models go (default: "
                        "PLAYGROUND_MODELS_DIR, else the Hub cache)")
    parser.add_argument("--data-dir", type=Path, default=None, help="the app's data dir (default: PLAYGROUND_DATA_DIR)")
    return parser


def main(argv: Sequence[str] | None = None, settings=None, catalog: Catalog | None = None,
         hub_cache_dir: Path | None = None) -> int:
    """The command; ``settings``, ``catalog`` and ``hub_cache_dir`` default to the app's own (tests give theirs)."""
    parser = _parser()
    try:
        args = parser.parse_args(list(argv or []))
    except SystemExit as exc:
        return int(exc.code or 0)
    if settings is None:
        from playground.config import Settings

        settings = Settings.load()
    if args.models_dir is not None:
        settings = replace(settings, models_dir=args.models_dir)
    if args.data_dir is not None:
        settings = replace(settings, data_dir=args.data_dir)
    downloader = Downloader.from_settings(settings, catalog, endpoint=os.environ.get("HF_ENDPOINT") or None,
                                          hub_cache_dir=hub_cache_dir,
                                          progress=lambda p: print(p.line(), flush=True))
    if args.check:
        if args.ids or args.all:
            print(f"{COMMAND} --check takes no ids and no --all.", file=sys.stderr)
            return EXIT_USAGE
        print(status_table(downloader.check()))
        return 0
    if not args.ids and not args.all:
        print(f"Give catalog ids, dialogsum, or --all (or --check to see what is missing).\n"
              f"ids: {', '.join(downloader.catalog.ids)}, dialogsum", file=sys.stderr)
        return EXIT_USAGE
    if args.ids and args.all:
        print("Give ids or --all, not both.", file=sys.stderr)
        return EXIT_USAGE
    try:
        items = downloader.target_ids(args.ids, args.all)
    except PlaygroundError as exc:
        print(f"{exc} Or dialogsum, for the DialogSum data set.", file=sys.stderr)
        return EXIT_USAGE
    if not items:
        print("Everything in the catalog already works offline.")
        return 0
    places = [("<models dir>", settings.models_dir), ("<data dir>", settings.data_dir)]
    failed = 0
    for item in items:
        try:
            print(f"{item}: now found in {downloader.fetch(item, args.format)}", flush=True)
        except PlaygroundError as exc:
            failed += 1
            print(f"{item}: {redact_server_paths(str(exc), server_locations(places))}", file=sys.stderr, flush=True)
            if isinstance(exc, HubUnreachableError):
                rest = len(items) - items.index(item) - 1
                failed += rest
                if rest:
                    print(f"The Hub is out of reach, so the other {rest} were not tried.", file=sys.stderr, flush=True)
                break
    if failed:
        print(f"{failed} of {len(items)} could not be fetched; run the same command again to finish.",
              file=sys.stderr)
        return EXIT_FAILED
    return 0
