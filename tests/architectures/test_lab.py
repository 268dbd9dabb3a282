"""The tab's entry point: run_all over several models, per-model errors, limits, shared cache, Services."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from playground.architectures import ArchitectureLab, CompareOptions
from playground.errors import InvalidInputError
from tests.architectures.conftest import MINILM
from tests.helpers import SMOLLM2, TRAINING_SENTENCES

ROOT = Path(__file__).resolve().parents[2]
TEXT = "The capital of France is"


@pytest.fixture(scope="module")
def real_lab(arch_provider, catalog):
    """A lab over the real catalog only, sharing the session's model cache (so nothing loads twice)."""
    from playground.backends.provider import EngineProvider

    engines = EngineProvider(arch_provider.settings, arch_provider.hardware, catalog, cache=arch_provider.cache,
                             resolver=arch_provider.resolver)
    return ArchitectureLab(engines)


def test_default_models_offline_are_minilm_and_smollm2(real_lab):
    assert real_lab.default_models() == (MINILM, SMOLLM2)
    assert not real_lab.available_offline("bert-base-uncased") and not real_lab.available_offline("flan-t5-small")


def test_run_all_on_the_default_offline_models(real_lab):
    comparison = real_lab.run_all(TEXT)
    assert [r.model_id for r in comparison.reports] == [MINILM, SMOLLM2]
    assert comparison.errors == {}
    minilm, smollm2 = comparison.reports
    assert minilm.similarity is not None and minilm.zero_shot is not None and minilm.next_token is None
    assert minilm.masks.matrices[0].name == "bidirectional" and minilm.objective_example.objective == (
        "contrastive_embedding")
    assert " Paris" in [c.token for c in smollm2.next_token.candidates[:5]]
    assert smollm2.masks.matrices[0].name == "causal" and smollm2.objective_example.objective == "causal_lm"
    for report in comparison.reports:
        assert report.ok and report.facts.total_parameters > 0 and report.tokens.count > 0
        assert report.attention.layers() == report.facts.layers
        assert [t.label for t in report.tokens.tokens] == list(report.attention.tokens)


def test_run_all_covers_every_family_with_tiny_models(lab):
    options = CompareOptions(top_k=3, continue_tokens=4, word_spans=((1, 2),))
    comparison = lab.run_all("The quick brown fox jumps over the lazy dog.", ["tiny-bert", "tiny-t5", "tiny-gpt2"],
                             options)
    bert, t5, gpt2 = comparison.reports
    assert comparison.errors == {}
    assert bert.fill_mask.hidden_word == "dog" and len(bert.fill_mask.predictions[0].candidates) == 3
    assert t5.span_corruption.example.spans[0].text == "quick" and t5.text_to_text is not None
    assert [m.name for m in t5.masks.matrices] == ["encoder", "decoder", "cross"]
    assert t5.masks.get("cross").shape == (len(t5.attention.target_tokens), len(t5.attention.tokens))
    assert gpt2.next_token is not None and len(gpt2.continuation.steps) <= 4


def test_an_unavailable_model_does_not_break_the_others(lab):
    comparison = lab.run_all(TEXT, ["bert-base-uncased", "tiny-gpt2", "no-such-model"])
    bert, gpt2, unknown = comparison.reports
    assert bert.error.startswith("Not available offline: No weights found for model 'bert-base-uncased'")
    assert "copy google-bert/bert-base-uncased into" in bert.error and bert.facts is None
    assert gpt2.ok and gpt2.next_token is not None
    assert "Unknown model id 'no-such-model'" in unknown.error
    assert set(comparison.errors) == {"bert-base-uncased", "no-such-model"}


def test_a_failing_task_keeps_the_rest_of_the_report(lab):
    report = lab.run_all("?!", ["tiny-bert"], CompareOptions(attention=False)).reports[0]
    assert "no word that could be hidden" in report.error
    assert report.facts is not None and report.tokens is not None and report.attention is None


def test_bad_text_and_bad_model_lists(lab):
    with pytest.raises(InvalidInputError, match="empty"):
        lab.run_all("   ", ["tiny-gpt2"])
    limit = lab.settings.max_prompt_chars
    with pytest.raises(InvalidInputError, match=f"limit is {limit:,}"):
        lab.run_all("a" * (limit + 1), ["tiny-gpt2"])
    with pytest.raises(InvalidInputError, match="at most 3"):
        lab.run_all(TEXT, ["tiny-gpt2", "tiny-bert", "tiny-t5", MINILM])
    with pytest.raises(InvalidInputError, match="at least one"):
        lab.run_all(TEXT, [])
    with pytest.raises(InvalidInputError, match="empty"):
        lab.tokenize("tiny-gpt2", "")


def test_text_longer_than_the_context_is_reported_and_truncated(lab):
    long = " ".join(TRAINING_SENTENCES * 3)
    tokens = lab.tokenize("tiny-gpt2", long)
    assert tokens.truncated and tokens.count > 96 and len(tokens.tokens) == 96
    assert f"{tokens.count:,} tokens" in tokens.note and "first 96" in tokens.note
    short = lab.tokenize("tiny-gpt2", "Hello world")
    assert not short.truncated and short.note == "" and short.count == len(short.tokens)


def test_the_same_text_tokenised_by_each_family(lab):
    text = "Tokenizers disagree."
    kinds = {mid: lab.tokenize(mid, text) for mid in ("tiny-bert", "tiny-t5", "tiny-gpt2", MINILM, SMOLLM2)}
    assert kinds["tiny-bert"].tokenizer_kind == kinds[MINILM].tokenizer_kind == "WordPiece"
    assert kinds["tiny-t5"].tokenizer_kind == "SentencePiece Unigram"
    assert kinds[SMOLLM2].tokenizer_kind == "Byte-level BPE"
    assert kinds[MINILM].tokens[0].piece == "[CLS]" and kinds[MINILM].tokens[0].special
    smol = kinds[SMOLLM2]
    assert [t.id for t in smol.tokens] == lab.load(SMOLLM2).tokenizer(text)["input_ids"]
    assert "".join(t.text for t in smol.tokens) == text


def test_lab_masks_and_objectives_on_the_users_text(lab):
    masks = lab.masks("tiny-t5", "The quick brown fox", target="fox jumps")
    assert masks.get("cross").shape == (len(masks.get("decoder").rows), len(masks.get("encoder").rows))
    assert lab.objective("tiny-bert", "The quick brown fox", seed=1).objective == "masked_lm"
    mlm = lab.objective(MINILM, "The quick brown fox", objective="masked_lm")  # MiniLM's WordPiece has [MASK]
    assert sum(t.role in ("masked", "random", "unchanged") for t in mlm.tokens) == 1  # 15% of 4 tokens, at least 1
    assert lab.objective("tiny-gpt2", "The quick brown fox").objective == "causal_lm"


def test_models_load_once_into_the_shared_cache(lab, arch_provider):
    assert lab.load("tiny-gpt2") is lab.load("tiny-gpt2")
    assert ("architecture", "tiny-gpt2") in arch_provider.cache.keys()
    assert lab.loaded("gemma-3-270m") is None  # never asked for, so never loaded


def test_services_hold_one_lab_on_the_engines_cache(tmp_path):
    from playground.services import Services
    from tests.helpers import fake_hardware, offline_settings

    services = Services.create(offline_settings(tmp_path), fake_hardware())
    assert isinstance(services.architectures, ArchitectureLab)
    assert services.architectures.engines is services.engines
    services.close()


def test_importing_the_package_loads_no_heavy_library():
    code = ("import sys, playground.architectures, playground.services; "
            "print(' '.join(m for m in ('torch', 'transformers', 'gradio', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_compare_options_have_help_texts():
    from dataclasses import fields

    assert all(CompareOptions.help(f.name) for f in fields(CompareOptions))
