"""Logits only where a label is (encoding.LabelPositionsOnly): the same loss and gradients as the full head."""

from __future__ import annotations

import pytest

from playground.finetune.encoding import IGNORE_INDEX, LabelPositionsOnly, keeps_label_positions

pytestmark = pytest.mark.slow


def test_the_loss_and_gradients_equal_the_full_heads(ft_models):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(ft_models["llama"])
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             init_lora_weights=False))  # B nonzero: the adapter shapes the loss
    assert keeps_label_positions(model)
    tokenizer = AutoTokenizer.from_pretrained(ft_models["llama"])
    rows = [list(range(5, 17)), list(range(20, 27)), list(range(40, 59))]
    features = [{"input_ids": ids, "attention_mask": [1] * len(ids),
                 "labels": [IGNORE_INDEX] * (len(ids) // 2) + ids[len(ids) // 2:]} for ids in rows]
    padded = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, padding=True)
    full = padded([dict(f) for f in features])
    kept = LabelPositionsOnly(padded)([dict(f) for f in features])
    targets = sum(len(ids) - len(ids) // 2 for ids in rows)  # every label but the first token's (never predicted)
    assert int(kept["logits_to_keep"].sum()) == targets == kept["shift_labels"].numel()

    def loss_and_grads(batch):
        model.zero_grad(set_to_none=True)
        output = model(**batch)
        output.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return output, grads

    full_out, full_grads = loss_and_grads(full)
    kept_out, kept_grads = loss_and_grads(kept)
    assert kept_out.logits.shape[0] == targets and kept_out.logits.dim() == 2  # only the kept positions
    torch.testing.assert_close(kept_out.loss, full_out.loss, rtol=1e-5, atol=1e-6)
    assert full_grads and set(kept_grads) == set(full_grads)
    for name, grad in full_grads.items():
        torch.testing.assert_close(kept_grads[name], grad, rtol=1e-4, atol=1e-6)
