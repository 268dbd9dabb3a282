"""What a run used, measured rather than estimated: its peak memory and the size of what it saved.

The run table (:func:`playground.finetune.result.run_rows`) sets these beside the
estimate's figures, so "LoRA needs far less memory and disk than full
fine-tuning" is read off real runs of this machine:

- :func:`peak_memory` is the most memory the run's process held: on CUDA the
  peak of torch's allocator on the run's device (the weights, gradients,
  optimizer states and activations), on a CPU the process's peak resident size
  (``getrusage``: everything the worker held, Python and torch included);
- :func:`weights_bytes` is the size on disk of the saved weights (the adapter,
  or the whole model when every weight trained): the safetensors files.
"""

from __future__ import annotations

import sys
from pathlib import Path

CUDA, RSS = "cuda", "rss"  # what a peak measures: torch's CUDA allocator, or the process's resident size


def peak_memory(cuda: bool) -> tuple[int | None, str]:
    """(bytes, kind) of this process's peak memory so far; (None, "") where it cannot be read."""
    if cuda:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated()), CUDA
        return None, ""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None, ""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024), RSS  # bytes on macOS, KiB on Linux


def weights_bytes(folder: Path | None) -> int | None:
    """The size of the weights in a saved adapter or model folder (its safetensors files); None without any."""
    if folder is None:
        return None
    try:
        files = [p for p in Path(folder).glob("*.safetensors") if p.is_file()]
        return sum(p.stat().st_size for p in files) if files else None
    except OSError:
        return None
