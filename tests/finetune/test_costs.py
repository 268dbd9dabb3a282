"""Cost arithmetic (no model needed), plus one timed step on a tiny model."""

from __future__ import annotations

import pytest

from playground.errors import InsufficientMemoryError
from playground.finetune.costs import (
    ADAMW_BYTES_PER_PARAM,
    GIB,
    CostReport,
    MemoryEstimate,
    ModelShape,
    check_fits,
    estimate_duration,
    lora_parameter_count,
    machine_memory_budget,
    memory_estimate,
    time_training_step,
    trainable_share,
)
from playground.models.catalog import Catalog
from tests.helpers import fake_hardware

T5_BASE = {"d_model": 768, "num_layers": 12, "num_decoder_layers": 12, "vocab_size": 32128,
           "is_encoder_decoder": True}


def test_flan_t5_base_lora_r32_on_q_and_v_trains_1_41_percent():
    # 12 encoder self-attention, 12 decoder self-attention and 12 cross-attention blocks, q and v each 768x768.
    shapes = [(768, 768)] * (36 * 2)
    trainable = lora_parameter_count(shapes, r=32)
    assert trainable == 3_538_944
    base = Catalog.load().get("flan-t5-base").parameters
    assert round(100 * trainable_share(trainable, base + trainable), 2) == 1.41
    assert trainable_share(5, 0) == 0.0


def test_shape_from_a_seq2seq_config_counts_both_stacks():
    shape = ModelShape.from_config(T5_BASE, parameters=247_577_856)
    assert (shape.hidden_size, shape.layers, shape.output_size) == (768, 24, 32128)
    assert ModelShape.from_config({"n_embd": 64, "n_layer": 3, "vocab_size": 100}, 10, output_size=3).output_size == 3


def test_full_finetuning_needs_gradients_and_adam_for_every_parameter():
    shape = ModelShape(parameters=100_000_000, hidden_size=512, layers=8, output_size=32000,
                       embedding_parameters=16_384_000)
    full = memory_estimate(shape, 0, batch_size=2, seq_len=128, full=True)
    assert full.weights == 4 * shape.parameters
    assert full.gradients == 4 * shape.parameters
    assert full.optimizer == ADAMW_BYTES_PER_PARAM * shape.parameters
    lora = memory_estimate(shape, 1_000_000, batch_size=2, seq_len=128)
    assert lora.gradients == 4_000_000 and lora.optimizer == 8_000_000
    assert lora.weights == 4 * shape.parameters + 4 * 1_000_000
    qlora = memory_estimate(shape, 1_000_000, batch_size=2, seq_len=128, quantized=True)
    assert qlora.weights < lora.weights / 3
    assert full.total > lora.total > qlora.total
    assert lora.activations == full.activations  # the frozen layers still keep their activations
    checkpointed = memory_estimate(shape, 1_000_000, 2, 128, checkpointing=True)
    assert checkpointed.activations < lora.activations
    bigger_batch = memory_estimate(shape, 1_000_000, 4, 128)
    assert bigger_batch.activations == 2 * lora.activations
    bf16 = memory_estimate(shape, 1_000_000, 2, 128, weight_bytes=2)
    assert bf16.weights < lora.weights and bf16.activations < lora.activations


def test_check_fits_refuses_with_the_figures_and_the_way_out():
    estimate = MemoryEstimate(weights=4 * GIB, gradients=4 * GIB, optimizer=8 * GIB, activations=GIB)
    check_fits(estimate, 20 * GIB, "full", "Big", "the GPU")
    with pytest.raises(InsufficientMemoryError) as info:
        check_fits(estimate, 8 * GIB, "full", "Big", "this machine's free RAM",
                   lora_estimate=MemoryEstimate(4 * GIB, 0, 0, GIB))
    message = str(info.value)
    assert "full fine-tuning of Big needs about 17.00 GiB (weights 4.00, gradients 4.00, optimizer 8.00, " \
           "activations 1.00)" in message
    assert "this machine's free RAM has 8.00 GiB available" in message
    assert "use method lora or qlora (about 5.00 GiB)" in message and "gradient_checkpointing" in message


def test_budget_follows_the_device():
    assert machine_memory_budget(fake_hardware(cuda=True)) == (16 * GIB, "the GPU (Fake GPU)")
    assert machine_memory_budget(fake_hardware(cuda=False))[0] == 8 * GIB


def test_duration_and_report():
    assert estimate_duration(1.5, 40) == 60.0
    assert estimate_duration(-1, 10) == 0.0
    estimate = MemoryEstimate(GIB, 0, 0, 0)
    report = CostReport("m", "lora", 1000, 10, 40, estimate, MemoryEstimate(4 * GIB, 0, 0, 0), 2 * GIB, "RAM", 30,
                        step_seconds=2.0)
    figures = report.as_dict()
    assert figures["estimated_duration_s"] == 60.0 and figures["fits"] and figures["trainable_share"] == 0.01
    assert figures["memory"]["total_gib"] == 1.0 and figures["full_finetune_memory"]["total_gib"] == 4.0


def test_timing_one_step_leaves_the_model_unchanged(ft_models):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ft_models["llama"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(4, 200, (2, 16))
    seconds = time_training_step(model, {"input_ids": ids, "labels": ids}, grad_accum=2)
    assert seconds > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_the_whole_run_estimate_scales_the_measured_step_to_the_runs_tokens():
    from playground.finetune.costs import RunEstimate, estimate_run

    estimate = estimate_run(load_s=5.0, step_s=3.0, step_tokens=400, planned_step_tokens=800, total_steps=10,
                            eval_batches=6, test_batches=3, answers=4, answer_s=0.5)
    # a step of 800 tokens costs twice the measured 400-token one; a forward pass a third of a step
    assert estimate.training_s == 10 * 6.0 + 6 * 2.0
    assert estimate.base_scoring_s == estimate.tuned_scoring_s == 3 * 2.0 + 4 * 0.5
    assert estimate.total_s == 5.0 + 72.0 + 2 * 8.0
    assert estimate.as_dict()["total"] == 93.0 and estimate.describe().startswith("load 5.0 s, base scoring 8.0 s")
    assert estimate_run(load_s=-1, step_s=1.0, step_tokens=0, planned_step_tokens=10, total_steps=2, eval_batches=0,
                        test_batches=0, answers=0, answer_s=9.0) == RunEstimate(0.0, 0.0, 2.0, 0.0)
    report = CostReport("m", "lora", 1000, 10, 40, MemoryEstimate(GIB, 0, 0, 0), MemoryEstimate(GIB, 0, 0, 0),
                        2 * GIB, "RAM", 10, step_seconds=3.0, run_estimate=estimate)
    assert report.as_dict()["estimated_run_s"]["training"] == 72.0


@pytest.mark.slow
def test_the_preflight_estimates_every_section_of_the_run(tmp_path, ft_models, dialogue_file, offline_resolver):
    from playground.finetune.config import FinetuneConfig
    from playground.finetune.preflight import preflight

    config = FinetuneConfig.from_dict({"model": str(ft_models["llama"]), "data": str(dialogue_file),
                                       "input_column": "dialogue", "target_column": "summary",
                                       "template": "dialogue-tldr", "max_steps": 3, "batch_size": 2,
                                       "max_length": 128, "sample_count": 2, "max_new_tokens": 4,
                                       "validation_fraction": 0.2, "eval_every": 2})
    report = preflight(config, tmp_path / "data", resolver=offline_resolver)
    estimate = report.run_estimate
    assert estimate is not None and report.step_seconds is not None
    assert estimate.training_s > 0 and estimate.base_scoring_s > 0 and estimate.load_s > 0
    assert estimate.total_s >= estimate.training_s and report.as_dict()["estimated_run_s"]["total"] > 0
