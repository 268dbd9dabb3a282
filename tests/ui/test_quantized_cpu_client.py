"""The Quantized CPU tab through its API, as gradio_client sees it (real SmolLM2 on llama.cpp)."""

from __future__ import annotations

import threading

import pytest
from gradio_client.exceptions import AppError

from tests.helpers import wait_until

MODEL = "smollm2-135m-instruct"
# message, history, model, system, max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed, stop
def chat_args(message, max_new_tokens=24, temperature=0.0, model=MODEL, identity="", **overrides):
    """The chat endpoint's arguments; ``identity`` is the token ("" generates anonymously in local mode)."""
    values = dict(top_p=0.95, top_k=40, repetition_penalty=1.1, seed=-1, stop="")
    values.update(overrides)
    return (message, [], model, "", max_new_tokens, temperature, values["top_p"], values["top_k"],
            values["repetition_penalty"], values["seed"], values["stop"], identity)


def assistant_text(history) -> str:
    content = history[-1]["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return content


def wait_until_answering(job, timeout_s: float = 60) -> None:
    """Until the chat job's answer has begun to stream (polled, bounded)."""
    wait_until(lambda: (outputs := job.outputs()) and assistant_text(outputs[-1][0]).strip(),
               "the answer to start streaming", timeout_s)


def test_facts_describe_the_packaged_gguf(client):
    table = client.predict(MODEL, "", api_name="/quantized_facts")  # model, identity token (none: catalog only)
    rows = {row[0]: row[1] for row in table["data"]}
    assert rows["quantisation"] == "Q4_1"
    assert rows["architecture"] == "llama"
    assert rows["context length"] == "8,192"
    assert 4.0 < float(rows["bits per weight"]) < 6.0


def test_chat_answers_with_speed_figures(client):
    history, message_box, stats = client.predict(*chat_args("What is the capital of France?"),
                                                 api_name="/quantized_chat")
    assert history[0]["role"] == "user" and history[-1]["role"] == "assistant"
    assert assistant_text(history).strip()
    assert message_box == ""
    assert "tokens/s" in stats and "time to first token" in stats


@pytest.mark.parametrize("args, expected", [
    (chat_args("   "), "empty"),
    # The sliders refuse out-of-range values before the handler runs, naming the allowed bound.
    (chat_args("Hello", temperature=5.0), r"5\.0 is greater than maximum value 2\.0"),
    (chat_args("Hello", top_p=0.0), r"0\.0 is less than minimum value 0\.01"),
    (chat_args("Hello", max_new_tokens=0), r"0 is less than minimum value 1"),
    (chat_args("Hello", stop="a,b,c,d,e,f,g,h,i"), "at most 8 stop sequences"),
])
def test_bad_input_gives_a_clear_message_and_the_app_keeps_working(client, args, expected):
    with pytest.raises(AppError, match=expected):
        client.predict(*args, api_name="/quantized_chat")
    history, _, _ = client.predict(*chat_args("Say hi.", max_new_tokens=8), api_name="/quantized_chat")
    assert assistant_text(history).strip()


def test_unknown_model_is_refused(client):
    with pytest.raises(AppError) as error:
        client.predict(*chat_args("Hello", model="no-such-model"), api_name="/quantized_chat")
    assert "no-such-model" in str(error.value)


def test_prompt_longer_than_the_context_window_reports_token_counts(client):
    long_message = "lorem ipsum dolor sit amet " * 2200  # about 11k tokens against an 8k window
    with pytest.raises(AppError, match=r"tokens.*context window is 8192 tokens"):
        client.predict(*chat_args(long_message), api_name="/quantized_chat")
    history, _, _ = client.predict(*chat_args("Say hi.", max_new_tokens=8), api_name="/quantized_chat")
    assert assistant_text(history).strip()


def test_hub_only_gguf_offline_says_what_is_missing(client):
    with pytest.raises(AppError, match="PLAYGROUND_MODELS_DIR"):
        client.predict(*chat_args("Hello", model="qwen2.5-0.5b-instruct"), api_name="/quantized_chat")


def test_two_users_chatting_at_once_both_get_answers(app_url):
    from gradio_client import Client

    answers: dict[int, str] = {}

    def user(index: int) -> None:
        history, _, _ = Client(app_url, verbose=False).predict(
            *chat_args(f"Name a fruit number {index}.", max_new_tokens=24), api_name="/quantized_chat")
        answers[index] = assistant_text(history)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert sorted(answers) == [0, 1]
    assert all(text.strip() for text in answers.values())


def test_stop_ends_a_long_answer_early(client):
    job = client.submit(*chat_args("Write a very long story about a lighthouse keeper.", max_new_tokens=900,
                                   temperature=0.7, repetition_penalty=1.3), api_name="/quantized_chat")
    wait_until_answering(job, 30)  # then press Stop from the same session
    client.predict(api_name="/quantized_stop")
    history, _, stats = job.result(timeout=120)
    assert "cancelled" in stats
    assert "900 new tokens" not in stats


@pytest.mark.slow
def test_full_precision_and_quantised_side_by_side(client):
    full, full_stats, quant, quant_stats, summary, download = client.predict(
        "Why is the sky blue?", MODEL, "", 16, 0.0, 0.95, 40, 1.1, -1, "", "", api_name="/quantized_compare")
    assert full.strip() and quant.strip()
    assert "transformers" in full_stats and "llama.cpp" in quant_stats
    assert "weights in memory" in full_stats and "tokens/s" in quant_stats
    assert ("faster" in summary or "slower" in summary or "as fast" in summary) and "less memory" in summary
    assert "0." not in summary.split("×")[0]  # never "0.4× faster"
    with open(download, encoding="utf-8-sig") as handle:
        rows = handle.read().splitlines()
    assert rows[0].startswith("side,engine,precision") and rows[1].startswith("full,transformers")
