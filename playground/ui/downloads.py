"""Serve a run's archive through Gradio without a second copy, to its owner only.

Gradio copies every file a handler returns into its cache (``GRADIO_TEMP_DIR``)
unless the file is already there, and its ``/file=`` route serves any file of
that cache to whoever asks for its path. A run's archive stays in the run's
own folder (``runs/<id>/downloads/``), which is not served at all: making it a
static or allowed path would let anyone who guesses a run id download it.

So :class:`PrivateDownloads` hard-links the archive into Gradio's cache under
a folder named by an HMAC of the archive (a secret made when the app starts,
the file's path and inode): 64 hex characters nobody can guess, the same
protection Gradio's own cached copies get. A hard link costs no disk; the next
click finds the same link and hands it out again (its ctime renewed, since
Gradio's cleanup ages files by ctime). Where the cache sits on another
filesystem a link is impossible, and one copy is made instead, reused by the
next clicks the same way. Gradio's ``delete_cache`` removes the link (or copy)
after its age; the run's archive itself is untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
from pathlib import Path

from playground.atomic import atomic_file


class PrivateDownloads:
    """Hands run archives to Gradio from its own cache, linked rather than copied; one per app."""

    def __init__(self, cache_dir: Path | None = None):
        self._secret = secrets.token_bytes(32)
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None

    @property
    def cache_dir(self) -> Path:
        if self._cache_dir is not None:
            return self._cache_dir
        from gradio.utils import get_upload_folder

        return Path(get_upload_folder())

    def serve(self, archive: Path) -> str:
        """A path inside Gradio's cache holding ``archive`` (a hard link where possible); return it from a handler."""
        archive = Path(archive).resolve()
        info = archive.stat()
        key = f"{archive}\0{info.st_dev}\0{info.st_ino}\0{info.st_size}".encode()  # a rebuilt archive: a new inode
        folder = self.cache_dir / hmac.new(self._secret, key, hashlib.sha256).hexdigest()
        served = folder / archive.name
        if _same_content(served, info):
            # Handed out again: Gradio's cleanup ages files by ctime, which any utime call renews; the times
            # themselves stay (a hard link shares them with the run's archive).
            times = served.stat()
            os.utime(served, ns=(times.st_atime_ns, times.st_mtime_ns))
            return str(served)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(served, f"the download {archive.name}") as partial:
            try:
                os.link(archive, partial)
            except OSError:  # another filesystem (or no hard links there): one copy, reused by later clicks
                shutil.copy2(archive, partial)
        return str(served)


def _same_content(served: Path, info: os.stat_result) -> bool:
    try:
        other = served.stat()
    except OSError:
        return False
    if (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino):
        return True
    return other.st_size == info.st_size and other.st_mtime_ns == info.st_mtime_ns
