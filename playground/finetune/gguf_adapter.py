"""A run's peft LoRA adapter as a llama.cpp LoRA adapter GGUF, so the run answers on its quantised base.

llama.cpp applies a LoRA adapter file to a loaded model per context
(``llama_adapter_lora_init`` + ``llama_set_adapters_lora``): one quantised base in
memory serves every person's adapter. The file it wants:

- metadata ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``
  and ``general.architecture`` equal to the base model's;
- for every adapted weight ``W`` of the base (a GGUF name such as ``blk.3.attn_q.weight``)
  two tensors, ``<name>.lora_a`` (peft's ``lora_A``, shape [r, in]) and ``<name>.lora_b``
  (peft's ``lora_B``, shape [out, r]); llama.cpp adds ``scale * B (A x)`` with
  ``scale = alpha / r``.

Names come from the ``gguf`` package's own tensor-name tables for the base's
architecture (``gguf.get_tensor_name_map``), the same tables llama.cpp's converters
use. llama.cpp's converter stores a Llama model's query and key rows in a
different order from transformers (``permute``, undone by transformers when it
loads a GGUF); ``lora_B``'s rows of those two weights get the same reordering,
so the update lands on the rows it was trained for.

peft's scaling is ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with rsLoRA, and
ranks or alphas may differ per module (``rank_pattern``, ``alpha_pattern``); llama.cpp
has one alpha per file, so any module whose scaling differs from ``alpha / r`` has
the difference folded into its ``lora_B``. Adapters llama.cpp cannot express
(DoRA's magnitudes, trained biases, extra trained modules, LoRA on embeddings)
are refused with the reason, before anything is written.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from playground.atomic import atomic_file
from playground.errors import InvalidGGUFError, PlaygroundError
from playground.finetune.runs import exclusive_lock
from playground.models.gguf_info import field_value, open_gguf

ADAPTER_GGUF_DIR = "gguf"  # in a run's folder, beside adapter/
ADAPTER_GGUF_FILE = "adapter.gguf"
_LOCK = ".lock"
# Architectures whose GGUF converter reorders the query/key rows (convert_hf_to_gguf's LlamaModel.permute).
PERMUTED_ARCHITECTURES = frozenset({"llama"})
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight$")


class AdapterConversionError(PlaygroundError):
    """The adapter cannot become a llama.cpp adapter for this base (the message says why)."""


@dataclass(frozen=True)
class BaseLayout:
    """What the conversion needs to know about the base GGUF."""

    architecture: str
    blocks: int
    heads: int
    kv_heads: int
    tensors: dict[str, tuple[int, ...]]  # GGUF tensor name -> shape in ggml order (ne: [in, out])

    @classmethod
    def read(cls, base_gguf: Path) -> "BaseLayout":
        """The layout of ``base_gguf``, read once per file version (the header of a large vocabulary takes
        seconds to parse, and every run over that base needs the same layout)."""
        stat = Path(base_gguf).stat()
        return _read_layout(str(base_gguf), stat.st_size, stat.st_mtime_ns)

    @classmethod
    def _parse(cls, base_gguf: Path) -> "BaseLayout":
        reader = open_gguf(base_gguf)  # one read of the header: most of a conversion's time

        def value(key: str, default=0):
            return field_value(reader, key, default)

        arch = value("general.architecture", "")
        heads = int(value(f"{arch}.attention.head_count", 0) or 0)
        return cls(arch, int(value(f"{arch}.block_count", 0) or 0), heads,
                   int(value(f"{arch}.attention.head_count_kv", heads) or heads),
                   {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors})


@functools.lru_cache(maxsize=8)
def _read_layout(path: str, size: int, mtime_ns: int) -> BaseLayout:
    return BaseLayout._parse(Path(path))


def forget_base_layouts() -> None:
    """Drop the remembered base layouts (the bench times a first conversion with it)."""
    _read_layout.cache_clear()


def adapter_gguf_path(run_dir: Path) -> Path:
    """Where a run keeps its llama.cpp adapter."""
    return Path(run_dir) / ADAPTER_GGUF_DIR / ADAPTER_GGUF_FILE


def adapter_download_name(run_id: str) -> str:
    """The file name a run's llama.cpp adapter is downloaded under (the Fine-tune tab's "Download adapter
    (GGUF)"), which "show the code" loads with ``lora_path=``."""
    return f"{run_id}-adapter.gguf"


def check_adapter(adapter_dir: Path) -> None:
    """Raise AdapterConversionError with the reason when the peft adapter in ``adapter_dir`` has parts a llama.cpp
    adapter cannot carry (it reads the adapter's config only: cheap enough to ask before listing a run)."""
    _read_config(Path(adapter_dir))


def _read_config(adapter_dir: Path) -> dict:
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise AdapterConversionError(f"{adapter_dir.name} holds no readable adapter_config.json: it is not a peft "
                                     f"adapter.") from None
    kind = str(config.get("peft_type", "")).upper()
    if kind != "LORA":
        raise AdapterConversionError(f"llama.cpp applies LoRA adapters only; this run trained {kind or 'no'} "
                                     f"adapter.")
    if config.get("use_dora"):
        raise AdapterConversionError("This is a DoRA adapter: its learned magnitudes have no place in a llama.cpp "
                                     "LoRA adapter. Merge it instead (the merged download) to use it elsewhere.")
    if config.get("modules_to_save"):
        raise AdapterConversionError(f"The adapter also trains whole modules ({', '.join(config['modules_to_save'])}),"
                                     f" which a llama.cpp LoRA adapter cannot carry; merge it instead.")
    if str(config.get("bias", "none")) != "none":
        raise AdapterConversionError("The adapter trains biases, which a llama.cpp LoRA adapter cannot carry; "
                                     "merge it instead.")
    return config


def _scaling(config: dict, module: str, rank: int) -> float:
    """peft's scale for ``module``: its alpha over its rank (or over the rank's square root with rsLoRA)."""
    alpha = float(config.get("lora_alpha", 8))
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){re.escape(pattern)}$", module) or re.fullmatch(pattern, module):
            alpha = float(value)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _permute_rows(rows, heads: int):
    """convert_hf_to_gguf's Llama ``permute`` of a weight's output rows (here: lora_B's)."""
    shape = rows.shape
    return rows.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _adapter_tensors(adapter_dir: Path) -> dict[str, dict[str, "object"]]:
    """{peft module path: {"A": array, "B": array}} in float32."""
    from safetensors import safe_open

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise AdapterConversionError(f"{adapter_dir.name} has no adapter_model.safetensors.")
    pairs: dict[str, dict[str, object]] = {}
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():
            if "lora_embedding" in key:
                raise AdapterConversionError("The adapter puts LoRA on an embedding layer, which llama.cpp adapters "
                                             "do not support; merge it instead.")
            match = _LORA_KEY.match(key)
            if match is None:
                raise AdapterConversionError(f"The adapter holds a tensor llama.cpp cannot use: {key}.")
            pairs.setdefault(match["module"], {})[match["side"]] = handle.get_tensor(key).float().numpy()
    if not pairs:
        raise AdapterConversionError("The adapter holds no LoRA tensors.")
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise AdapterConversionError(f"The adapter's {module} lacks its lora_A or lora_B tensor.")
    return pairs


def convert_adapter(adapter_dir: Path, base_gguf: Path, output: Path, name: str = "") -> Path:
    """Write the peft LoRA adapter in ``adapter_dir`` as a llama.cpp adapter for ``base_gguf`` at ``output``."""
    import gguf
    import numpy as np

    adapter_dir, base_gguf, output = Path(adapter_dir), Path(base_gguf), Path(output)
    config = _read_config(adapter_dir)
    layout = BaseLayout.read(base_gguf)
    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == layout.architecture), None)
    if arch is None:
        raise AdapterConversionError(f"The gguf package knows no architecture {layout.architecture!r}.")
    names = gguf.get_tensor_name_map(arch, layout.blocks)
    alpha = float(config.get("lora_alpha", 8))
    tensors: list[tuple[str, object]] = []
    for module, pair in sorted(_adapter_tensors(adapter_dir).items()):
        # A multimodal checkpoint's text layers (model.language_model.layers...) are the text model's layers.
        target = (names.get_name(module + ".weight", try_suffixes=(".weight", ".bias"))
                  or names.get_name(module.replace(".language_model.", ".") + ".weight",
                                    try_suffixes=(".weight", ".bias")))
        if target is None:
            raise AdapterConversionError(f"No GGUF tensor of a {layout.architecture} model matches the adapted "
                                         f"module {module}.")
        lora_a, lora_b = pair["A"], pair["B"]
        rank = lora_a.shape[0]
        base_shape = layout.tensors.get(target)
        if base_shape is None:
            raise AdapterConversionError(f"The base GGUF has no tensor {target} for the adapted module {module}: "
                                         f"the adapter was trained on another model.")
        if lora_b.shape[1] != rank or (lora_a.shape[1], lora_b.shape[0]) != base_shape[:2]:
            raise AdapterConversionError(
                f"The adapter's {module} ({lora_b.shape[0]}x{lora_a.shape[1]}) does not fit the base's {target} "
                f"({base_shape[1]}x{base_shape[0]}): the adapter was trained on another model.")
        # llama.cpp scales every module by alpha / rank; fold any other scaling into B.
        factor = _scaling(config, module, rank) * rank / alpha
        if factor != 1.0:
            lora_b = lora_b * np.float32(factor)
        if layout.architecture in PERMUTED_ARCHITECTURES:
            if target.endswith("attn_q.weight"):
                lora_b = _permute_rows(lora_b, layout.heads)
            elif target.endswith("attn_k.weight"):
                lora_b = _permute_rows(lora_b, layout.kv_heads)
        tensors += [(target + ".lora_a", np.ascontiguousarray(lora_a, dtype=np.float32)),
                    (target + ".lora_b", np.ascontiguousarray(lora_b, dtype=np.float32))]

    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(output, "the llama.cpp adapter") as partial:
        writer = gguf.GGUFWriter(str(partial), layout.architecture)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        if name:
            writer.add_name(name)
        for tensor_name, data in tensors:
            writer.add_tensor(tensor_name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return output


def run_adapter_gguf(run_dir: Path, adapter_dir: Path, base_gguf: Path, name: str = "") -> Path:
    """The run's llama.cpp adapter, converted on the first call (one converter at a time) and reused after.

    The file is rebuilt when the base GGUF is newer than it (another base file under the same id).
    """
    output = adapter_gguf_path(run_dir)

    def fresh() -> bool:
        with contextlib.suppress(OSError):
            return output.stat().st_mtime >= Path(base_gguf).stat().st_mtime
        return False

    if fresh():
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(output.parent / _LOCK):
        if not fresh():
            convert_adapter(adapter_dir, base_gguf, output, name)
    return output


@dataclass(frozen=True)
class AdapterFacts:
    """What a llama.cpp LoRA adapter GGUF holds, read from its header."""

    file_size_bytes: int
    architecture: str
    alpha: float
    ranks: tuple[int, ...]  # the distinct ranks of its weights, smallest first
    weights: int  # adapted base weights (each has a lora_a and a lora_b tensor)
    tensors: int
    name: str = ""

    def as_rows(self) -> list[tuple[str, str]]:
        ranks = " / ".join(str(rank) for rank in self.ranks)
        return [
            ("adapter file size", f"{self.file_size_bytes / 1e6:.2f} MB"),
            ("adapter rank", ranks),
            ("adapter alpha", f"{self.alpha:g}"),
            ("adapted weights", f"{self.weights} ({self.tensors} tensors)"),
        ]


def read_adapter_facts(path: Path) -> AdapterFacts:
    """The facts of the llama.cpp adapter GGUF at ``path``; AdapterConversionError when it is not one."""
    path = Path(path)
    try:
        reader = open_gguf(path)
    except InvalidGGUFError as exc:
        raise AdapterConversionError(str(exc)) from None

    def value(key: str, default=None):
        return field_value(reader, key, default)

    if value("general.type") != "adapter" or value("adapter.type") != "lora":
        raise AdapterConversionError(f"{path.name} is not a llama.cpp LoRA adapter GGUF.")
    ranks, weights = set(), set()
    for tensor in reader.tensors:
        if tensor.name.endswith(".lora_a"):
            weights.add(tensor.name[:-len(".lora_a")])
            ranks.add(int(tensor.shape[1]))  # ggml order: [in, r]
    return AdapterFacts(path.stat().st_size, str(value("general.architecture", "")),
                        float(value("adapter.lora.alpha", 0.0)), tuple(sorted(ranks)), len(weights),
                        len(reader.tensors), str(value("general.name", "") or ""))
