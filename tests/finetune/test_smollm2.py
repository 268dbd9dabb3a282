"""Real training on the packaged SmolLM2-135M (GGUF converted once to safetensors): LoRA, QLoRA, merge.

A short dialogue repeated a few times, a tiny batch and a learning rate high enough that a handful of
steps visibly lower the loss; the same dialogue is the test example, so the test loss falls too.
"""

from __future__ import annotations

import json
import warnings

import pytest

from playground.finetune.config import FinetuneConfig
from playground.finetune.train import train
from tests.finetune.conftest import RecordingControl, assert_event_shapes, write_jsonl
from tests.helpers import SMOLLM2

pytestmark = pytest.mark.slow

DIALOGUE = "#Person1#: Can we meet at six?\n#Person2#: Yes, at the cafe by the station."
SUMMARY = "#Person1# and #Person2# will meet at six at the cafe by the station."


@pytest.fixture(scope="module")
def repeated_dialogue(tmp_path_factory):
    rows = [{"dialogue": DIALOGUE, "summary": SUMMARY, "split": "train"}] * 6
    rows.append({"dialogue": DIALOGUE, "summary": SUMMARY, "split": "test"})
    return write_jsonl(tmp_path_factory.mktemp("smol-data") / "one.jsonl", rows)


def _config(data, method: str, steps: int) -> FinetuneConfig:
    return FinetuneConfig.from_dict({
        "model": SMOLLM2, "method": method, "data": str(data), "input_column": "dialogue",
        "target_column": "summary", "template": "dialogue-tldr", "max_length": 96, "batch_size": 2,
        "learning_rate": 2e-3, "max_steps": steps, "validation_fraction": 0, "sample_count": 1,
        "max_new_tokens": 12, "lora_r": 8, "lora_alpha": 16, "seed": 0})


def _run(tmp_path_factory, data_dir, resolver, data, method, steps):
    run_dir = tmp_path_factory.mktemp(f"smol-{method}") / "run"
    control = RecordingControl()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = train(_config(data, method, steps), run_dir, control, data_dir, resolver=resolver)
    return outcome, control, run_dir, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, data_dir, offline_resolver, repeated_dialogue):
    return _run(tmp_path_factory, data_dir, offline_resolver, repeated_dialogue, "lora", 6)


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, data_dir, offline_resolver, repeated_dialogue):
    return _run(tmp_path_factory, data_dir, offline_resolver, repeated_dialogue, "qlora", 5)


def _assert_learned(outcome, control, run_dir):
    from safetensors.torch import load_file

    assert outcome.status == "done"
    assert_event_shapes(control.events)
    losses = [e["loss"] for e in control.of("step")]
    assert losses[-1] < losses[0], losses
    metrics = outcome.metrics
    assert metrics.test_loss_after < metrics.test_loss_before
    tensors = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    changed = [k for k, v in tensors.items() if "lora_B" in k and float(v.abs().sum()) > 0]
    assert len(changed) == len([k for k in tensors if "lora_B" in k]) > 0  # every adapter moved
    targets = {k.split(".")[-3] for k in tensors}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj"}  # the catalog's lora_targets
    return metrics


def test_lora_on_smollm2_lowers_the_loss(lora_run):
    outcome, control, run_dir, _ = lora_run
    metrics = _assert_learned(outcome, control, run_dir)
    assert metrics.trainable_parameters == 921_600  # r=8 on q, k, v, o of 30 layers
    assert 0.006 < metrics.trainable_share < 0.007
    assert metrics.tokens_per_s > 0
    info = json.loads((run_dir / "adapter" / "playground.json").read_text())
    assert info["base_model"] == SMOLLM2


def test_qlora_on_smollm2_lowers_the_loss_on_cpu(qlora_run, lora_run):
    outcome, control, run_dir, caught = qlora_run
    metrics = _assert_learned(outcome, control, run_dir)
    assert metrics.method == "qlora"
    assert metrics.trainable_parameters == lora_run[0].metrics.trainable_parameters
    # bitsandbytes' CPU inference repacking would send gradients through a kernel without autograd
    assert not [m for m in caught if "autograd kernel was not registered" in m]
    assert metrics.costs["memory"]["weights_gib"] < lora_run[0].metrics.costs["memory"]["weights_gib"]


def test_merged_smollm2_adapter_matches_the_adapter(lora_run, tmp_path, data_dir, offline_resolver):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from playground.finetune.export import merge_adapter
    from playground.finetune.methods import load_base_model, locate_model

    _, _, run_dir, _ = lora_run
    merged_dir = merge_adapter(run_dir / "adapter", tmp_path / "merged", data_dir, resolver=offline_resolver)
    assert (merged_dir / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((merged_dir / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, use_safetensors=True).eval()
    source = locate_model(FinetuneConfig(model=SMOLLM2), offline_resolver, data_dir)
    adapted = PeftModel.from_pretrained(load_base_model(source, "lora"), run_dir / "adapter").eval()
    ids = torch.tensor([[1, 504, 2632, 314, 253, 1345, 28]])
    with torch.no_grad():
        difference = (merged(input_ids=ids).logits - adapted(input_ids=ids).logits).abs().max()
    assert float(difference) < 1e-3


def test_gguf_loaded_model_is_made_saveable(data_dir, offline_resolver, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from playground.finetune.export import saveable_model
    from playground.finetune.methods import locate_model

    from playground.models.catalog import Catalog

    locate_model(FinetuneConfig(model=SMOLLM2), offline_resolver, data_dir)
    weights = offline_resolver.resolve(Catalog.load().get(SMOLLM2), "gguf")
    gguf_marked = AutoModelForCausalLM.from_pretrained(weights.path.parent, gguf_file=weights.path.name)  # marked
    with pytest.raises(ValueError, match="not serializable"):
        gguf_marked.save_pretrained(tmp_path / "refused")
    plain = saveable_model(gguf_marked)
    assert getattr(plain, "hf_quantizer", None) is None
    plain.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", use_safetensors=True)
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(reloaded.state_dict()[name], gguf_marked.state_dict()[name])


# ---------------------------------------------------------------- the same run on llama.cpp (adapter GGUF)

AGREEMENT_PROMPTS = [
    f"Summarize the dialogue.\n\n{DIALOGUE}\n\nSummary:",
    "#Person1#: Shall we take the train?\n#Person2#: Yes, the early one.\nSummary:",
    "The capital of France is",
    "Write one word for a colour:",
    "#Person1#: Is the cafe open?\n#Person2#:",
    "Two plus two equals",
]


def _distributions(llm, ids_list):
    import numpy as np

    rows = []
    for ids in ids_list:
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[len(ids) - 1], dtype=np.float64)
        rows.append(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())
    return rows


def _kl(p, q) -> float:
    import numpy as np

    p, q = np.clip(p, 1e-12, 1), np.clip(q, 1e-12, 1)
    return float(np.sum(p * np.log(p / q)))


@pytest.mark.parametrize("which", ["lora", "qlora"])
def test_the_run_on_llama_cpp_is_the_model_transformers_serves(which, lora_run, qlora_run, tmp_path, data_dir,
                                                               offline_resolver):
    """llama.cpp on the packaged Q4_1 GGUF with the adapter GGUF agrees with transformers + peft on the same
    (dequantised) weights, within quantisation noise; both differ from the base by much more."""
    import numpy as np
    import torch
    from playground.backends.llama_loading import llama_class

    Llama = llama_class()
    from peft import PeftModel

    from playground.finetune.gguf_adapter import convert_adapter
    from playground.finetune.methods import load_base_model, locate_model
    from playground.models.catalog import Catalog

    run_dir = (lora_run if which == "lora" else qlora_run)[2]
    base_gguf = offline_resolver.resolve(Catalog.load().get(SMOLLM2), "gguf").path
    adapter_gguf = convert_adapter(run_dir / "adapter", base_gguf, tmp_path / "adapter.gguf")
    source = locate_model(FinetuneConfig(model=SMOLLM2), offline_resolver, data_dir)
    adapted = PeftModel.from_pretrained(load_base_model(source, "lora"), run_dir / "adapter").eval()
    # Scale the learned update up, so a few steps' change is clearly above quantisation noise: llama.cpp and
    # peft must then still agree, which they only do when every tensor landed on the right weight.
    kwargs = dict(n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    base_llm = Llama(model_path=str(base_gguf), **kwargs)
    tuned_llm = Llama(model_path=str(base_gguf), lora_path=str(adapter_gguf), lora_scale=8.0, **kwargs)
    try:
        ids_list = [base_llm.tokenize(p.encode(), add_bos=False) for p in AGREEMENT_PROMPTS]
        on_llama, untuned = _distributions(tuned_llm, ids_list), _distributions(base_llm, ids_list)
    finally:
        base_llm.close()
        tuned_llm.close()
    for module in adapted.modules():
        if hasattr(module, "scaling") and isinstance(module.scaling, dict):
            module.scaling = {name: value * 8.0 for name, value in module.scaling.items()}
    on_torch = []
    with torch.no_grad():
        for ids in ids_list:
            logits = adapted(input_ids=torch.tensor([ids])).logits[0, -1].double()
            on_torch.append(torch.softmax(logits, -1).numpy())
    agree = sum(int(a.argmax() == b.argmax()) for a, b in zip(on_llama, on_torch))
    same = [_kl(t, q) for t, q in zip(on_torch, on_llama)]
    apart = [_kl(t, b) for t, b in zip(on_torch, untuned)]
    assert agree >= len(ids_list) - 1, (agree, same)
    assert np.median(same) < 0.05, same
    assert np.median(apart) > 20 * np.median(same), (apart, same)
def test_the_lora_run_exported_as_q4_k_m_gguf_runs_on_llama_cpp(lora_run, catalog, offline_resolver):
    from playground.backends.base import GenerationParams
    from playground.backends.llama_cpp_engine import LlamaCppEngine
    from playground.finetune.gguf_export import base_gguf_of, quantized_export
    from playground.models.sources import ResolvedWeights

    _, _, run_dir, _ = lora_run
    output = quantized_export(run_dir, base_gguf_of(run_dir, catalog, offline_resolver), "Q4_K_M")
    assert output.name == f"{run_dir.name}-Q4_K_M.gguf"
    engine = LlamaCppEngine.load("tuned", ResolvedWeights("tuned", "gguf", output, "local", output.name), 2)
    try:
        answer = engine.generate(f"{DIALOGUE}\nTL;DR:", GenerationParams(max_new_tokens=12, temperature=0.0))
        print(f"\nQ4_K_M export answers: {answer.text!r}")
        assert answer.completion_tokens > 0 and engine.has_chat_template
    finally:
        engine.close()


def test_dora_and_rslora_wrap_smollm2_as_peft_counts_them(data_dir, offline_resolver):
    """The LoRA variants on the packaged SmolLM2 (no training: wrapping is what differs): rsLoRA trains LoRA's
    weights with another scale, DoRA adds a magnitude per output of every adapted layer."""
    from playground.finetune.methods import build_trainable
    from playground.finetune.weights import locate_model

    config = FinetuneConfig(model=SMOLLM2, method="rslora", lora_r=4, target_modules=("q_proj", "v_proj"))
    source = locate_model(config, offline_resolver, data_dir)
    rslora = build_trainable(config, source)
    # 30 layers; q_proj 576 -> 576, v_proj 576 -> 192 (3 key/value heads of 64)
    lora_weights = 30 * (4 * (576 + 576) + 4 * (576 + 192))
    assert rslora.trainable_parameters == lora_weights
    assert rslora.model.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"] == 16 / 4 ** 0.5
    del rslora
    dora = build_trainable(config.replace(method="dora"), source)
    assert dora.trainable_parameters == lora_weights + 30 * (576 + 192)
