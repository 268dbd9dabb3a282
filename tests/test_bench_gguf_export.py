"""The bench's GGUF export figures, on a tiny Llama with a GGUF twin: both figures come out, informational."""

from __future__ import annotations

import json

import pytest

from playground.bench import BenchOptions
from playground.bench.gguf_export import bench_gguf_export, write_random_lora
from playground.models.catalog import Catalog
from tests.gguf_models import write_llama_gguf
from tests.helpers import build_tiny_causal_lm, decoder_spec, offline_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_tokenizer):
    models = tmp_path_factory.mktemp("bench-gguf-models")
    folder = build_tiny_causal_lm(models / "tiny-bench", "llama", tiny_tokenizer, 128)
    write_llama_gguf(folder, models / "tiny-bench.gguf")
    catalog = Catalog((decoder_spec("tiny-bench", repo="test-org/tiny-bench", gguf_file="tiny-bench.gguf"),
                       decoder_spec("no-gguf", repo="test-org/no-gguf")))
    return offline_settings(tmp_path_factory.mktemp("bench-gguf-data"), models), catalog, models


def test_the_random_lora_fits_the_base_and_names_it(tiny, tmp_path):
    from safetensors.numpy import load_file

    _, _, models = tiny
    adapter = write_random_lora(models / "tiny-bench.gguf", tmp_path / "adapter", rank=4, base_model="tiny-bench")
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 4 * 2  # two layers, four projections, A and B
    assert tensors["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"].shape == (16, 4)  # 2 kv heads
    assert tensors["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"].shape == (4, 32)
    assert json.loads((adapter / "playground.json").read_text())["base_model"] == "tiny-bench"


def test_both_figures_are_measured_and_informational(tiny, tmp_path):
    settings, catalog, _ = tiny
    conversion, merge = bench_gguf_export(settings, catalog, BenchOptions(model="tiny-bench"), tmp_path)
    for figure in (conversion, merge):
        assert figure.value is not None and figure.value > 0 and figure.passed is None, figure
    assert "Q4_K_M" in merge.name and "Q4_K_M" in merge.detail
    assert list((tmp_path / "gguf-export" / "bench-run" / "downloads").glob("*-Q4_K_M.gguf"))


def test_a_model_without_a_gguf_is_skipped(tiny, tmp_path):
    settings, catalog, _ = tiny
    figures = bench_gguf_export(settings, catalog, BenchOptions(model="no-gguf"), tmp_path)
    assert [f.value for f in figures] == [None, None] and all("no GGUF" in f.detail for f in figures)
