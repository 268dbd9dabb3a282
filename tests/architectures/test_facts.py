"""The facts card, checked against numbers worked out by hand from each model's configuration."""

from __future__ import annotations

import pytest

from playground.architectures.facts import OBJECTIVES, human_bytes, human_count, model_facts
from tests.architectures.conftest import MINILM
from tests.helpers import SMOLLM2


def _memory_ok(facts):
    n = facts.total_parameters
    assert [(m.precision, m.bytes) for m in facts.memory] == [("fp32", 4 * n), ("bf16", 2 * n), ("int8", n),
                                                             ("4-bit", n // 2)]


def test_tiny_gpt2_facts_by_hand(gpt2):
    facts = model_facts(gpt2)
    v, d, positions, layers = len(gpt2.tokenizer), 32, 96, 2
    # per block: ln_1 (2d) + c_attn (d*3d + 3d) + c_proj (d*d + d) + ln_2 (2d)
    #            + c_fc (d*4d + 4d) + mlp c_proj (4d*d + d)
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)
    assert block == 12704
    embedding = v * d + positions * d  # wte + wpe; lm_head is tied to wte
    assert facts.total_parameters == embedding + layers * block + 2 * d  # + ln_f
    assert facts.embedding_parameters == embedding
    assert facts.non_embedding_parameters == layers * block + 2 * d == 25472
    assert (facts.layers, facts.decoder_layers, facts.hidden_size, facts.attention_heads, facts.kv_heads,
            facts.head_dim) == (2, 0, 32, 4, 4, 8)
    assert (facts.vocab_size, facts.context_length, facts.tied_embeddings) == (v, 96, True)
    assert facts.tokenizer_kind == "Byte-level BPE" and facts.architecture == "GPT2LMHeadModel"
    assert facts.objective == "causal_lm" and facts.objective_name == OBJECTIVES["causal_lm"][0]
    _memory_ok(facts)


def test_tiny_bert_facts_by_hand(bert):
    facts = model_facts(bert)
    v, d, ffn, positions = len(bert.tokenizer), 32, 64, 64
    embeddings = v * d + positions * d + 2 * d + 2 * d  # words, positions, segments, LayerNorm
    block = 4 * (d * d + d) + 2 * d + (d * ffn + ffn) + (ffn * d + d) + 2 * d
    head = (d * d + d) + 2 * d + v  # transform dense + LayerNorm + the vocabulary bias (decoder tied to words)
    assert facts.total_parameters == embeddings + 2 * block + head == 33 * v + 20384
    # embedding parameters: the three tables and the output projection's own bias
    assert facts.embedding_parameters == v * d + positions * d + 2 * d + v
    assert facts.non_embedding_parameters == facts.total_parameters - facts.embedding_parameters
    assert facts.tokenizer_kind == "WordPiece" and facts.objective_name == "Masked language modelling"
    assert (facts.layers, facts.attention_heads, facts.context_length) == (2, 4, 64)
    _memory_ok(facts)


def test_tiny_t5_facts_by_hand(t5):
    facts = model_facts(t5)
    v, d, ffn, buckets, heads = len(t5.tokenizer), 32, 64, 8, 4
    attention = 4 * d * d  # q, k, v, o without biases (heads * d_kv == d)
    encoder_block = attention + d + 2 * d * ffn + d
    decoder_block = attention + d + attention + d + 2 * d * ffn + d
    relative = buckets * heads  # one relative-position table per stack
    total = v * d + 2 * encoder_block + relative + d + 2 * decoder_block + relative + d
    assert facts.total_parameters == total
    assert facts.embedding_parameters == v * d + 2 * relative
    assert (facts.layers, facts.decoder_layers, facts.hidden_size, facts.attention_heads) == (2, 2, 32, 4)
    assert facts.context_length == 64  # T5 has no learned positions: the catalog's figure
    assert facts.tokenizer_kind == "SentencePiece Unigram" and facts.objective == "span_corruption"


def test_smollm2_facts(smollm2):
    facts = model_facts(smollm2)
    assert facts.total_parameters == 134_515_008
    assert facts.embedding_parameters == 49152 * 576
    assert facts.non_embedding_parameters == 134_515_008 - 49152 * 576
    assert (facts.layers, facts.hidden_size, facts.attention_heads, facts.kv_heads, facts.head_dim) == (
        30, 576, 9, 3, 64)
    assert (facts.vocab_size, facts.context_length, facts.tied_embeddings) == (49152, 8192, True)
    assert facts.tokenizer_kind == "Byte-level BPE" and facts.architecture == "LlamaForCausalLM"
    assert facts.memory_for("fp32").human == "538.1 MB" and facts.memory_for("4-bit").bytes == 67_257_504
    rows = dict(facts.rows())
    assert rows["total_parameters"] == "134,515,008 (134.5M)" and rows["attention_heads"] == "9 (key/value heads: 3)"


def test_minilm_facts(minilm, catalog):
    facts = model_facts(minilm)
    assert facts.total_parameters == catalog.get(MINILM).parameters == 22_713_216
    assert facts.embedding_parameters == 30522 * 384 + 512 * 384 + 2 * 384
    assert (facts.layers, facts.hidden_size, facts.attention_heads, facts.vocab_size, facts.context_length) == (
        6, 384, 12, 30522, 512)
    assert facts.tokenizer_kind == "WordPiece" and facts.objective == "contrastive_embedding"
    assert minilm.max_length == 256  # sentence-transformers' max_seq_length


@pytest.mark.parametrize(("value", "text"), [(999, "999 B"), (1500, "1.5 kB"), (538_060_032, "538.1 MB"),
                                             (2.5e9, "2.5 GB")])
def test_human_bytes(value, text):
    assert human_bytes(value) == text


def test_human_count():
    assert (human_count(950), human_count(22_713_216), human_count(1_234_000_000)) == ("950", "22.7M", "1.23B")


def test_lab_facts_use_the_shared_cache(lab, arch_provider):
    assert lab.facts(SMOLLM2).total_parameters == 134_515_008
    assert ("architecture", SMOLLM2) in arch_provider.cache.keys()
    assert lab.load(SMOLLM2) is lab.load(SMOLLM2) is lab.loaded(SMOLLM2)
