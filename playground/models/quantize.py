"""llama.cpp's own quantizer, called through llama-cpp-python: one GGUF file in, another type out.

:func:`quantize_gguf` is what the merged-model export and the quantization
ladder use. It calls ``llama_model_quantize`` (the same code as llama.cpp's
``llama-quantize`` tool) with ``allow_requantize`` on, so an already quantised
file can be the source too (llama.cpp dequantises each tensor first, which
stacks the two quantisations' errors: the ladder says where its weights came
from). The output is written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from playground.atomic import atomic_file
from playground.errors import InvalidParameterError, PlaygroundError


@dataclass(frozen=True)
class QuantType:
    name: str  # as llama.cpp's tools spell it
    ftype: int  # llama_ftype
    help: str


# The types the app offers, from full precision down; the values are llama.h's llama_ftype.
QUANT_TYPES: tuple[QuantType, ...] = (
    QuantType("F32", 0, "32-bit floats: the reference, 4 bytes a weight"),
    QuantType("F16", 1, "16-bit floats: half the size, practically the same answers"),
    QuantType("Q8_0", 7, "8-bit blocks: about a quarter of F32, nearly lossless"),
    QuantType("Q5_K_M", 17, "5-bit k-quants, important tensors kept at 6 bits"),
    QuantType("Q4_K_M", 15, "4-bit k-quants, the usual choice for laptops"),
    QuantType("Q3_K_M", 12, "3-bit k-quants: small, visibly worse"),
    QuantType("Q2_K", 10, "2-bit k-quants: smallest, often broken on small models"),
)
QUANT_TYPE_NAMES = tuple(t.name for t in QUANT_TYPES)


def quant_type(name: str) -> QuantType:
    """The type called ``name`` (case-insensitive), or a clear error listing the choices."""
    wanted = str(name or "").strip().upper()
    for entry in QUANT_TYPES:
        if entry.name == wanted:
            return entry
    raise InvalidParameterError(f"Unknown GGUF type {name!r}: choose one of {', '.join(QUANT_TYPE_NAMES)}.")


def quantize_gguf(source: Path, target: Path, type_name: str, threads: int = 0) -> Path:
    """Write ``source`` re-quantised to ``type_name`` at ``target`` (atomically); returns ``target``."""
    import llama_cpp

    chosen = quant_type(type_name)
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise PlaygroundError(f"There is no GGUF file {source.name} to quantize.")
    target.parent.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = chosen.ftype
    params.nthread = int(threads or 0)
    params.allow_requantize = True
    with atomic_file(target, f"the {chosen.name} GGUF file") as partial:
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
        if failed:
            raise PlaygroundError(f"llama.cpp could not quantize {source.name} to {chosen.name} (code {failed}).")
    return target
