"""GGUF exports of a LoRA run: the adapter merged into its GGUF base (F32, then llama.cpp's quantizer), and the
adapter GGUF as a download.

The tiny fixture Llama is an F32 GGUF with the tokenizer's chat template, so the merged F32 file and llama.cpp
running the base with the adapter compute the same numbers (llama.cpp adds scale·B·(A·x) where the merged file
holds W + scale·B·A: only float rounding differs). The runs' adapters have B far from zero, so a merged model
clearly differs from its base. llama-cpp-python ships no llama.cpp command-line tools, so "llama.cpp's own tools"
here are the gguf package's reader (what ``gguf_dump`` prints: metadata and tensors) and llama.cpp loading the
file (``llama_cpp.Llama`` and the app's engine).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from playground.backends.base import GenerationParams
from playground.backends.llama_cpp_engine import LlamaCppEngine
from playground.backends.provider import EngineProvider
from playground.errors import InvalidGGUFError, InvalidParameterError
from playground.finetune import gguf_export
from playground.finetune.gguf_adapter import adapter_gguf_path, run_adapter_gguf
from playground.finetune.gguf_export import (
    FullFinetuneError,
    NoGGUFBaseError,
    adapter_gguf_export,
    base_gguf_of,
    export_bytes,
    merge_to_gguf,
    quantized_export,
)
from playground.finetune.runs import RunNotFoundError, RunStore
from playground.finetune.storage import DataDirFullError
from playground.models.catalog import Catalog
from playground.models.sources import ResolvedWeights, SourceResolver
from tests.gguf_models import make_lora_run, write_llama_gguf, write_wider_llama_gguf
from tests.helpers import build_tiny_causal_lm, decoder_spec, fake_hardware, offline_settings

pytestmark = pytest.mark.slow

TINY = "tiny-llama-export"
REPO = "test-org/Tiny-Llama-Export"
TOKENS = [1, 40, 41, 42, 43, 60, 61, 70, 80, 90]
GREEDY = GenerationParams(max_new_tokens=8, temperature=0.0, seed=0, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def room(tmp_path_factory, tiny_tokenizer):
    """(run store, catalog, resolver, base GGUF, model folder) of a tiny Llama with a GGUF twin in a models folder."""
    models = tmp_path_factory.mktemp("export-models")
    folder = build_tiny_causal_lm(models / REPO.split("/")[-1], "llama", tiny_tokenizer, 128)
    base = write_llama_gguf(folder, folder / f"{TINY}.gguf", chat_template=True)
    catalog = Catalog((decoder_spec(TINY, repo=REPO, gguf_file=f"{TINY}.gguf", context_length=128),
                       decoder_spec("no-gguf", repo="test-org/No-Gguf")))
    resolver = SourceResolver(models, offline=True, hub_cache_dir=tmp_path_factory.mktemp("export-hub"))
    runs = RunStore(tmp_path_factory.mktemp("export-data") / "runs")
    return runs, catalog, resolver, base, folder


@pytest.fixture(scope="module")
def lora(room):
    runs, _, _, _, folder = room
    return make_lora_run(runs, folder, "alice", 7, TINY)


@pytest.fixture
def run_dir(room, lora, tmp_path):
    """A fresh copy of the LoRA run for each test (no downloads, no adapter GGUF yet)."""
    runs, *_ = room
    copy = tmp_path / lora
    shutil.copytree(runs.path(lora) / "adapter", copy / "adapter")
    return copy


def logits(model, lora_path=None) -> np.ndarray:
    """llama.cpp's logits for every position of TOKENS (optionally with a LoRA adapter applied)."""
    from playground.backends.llama_loading import llama_class

    Llama = llama_class()

    llm = Llama(model_path=str(model), lora_path=str(lora_path) if lora_path else None, n_ctx=64, n_threads=2,
                logits_all=True, verbose=False)
    try:
        llm.eval(TOKENS)
        return np.array(llm.scores[:len(TOKENS)], dtype=np.float64)
    finally:
        llm.close()


def reader(path):
    from gguf import GGUFReader

    return GGUFReader(path, "r")


def test_the_merged_f32_file_is_llama_cpp_with_the_adapter(room, run_dir, tmp_path):
    _, _, _, base, _ = room
    adapter = run_adapter_gguf(run_dir, run_dir / "adapter", base)
    merged = merge_to_gguf(base, adapter, tmp_path / "out" / "merged.gguf")
    with_adapter, on_merged, untuned = logits(base, adapter), logits(merged), logits(base)
    difference = np.abs(on_merged - with_adapter).max()
    print(f"\nmax |merged - base+adapter| = {difference:.2e}; "
          f"max |base+adapter - base| = {np.abs(with_adapter - untuned).max():.3f}")
    assert difference < 1e-3
    assert np.abs(with_adapter - untuned).max() > 0.1 and np.abs(on_merged - untuned).max() > 0.1
    assert sorted(p.name for p in merged.parent.iterdir()) == ["merged.gguf"]  # written atomically, nothing left


def test_the_merged_file_keeps_the_bases_metadata_and_tensor_order(room, run_dir, tmp_path):
    import gguf

    _, _, _, base, _ = room
    merged = merge_to_gguf(base, run_adapter_gguf(run_dir, run_dir / "adapter", base), tmp_path / "merged.gguf")
    original, copy = reader(base), reader(merged)
    fields = lambda r: {n: f.contents() for n, f in r.fields.items() if not n.startswith("GGUF.")}  # noqa: E731
    before, after = fields(original), fields(copy)
    assert after.pop("general.file_type") == gguf.LlamaFileType.ALL_F32
    before.pop("general.file_type")
    assert after == before  # every other field: architecture, hyperparameters, tokenizer, chat template, name
    assert after["general.architecture"] == "llama" and "<s>assistant:" in after["tokenizer.chat_template"]
    assert after["tokenizer.ggml.tokens"] == before["tokenizer.ggml.tokens"] and len(after["tokenizer.ggml.tokens"])
    assert [(t.name, tuple(t.shape)) for t in copy.tensors] == [(t.name, tuple(t.shape)) for t in original.tensors]
    assert {t.tensor_type.name for t in copy.tensors} == {"F32"}
    # Tensors the adapter does not touch are the base's, bit for bit; adapted ones changed.
    unchanged = {t.name: np.array(t.data) for t in original.tensors}
    for tensor in copy.tensors:
        same = np.array_equal(np.array(tensor.data), unchanged[tensor.name])
        adapted = any(part in tensor.name for part in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_down"))
        assert same != adapted, tensor.name


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_K_M"])
def test_a_quantized_export_loads_in_llama_cpp_and_generates(room, run_dir, type_name):
    import gguf

    _, _, _, base, _ = room
    output = quantized_export(run_dir, base, type_name)
    assert output == run_dir / "downloads" / f"{run_dir.name}-{type_name}.gguf"
    assert sorted(p.name for p in output.parent.iterdir()) == [".lock", output.name]  # the F32 file went
    dump = reader(output)  # what gguf_dump lists: metadata and tensors
    assert dump.fields["general.file_type"].contents() == {"Q8_0": 7, "Q4_K_M": 15}[type_name]
    assert dump.fields["tokenizer.chat_template"].contents() == reader(base).fields["tokenizer.chat_template"].contents()
    kinds = {t.tensor_type for t in dump.tensors}
    assert gguf.GGMLQuantizationType.F32 in kinds and kinds - {gguf.GGMLQuantizationType.F32}  # norms stay F32
    assert output.stat().st_size < 0.5 * sum(4 * int(t.n_elements) for t in dump.tensors)
    # Close to llama.cpp on the base with the adapter: the same top token at most positions.
    tuned, exported = logits(base, adapter_gguf_path(run_dir)), logits(output)
    agree = (tuned.argmax(-1) == exported.argmax(-1)).mean()
    print(f"\n{type_name}: top token as base+adapter at {agree:.0%} of positions")
    assert agree >= (0.9 if type_name == "Q8_0" else 0.6), agree
    engine = LlamaCppEngine.load("exported", ResolvedWeights("exported", "gguf", output, "local", output.name), 2)
    try:
        result = engine.generate("The quick brown fox", GREEDY)
        assert result.completion_tokens > 0 and engine.has_chat_template
    finally:
        engine.close()


def test_an_export_is_built_once_and_reused(room, run_dir, monkeypatch):
    _, _, _, base, _ = room
    first = quantized_export(run_dir, base, "q8_0")  # a type name in any case
    inode = first.stat().st_ino

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(gguf_export, "merge_to_gguf", fail)
    monkeypatch.setattr(gguf_export, "quantize_gguf", fail)
    monkeypatch.setattr(gguf_export, "run_adapter_gguf", fail)
    for _ in range(3):
        assert quantized_export(run_dir, base, "Q8_0") == first
    assert first.stat().st_ino == inode
    with pytest.raises(AssertionError, match="rebuilt"):  # another type is another file
        quantized_export(run_dir, base, "Q4_K_M")
    assert sorted(p.name for p in first.parent.iterdir()) == [".lock", first.name]


def test_the_adapter_gguf_download_is_the_runs_adapter_gguf(room, run_dir, monkeypatch):
    from playground.backends.llama_loading import llama_class

    Llama = llama_class()

    _, _, _, base, _ = room
    download = adapter_gguf_export(run_dir, base)
    assert download == run_dir / "downloads" / f"{run_dir.name}-adapter.gguf"
    source = adapter_gguf_path(run_dir)
    assert download.read_bytes() == source.read_bytes()
    assert download.stat().st_ino == source.stat().st_ino  # a hard link: no second copy
    assert reader(download).fields["general.type"].contents() == "adapter"
    monkeypatch.setattr(gguf_export, "run_adapter_gguf", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert adapter_gguf_export(run_dir, base) == download
    llm = Llama(model_path=str(base), lora_path=str(download), n_ctx=64, verbose=False)  # llama.cpp takes it
    llm.close()


def test_the_budget_is_asked_for_the_f32_file_and_the_target_first(room, run_dir):
    _, _, _, base, _ = room
    asked = []

    def full(needed):
        asked.append(needed)
        raise DataDirFullError("The server's data folder is full (20.0 of 20.0 GB used).")

    with pytest.raises(DataDirFullError, match="data folder is full"):
        quantized_export(run_dir, base, "Q4_K_M", make_room=full)
    weights = sum(4 * int(t.n_elements) for t in reader(base).tensors)
    adapter_bytes = sum(p.stat().st_size for p in (run_dir / "adapter").iterdir())
    assert asked == [export_bytes(base, "Q4_K_M") + adapter_bytes]
    assert weights < export_bytes(base, "Q4_K_M") < 1.25 * weights
    assert export_bytes(base, "F32") == weights
    assert sorted(p.name for p in (run_dir / "downloads").iterdir()) == [".lock"]  # nothing written
    assert not adapter_gguf_path(run_dir).exists()


def test_full_fine_tunes_runs_without_a_gguf_base_and_bad_types_are_refused(room, lora, run_dir, tmp_path):
    runs, catalog, resolver, base, folder = room
    assert base_gguf_of(runs.path(lora), catalog, resolver) == base
    with pytest.raises(InvalidParameterError, match="Unknown GGUF type 'Q4'.*Q8_0.*Q4_K_M"):
        quantized_export(run_dir, base, "Q4")
    full = tmp_path / "full-run"
    (full / "model").mkdir(parents=True)
    for refuse in (lambda: quantized_export(full, base, "Q8_0"), lambda: adapter_gguf_export(full, base),
                   lambda: base_gguf_of(full, catalog, resolver)):
        with pytest.raises(FullFinetuneError, match="full fine-tune"):
            refuse()
    for base_model in ("no-gguf", str(folder)):  # a catalog model with safetensors only, and a local folder
        other = make_lora_run(runs, folder, "alice", 8, base_model)
        with pytest.raises(NoGGUFBaseError, match="has no GGUF file in the catalog"):
            base_gguf_of(runs.path(other), catalog, resolver)
    with pytest.raises(RunNotFoundError, match="There is no run"):
        quantized_export(tmp_path / "missing", base, "Q8_0")
    assert not (full / "downloads").exists() or sorted(p.name for p in (full / "downloads").iterdir()) == []


def test_an_adapter_for_another_model_is_refused_before_writing(room, run_dir, tmp_path, tiny_tokenizer):
    _, _, _, base, _ = room
    adapter = run_adapter_gguf(run_dir, run_dir / "adapter", base)
    wider = write_wider_llama_gguf(tmp_path, tiny_tokenizer)
    with pytest.raises(gguf_export.GGUFExportError, match="another model"):
        merge_to_gguf(wider, adapter, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    with pytest.raises(gguf_export.GGUFExportError, match="not a llama.cpp LoRA adapter"):
        merge_to_gguf(base, base, tmp_path / "out.gguf")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(base.read_bytes()[:5000])
    with pytest.raises(InvalidGGUFError, match="broken.gguf is damaged or truncated"):
        merge_to_gguf(broken, adapter, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_the_quantized_cpu_tab_loads_an_export_from_the_models_folder(room, run_dir, tmp_path):
    """A deployer copies the file into PLAYGROUND_MODELS_DIR and names it in a catalog entry with a GGUF source."""
    _, _, _, base, _ = room
    output = quantized_export(run_dir, base, "Q4_K_M")
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(output, models / "mytune.gguf")
    catalog = Catalog((decoder_spec("mytune", repo="me/mytune", gguf_file="mytune.gguf", context_length=128),))
    provider = EngineProvider(offline_settings(tmp_path / "data", models), fake_hardware(cuda=False), catalog)
    try:
        weights = provider.resolve("mytune", "gguf")
        assert (weights.origin, weights.path) == ("local", models / "mytune.gguf")
        engine = provider.get("mytune", "llama.cpp")
        assert isinstance(engine, LlamaCppEngine)
        assert engine.generate("Paris is the capital of", GREEDY).completion_tokens > 0
    finally:
        provider.cache.clear()

