"""Atomic writes for fine-tuning results: a reader sees the old result or the new one, never half of one.

Files are written to a temporary name beside their target and renamed over it;
directories (an adapter, a merged model) are assembled in a hidden temporary
directory and renamed into place. A failure (disk full, no permission) removes
the partial copy and raises :class:`~playground.errors.SaveError` saying what
could not be written, where, and why.
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


def _partial_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial-{os.getpid()}-{threading.get_ident()}")


def save_error(what: str, where: Path, exc: BaseException) -> SaveError:
    """A SaveError naming the result, the place and the system's reason, with what to do about it.

    A full disk (or quota) is :func:`~playground.errors.disk_full_error`: what could not be saved and
    what to do, without the server's path or a raw ``[Errno 28]``.
    """
    if is_disk_full(exc):
        return disk_full_error(what)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    code = getattr(exc, "errno", None)
    hint = ""
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = " Choose a folder you can write to (or fix its permissions)."
    return SaveError(f"Could not write {what} to {where}: {reason}.{hint}")


def atomic_write_bytes(path: Path, data: bytes, what: str | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    partial = _partial_name(path)
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise save_error(what or path.name, path.parent, exc) from None


def atomic_write_text(path: Path, text: str, what: str | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), what)


def atomic_write_json(path: Path, value: Any, what: str | None = None) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n", what)


def atomic_write_jsonl(path: Path, rows: Iterable[dict], what: str | None = None) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), what)


@contextlib.contextmanager
def atomic_directory(target: Path, what: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``target`` whole.

    Any exception inside the block (or while renaming) removes the temporary directory;
    an OSError becomes a SaveError with the reason, other exceptions pass through.
    """
    target = Path(target)
    what = what or target.name
    partial = _partial_name(target)
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


try:  # POSIX; elsewhere the lock only keeps the threads of one process apart
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block, waiting for any holder.

    Two threads of one process conflict too (each opens its own descriptor), and the lock goes
    with the process however it ends, so a crashed builder never leaves it held.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


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
