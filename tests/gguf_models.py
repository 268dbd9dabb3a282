"""A tiny transformers Llama written as a GGUF file llama.cpp loads, and finished LoRA runs over a GGUF base,
for tests of llama.cpp paths on tiny runs.

:func:`write_llama_gguf` follows what llama.cpp's own converter does for a Llama: the gguf package's
tensor-name table, the query/key row permutation, F32 tensors, and a byte-level
BPE vocabulary with its merges (and, when asked, the tokenizer's chat template).
:func:`make_lora_run` files a succeeded run whose adapter is a peft LoRA of a transformers model with
large random B matrices; :func:`fabricated_run` does the same from a GGUF's shapes alone (no model is
loaded), for the packaged SmolLM2.
"""

from __future__ import annotations

import json
from pathlib import Path


def permute(weights, heads: int):
    shape = weights.shape
    return weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def write_llama_gguf(model_dir: Path, output: Path, chat_template: bool = False) -> Path:
    """``model_dir`` (a transformers Llama folder with a BPE tokenizer.json) as an F32 GGUF at ``output``;
    ``chat_template`` also writes the tokenizer's chat template."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file
    from transformers import AutoConfig

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    weights = load_file(str(model_dir / "model.safetensors"))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)

    writer = gguf.GGUFWriter(str(output), "llama")
    writer.add_name(model_dir.name)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(float(getattr(config, "rope_theta", None)
                                    or (config.rope_parameters or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tokenizer["model"]["vocab"]
    special = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    tokens = [""] * (max(max(vocab.values()), max(special.values(), default=0)) + 1)
    for text, index in {**vocab, **special}.items():
        tokens[index] = text
    types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_pad_token_id(config.pad_token_id)
    writer.add_add_bos_token(False)
    if chat_template:
        from transformers import AutoTokenizer

        writer.add_chat_template(AutoTokenizer.from_pretrained(model_dir).chat_template)

    for name, data in weights.items():
        data = data.astype(np.float32)
        if name.endswith("q_proj.weight"):
            data = permute(data, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = permute(data, config.num_key_value_heads)
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert target is not None, name
        writer.add_tensor(target, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return output


def write_wider_llama_gguf(folder: Path, tokenizer) -> Path:
    """The GGUF of a tiny random Llama 48 wide instead of 32: a base no adapter of the tiny model fits."""
    from transformers import AutoConfig, LlamaForCausalLM

    from tests.helpers import build_tiny_causal_lm

    other = build_tiny_causal_lm(Path(folder) / "wider", "llama", tokenizer, 64)
    config = json.loads((other / "config.json").read_text())
    config["hidden_size"] = 48
    (other / "config.json").write_text(json.dumps(config))
    LlamaForCausalLM(AutoConfig.from_pretrained(other)).save_pretrained(other)
    return write_llama_gguf(other, Path(folder) / "wider.gguf")


# ---------------------------------------------------------------- a catalog over the tiny GGUF, and runs on it

TINY_GGUF = "tiny-llama-gguf"
TINY_GGUF_REPO = "test-org/Tiny-Llama-Gguf"


def tiny_gguf_catalog(models_dir: Path, tokenizer):
    """(model folder, Catalog) of one tiny Llama with safetensors and an F32 GGUF twin in ``models_dir``."""
    from playground.models.catalog import Catalog
    from tests.helpers import build_tiny_causal_lm, decoder_spec

    folder = build_tiny_causal_lm(Path(models_dir) / TINY_GGUF_REPO.split("/")[-1], "llama", tokenizer, 128)
    write_llama_gguf(folder, folder / f"{TINY_GGUF}.gguf")
    spec = decoder_spec(TINY_GGUF, repo=TINY_GGUF_REPO, gguf_file=f"{TINY_GGUF}.gguf", context_length=128)
    return folder, Catalog((spec,))


def make_lora_run(store, folder: Path, owner: str, seed: int, base_model: str = TINY_GGUF, **lora) -> str:
    """A succeeded LoRA run of ``owner`` on ``base_model`` (the transformers Llama in ``folder``) whose adapter
    is a peft LoRA with large random B matrices (so the run clearly differs from its base); ``store`` is the
    Services or their RunStore; ``lora`` overrides LoraConfig options."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from playground.finetune.runs import SUCCEEDED

    runs = getattr(store, "runs", store)
    run_id = runs.create(owner, {"model": base_model, "method": "lora"}, "playground.finetune.train:run_job")
    adapter_dir = runs.path(run_id) / "adapter"
    torch.manual_seed(seed)
    options = dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
                   init_lora_weights=False) | lora
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder), LoraConfig(**options))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.4)
    model.save_pretrained(adapter_dir)
    (adapter_dir / "playground.json").write_text(json.dumps({
        "base_model": base_model, "base_name": base_model, "method": "lora", "family": "decoder",
        "data": "dialogues", "template": "auto"}))
    runs.set_status(run_id, SUCCEEDED, force=True)
    return run_id


def fabricated_run(runs, owner: str, base_model: str, base_gguf: Path, seed: int = 0) -> str:
    """A succeeded LoRA run of ``owner`` in the run store ``runs``, its random adapter shaped from ``base_gguf``."""
    from playground.bench.gguf_export import write_random_lora
    from playground.finetune.runs import SUCCEEDED

    run_id = runs.create(owner, {"model": base_model, "method": "lora"}, "playground.finetune.train:run_job")
    write_random_lora(base_gguf, runs.path(run_id) / "adapter", rank=4, alpha=8.0, seed=seed, base_model=base_model)
    runs.set_status(run_id, SUCCEEDED, force=True)
    return run_id
