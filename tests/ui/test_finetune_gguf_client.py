"""The Fine-tune tab's GGUF downloads through the API: the adapter GGUF and the merged, quantized GGUF of a LoRA run
of the packaged SmolLM2, built once in the run's folder and handed to Gradio as one link, nobody else's, and
clear refusals (an unknown type, a full fine-tune, a base without a GGUF).

The run's adapter is random (written from the GGUF's shapes), so nothing is trained here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client.exceptions import AppError

from playground.finetune.runs import SUCCEEDED
from tests.gguf_models import fabricated_run
from tests.helpers import SMOLLM2
from tests.ui.conftest import issue_token, owner_id

pytestmark = pytest.mark.slow
ENTRY = "playground.finetune.train:run_job"


def person(client, services) -> tuple[str, str]:
    token = issue_token(client)
    return token, owner_id(services, token)


@pytest.fixture(scope="module")
def smol_run(app_services, app_url) -> tuple[str, str]:
    """(identity token, run id) of a finished LoRA run of SmolLM2 with a random adapter, in the app's run store."""
    from gradio_client import Client

    token, owner = person(Client(app_url, verbose=False), app_services)
    base = app_services.engines.resolve(SMOLLM2, "gguf").path
    return token, fabricated_run(app_services.runs, owner, SMOLLM2, base, seed=11)


@pytest.fixture
def own_client(app_url, tmp_path):
    from gradio_client import Client

    return Client(app_url, verbose=False, download_files=str(tmp_path / "client"))


def served(run_id: str, name: str) -> list[Path]:
    from gradio.utils import get_upload_folder

    return [p for p in Path(get_upload_folder()).glob(f"*/{run_id}-{name}.gguf") if p.is_file()]


@pytest.mark.parametrize("endpoint, args, name", [("/finetune_adapter_gguf", (), "adapter"),
                                                  ("/finetune_merged_gguf", ("Q4_K_M",), "Q4_K_M")])
def test_a_gguf_download_is_built_once_and_linked(own_client, app_services, smol_run, endpoint, args, name):
    from gguf import GGUFReader

    token, run_id = smol_run
    first = own_client.predict(token, run_id, *args, api_name=endpoint)
    built = app_services.runs.path(run_id) / "downloads" / f"{run_id}-{name}.gguf"
    assert built.is_file() and Path(first).read_bytes() == built.read_bytes()
    inode = built.stat().st_ino
    again = own_client.predict(token, run_id, *args, api_name=endpoint)
    assert Path(again).read_bytes() == built.read_bytes() and built.stat().st_ino == inode  # not rebuilt
    assert len(served(run_id, name)) == 1  # one link in Gradio's cache for every click
    fields = GGUFReader(built, "r").fields
    if name == "adapter":
        assert fields["general.type"].contents() == "adapter"
    else:
        assert fields["general.file_type"].contents() == 15  # Q4_K_M
        assert fields["tokenizer.chat_template"].contents()  # the base's chat template came along
    downloads = sorted(p.name for p in built.parent.iterdir())
    assert not [n for n in downloads if n.startswith(".") and n != ".lock"]  # no F32 intermediate left


@pytest.mark.parametrize("endpoint, args", [("/finetune_adapter_gguf", ()), ("/finetune_merged_gguf", ("Q8_0",))])
def test_nobody_else_can_download_the_gguf(own_client, app_services, smol_run, endpoint, args):
    _, run_id = smol_run
    stranger, _ = person(own_client, app_services)
    with pytest.raises(AppError, match="There is no run"):
        own_client.predict(stranger, run_id, *args, api_name=endpoint)
    assert not (app_services.runs.path(run_id) / "downloads" / f"{run_id}-Q8_0.gguf").exists()


def test_refusals_reach_the_caller_with_their_message(own_client, app_services, smol_run):
    token, run_id = smol_run
    owner = owner_id(app_services, token)
    with pytest.raises(AppError, match="Q9 is not in the list of choices"):  # Gradio's dropdown checks first
        own_client.predict(token, run_id, "Q9", api_name="/finetune_merged_gguf")

    full = app_services.runs.create(owner, {"model": SMOLLM2, "method": "full"}, ENTRY)
    app_services.runs.set_status(full, SUCCEEDED, force=True)
    with pytest.raises(AppError, match="A full fine-tune is already a whole model"):
        own_client.predict(token, full, "Q4_K_M", api_name="/finetune_merged_gguf")

    gpt2 = fabricated_run(app_services.runs, owner, SMOLLM2, app_services.engines.resolve(SMOLLM2, "gguf").path)
    info_file = app_services.runs.path(gpt2) / "adapter" / "playground.json"
    info_file.write_text(json.dumps({**json.loads(info_file.read_text()), "base_model": "gpt2",
                                     "base_name": "GPT-2 (124M)"}))
    with pytest.raises(AppError, match=r"base GPT-2 \(124M\) has no GGUF file for llama.cpp"):
        own_client.predict(token, gpt2, api_name="/finetune_adapter_gguf")
    assert not (app_services.runs.path(gpt2) / "downloads").exists()
