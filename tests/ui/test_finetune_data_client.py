"""The Fine-tune tab's data through its API: hostile data ids and bad uploads get clear messages, no server path."""

from __future__ import annotations

import os
import tempfile

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from tests.ui.test_finetune_client import config_args


def _no_server_path(message: str) -> None:
    for place in (os.getcwd(), tempfile.gettempdir(), os.path.expanduser("~")):
        assert place not in message, message


@pytest.mark.parametrize("data, message", [
    ("hub:/etc", "'/etc' looks like a file path"),
    ("hub:./examples/data", "looks like a file path"),
    ("hub:csv", "'csv' is not a Hub dataset id"),
    ("hub:https://huggingface.co/datasets/knkarthick/dialogsum", "for that address: hub:knkarthick/dialogsum"),
    ("examples/data/sentiment.jsonl", "is not available here"),
])
def test_a_hostile_data_id_is_refused_clearly(client, data, message):
    with pytest.raises(AppError) as info:
        client.predict(*config_args(data=data), api_name="/finetune_inspect")
    assert message in str(info.value)
    _no_server_path(str(info.value))


def test_a_bad_upload_is_named_by_its_own_name(client, tmp_path):
    bad = tmp_path / "my-dialogues.jsonl"
    bad.write_text('{"dialogue": "a", "summary": "b"}\n{"dialogue": \n')
    args = config_args(data="upload")
    args[3:6] = [handle_file(str(bad)), "dialogue", "summary"]
    with pytest.raises(AppError) as info:
        client.predict(*args, api_name="/finetune_inspect")
    assert "my-dialogues.jsonl cannot be used: Line 2 is not valid JSON" in str(info.value)
    assert "bundled" not in str(info.value)
    _no_server_path(str(info.value))
