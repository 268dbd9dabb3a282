"""The OpenAI-compatible engine against a real server (llama-cpp-python's, on the packaged SmolLM2 GGUF, started
once per session), the settings that turn it on, and the provider's routing; a few shapes of other servers (vLLM,
TGI, a cut stream) through httpx's mock transport."""

from __future__ import annotations

import copy
import json
import pickle

import httpx
import pytest

from playground.backends.base import GenerationParams, TokenizedPrompt
from playground.backends.openai_engine import ChatPrompt, OpenAICompatibleEngine, server_root
from playground.backends.provider import EngineProvider
from playground.backends.selection import OPENAI, choose_engine, startup_line
from playground.config import Settings
from playground.errors import ContextOverflowError, EngineUnavailableError, InferenceServerError, SettingsError
from tests.helpers import SMOLLM2, fake_hardware
from tests.openai_server import SERVED_NAME, SERVER_CONTEXT, free_port, wait_for_log

GREEDY = GenerationParams(max_new_tokens=12, temperature=0.0)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
STORY = "Once upon a time"  # greedy SmolLM2 goes on for hundreds of tokens after it
LONG = GenerationParams(max_new_tokens=1500, temperature=0.0)


@pytest.fixture(scope="module")
def engine(openai_server):
    engine = OpenAICompatibleEngine.connect(SMOLLM2, openai_server.base_url, SERVED_NAME)
    yield engine
    engine.close()


def server_tokens(server, text: str) -> list[int]:
    return httpx.post(f"{server.root}/extras/tokenize", json={"input": text}, timeout=10).json()["tokens"]


# --------------------------------------------------------------------------- against the real server


def test_a_text_completion_streams_piece_by_piece(engine, openai_server):
    generation = engine.stream("The capital of France is", GREEDY)
    pieces = list(generation)
    result = generation.result
    assert len(pieces) > 3 and "".join(pieces) == result.text and "Paris" in result.text
    assert result.engine == OPENAI and result.model_id == SMOLLM2
    assert result.finish_reason == "length" and result.completion_tokens == GREEDY.max_new_tokens
    assert result.prompt_tokens == len(server_tokens(openai_server, "The capital of France is"))


@pytest.mark.slow  # loads the in-process llama.cpp engine too; 5 to 20 s on a busy two-core machine
def test_chat_goes_through_the_server_template_and_answers_as_the_in_process_engine(engine, llama_engine):
    prompt = engine.format_chat(QUESTION)
    assert isinstance(prompt, ChatPrompt) and prompt.messages == tuple(QUESTION)
    assert prompt == "user: What is the capital of France?\n\nassistant:\n"  # the readable rendering
    params = GenerationParams(max_new_tokens=16, temperature=0.0)
    remote = engine.generate(prompt, params)
    local = llama_engine.generate(llama_engine.format_chat(QUESTION), params)
    # Same GGUF, same template (the server applied SmolLM2's, system prompt included), same greedy answer.
    assert remote.text == local.text and remote.text.strip()


def test_a_stop_sequence_ends_the_answer_before_it(engine):
    result = engine.generate("The capital of France is", GenerationParams(max_new_tokens=24, temperature=0.0,
                                                                           stop=(".",)))
    assert result.text == " Paris" and result.finish_reason == "stop"


def test_the_same_seed_gives_the_same_text_and_greedy_is_repeatable(engine):
    def sampled(seed):
        return engine.generate("Once upon a time", GenerationParams(max_new_tokens=12, temperature=1.0,
                                                                    seed=seed)).text

    assert sampled(7) == sampled(7)
    assert len({sampled(7), sampled(8), sampled(9)}) > 1
    assert engine.generate("Once upon a time", GREEDY).text == engine.generate("Once upon a time", GREEDY).text


def test_sample_n_sends_the_samples_together_with_consecutive_seeds(engine):
    params = GenerationParams(max_new_tokens=8, temperature=1.0, seed=11)
    samples = engine.sample_n("Once upon a time", params, 3)
    assert len(samples) == 3
    assert samples[1].text == engine.generate("Once upon a time", GenerationParams(max_new_tokens=8,
                                                                                   temperature=1.0, seed=12)).text


def test_next_token_probabilities_come_from_the_servers_logprobs(engine):
    top = engine.next_token_probabilities("The capital of France is", 5)
    probabilities = [t.probability for t in top]
    assert len(top) == 5 and top[0].token == " Paris"
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-9
    chat = engine.next_token_probabilities(engine.format_chat(QUESTION), 3)
    assert len(chat) == 3 and sum(t.probability for t in chat) <= 1 + 1e-9


def test_token_counts_are_the_servers(engine, openai_server, llama_engine):
    text = "Tokenizers split words into pieces: unbelievable!"
    assert engine.tokenize(text) == server_tokens(openai_server, text) == llama_engine.tokenize(text)
    assert engine.count_tokens(text) == len(server_tokens(openai_server, text))
    assert engine.context_window == 2048  # llama-cpp-python's server reports none: the documented default


def test_cancel_mid_stream_closes_the_stream_and_the_server_answers_the_next_request(engine, openai_server):
    before = openai_server.log_text().count("Disconnected from client")
    generation = engine.stream(STORY, LONG)
    pieces = []
    for piece in generation:
        pieces.append(piece)
        if len(pieces) == 3:
            generation.cancel()
    assert generation.result.finish_reason == "cancelled" and generation.result.completion_tokens <= 5
    assert wait_for_log(openai_server, "Disconnected from client", count=before + 1)
    assert "Paris" in engine.generate("The capital of France is", GREEDY).text


def test_closing_the_iterator_closes_the_stream(engine, openai_server):
    before = openai_server.log_text().count("Disconnected from client")
    pieces = iter(engine.stream(STORY, LONG))
    next(pieces)
    pieces.close()
    assert wait_for_log(openai_server, "Disconnected from client", count=before + 1)


def test_a_prompt_over_the_context_window_is_refused_here_or_by_the_server(engine, openai_server):
    long_prompt = "lorem ipsum dolor sit amet " * 500  # about 2,500 tokens against 2,048
    with pytest.raises(ContextOverflowError, match="context window is 2048 tokens"):
        engine.generate(long_prompt, GREEDY)
    # Told the window is larger than it is, the engine lets the prompt through, and the server refuses it: a plain
    # request gets its message (no traceback); a stream, already answered 200, can only be closed.
    optimistic = OpenAICompatibleEngine.connect(SMOLLM2, openai_server.base_url, SERVED_NAME, context_window=100_000)
    try:
        with pytest.raises(InferenceServerError) as error:
            optimistic.next_token_probabilities(long_prompt, 3)
        with pytest.raises(InferenceServerError, match="closed the stream without an answer.*context window"):
            optimistic.generate(long_prompt, GREEDY)
    finally:
        optimistic.close()
    message = str(error.value)
    assert f"{openai_server.base_url}/completions" in message and "HTTP 400" in message
    assert "maximum context length is 2048" in message and "File" not in message
    assert "Paris" in engine.generate("The capital of France is", GREEDY).text  # and the server goes on


def test_connection_refused_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(InferenceServerError, match="Could not connect") as error:
        OpenAICompatibleEngine.connect(SMOLLM2, url, SERVED_NAME)
    assert url in str(error.value) and "PLAYGROUND_OPENAI_BASE_URL" in str(error.value)


def test_a_model_the_server_does_not_serve_is_refused_by_name(openai_server):
    # llama-cpp-python's server would answer with its default model: the engine checks /models first.
    with pytest.raises(InferenceServerError, match="serves 'smollm2', not 'smollm3'.*PLAYGROUND_OPENAI_MODELS"):
        OpenAICompatibleEngine.connect(SMOLLM2, openai_server.base_url, "smollm3")


def test_a_base_url_without_the_api_path_says_what_to_fix(openai_server):
    with pytest.raises(InferenceServerError, match="404.*API root .*ending in /v1"):
        OpenAICompatibleEngine.connect(SMOLLM2, openai_server.root, SERVED_NAME)


def test_closing_lets_a_streaming_answer_finish_then_refuses_with_a_message(openai_server):
    engine = OpenAICompatibleEngine.connect(SMOLLM2, openai_server.base_url, SERVED_NAME)
    assert engine.memory_bytes() == 0
    pieces = iter(engine.stream("The capital of France is", GREEDY))
    first = next(pieces)
    engine.close()  # as the model cache does when it evicts the entry
    assert engine.closed and "Paris" in first + "".join(pieces)
    assert engine.client.is_closed
    with pytest.raises(EngineUnavailableError, match="closed"):
        engine.generate("Hello", GREEDY)


def test_the_provider_routes_a_listed_catalog_id_to_the_server_under_auto(openai_server, tmp_path, catalog):
    settings = Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path), "PLAYGROUND_OFFLINE": "1",
                                  **openai_server.environment()})
    provider = EngineProvider(settings, fake_hardware(cuda=False), catalog)
    try:
        choice = provider.choose(SMOLLM2)
        assert choice.engine == OPENAI and "'smollm2'" in choice.reason
        engine = provider.get(SMOLLM2)
        assert engine.name == OPENAI and engine.served_name == SERVED_NAME
        assert provider.loaded(SMOLLM2, OPENAI) is engine and provider.cache.stats().used_bytes == 0
        assert "Paris" in engine.generate("The capital of France is", GREEDY).text
        # Asked for by name, the in-process engines still run it; a model the server lacks is refused.
        assert provider.choose(SMOLLM2, "llama.cpp").engine == "llama.cpp"
        assert provider.choose("gemma-3-270m").engine == "llama.cpp"
        with pytest.raises(EngineUnavailableError, match="not served by the OpenAI-compatible server"):
            provider.choose("gemma-3-270m", OPENAI)
    finally:
        provider.cache.clear()


def test_the_quantized_chat_goes_to_the_server_only_for_served_catalog_models_and_warm_up_never_raises(tmp_path,
                                                                                                        catalog):
    from playground.services import Services

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    settings = Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path), "PLAYGROUND_OFFLINE": "1",
                                  "PLAYGROUND_OPENAI_BASE_URL": url, "PLAYGROUND_OPENAI_MODELS": SMOLLM2})
    services = Services.create(settings, fake_hardware(cuda=False), catalog)
    try:
        models = services.models_for("someone")
        assert models.chat_engine(SMOLLM2) == OPENAI
        assert models.chat_engine("gemma-3-270m") == "llama.cpp" == models.chat_engine("run:0123456789ab")
        assert services.warm_up().startswith(f"warm-up skipped: Could not connect to the OpenAI-compatible server "
                                             f"at {url}/models")
    finally:
        services.close()


# --------------------------------------------------------------------------- settings and selection


@pytest.mark.parametrize("environ, expected", [
    ({"PLAYGROUND_OPENAI_MODELS": "smollm2-135m-instruct"}, "PLAYGROUND_OPENAI_BASE_URL .*is empty"),
    ({"PLAYGROUND_OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"}, "PLAYGROUND_OPENAI_MODELS .*is empty"),
    ({"PLAYGROUND_OPENAI_BASE_URL": "ftp://127.0.0.1/v1", "PLAYGROUND_OPENAI_MODELS": "gpt2"}, "http:// or https://"),
    ({"PLAYGROUND_OPENAI_BASE_URL": "127.0.0.1:8080/v1", "PLAYGROUND_OPENAI_MODELS": "gpt2"}, "http:// or https://"),
    ({"PLAYGROUND_OPENAI_BASE_URL": "http://127.0.0.1:port/v1", "PLAYGROUND_OPENAI_MODELS": "gpt2"}, "not a valid URL"),
    ({"PLAYGROUND_OPENAI_BASE_URL": "http://me:key@127.0.0.1/v1", "PLAYGROUND_OPENAI_MODELS": "gpt2"},
     "PLAYGROUND_OPENAI_API_KEY"),
    ({"PLAYGROUND_OPENAI_BASE_URL": "http://h/v1?x=1", "PLAYGROUND_OPENAI_MODELS": "gpt2"}, "without '\\?'"),
    ({"PLAYGROUND_OPENAI_BASE_URL": "http://h/v1", "PLAYGROUND_OPENAI_MODELS": "=smollm2"}, "needs a catalog id"),
    ({"PLAYGROUND_OPENAI_BASE_URL": "http://h/v1", "PLAYGROUND_OPENAI_MODELS": "gpt2="}, "needs a catalog id"),
    ({"PLAYGROUND_OPENAI_BASE_URL": "http://h/v1", "PLAYGROUND_OPENAI_MODELS": "gpt 2"}, "not a catalog id"),
    ({"PLAYGROUND_OPENAI_BASE_URL": "http://h/v1", "PLAYGROUND_OPENAI_MODELS": "gpt2=my model"}, "spaces"),
    ({"PLAYGROUND_OPENAI_BASE_URL": "http://h/v1", "PLAYGROUND_OPENAI_MODELS": "gpt2,gpt2=x"}, "twice"),
    ({"PLAYGROUND_ENGINE": "openai"}, "PLAYGROUND_ENGINE .*=openai needs"),
    ({"PLAYGROUND_OPENAI_CONTEXT": "-5"}, "PLAYGROUND_OPENAI_CONTEXT.*at least 0"),
])
def test_bad_openai_settings_stop_the_app_at_start_up_naming_the_variable(environ, expected):
    with pytest.raises(SettingsError, match=expected):
        Settings.load([], environ)


@pytest.mark.parametrize("models, expected", [
    ("no-such-model", "'no-such-model', which is not in the catalog"),
    ("all-minilm-l6-v2", "'all-minilm-l6-v2', an encoder model"),
])
def test_the_provider_refuses_served_ids_the_catalog_cannot_generate_with(tmp_path, catalog, models, expected):
    settings = Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path), "PLAYGROUND_OPENAI_BASE_URL": "http://h/v1",
                                  "PLAYGROUND_OPENAI_MODELS": models})
    with pytest.raises(SettingsError, match=f"PLAYGROUND_OPENAI_MODELS lists {expected}"):
        EngineProvider(settings, fake_hardware(), catalog)


def test_openai_settings_parse_travel_to_workers_without_the_key_and_show_in_the_startup_line(tmp_path):
    settings = Settings.load(["--openai-base-url", "https://models.example.org/v1/",
                              "--openai-models", "smollm2-135m-instruct=smollm2, gpt2",
                              "--openai-api-key", "sk-secret"], {"PLAYGROUND_DATA_DIR": str(tmp_path)})
    assert settings.openai_base_url == "https://models.example.org/v1"
    assert settings.openai_served_models == {"smollm2-135m-instruct": "smollm2", "gpt2": "gpt2"}
    assert dict(settings.describe())["openai_api_key"] == "(set)"
    environment = settings.as_environment()
    assert "PLAYGROUND_OPENAI_API_KEY" not in environment  # a training worker never talks to the server
    assert Settings.load([], environment).openai_served_models == settings.openai_served_models
    line = startup_line(fake_hardware(), settings.openai_base_url, settings.openai_served_models)
    assert "smollm2-135m-instruct, gpt2 -> openai (the OpenAI-compatible server at https://models.example.org/v1)" \
        in line


def test_choose_engine_without_a_server_refuses_openai_by_name(catalog):
    with pytest.raises(EngineUnavailableError, match="PLAYGROUND_OPENAI_BASE_URL"):
        choose_engine(catalog.get(SMOLLM2), fake_hardware(), OPENAI)
    assert choose_engine(catalog.get(SMOLLM2), fake_hardware(cuda=True), served={SMOLLM2: "s"}).engine == OPENAI


# --------------------------------------------------------------------------- prompts and other servers' shapes


def test_a_chat_prompt_keeps_its_messages_through_an_answer_prefix_copy_and_pickle():
    chat = ChatPrompt(QUESTION)
    prefixed = chat + "Let's think step by step."
    assert isinstance(prefixed, ChatPrompt) and prefixed.messages == chat.messages
    assert prefixed == str(chat) + "Let's think step by step."
    assert prefixed.request_messages()[-1] == {"role": "assistant", "content": "Let's think step by step."}
    for again in (copy.deepcopy(prefixed), pickle.loads(pickle.dumps(prefixed))):
        assert isinstance(again, ChatPrompt) and again == prefixed and again.answer_prefix == prefixed.answer_prefix
    assert type(chat.strip()) is str and type(f"{chat}") is str


class FakeServer:
    """An httpx mock transport that answers like another server family: routes by (method, path)."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.requests: list[tuple[str, dict]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        self.requests.append((request.url.path, body))
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        return answer(body, request) if callable(answer) else answer


def sse(*events) -> httpx.Response:
    lines = "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events)
    return httpx.Response(200, text=lines, headers={"content-type": "text/event-stream"})


def fake_engine(routes: dict, **kwargs) -> tuple[OpenAICompatibleEngine, FakeServer]:
    server = FakeServer({("GET", "/v1/models"): httpx.Response(200, json={"data": [{"id": "m", **kwargs}]}),
                         **routes})
    engine = OpenAICompatibleEngine.connect("x", "http://fake:8000/v1", "m", api_key="sk-test",
                                            transport=httpx.MockTransport(server))
    return engine, server


def test_a_vllm_like_server_gives_its_context_and_tokenizer_and_gets_the_extra_fields():
    def tokenize(body, request):
        assert request.headers["authorization"] == "Bearer sk-test"
        return httpx.Response(200, json={"tokens": list(range(len(body["prompt"].split()))), "count": 0})

    def chat(body, request):
        return sse({"choices": [{"delta": {"role": "assistant"}}]},
                   {"choices": [{"delta": {"content": "Hi"}}]}, {"choices": [{"delta": {"content": " there"}}]},
                   {"choices": [{"delta": {}, "finish_reason": "stop"}]},
                   {"choices": [], "usage": {"prompt_tokens": 31, "completion_tokens": 2}}, "[DONE]")

    engine, server = fake_engine({("POST", "/tokenize"): tokenize, ("POST", "/v1/chat/completions"): chat},
                                 max_model_len=4096)
    assert engine.context_window == 4096 and engine.count_tokens("one two three") == 3
    result = engine.generate(engine.format_chat(QUESTION) + "Well,", GenerationParams(max_new_tokens=8, top_k=0,
                                                                                     seed=5, stop=("\n",)))
    assert result.text == "Hi there" and result.finish_reason == "stop"
    assert result.prompt_tokens == 31 and result.completion_tokens == 2  # the server's own counts
    body = next(body for path, body in server.requests if path == "/v1/chat/completions")
    assert body["messages"][-1] == {"role": "assistant", "content": "Well,"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["top_k"] == 0 and body["seed"] == 5 and body["stop"] == ["\n"] and body["min_p"] == 0.0
    assert body["repeat_penalty"] == body["repetition_penalty"] == 1.1 and body["model"] == "m"
    assert [path for path, _ in server.requests].count("/extras/tokenize") == 1  # probed once, then remembered


def test_a_prompt_lab_prompt_with_a_trigger_in_the_answer_reaches_the_chat_endpoint_as_its_start():
    from playground.prompting.strategies import PromptSetup, StrategyConfig, build_prompt

    def chat(body, request):
        return sse({"choices": [{"delta": {"content": " so positive."}, "finish_reason": "stop"}]}, "[DONE]")

    engine, server = fake_engine({("POST", "/extras/tokenize"): httpx.Response(200, json={"tokens": [1, 2, 3]}),
                                  ("POST", "/v1/chat/completions"): chat})
    setup = PromptSetup("sentiment", "{{ text }}", StrategyConfig(strategy="zero_shot_cot",
                                                                  trigger_position="assistant"))
    built = build_prompt(engine, setup, "Lovely day.")
    assert built.chat_template_applied and isinstance(built.tokens.text, ChatPrompt)
    assert built.text.endswith("assistant:\nLet's think step by step.")  # the preview
    assert engine.generate(built.tokens, GREEDY).text == " so positive."
    body = server.requests[-1][1]
    assert body["messages"] == [{"role": "user", "content": "Lovely day."},
                                {"role": "assistant", "content": "Let's think step by step."}]


def test_a_tgi_like_server_reports_its_context_in_info_and_tokenizes_in_its_shape():
    engine, _ = fake_engine({
        ("GET", "/info"): httpx.Response(200, json={"max_total_tokens": 3000}),
        ("POST", "/tokenize"): lambda body, request: (
            httpx.Response(200, json=[{"id": 5, "text": "a"}, {"id": 6, "text": "b"}]) if "inputs" in body
            else httpx.Response(422, json={"error": "missing field `inputs`"})),
    })
    assert engine.context_window == 3000 and engine.tokenize("ab") == [5, 6]


def test_a_server_without_a_tokenizer_still_generates_and_says_why_counts_are_missing():
    engine, _ = fake_engine({("POST", "/v1/completions"): sse(
        {"choices": [{"text": " yes", "finish_reason": None}]}, {"choices": [{"text": "", "finish_reason": "length"}]},
        "[DONE]")})
    with pytest.raises(EngineUnavailableError, match="none of the tokenizer endpoints"):
        engine.tokenize("Hello")
    result = engine.generate(TokenizedPrompt("Hello", ()), GenerationParams(max_new_tokens=1))
    assert result.text == " yes" and result.finish_reason == "length"
    assert engine.generate("Hello", GenerationParams(max_new_tokens=1)).text == " yes"


def test_a_stream_cut_without_a_finish_reason_is_an_error_not_a_short_answer():
    engine, _ = fake_engine({("POST", "/extras/tokenize"): httpx.Response(200, json={"tokens": [1]}),
                             ("POST", "/v1/completions"): sse({"choices": [{"text": " half"}]}, "[DONE]")})
    with pytest.raises(InferenceServerError, match="--interrupt_requests False"):
        engine.generate("Hello", GREEDY)


def test_a_refused_key_and_a_server_error_read_clearly_without_the_key():
    engine, _ = fake_engine({
        ("POST", "/extras/tokenize"): httpx.Response(200, json={"tokens": [1]}),
        ("POST", "/v1/completions"): httpx.Response(401, json={"error": {"message": "Invalid API key"}}),
        ("POST", "/v1/chat/completions"): httpx.Response(
            500, json={"error": {"message": "boom\n\n  File \"/srv/app.py\", line 3, in x\n    raise"}}),
    })
    with pytest.raises(InferenceServerError, match="HTTP 401: Invalid API key.*PLAYGROUND_OPENAI_API_KEY") as error:
        engine.generate("Hello", GREEDY)
    assert "sk-test" not in str(error.value)
    with pytest.raises(InferenceServerError, match=r"http://fake:8000/v1/chat/completions .*\(HTTP 500\): boom$"):
        engine.generate(engine.format_chat(QUESTION), GREEDY)


def test_server_root_drops_the_api_path():
    assert server_root("http://h:8080/v1") == "http://h:8080"
    assert server_root("https://h/proxy/v1/") == "https://h/proxy"
    assert server_root("http://h/api") == "http://h/api"
    assert SERVER_CONTEXT == 2048
