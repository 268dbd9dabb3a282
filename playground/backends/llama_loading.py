"""The one way the app opens llama.cpp models: ``llama_class()`` instead of ``from llama_cpp import Llama``.

llama-cpp-python compiles llama.cpp for the CPU it is installed on. On an Intel
CPU with AMX (Sapphire Rapids and later) that build moves the weights into
llama.cpp's AMX buffers, and on the virtual machines this project runs on
(and its CI) the first matrix product then dies with a general-protection
fault on ``ldtilecfg``: the whole Python process segfaults, with no exception
to catch. The weights' "extra buffer types" (AMX, and the repacked layouts
beside it) are a speed-up for prompt reading only, so on a CPU that reports
AMX every model is opened without them; decoding, which is bound by memory
reads, is unchanged. ``PLAYGROUND_LLAMA_AMX=1`` turns them back on for a
machine where AMX is known to work.

The choice is made by wrapping llama-cpp-python's
``llama_model_default_params`` once per process, because ``Llama()`` takes no
argument for it and reads those defaults inside its constructor. The wrapper
is idempotent and never changes once installed, so threads that open models
at the same time see the same parameters.
"""

from __future__ import annotations

import os
from pathlib import Path

AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")
AMX_VARIABLE = "PLAYGROUND_LLAMA_AMX"
_MARK = "_playground_extra_buffers"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU feature flags Linux reports (empty where /proc/cpuinfo is absent)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def extra_buffers_allowed(flags: frozenset[str] | None = None, environ=None) -> bool:
    """Whether llama.cpp may put weights in its extra buffer types: yes unless the CPU reports AMX,
    where only ``PLAYGROUND_LLAMA_AMX=1`` allows them."""
    environ = os.environ if environ is None else environ
    flags = cpu_flags() if flags is None else flags
    if not flags & set(AMX_FLAGS):
        return True
    return environ.get(AMX_VARIABLE, "0").strip().lower() in ("1", "true", "yes", "on")


def install_parameter_policy(low_level=None, allowed: bool | None = None) -> bool:
    """Wrap ``llama_model_default_params`` of llama-cpp-python's low-level module so every model opened
    after this follows :func:`extra_buffers_allowed`; returns whether extra buffers are allowed."""
    if low_level is None:
        import llama_cpp.llama_cpp as low_level
    current = low_level.llama_model_default_params
    if hasattr(current, _MARK):
        return getattr(current, _MARK)
    allowed = extra_buffers_allowed() if allowed is None else allowed

    def model_defaults():
        params = current()
        if not allowed:
            params.use_extra_bufts = False
        return params

    setattr(model_defaults, _MARK, allowed)
    low_level.llama_model_default_params = model_defaults
    return allowed


def llama_class():
    """llama-cpp-python's ``Llama``, with the app's model parameters in force."""
    install_parameter_policy()
    from llama_cpp import Llama

    return Llama
