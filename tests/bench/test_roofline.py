"""The decode roofline and the training MFU: counted from the measured numbers, targets judged (no speed asserted)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from playground.bench import cli, machine, roofline
from playground.bench.core import BenchOptions
from playground.bench.finetune import TrainRun
from playground.models.catalog import Catalog
from tests.bench import stubs
from tests.helpers import SMOLLM2, decoder_spec

GEMMA = "gemma-3-270m"


# --------------------------------------------------------------------------- weights a token reads
def test_a_tied_embedding_is_read_whole_every_token():
    read = roofline.weights_read_per_token([("token_embd.weight", 30), ("blk.0.ffn_up.weight", 70)])
    assert read.bytes == 100 and "also the output head" in read.counted


def test_a_separate_output_head_leaves_the_embedding_to_its_row_lookups():
    read = roofline.weights_read_per_token([("token_embd.weight", 30), ("blk.0.ffn_up.weight", 70),
                                            ("output.weight", 30)])
    assert read.bytes == 100 and "but the token embedding" in read.counted


def test_a_file_without_an_embedding_counts_every_tensor():
    assert roofline.weights_read_per_token([("a", 3), ("b", 4)]) == roofline.WeightsRead(7, "every tensor")


def test_the_packaged_smollm2_gguf_tensor_bytes_match_its_facts():
    from playground.models.gguf_info import read_gguf_facts
    from playground.models.sources import SourceResolver

    path = SourceResolver(None, offline=True).resolve(Catalog.load().get(SMOLLM2), "gguf").path
    sizes = roofline.gguf_tensor_sizes(path)
    assert sum(size for _, size in sizes) == read_gguf_facts(path).tensor_bytes
    assert roofline.weights_read_per_token(sizes).bytes == read_gguf_facts(path).tensor_bytes  # tied head


# --------------------------------------------------------------------------- the roofline figure
def test_the_ratio_is_bytes_times_speed_over_bandwidth():
    assert roofline.roofline_ratio(100e6, 50.0, 10e9) == pytest.approx(0.5)
    assert roofline.roofline_ratio(100e6, 50.0, 0.0) is None


@pytest.mark.parametrize("speed, passed", [(80.0, True), (60.0, False)])  # 0.8 and 0.6 of the bandwidth
def test_gemma_is_judged_against_its_target(speed, passed):
    figure = roofline.roofline_figure(GEMMA, roofline.WeightsRead(250_000_000, "every tensor"), speed, "timed",
                                      25.0, "read bandwidth on 2 threads", None)
    assert (figure.unit, figure.target, figure.passed) == ("x", ">= 0.7", passed)
    assert figure.value == pytest.approx(250e6 * speed / 25e9)
    for part in ("250.0 MB of weights a token", f"{speed:.1f} tok/s (timed)", "over 25.00 GB/s (read bandwidth on 2"):
        assert part in figure.detail, part
    assert "last-level cache" not in figure.detail


def test_other_models_are_informational_and_a_cache_that_holds_the_weights_is_said():
    figure = roofline.roofline_figure(SMOLLM2, roofline.WeightsRead(100_000_000, "every tensor"), 50.0, "timed",
                                      10.0, "bw", cache_bytes=480 * 2**20)
    assert figure.target == "" and figure.passed is None and figure.value == pytest.approx(0.5)
    assert "fit in the 480 MiB last-level cache" in figure.detail


def test_a_missing_bandwidth_or_speed_leaves_the_figure_unmeasured():
    weights = roofline.WeightsRead(1, "every tensor")
    no_bandwidth = roofline.roofline_figure(GEMMA, weights, 50.0, "timed", None, "bw", None)
    assert no_bandwidth.value is None and no_bandwidth.passed is False and "bandwidth" in no_bandwidth.detail
    no_speed = roofline.roofline_figure(SMOLLM2, weights, 0.0, "timed", 10.0, "bw", None)
    assert no_speed.value is None and no_speed.passed is None and "no decode speed" in no_speed.detail


def _provider(catalog: Catalog, available: set[str]):
    return SimpleNamespace(catalog=catalog, resolve=lambda model_id, fmt: SimpleNamespace(path=Path(model_id)),
                           resolver=SimpleNamespace(is_available_offline=lambda spec, fmt: spec.id in available))


def test_every_gguf_decoder_gets_a_figure_timed_once(monkeypatch):
    catalog = Catalog((decoder_spec(GEMMA, repo="o/g", gguf_file="g.gguf"), decoder_spec("known", "o/k", "k.gguf"),
                       decoder_spec("absent", "o/a", "a.gguf"), decoder_spec("no-gguf", "o/n")))
    timed = []

    def measure_decode(provider, model_id, options):
        timed.append(model_id)
        return 40.0, "timed here"

    monkeypatch.setattr(roofline, "gguf_tensor_sizes", lambda path: [("token_embd.weight", 50_000_000),
                                                                    ("blk.0.attn_q.weight", 50_000_000)])
    monkeypatch.setattr(roofline, "measure_decode", measure_decode)
    figures = roofline.bench_roofline(_provider(catalog, {GEMMA, "known"}), BenchOptions(quick=True), 8.0, 2,
                                      {"known": 60.0}, None)
    by_model = {f.name: f for f in figures}
    assert list(by_model) == [roofline.roofline_measure(m).name for m in (GEMMA, "known", "absent")]
    assert timed == [GEMMA]  # the model another suite timed is not timed again
    gemma, known, absent = figures
    assert gemma.value == pytest.approx(100e6 * 40.0 / 8e9) and gemma.passed is False  # 0.5 < 0.7
    assert known.value == pytest.approx(100e6 * 60.0 / 8e9) and known.passed is None
    assert "llama.cpp decode, app engine figure" in known.detail and "on 2 threads" in known.detail
    assert absent.value is None and absent.passed is None and "no GGUF" in absent.detail


def test_a_model_whose_decode_fails_fails_alone(monkeypatch):
    catalog = Catalog((decoder_spec(GEMMA, "o/g", "g.gguf"), decoder_spec("other", "o/o", "o.gguf")))

    def measure_decode(provider, model_id, options):
        if model_id == GEMMA:
            raise RuntimeError("llama.cpp could not open it")
        return 40.0, "timed"

    monkeypatch.setattr(roofline, "gguf_tensor_sizes", lambda path: [("w", 10)])
    monkeypatch.setattr(roofline, "measure_decode", measure_decode)
    gemma, other = roofline.bench_roofline(_provider(catalog, {GEMMA, "other"}), BenchOptions(), 1.0, 1, {}, None)
    assert gemma.passed is False and "could not open it" in gemma.detail
    assert other.value is not None


# --------------------------------------------------------------------------- training MFU
def _tiny_config(arch: str):
    from transformers import GPT2Config, LlamaConfig

    if arch == "llama":
        return LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64)


@pytest.mark.parametrize("arch, targets", [("llama", ("q_proj", "v_proj")), ("gpt2", ("c_attn",))])
def test_model_counts_agree_with_the_model_and_with_peft(tmp_path, arch, targets):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = _tiny_config(arch)
    config.save_pretrained(tmp_path)
    counts = roofline.count_model(tmp_path, targets, lora_r=4)
    model = AutoModelForCausalLM.from_config(config)
    assert counts.parameters == sum(p.numel() for p in model.parameters())
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) or
                 type(m).__name__ == "Conv1D")
    assert counts.matmul_weights == linear
    assert (counts.layers, counts.attention_width) == (2, 32)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=list(targets),
                                                  fan_in_fan_out=arch == "gpt2"))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert counts.lora_weights == trainable


COUNTS = roofline.ModelCounts(parameters=1_000_000, matmul_weights=900_000, lora_weights=10_000, layers=4,
                              attention_width=64)


def test_a_trained_token_costs_four_per_frozen_weight_six_per_adapter_weight_and_attention():
    assert roofline.training_flops_per_token(COUNTS, 100) == 4 * 900_000 + 6 * 10_000 + 6 * 4 * 64 * 100
    assert roofline.full_training_flops_per_token(COUNTS, 100) == 6 * 1_000_000 + 6 * 4 * 64 * 100


def test_rows_carry_the_real_tokens_of_the_timed_steps():
    runs = [TrainRun(steps=4, tokens=1600, seconds=8.0, padding_share=0.1),
            TrainRun(steps=2, tokens=400, seconds=2.0, padding_share=0.1)]
    assert roofline.mean_row_tokens(runs, rows_per_step=4) == pytest.approx(2000 / 24)
    assert roofline.mean_row_tokens([], rows_per_step=4) == 0.0


@pytest.mark.parametrize("sgemm_gflops, passed", [(1.0, True), (100.0, False)])
def test_mfu_is_the_trainers_flops_over_sgemm(sgemm_gflops, passed):
    runs = stubs.TRAIN_RUNS  # 200 and 160 tok/s: median 180; 100 real tokens a row at 4 rows a step
    figure = roofline.training_mfu_figure(COUNTS, runs, 4, sgemm_gflops, "best of 2")
    per_token = roofline.training_flops_per_token(COUNTS, 100)
    assert figure.value == pytest.approx(per_token * 180 / (sgemm_gflops * 1e9))
    assert (figure.unit, figure.target, figure.passed) == ("x", ">= 0.6", passed)
    as_issue = roofline.full_training_flops_per_token(COUNTS, 100) * 180 / (sgemm_gflops * 1e9)
    for part in ("180.0 trained tokens/s", "frozen base computes no weight gradients", "0.9 M weights",
                 "100 real tokens a row", f"would give {as_issue:.3f}", "(best of 2)"):
        assert part in figure.detail, part


def test_mfu_without_sgemm_or_runs_is_not_measured():
    missing = roofline.training_mfu_figure(COUNTS, stubs.TRAIN_RUNS, 4, None)
    assert missing.value is None and missing.passed is False and "sgemm" in missing.detail
    assert roofline.training_mfu_figure(COUNTS, (), 4, 10.0).passed is False


# --------------------------------------------------------------------------- in the bench's run
@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    folder = stubs.write_model_config(tmp_path / "model")
    for module, name, stand_in in stubs.stubbed_suites(folder):
        monkeypatch.setattr(module, name, stand_in)
    return folder


def test_the_run_divides_the_measured_numbers_by_the_ceilings_it_measured(stubbed, tmp_path):
    figures = cli.run_benchmarks(BenchOptions(quick=True, skip_startup=True, data_dir=tmp_path / "scratch"))
    by_name = {f.name: f for f in figures}
    bandwidth = machine.figure_value(figures, machine.READ_ALL_THREADS)
    sgemm = machine.figure_value(figures, machine.SGEMM)
    assert bandwidth and sgemm
    smollm = by_name[roofline.roofline_measure(SMOLLM2).name]
    assert smollm.value == pytest.approx(100e6 * stubs.LLAMA_SPEED / (bandwidth * 1e9))
    mfu = by_name[roofline.TRAINING_MFU.name]
    per_token = roofline.training_flops_per_token(roofline.count_model(stubbed, ("q_proj", "v_proj"), 8), 100)
    assert mfu.value == pytest.approx(per_token * 180 / (sgemm * 1e9))
    assert mfu.passed is (mfu.value >= 0.6)
    names = [f.name for f in figures]  # the ceilings come before the figures divided by them
    assert names.index(machine.SGEMM.name) < names.index(smollm.name) < names.index(mfu.name)


def test_skipping_the_fine_tune_figure_skips_the_mfu(stubbed, tmp_path):
    figures = cli.run_benchmarks(BenchOptions(quick=True, skip_startup=True, skip_finetune=True,
                                              data_dir=tmp_path / "scratch"))
    mfu = next(f for f in figures if f.name == roofline.TRAINING_MFU.name)
    assert mfu.value is None and mfu.passed is None and "--skip-finetune" in mfu.detail
