"""Padding-free packing (encoding.packing_collator) gives the padded batch's loss and gradients: attention never
crosses an example's boundary, and no example learns the next one's first token."""

from __future__ import annotations

import pytest

from playground.finetune.encoding import IGNORE_INDEX, packing_collator

pytestmark = pytest.mark.slow


def _features():
    # Three examples of different lengths, the loss on the last part of each (labels -100 on the "prompt").
    rows = [list(range(5, 17)), list(range(20, 27)), list(range(40, 59))]
    return [{"input_ids": ids, "attention_mask": [1] * len(ids),
             "labels": [IGNORE_INDEX] * (len(ids) // 2) + ids[len(ids) // 2:]} for ids in rows]


def test_packed_loss_and_gradients_equal_the_padded_batchs(ft_models):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(ft_models["llama"], attn_implementation="sdpa")
    model.eval()  # no dropout: the two passes must see the same network
    tokenizer = AutoTokenizer.from_pretrained(ft_models["llama"])
    padded = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, padding=True)(_features())
    packed = packing_collator()([{k: v for k, v in f.items() if k != "attention_mask"} for f in _features()])
    packed["use_cache"] = False  # what packed_batch_kwargs adds: with a cache, transformers reads no boundaries
    assert packed["input_ids"].shape == (1, 12 + 7 + 19) and "attention_mask" not in packed
    assert packed["position_ids"][0].tolist()[:14] == list(range(12)) + [0, 1]

    def loss_and_grads(batch):
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    padded_loss, padded_grads = loss_and_grads(padded)
    packed_loss, packed_grads = loss_and_grads(packed)
    torch.testing.assert_close(packed_loss, padded_loss, rtol=1e-5, atol=1e-5)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-5)

    # With a cache (use_cache left on, as a model in eval mode has it), transformers skips the boundary check and
    # attention crosses the examples: the loss differs. So does one long sequence without restarting positions.
    with_cache = {k: v for k, v in packed.items() if k != "use_cache"}
    crossing = {k: v for k, v in packed.items() if k != "position_ids"}
    for batch in (with_cache, crossing):
        assert abs(float(model(**batch).loss) - float(padded_loss)) > 1e-3
