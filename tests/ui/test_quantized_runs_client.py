"""One's own fine-tuned run in the Quantized CPU tab, through the API: listed, described, chatted with and
compared on llama.cpp (the tiny GGUF base with the run's adapter GGUF); nobody else sees or reaches it."""

from __future__ import annotations

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground.backends.base import GenerationParams
from playground.backends.chat import build_messages
from tests.gguf_models import TINY_GGUF
from tests.ui.conftest import issue_token, owner_id
from tests.ui.test_quantized_cpu_client import assistant_text, chat_args

pytestmark = pytest.mark.slow

MESSAGE = "The quick brown fox"
NEW_TOKENS = 10
# What the chat endpoint sends for chat_args(..., temperature=0.0, repetition_penalty=1.0): greedy.
GREEDY = GenerationParams(max_new_tokens=NEW_TOKENS, temperature=0.0, top_p=0.95, top_k=40, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def owned(gguf_app) -> tuple[Client, str, str]:
    """(client, its identity token, run id of a finished LoRA run that token's person owns)."""
    client = Client(gguf_app.url, verbose=False)
    token = issue_token(client)
    return client, token, gguf_app.run_for(token, seed=1)


def args(message: str, model: str, identity: str):
    return chat_args(message, max_new_tokens=NEW_TOKENS, temperature=0.0, model=model, identity=identity,
                     repetition_penalty=1.0)


def direct(services, model_id: str, owner: str, engine: str = "llama.cpp", message: str = MESSAGE) -> str:
    loaded = services.engine(model_id, engine, owner)
    return loaded.generate(loaded.format_chat(build_messages([], message)), GREEDY).text


def choice_ids(update) -> list[str]:
    return [choice[1] for choice in update["choices"]]


def test_the_owner_sees_the_run_after_the_catalogs_models_and_nobody_else_does(gguf_app, owned):
    client, token, run_id = owned
    mine = client.predict(token, api_name="/quantized_models")
    assert choice_ids(mine) == [TINY_GGUF, f"run:{run_id}"], mine
    label = dict((m, label) for label, m in mine["choices"])[f"run:{run_id}"]
    assert label.startswith("★ ") and run_id in label
    stranger = issue_token(client)
    assert choice_ids(client.predict(stranger, api_name="/quantized_models")) == [TINY_GGUF]
    assert choice_ids(client.predict("", api_name="/quantized_models")) == [TINY_GGUF]


def test_the_facts_of_a_run_are_its_adapter_and_its_base(gguf_app, owned):
    client, token, run_id = owned
    rows = {row[0]: row[1] for row in client.predict(f"run:{run_id}", token, api_name="/quantized_facts")["data"]}
    assert rows["fine-tuned run"] == run_id and rows["method"] == "LORA" and rows["base model"] == TINY_GGUF
    assert rows["adapter rank"] == "4" and rows["adapter alpha"] == "8" and rows["adapted weights"].startswith("10 ")
    assert rows["adapter file"] == f"{run_id}-adapter.gguf" and rows["adapter file size"].endswith(" MB")
    assert rows["architecture"] == "llama" and rows["base GGUF"]
    stranger = issue_token(client)
    refused = client.predict(f"run:{run_id}", stranger, api_name="/quantized_facts")["data"]
    assert refused[0][0] == "status" and "There is no run" in refused[0][1]


def test_chat_answers_with_the_run_on_llama_cpp(gguf_app, owned):
    client, token, run_id = owned
    services = gguf_app.services
    history, _, stats = client.predict(*args(MESSAGE, f"run:{run_id}", token), api_name="/quantized_chat")
    expected = direct(services, f"run:{run_id}", owner_id(services, token))
    assert expected.strip() and assistant_text(history) == expected
    assert expected != direct(services, TINY_GGUF, "")  # the adapter changes the answer
    assert "tokens/s" in stats
    base_history, _, _ = client.predict(*args(MESSAGE, TINY_GGUF, token), api_name="/quantized_chat")
    assert assistant_text(base_history) == direct(services, TINY_GGUF, "")


def test_someone_elses_run_reads_as_no_run(gguf_app, owned):
    client, _, run_id = owned
    stranger = issue_token(client)
    for identity in (stranger, ""):
        with pytest.raises(AppError, match="There is no run"):
            client.predict(*args(MESSAGE, f"run:{run_id}", identity), api_name="/quantized_chat")
    with pytest.raises(AppError, match="There is no run"):
        client.predict(MESSAGE, f"run:{run_id}", "", NEW_TOKENS, 0.0, 0.95, 40, 1.0, -1, "", stranger,
                       api_name="/quantized_compare")


def test_the_comparison_puts_the_run_in_full_precision_beside_the_run_quantised(gguf_app, owned):
    client, token, run_id = owned
    services, owner = gguf_app.services, owner_id(gguf_app.services, token)
    full, full_stats, quant, quant_stats, _, _ = client.predict(
        MESSAGE, f"run:{run_id}", "", NEW_TOKENS, 0.0, 0.95, 40, 1.0, -1, "", token, api_name="/quantized_compare")
    assert full == direct(services, f"run:{run_id}", owner, "transformers")
    assert quant == direct(services, f"run:{run_id}", owner, "llama.cpp")
    assert "LORA merged" in full_stats and "transformers" in full_stats
    assert "LORA adapter" in quant_stats and "llama.cpp" in quant_stats and "tokens/s" in quant_stats
