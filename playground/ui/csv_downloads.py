"""A results table as a CSV file a person downloads (the fp32-vs-quantized comparison, the quantization ladder).

The file is written straight into Gradio's cache, in a folder named by 64 random
hex characters (as Gradio names its own cached copies: nobody can guess it), so
Gradio serves it without a second copy and its ``delete_cache`` cleanup removes
it with the rest of the cache; nothing accumulates elsewhere.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from playground.atomic import atomic_write_text

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def cache_dir() -> Path:
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def csv_download(name: str, text: str, folder: Path | None = None) -> str:
    """Write ``text`` as ``name`` (a CSV file) in a fresh unguessable folder of Gradio's cache (or ``folder``);
    its path, for a DownloadButton. A UTF-8 byte order mark goes first so a spreadsheet reads accents right."""
    target = (Path(folder) if folder is not None else cache_dir()) / secrets.token_hex(32) / _SAFE.sub("-", name)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, "\ufeff" + text, "a CSV download")
    return str(target)
