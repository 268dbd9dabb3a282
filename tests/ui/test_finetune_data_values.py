"""The Fine-tune tab's data widgets: only bundled sets, uploads and Hub ids; an upload is checked and named by its
own name; error text shown in the page hides the server's places."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from playground.config import Settings
from playground.errors import DataFileError, FinetuneConfigError, PlaygroundError
from playground.finetune.config import FinetuneConfig
from playground.prompting.tasks import EXAMPLES_DIR
from playground.finetune.session import UPLOAD, FinetuneForm
from playground.ui.tabs.finetune import NUMBER_FIELDS
from playground.ui.widgets import user_errors, user_message, warning_text

NUMBERS = {name: getattr(FinetuneConfig(), name) for name in NUMBER_FIELDS}


def values(data, upload=None, input_column="", target_column=""):
    return FinetuneForm("smollm2-135m-instruct", "lora", data, upload, input_column, target_column, "auto", "",
                        dict(NUMBERS)).config()


@pytest.mark.parametrize("data", [
    "/etc/hostname", "/etc", "../x.csv", "./examples/data/sentiment.jsonl", "examples/finetune/data/dialogues.jsonl",
    str(EXAMPLES_DIR / "data" / "sentiment.jsonl"), "~/x.csv", "C:\\x.csv", "http://example.com/x.csv",
    "text", "csv", "",
])
def test_a_path_or_a_name_the_page_does_not_offer_is_refused(data):
    with pytest.raises(PlaygroundError) as info:
        values(data, input_column="text", target_column="label")
    assert "not available here" in str(info.value) or "is empty" in str(info.value)


@pytest.mark.parametrize("data, message", [
    ("hub:/etc", "looks like a file path"),
    ("hub:../x", "looks like a file path"),
    ("hub:./examples/data", "looks like a file path"),
    ("hub:~/x", "looks like a file path"),
    ("hub:text", "is not a Hub dataset id"),
    ("hub:csv", "is not a Hub dataset id"),
    ("hub:http://example.com/x", "is an address"),
    ("hub:hf://datasets/a/b", "for that address: hub:a/b"),
    ("hub:owner/name/extra", "has more than one '/'"),
    ("hub:", "needs a dataset id after it"),
])
def test_a_hub_id_must_be_owner_name(data, message):
    with pytest.raises(FinetuneConfigError, match="hub:knkarthick/dialogsum") as info:
        values(data, input_column="dialogue", target_column="summary")
    assert message in str(info.value)
    assert values("hub:examples/data", input_column="a", target_column="b").data == "hub:examples/data"


@pytest.fixture
def upload_dir(tmp_path):
    folder = tmp_path / "gradio" / "5d41402abc4b2a76"  # where Gradio keeps an upload: a server path
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize("name, body, message", [
    ("notes.jsonl", b'{"a": 1}\n{"a": \n', "notes.jsonl cannot be used: Line 2 is not valid JSON"),
    ("latin.csv", b"text,label\ncaf\xe9,pos\n", "latin.csv cannot be used: The file is not UTF-8 text"),
    ("empty.csv", b"", "empty.csv cannot be used: The file holds no examples."),
    ("ragged.csv", b"text;label\nhi;pos\nbad;day;neg\n", "ragged.csv cannot be used: Line 3 has 3 values"),
    ("picture.png", b"\x89PNG", "picture.png is not a JSONL or CSV file"),
])
def test_a_bad_upload_says_the_file_is_invalid_by_its_own_name(upload_dir, name, body, message):
    (upload_dir / name).write_bytes(body)
    with pytest.raises(DataFileError) as info:
        values(UPLOAD, str(upload_dir / name), "text", "label")
    assert message in str(info.value)
    assert str(upload_dir) not in str(info.value) and "bundled" not in str(info.value)


def test_an_upload_without_columns_lists_its_columns(upload_dir):
    upload = upload_dir / "mine.csv"
    upload.write_text("question;answer\nTwo and two?;4\n")
    with pytest.raises(PlaygroundError) as info:
        values(UPLOAD, str(upload))
    assert str(info.value) == ("Name the columns of mine.csv: choose the input and the target column (its columns: "
                               "question, answer).")
    with pytest.raises(PlaygroundError, match=r"mine.csv has no column 'label' \(the target column\); its "
                                              r"columns: question, answer"):
        values(UPLOAD, str(upload), "question", "label")
    config = values(UPLOAD, str(upload), "question", "answer")
    assert config.data == str(upload) and (config.input_column, config.target_column) == ("question", "answer")
    with pytest.raises(PlaygroundError, match="Upload a JSONL or CSV file first"):
        values(UPLOAD, None, "question", "answer")


# ------------------------------------------------------------------ error text shown in the page


def test_user_messages_hide_the_servers_places(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", models_dir=tmp_path)
    text = (f"Could not read {tmp_path / 'data' / 'runs' / 'x' / 'metrics.json'}, {tmp_path / 'm.gguf'}, "
            f"{Path(tempfile.gettempdir()) / 'gradio' / 'up.csv'}, {Path.cwd() / 'app.py'}, "
            f"{Path.home() / 'notes'} and {os.__file__}.")
    shown = user_message(PlaygroundError(text), settings)
    assert "<data dir>/runs/x/metrics.json" in shown and "<models dir>/m.gguf" in shown
    assert "<temp>/gradio/up.csv" in shown or "<data dir>" in shown
    for place in (str(tmp_path), tempfile.gettempdir(), str(Path.cwd()), str(Path.home())):
        assert place not in shown
    assert warning_text("plain words", settings) == "⚠ plain words"


def test_user_errors_turn_a_playground_error_into_a_toast_without_paths(tmp_path):
    import gradio as gr

    with pytest.raises(gr.Error) as info:
        with user_errors(Settings(data_dir=tmp_path)):
            raise PlaygroundError(f"{Path.cwd() / 'examples' / 'x.csv'} is broken")
    assert str(Path.cwd()) not in info.value.message and "<working dir>/examples/x.csv" in info.value.message
