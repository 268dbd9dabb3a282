"""What this machine can do: CUDA, bf16, CPU threads and memory.

The answer decides which engine runs each model family, so it is detected once
at start-up and explained in one line.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    cuda_name: str
    cuda_memory_gb: float
    bf16: bool
    cpu_threads: int
    logical_cpus: int
    total_ram_gb: float
    free_ram_gb: float

    @property
    def summary(self) -> str:
        gpu = f"CUDA {self.cuda_name} ({self.cuda_memory_gb:.0f} GiB, bf16={'yes' if self.bf16 else 'no'})" \
            if self.cuda else "no CUDA"
        return (f"{gpu}; {self.cpu_threads} CPU threads; "
                f"{self.free_ram_gb:.1f} of {self.total_ram_gb:.1f} GiB RAM free")


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def _may_have_cuda() -> bool:
    """False only when no NVIDIA driver is visible, which spares importing torch (seconds) at start-up."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    if not os.path.exists("/proc/driver/nvidia") and not shutil.which("nvidia-smi") \
            and not os.path.exists("/dev/nvidiactl"):
        return sys.platform != "linux"  # elsewhere (Windows, WSL quirks) ask torch
    return True


def detect(threads_setting: int = 0) -> Hardware:
    """Read the machine's facts; torch is imported only to ask about CUDA."""
    import psutil

    cuda = False
    name = ""
    memory = 0.0
    bf16 = False
    if _may_have_cuda() and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            cuda = True
            name = torch.cuda.get_device_name(0)
            memory = torch.cuda.get_device_properties(0).total_memory / 2**30
            bf16 = bool(torch.cuda.is_bf16_supported())
    vm = psutil.virtual_memory()
    logical = os.cpu_count() or 1
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = logical
    threads = threads_setting or max(1, min(physical_cores(), affinity))
    return Hardware(
        cuda=cuda,
        cuda_name=name,
        cuda_memory_gb=memory,
        bf16=bf16,
        cpu_threads=threads,
        logical_cpus=logical,
        total_ram_gb=vm.total / 2**30,
        free_ram_gb=vm.available / 2**30,
    )
