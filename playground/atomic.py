"""Atomic writes: a reader sees the old file or the new one, never half of one.

The one helper for every place in the app that writes a file or a folder whole
(a run's status and config, a trainer's adapter, samples and metrics, a download
archive, the link Gradio serves, the GGUF facts cache, the converted-model copy):

- :func:`atomic_write_bytes` / ``_text`` / ``_json`` / ``_jsonl``: the data goes to a
  hidden temporary file beside the target, is flushed to disk and renamed over it;
- :func:`atomic_file`: the same for writers that need a path (a zip archive, a hard
  link): the block fills the temporary path, which replaces the target on success;
- :func:`atomic_directory`: a folder (an adapter, a merged model) assembled in a hidden
  temporary folder and renamed into place; an existing target is moved aside first and
  removed after, or put back if the rename fails.

A failure (disk full, no permission) removes the temporary copy and raises
:class:`~playground.errors.SaveError` (:func:`save_error`) saying what could not be
written, where and why; a full disk reads as :func:`~playground.errors.disk_full_error`,
without the server's path or a raw ``[Errno 28]``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

from playground.errors import SaveError, disk_full_error, is_disk_full


def partial_name(target: Path) -> Path:
    """The hidden temporary name beside ``target`` that this process and thread write to."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial-{os.getpid()}-{threading.get_ident()}")


def save_error(what: str, where: Path, exc: BaseException) -> SaveError:
    """A SaveError naming the result, the place and the system's reason, with what to do about it."""
    if is_disk_full(exc):
        return disk_full_error(what)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    code = getattr(exc, "errno", None)
    hint = ""
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = " Choose a folder you can write to (or fix its permissions)."
    return SaveError(f"Could not write {what} to {where}: {reason}.{hint}")


def jsonable(value: Any) -> Any:
    """``json.dumps`` fallback: numpy/torch scalars become numbers, paths and the rest become text."""
    if hasattr(value, "item"):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


@contextlib.contextmanager
def atomic_file(target: Path, what: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block ends without error it replaces ``target``.

    Any exception removes the temporary file; an OSError becomes a SaveError, others pass through.
    """
    target = Path(target)
    partial = partial_name(target)
    try:
        yield partial
        os.replace(partial, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        if isinstance(exc, OSError):
            raise save_error(what or target.name, target.parent, exc) from None
        raise


def atomic_write_bytes(path: Path, data: bytes, what: str | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file, flushed to disk, and a rename."""
    with atomic_file(path, what) as partial:
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: Path, text: str, what: str | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), what)


def atomic_write_json(path: Path, value: Any, what: str | None = None) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False, default=jsonable) + "\n", what)


def atomic_write_jsonl(path: Path, rows: Iterable[dict], what: str | None = None) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=jsonable) + "\n" for r in rows),
                      what)


@contextlib.contextmanager
def atomic_directory(target: Path, what: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``target`` whole.

    Any exception inside the block (or while renaming) removes the temporary directory;
    an OSError becomes a SaveError with the reason, other exceptions pass through.
    """
    target = Path(target)
    what = what or target.name
    partial = partial_name(target)
    try:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    except OSError as exc:
        raise save_error(what, target.parent, exc) from None
    try:
        yield partial
        _replace_directory(partial, target)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise save_error(what, target.parent, exc) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _replace_directory(partial: Path, target: Path) -> None:
    """Rename ``partial`` to ``target``; an existing ``target`` is moved aside first and removed after."""
    if not target.exists():
        os.rename(partial, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{threading.get_ident()}")
    os.rename(target, old)
    try:
        os.rename(partial, target)
    except OSError:
        os.rename(old, target)  # put the previous result back
        raise
    shutil.rmtree(old, ignore_errors=True)
