"""Which engine runs which model on which hardware (fake hardware, no model)."""

from __future__ import annotations

import pytest

from playground.backends.selection import LLAMA_CPP, TRANSFORMERS, choose_engine, startup_line
from playground.errors import EngineUnavailableError, InvalidParameterError
from tests.helpers import fake_hardware

CPU = fake_hardware(cuda=False, threads=4)
GPU = fake_hardware(cuda=True, bf16=True)
OLD_GPU = fake_hardware(cuda=True, bf16=False)


def test_gguf_decoder_runs_on_llama_cpp_without_cuda(catalog):
    choice = choose_engine(catalog.get("smollm2-135m-instruct"), CPU)
    assert choice.engine == LLAMA_CPP
    assert "no CUDA" in choice.reason and "4" in choice.reason


def test_gguf_decoder_runs_on_transformers_with_cuda(catalog):
    choice = choose_engine(catalog.get("smollm2-135m-instruct"), GPU)
    assert choice.engine == TRANSFORMERS
    assert "Fake GPU" in choice.reason and "bf16" in choice.reason
    assert "fp16" in choose_engine(catalog.get("smollm2-135m-instruct"), OLD_GPU).reason


@pytest.mark.parametrize("hardware", [CPU, GPU])
def test_hub_only_decoder_runs_on_transformers(catalog, hardware):
    choice = choose_engine(catalog.get("gpt2"), hardware)
    assert choice.engine == TRANSFORMERS
    if not hardware.cuda:
        assert "no GGUF" in choice.reason and "fp32" in choice.reason


@pytest.mark.parametrize("model_id", ["all-minilm-l6-v2", "bert-base-uncased", "flan-t5-small"])
@pytest.mark.parametrize("hardware", [CPU, GPU])
def test_encoders_and_seq2seq_run_on_transformers(catalog, model_id, hardware):
    choice = choose_engine(catalog.get(model_id), hardware)
    assert choice.engine == TRANSFORMERS
    assert "decoders only" in choice.reason


def test_explicit_requests_win(catalog):
    smol = catalog.get("smollm2-135m-instruct")
    assert choose_engine(smol, CPU, TRANSFORMERS).engine == TRANSFORMERS
    assert choose_engine(smol, GPU, LLAMA_CPP).engine == LLAMA_CPP
    assert choose_engine(smol, GPU, LLAMA_CPP).reason == "requested"
    assert choose_engine(catalog.get("gpt2"), CPU, TRANSFORMERS).engine == TRANSFORMERS


@pytest.mark.parametrize("model_id", ["gpt2", "bert-base-uncased", "flan-t5-base"])
def test_llama_cpp_for_a_model_without_gguf_is_refused(catalog, model_id):
    spec = catalog.get(model_id)
    with pytest.raises(EngineUnavailableError) as info:
        choose_engine(spec, CPU, LLAMA_CPP)
    assert spec.name in str(info.value) and "transformers" in str(info.value)


def test_unknown_engine_name_is_refused(catalog):
    with pytest.raises(InvalidParameterError, match="vllm"):
        choose_engine(catalog.get("gpt2"), CPU, "vllm")


def test_startup_line_explains_each_family():
    line = startup_line(CPU)
    for family in ("encoder", "encoder-decoder", "decoder"):
        assert f"{family} ->" in line
    assert "llama.cpp" in line and "no CUDA" in line
    assert "llama.cpp" not in startup_line(GPU).split("decoder ->")[-1].split(";")[0]
