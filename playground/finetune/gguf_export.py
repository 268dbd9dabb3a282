"""A LoRA run as files llama.cpp (and Ollama) take: its adapter GGUF, or the adapter merged into its GGUF base.

- :func:`merge_to_gguf`: a whole model as an F32 GGUF, made from the base GGUF and the run's
  llama.cpp adapter GGUF (:mod:`~playground.finetune.gguf_adapter`). Every tensor of the base is
  dequantised (``gguf.quants.dequantize``) and every adapted one gets llama.cpp's own update,
  ``W + (alpha / r) · B · A`` with alpha from the adapter file, so the merged file computes what
  llama.cpp computes with the base and the adapter loaded together. The base's metadata is copied
  field by field (architecture, hyperparameters, tokenizer, chat template, names), except
  ``general.file_type`` (now F32) and the fields the writer sets itself (the ``GGUF.*`` header and
  ``general.alignment``); the tensors keep the base's order. Tensors are read from the memory-mapped
  base and written one at a time, so memory holds about one tensor, not the model.
- :func:`quantized_export`: that file quantised by llama.cpp's own quantizer
  (:func:`~playground.models.quantize.quantize_gguf`) to one of ``QUANT_TYPES``, built once per
  (run, type) as ``downloads/<run id>-<TYPE>.gguf``; the F32 intermediate is removed once quantised.
- :func:`adapter_gguf_export`: the adapter GGUF itself as ``downloads/<run id>-adapter.gguf`` (a hard
  link to the run's ``gguf/adapter.gguf`` where the filesystem allows, else a copy).

Both downloads are built under the run's download lock by :mod:`~playground.finetune.export`'s
``_build_once`` (one builder at a time, reused afterwards, leftovers of a dead builder cleared), after
asking ``make_room`` (the data dir's budget) for the bytes the build needs at its peak. A full
fine-tune (no adapter) and a run whose base has no GGUF in the catalog are refused with the reason.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Callable

from playground.atomic import atomic_file
from playground.errors import PlaygroundError
from playground.finetune.export import _build_once, _check_run, folder_bytes
from playground.finetune.gguf_adapter import adapter_gguf_path, run_adapter_gguf
from playground.finetune.result import RunResult
from playground.models.gguf_info import field_value, open_gguf
from playground.models.quantize import quant_type, quantize_gguf

DEFAULT_TYPE = "Q4_K_M"
ADAPTER_KIND = "adapter"
# About how many bits a weight takes in each type (llama.cpp's figures for 7B models; small models keep
# more tensors at higher precision, so these are a floor), for the data dir's budget.
_BITS_PER_WEIGHT = {"F32": 32.0, "F16": 16.0, "Q8_0": 8.5, "Q5_K_M": 5.7, "Q4_K_M": 4.9, "Q3_K_M": 3.9,
                    "Q2_K": 3.0}
_SKIPPED_FIELDS = ("general.architecture", "general.alignment")  # the writer sets these itself


class GGUFExportError(PlaygroundError):
    """A run cannot become a GGUF download (the message says why)."""


class FullFinetuneError(GGUFExportError):
    def __init__(self) -> None:
        super().__init__("This run trained every weight (a full fine-tune): it has no adapter to turn into a "
                         "llama.cpp adapter or to merge into a GGUF base. Download the model (safetensors) instead.")


class NoGGUFBaseError(GGUFExportError):
    def __init__(self, base: str) -> None:
        super().__init__(f"This run's base {base} has no GGUF file in the catalog, so llama.cpp has no base to "
                         f"build on. Download the merged model (safetensors) instead, or fine-tune a model that "
                         f"has a GGUF (such as SmolLM2-135M-Instruct).")
        self.base = base


# ------------------------------------------------------------------------------ the merge


def _numpy_shape(tensor) -> tuple[int, ...]:
    """A reader tensor's shape in numpy's (row-major) order: ggml lists its dimensions innermost first."""
    return tuple(int(n) for n in reversed(tensor.shape))


def _dequantized(tensor):
    """A reader tensor as float32 in numpy order (a view of the memory map for an F32 tensor)."""
    import numpy as np
    from gguf.quants import dequantize

    try:
        values = dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError:
        raise GGUFExportError(f"The gguf package cannot dequantize {tensor.name} ({tensor.tensor_type.name}), "
                              f"so this base cannot be merged.") from None
    return np.asarray(values, dtype=np.float32).reshape(_numpy_shape(tensor))


def _lora_pairs(adapter, architecture: str) -> tuple[float, dict[str, tuple[object, object]]]:
    """(alpha, {base tensor name: (lora_a tensor, lora_b tensor)}) of a llama.cpp LoRA adapter GGUF."""
    if field_value(adapter, "general.type") != "adapter" or field_value(adapter, "adapter.type") != "lora":
        raise GGUFExportError("The adapter file is not a llama.cpp LoRA adapter (general.type adapter, "
                              "adapter.type lora).")
    if field_value(adapter, "general.architecture") != architecture:
        raise GGUFExportError(f"The adapter was made for a {field_value(adapter, 'general.architecture')} model, "
                              f"not for this {architecture} base.")
    alpha = field_value(adapter, "adapter.lora.alpha")
    if alpha is None:
        raise GGUFExportError("The adapter file has no adapter.lora.alpha.")
    sides: dict[str, dict[str, object]] = {}
    for tensor in adapter.tensors:
        name, _, side = tensor.name.rpartition(".")
        if side not in ("lora_a", "lora_b"):
            raise GGUFExportError(f"The adapter holds a tensor that is not a LoRA factor: {tensor.name}.")
        sides.setdefault(name, {})[side] = tensor
    pairs = {}
    for name, pair in sides.items():
        if set(pair) != {"lora_a", "lora_b"}:
            raise GGUFExportError(f"The adapter's {name} lacks its lora_a or lora_b tensor.")
        pairs[name] = (pair["lora_a"], pair["lora_b"])
    return float(alpha), pairs


def merge_to_gguf(base_gguf: Path, adapter_gguf: Path, output: Path) -> Path:
    """Write ``base_gguf`` with ``adapter_gguf`` merged in as an F32 GGUF at ``output`` (atomically)."""
    import gguf
    import numpy as np

    base_gguf, adapter_gguf, output = Path(base_gguf), Path(adapter_gguf), Path(output)
    base = open_gguf(base_gguf)
    if base.endianess != gguf.GGUFEndian.LITTLE:
        raise GGUFExportError(f"{base_gguf.name} is a big-endian GGUF; only little-endian bases can be merged.")
    architecture = field_value(base, "general.architecture")
    alpha, pairs = _lora_pairs(open_gguf(adapter_gguf), architecture)
    tensors = {tensor.name: tensor for tensor in base.tensors}
    updates = {}  # base tensor name -> (scale, B, A) in numpy order
    for name, (lora_a, lora_b) in pairs.items():
        if name not in tensors:
            raise GGUFExportError(f"The base GGUF has no tensor {name}: the adapter was made for another model.")
        a, b = _dequantized(lora_a), _dequantized(lora_b)
        out_features, in_features = _numpy_shape(tensors[name])[:2] if len(tensors[name].shape) == 2 else (0, 0)
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != (
                out_features, in_features):
            raise GGUFExportError(f"The adapter's {name} ({b.shape[0]}x{a.shape[-1]}) does not fit the base's "
                                  f"({out_features}x{in_features}): the adapter was made for another model.")
        updates[name] = (np.float32(alpha / a.shape[0]), b, a)

    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(output, "the merged GGUF") as partial:
        writer = gguf.GGUFWriter(str(partial), architecture)
        try:
            for field in base.fields.values():
                if field.name.startswith("GGUF.") or field.name in _SKIPPED_FIELDS:
                    continue
                if field.name == gguf.Keys.General.FILE_TYPE:
                    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
                    continue
                kind = field.types[0]
                sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
                writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_type)
            if field_value(base, gguf.Keys.General.FILE_TYPE) is None:
                writer.add_file_type(gguf.LlamaFileType.ALL_F32)
            for tensor in base.tensors:
                writer.add_tensor_info(tensor.name, _numpy_shape(tensor), np.float32, 4 * int(tensor.n_elements),
                                       gguf.GGMLQuantizationType.F32)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for tensor in base.tensors:  # one tensor in memory at a time
                weights = _dequantized(tensor)
                if tensor.name in updates:
                    scale, b, a = updates[tensor.name]
                    weights = weights + scale * (b @ a)
                writer.write_tensor_data(np.ascontiguousarray(weights, dtype=np.float32))
        finally:
            writer.close()
    return output


# ------------------------------------------------------------------------------ a run's GGUF downloads


def merged_gguf_path(run_dir: Path, type_name: str) -> Path:
    """Where a run keeps its merged GGUF of one type: ``downloads/<run id>-<TYPE>.gguf``."""
    result = RunResult(run_dir)
    return result.downloads_dir / f"{result.run_dir.name}-{quant_type(type_name).name}.gguf"


def adapter_download_path(run_dir: Path) -> Path:
    """Where a run keeps its adapter GGUF download: ``downloads/<run id>-adapter.gguf``."""
    result = RunResult(run_dir)
    return result.downloads_dir / f"{result.run_dir.name}-{ADAPTER_KIND}.gguf"


def _adapter_of(run_dir: Path) -> Path:
    """The run's saved adapter folder; a clear refusal for a full fine-tune or a run without weights."""
    result = RunResult(_check_run(run_dir))
    if result.adapter_dir is not None:
        return result.adapter_dir
    if result.weights_dir is not None:
        raise FullFinetuneError()
    raise GGUFExportError("This run saved no weights.")


def base_gguf_of(run_dir: Path, catalog, resolver) -> Path:
    """The GGUF file of the run's base model, found through the catalog and the resolver.

    Refuses a full fine-tune (:class:`FullFinetuneError`) and a base without a GGUF source
    (:class:`NoGGUFBaseError`: a local folder, or a catalog model with safetensors only).
    """
    from playground.finetune.result import read_info

    info = read_info(_adapter_of(run_dir))
    spec = catalog.get(info.base_model) if info.base_model in catalog.ids else None
    if spec is None or not spec.has_gguf:
        raise NoGGUFBaseError(info.base_name or info.base_model or "model")
    return Path(resolver.resolve(spec, "gguf").path)


def f32_bytes(base_gguf: Path) -> int:
    """The size of the base's tensors in F32 (the merged intermediate, give or take its metadata)."""
    from playground.models.gguf_info import read_gguf_facts

    return 4 * read_gguf_facts(base_gguf).parameters


def export_bytes(base_gguf: Path, type_name: str) -> int:
    """What building a merged export of ``type_name`` takes on disk at its peak: the F32 file and the target."""
    name = quant_type(type_name).name
    full = f32_bytes(base_gguf)
    if name == "F32":
        return full
    return full + int(full * _BITS_PER_WEIGHT.get(name, 32.0) / 32.0)


def _adapter_bytes(run_dir: Path, adapter_dir: Path) -> int:
    """What converting the adapter costs, when it is not converted yet (the F32 factors, about its safetensors)."""
    return 0 if adapter_gguf_path(run_dir).is_file() else folder_bytes(adapter_dir)


def quantized_export(run_dir: Path, base_gguf: Path, type_name: str = DEFAULT_TYPE, *,
                     make_room: Callable[[int], object] | None = None, threads: int = 0) -> Path:
    """The run's adapter merged into ``base_gguf`` and quantised to ``type_name``, built once per (run, type).

    While it is built the F32 merge and the quantised file both exist; the F32 file then goes.
    """
    run_dir = _check_run(run_dir)
    chosen = quant_type(type_name)  # a bad type is refused before anything else
    adapter_dir = _adapter_of(run_dir)
    base_gguf = Path(base_gguf)
    target = merged_gguf_path(run_dir, chosen.name)

    def build() -> None:
        adapter = run_adapter_gguf(run_dir, adapter_dir, base_gguf, name=run_dir.name)
        if chosen.name == "F32":
            merge_to_gguf(base_gguf, adapter, target)
            return
        # Hidden (a leading dot), so a builder that dies leaves nothing the next one keeps.
        work = target.with_name(f".{target.stem}-F32-{os.getpid()}-{threading.get_ident()}.gguf")
        try:
            merge_to_gguf(base_gguf, adapter, work)
            quantize_gguf(work, target, chosen.name, threads)
        finally:
            work.unlink(missing_ok=True)

    return _build_once(run_dir, target, build,
                       lambda: export_bytes(base_gguf, chosen.name) + _adapter_bytes(run_dir, adapter_dir), make_room)


def adapter_gguf_export(run_dir: Path, base_gguf: Path, *, make_room: Callable[[int], object] | None = None
                        ) -> Path:
    """The run's llama.cpp adapter GGUF as a download, built once (converted on first use, then linked)."""
    run_dir = _check_run(run_dir)
    adapter_dir = _adapter_of(run_dir)
    base_gguf = Path(base_gguf)
    target = adapter_download_path(run_dir)

    def build() -> None:
        source = run_adapter_gguf(run_dir, adapter_dir, base_gguf, name=run_dir.name)
        with atomic_file(target, "the adapter GGUF download") as partial:
            try:
                os.link(source, partial)  # no second copy on disk
            except OSError:
                shutil.copyfile(source, partial)

    return _build_once(run_dir, target, build, lambda: _adapter_bytes(run_dir, adapter_dir), make_room)
