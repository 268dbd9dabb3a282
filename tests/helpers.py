"""Helpers shared by the tests: fake hardware, offline settings, test catalog entries, tiny models."""

from __future__ import annotations

import time
from pathlib import Path

from playground.config import Settings
from playground.hardware import Hardware
from playground.models.catalog import ModelSpec, Source

SMOLLM2 = "smollm2-135m-instruct"


def fake_hardware(cuda: bool = False, bf16: bool = True, threads: int = 2) -> Hardware:
    """Hardware facts for unit tests of the engine choice (no torch involved)."""
    return Hardware(
        cuda=cuda,
        cuda_name="Fake GPU" if cuda else "",
        cuda_memory_gb=16.0 if cuda else 0.0,
        bf16=bf16 if cuda else False,
        cpu_threads=threads,
        logical_cpus=threads,
        total_ram_gb=16.0,
        free_ram_gb=8.0,
    )


def offline_settings(data_dir: Path, models_dir: Path | None = None, **extra: str) -> Settings:
    environ = {"PLAYGROUND_DATA_DIR": str(data_dir), "PLAYGROUND_OFFLINE": "1"}
    if models_dir is not None:
        environ["PLAYGROUND_MODELS_DIR"] = str(models_dir)
    environ.update(extra)
    return Settings.load([], environ)


def decoder_spec(model_id: str, repo: str = "", gguf_file: str = "", context_length: int = 128) -> ModelSpec:
    """A catalog entry for a test model: a Hub transformers source and/or a Hub GGUF source."""
    sources = []
    if gguf_file:
        sources.append(Source(kind="hub_gguf", format="gguf", repo=repo + "-GGUF", file=gguf_file))
    if repo:
        sources.append(Source(kind="hub", format="transformers", repo=repo))
    return ModelSpec(
        id=model_id, name=model_id, family="decoder", parameters=1_000_000, license="MIT", chat_template=True,
        context_length=context_length, objective="causal_lm", head="causal_lm", lora_targets=("q_proj",),
        description="A tiny random model built by the tests.", sources=tuple(sources),
    )


TRAINING_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A language model predicts the next token from the ones before it.",
    "Hello world, this is a tiny tokenizer trained inside the test session.",
    "Small models run fast on two CPU cores.",
    "Paris is the capital of France and Lisbon is the capital of Portugal.",
]
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


def train_tiny_tokenizer():
    """A byte-level BPE with a 300-token vocabulary, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(TRAINING_SENTENCES * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def build_tiny_causal_lm(folder: Path, arch: str, tokenizer, context: int) -> Path:
    """Save a random ``llama`` or ``gpt2`` causal LM (safetensors) and its tokenizer into ``folder``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    if arch == "llama":
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                             tie_word_embeddings=True, **special)
        model = LlamaForCausalLM(config)
    elif arch == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=context,
                            **special)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(arch)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


# Tiny models: catalog id -> (architecture, repo on the "Hub", context window).
# The local folder is named after the repo's last part, as a user copying a Hub repo would name it.
TINY_MODELS = {
    "tiny-llama": ("llama", "test-org/Tiny-Llama-Random", 128),
    "tiny-gpt2": ("gpt2", "test-org/Tiny-GPT2-Random", 96),
}


# ---------------------------------------------------------------- tiny encoder and encoder-decoder models

TINY_SENTINELS = 8  # <extra_id_0> ... <extra_id_7> in the tiny T5 tokenizer


def model_spec(model_id: str, family: str, objective: str, head: str, repo: str, context_length: int,
               parameters: int = 1_000_000) -> ModelSpec:
    """A catalog entry for a test model of any family, found in PLAYGROUND_MODELS_DIR under the repo's name."""
    return ModelSpec(
        id=model_id, name=model_id, family=family, parameters=parameters, license="MIT", chat_template=False,
        context_length=context_length, objective=objective, head=head, lora_targets=("query",),
        description="A tiny random model built by the tests.",
        sources=(Source(kind="hub", format="transformers", repo=repo),),
    )


def train_tiny_wordpiece_tokenizer():
    """A lower-casing WordPiece tokenizer (BERT's [CLS] [SEP] [MASK] ...) trained on the test sentences."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                                        show_progress=False)
    tok.train_from_iterator(TRAINING_SENTENCES * 4, trainer)
    return BertTokenizer(vocab=tok.get_vocab(), do_lower_case=True)


def train_tiny_t5_tokenizer():
    """A SentencePiece-style Unigram tokenizer with T5's layout: <pad>=0, </s>=1, <unk>=2, sentinels last."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=150, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(TRAINING_SENTENCES * 4, trainer)
    vocab = [tuple(pair) for pair in json.loads(tok.to_str())["model"]["vocab"]]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(TINY_SENTINELS))]
    return T5Tokenizer(vocab=vocab, extra_ids=TINY_SENTINELS)


def build_tiny_bert(folder: Path, context: int = 64) -> Path:
    """A random BertForMaskedLM (hidden 32, 2 layers, 4 heads, FFN 64) with a WordPiece tokenizer, as safetensors."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = train_tiny_wordpiece_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=context, type_vocab_size=2,
                        pad_token_id=tokenizer.pad_token_id)
    BertForMaskedLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_t5(folder: Path) -> Path:
    """A random T5ForConditionalGeneration (d_model 32, 2+2 layers, 4 heads) with sentinel tokens, as safetensors."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = train_tiny_t5_tokenizer()
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    T5ForConditionalGeneration(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def wait_until(predicate, what: str, timeout_s: float = 60, poll_s: float = 0.05):
    """``predicate()``'s first true value, polled until ``timeout_s``; fails the test naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


class Clock:
    """A clock a test sets by hand (``clock.now += 60``), for code that takes ``clock=``."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
