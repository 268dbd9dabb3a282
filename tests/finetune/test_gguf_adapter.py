"""Adapter GGUFs for every catalog decoder with a GGUF base that is here offline, and the conversion's checks.

The adapters are made to the base GGUF's own shapes (peft's names for a transformers model of that
architecture: the bench's ``write_random_lora``), so no transformers copy of the model is needed: llama.cpp itself checks that every
tensor fits when it loads the adapter, and the answer must change once the adapter is on.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from playground.backends.base import GenerationParams
from playground.bench.gguf_export import write_random_lora
from playground.finetune.gguf_adapter import AdapterConversionError, convert_adapter
from tests.helpers import SMOLLM2

def fabricated_adapter(base_gguf, folder, **config):
    """A random peft LoRA adapter (rank 4, alpha 8, q, k, v, o of every layer) shaped for ``base_gguf``, with
    ``config`` written over its adapter_config.json."""
    write_random_lora(base_gguf, folder, rank=4, alpha=8.0, b_std=0.05)
    path = folder / "adapter_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | config))
    return folder


@pytest.mark.parametrize("model_id", [SMOLLM2, "gemma-3-270m"])
def test_an_adapter_for_each_offline_catalog_decoder_loads_and_changes_the_answer(model_id, provider, tmp_path):
    spec = provider.spec(model_id)
    if not provider.resolver.is_available_offline(spec, "gguf"):
        pytest.skip(f"{model_id}'s GGUF is not installed here")
    base_gguf = provider.resolve(model_id, "gguf").path
    adapter = convert_adapter(fabricated_adapter(base_gguf, tmp_path / "adapter"), base_gguf, tmp_path / "a.gguf")
    base = provider.get(model_id, "llama.cpp")
    run = base.with_adapter(f"run:{model_id}", adapter)
    prompt = "The capital of France is"
    before = {p.token_id: p.probability for p in base.next_token_probabilities(prompt, k=20)}
    after = {p.token_id: p.probability for p in run.next_token_probabilities(prompt, k=20)}
    assert before != after
    again = {p.token_id: p.probability for p in base.next_token_probabilities(prompt, k=20)}
    assert again == pytest.approx(before)  # the base answers without the adapter once more
    assert run.generate(prompt, GenerationParams(max_new_tokens=4, temperature=0.0)).completion_tokens >= 1


def test_peft_scaling_variants_are_folded_into_b(tmp_path, provider):
    from gguf import GGUFReader

    base_gguf = provider.resolve(SMOLLM2, "gguf").path
    plain = convert_adapter(fabricated_adapter(base_gguf, tmp_path / "plain"), base_gguf, tmp_path / "plain.gguf")
    rs = convert_adapter(fabricated_adapter(base_gguf, tmp_path / "rs", use_rslora=True), base_gguf,
                         tmp_path / "rs.gguf")
    patterned = convert_adapter(fabricated_adapter(base_gguf, tmp_path / "pattern", alpha_pattern={"v_proj": 2}),
                                base_gguf, tmp_path / "pattern.gguf")

    def tensor(path, name):
        reader = GGUFReader(path)
        return np.array(next(t for t in reader.tensors if t.name == name).data)

    name = "blk.0.attn_v.weight.lora_b"
    # rsLoRA scales by alpha/sqrt(r) where llama.cpp uses alpha/r: B carries the factor sqrt(r) = 2.
    assert np.allclose(tensor(rs, name), 2.0 * tensor(plain, name), rtol=1e-6)
    # v_proj's alpha 2 instead of 8: a quarter of the update.
    assert np.allclose(tensor(patterned, name), 0.25 * tensor(plain, name), rtol=1e-6)
    other = "blk.0.attn_output.weight.lora_b"
    assert np.allclose(tensor(patterned, other), tensor(plain, other))


@pytest.mark.parametrize("change, message", [
    ({"use_dora": True}, "DoRA"),
    ({"modules_to_save": ["lm_head"]}, "whole modules"),
    ({"bias": "lora_only"}, "biases"),
    ({"peft_type": "IA3"}, "LoRA adapters only"),
])
def test_adapters_llama_cpp_cannot_express_are_refused(change, message, tmp_path, provider):
    base_gguf = provider.resolve(SMOLLM2, "gguf").path
    folder = fabricated_adapter(base_gguf, tmp_path / "adapter", **change)
    with pytest.raises(AdapterConversionError, match=message):
        convert_adapter(folder, base_gguf, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists() and not list(tmp_path.glob(".out.gguf*"))


def test_a_damaged_adapter_or_base_is_refused(tmp_path, provider):
    from playground.errors import InvalidGGUFError

    base_gguf = provider.resolve(SMOLLM2, "gguf").path
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AdapterConversionError, match="adapter_config.json"):
        convert_adapter(empty, base_gguf, tmp_path / "out.gguf")
    folder = fabricated_adapter(base_gguf, tmp_path / "adapter")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(InvalidGGUFError, match="cannot be read"):
        convert_adapter(folder, broken, tmp_path / "out.gguf")
