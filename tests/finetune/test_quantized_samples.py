"""Before and after, quantized: a LoRA run of a catalog decoder whose base has a GGUF answers on llama.cpp too.

The tiny Llama has a GGUF twin in its models folder (an F32 file, the same weights), found through a tiny catalog
and the offline resolver the way the app finds SmolLM2's. With F32 weights llama.cpp and transformers hold the
same model, so the answers must agree: the same prompts, the same max_new_tokens and stop rule on both engines.
"""

from __future__ import annotations

import json

import pytest

from playground.errors import FinetuneConfigError
from playground.finetune.config import FinetuneConfig
from playground.finetune.gguf_samples import gguf_plan, sample_engine_for
from playground.finetune.train import train
from playground.models.catalog import Catalog
from playground.models.sources import SourceResolver
from tests.finetune.conftest import RecordingControl, assert_event_shapes
from tests.gguf_models import write_llama_gguf
from tests.helpers import build_tiny_causal_lm, decoder_spec

pytestmark = pytest.mark.slow

TINY = "tiny-llama-q"
REPO = "test-org/Tiny-Llama-Q"
FAST = dict(max_steps=2, batch_size=2, learning_rate=1e-2, max_length=128, sample_count=2, max_new_tokens=6,
            validation_fraction=0.0, seed=3)


def _lively_llama(folder, tokenizer):
    """The tiny Llama with weights ten times the usual initial scale: its greedy answers vary with the prompt
    (at the usual scale it repeats one token whatever it reads, so equal answers would prove nothing)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    build_tiny_causal_lm(folder, "llama", tokenizer, 512)
    config = LlamaConfig.from_pretrained(folder)
    config.initializer_range = 0.2
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def room(tmp_path_factory, tiny_tokenizer):
    """(catalog, resolver): one decoder whose models folder holds its transformers files and its GGUF."""
    models = tmp_path_factory.mktemp("q-models")
    folder = _lively_llama(models / REPO.split("/")[-1], tiny_tokenizer)
    write_llama_gguf(folder, folder / f"{TINY}.gguf")
    catalog = Catalog((decoder_spec(TINY, repo=REPO, gguf_file=f"{TINY}.gguf", context_length=512),))
    return catalog, SourceResolver(models, offline=True, hub_cache_dir=tmp_path_factory.mktemp("empty-hub"))


def _config(catalog, data, **extra) -> FinetuneConfig:
    return FinetuneConfig.from_dict({"model": TINY, "data": str(data), "input_column": "dialogue",
                                     "target_column": "summary", "template": "dialogue-tldr", **FAST, **extra},
                                    catalog=catalog)


def _run(room, data, run_dir, control=None, **extra):
    catalog, resolver = room
    control = control or RecordingControl()
    outcome = train(_config(catalog, data, **extra), run_dir, control, run_dir.parent / "data", resolver=resolver,
                    catalog=catalog)
    return outcome, control


def _samples(run_dir):
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def _text(answer: str) -> str:
    """An answer without replacement characters: the random model writes stray bytes, which transformers decodes
    all at once and llama.cpp token by token (dropping a half character at the very end)."""
    return answer.replace("\ufffd", "")


@pytest.fixture(scope="module")
def transformers_run(tmp_path_factory, room, dialogue_file):
    run_dir = tmp_path_factory.mktemp("q-run") / "transformers"
    outcome, control = _run(room, dialogue_file, run_dir, sample_engine="transformers")
    return outcome, control, run_dir


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, room, dialogue_file):
    run_dir = tmp_path_factory.mktemp("q-run") / "auto"
    outcome, control = _run(room, dialogue_file, run_dir)  # auto, on a CPU
    return outcome, control, run_dir


def test_transformers_samples_gain_a_quantized_third_system(transformers_run):
    outcome, control, run_dir = transformers_run
    assert outcome.status == "done"
    assert_event_shapes(control.events)
    assert (run_dir / "gguf" / "adapter.gguf").is_file()  # written by the run, reused by the Prompt Lab
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["sample_engine"] == "transformers" and metrics["quantized_unavailable"] == ""
    assert metrics["engines"] == {"base": {"engine": "transformers", "weights": "fp32", "adapter": False},
                                  "tuned": {"engine": "transformers", "weights": "fp32", "adapter": False},
                                  "quantized": {"engine": "llama.cpp", "weights": "F32", "adapter": True}}
    samples = _samples(run_dir)
    assert len(samples) == 2
    for row in samples:
        for key in ("quantized_output", "quantized_rouge1", "quantized_rouge2", "quantized_rougeL"):
            assert key in row, key
        # F32 weights on both engines: the same model, read the same prompt, stopped by the same rule.
        assert _text(row["tuned_output"]) and _text(row["quantized_output"]) == _text(row["tuned_output"]), row
    assert any(row["tuned_output"] != row["base_output"] for row in samples)  # training changed the answers
    mean = sum(row["quantized_rougeL"] for row in samples) / len(samples)
    assert metrics["rouge_quantized"]["rougeL"] == pytest.approx(mean, abs=1e-4)
    assert set(metrics["rouge_quantized"]) == {"rouge1", "rouge2", "rougeL"}
    messages = [e["message"] for e in control.of("stage")]
    assert "Fine-tuned model, quantized: generating 2 of 2 on llama.cpp F32 + adapter." in messages
    assert "Base model: generating 2 of 2 on transformers fp32." in messages


def test_auto_on_a_cpu_answers_on_llama_cpp_with_no_third_system(llama_run, transformers_run):
    outcome, control, run_dir = llama_run
    assert outcome.status == "done"
    metrics = outcome.metrics
    assert metrics.sample_engine == "llama.cpp" and metrics.rouge_quantized is None
    assert metrics.engine_of("base").label == "llama.cpp F32"
    assert metrics.engine_of("tuned").label == "llama.cpp F32 + adapter"
    assert metrics.engine_of("quantized") is None and "already" in metrics.quantized_unavailable
    samples = _samples(run_dir)
    assert len(samples) == 2 and not any("quantized_output" in row for row in samples)
    # The base GGUF alone answers as the transformers base did, and with the adapter as the transformers
    # fine-tuned model did (the same seed trained the same adapter): the same prompts, stop rule and weights.
    on_transformers = _samples(transformers_run[2])
    for system in ("base_output", "tuned_output"):
        assert [_text(r[system]) for r in samples] == [_text(r[system]) for r in on_transformers], system
    messages = [e["message"] for e in control.of("stage")]
    assert "Base model: generating 1 of 2 on llama.cpp F32." in messages
    assert "Fine-tuned model: generating 2 of 2 on llama.cpp F32 + adapter." in messages
    assert not any("transformers" in m and "generating" in m for m in messages)


class _StopWhenQuantized(RecordingControl):
    def should_stop(self) -> bool:
        return any("quantized: generating" in e.get("message", "") for e in self.events)


def test_a_cancel_while_the_quantized_model_answers_leaves_nothing(tmp_path, room, dialogue_file):
    outcome, control = _run(room, dialogue_file, tmp_path / "run", _StopWhenQuantized(),
                            sample_engine="transformers")
    assert outcome.cancelled and control.events[-1]["event"] == "cancelled"
    # The adapter and its GGUF were written to be converted; a cancelled run saves nothing.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml"]


def test_runs_llama_cpp_cannot_serve_say_why(room, ft_models, dialogue_file, offline_resolver):
    catalog, resolver = room
    plans = {
        "full": gguf_plan(_config(catalog, dialogue_file, method="full"), "decoder", catalog, resolver),
        "folder": gguf_plan(FinetuneConfig(model=str(ft_models["llama"])), "decoder", catalog, offline_resolver),
        "t5": gguf_plan(FinetuneConfig(model=str(ft_models["t5"])), "encoder-decoder", catalog, offline_resolver),
        "classifier": gguf_plan(FinetuneConfig(model=str(ft_models["bert"]), method="classifier"), "encoder",
                                catalog, offline_resolver),
    }
    assert not any(plan.available for plan in plans.values())
    assert "full" in plans["full"].reason and "local folder" in plans["folder"].reason
    assert "decoder" in plans["t5"].reason and "classifier" in plans["classifier"].reason
    lora = gguf_plan(_config(catalog, dialogue_file), "decoder", catalog, resolver)
    assert lora.available and lora.file_type == "F32" and lora.weights.path.name == f"{TINY}.gguf"
    assert sample_engine_for("auto", False, lora) == "llama.cpp"
    assert sample_engine_for("auto", True, lora) == "transformers"  # on a GPU transformers is fast enough
    with pytest.raises(FinetuneConfigError, match="sample_engine is llama.cpp, but the base is a local folder"):
        sample_engine_for("llama.cpp", False, plans["folder"])
    with pytest.raises(FinetuneConfigError, match="sample_engine is llama.cpp, but method 'full'"):
        _config(catalog, dialogue_file, method="full", sample_engine="llama.cpp")
