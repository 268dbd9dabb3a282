"""Export: zip an adapter, merge it into its base (safetensors) and zip that; atomic writes."""

from __future__ import annotations

import errno
import json
import zipfile

import pytest

from playground.errors import PlaygroundError, SaveError
from playground.atomic import atomic_directory, atomic_write_json
from playground.finetune.export import merge_and_zip, zip_directory
from playground.finetune.result import read_info
from tests.finetune.conftest import train_tiny_lora


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, ft_models, dialogue_file, offline_resolver):
    run_dir = tmp_path_factory.mktemp("export") / "run"
    return train_tiny_lora(run_dir, ft_models["llama"], dialogue_file, offline_resolver) / "adapter"


def test_zip_of_the_adapter_holds_every_file(tiny_adapter, tmp_path):
    archive = zip_directory(tiny_adapter, tmp_path / "out" / "adapter.zip")
    names = set(zipfile.ZipFile(archive).namelist())
    assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json", "adapter/playground.json"} <= names
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_zip_refuses_what_is_not_a_result(tmp_path):
    with pytest.raises(PlaygroundError, match="no playground.json"):
        read_info(tmp_path)
    with pytest.raises(PlaygroundError, match="no folder"):
        zip_directory(tmp_path / "missing", tmp_path / "x.zip")


def test_merged_model_gives_the_adapted_logits(tiny_adapter, tmp_path, ft_models):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    archive = merge_and_zip(tiny_adapter, tmp_path / "out" / "merged.zip", tmp_path / "data")
    with zipfile.ZipFile(archive) as opened:
        assert opened.getinfo("merged/model.safetensors").compress_type == zipfile.ZIP_STORED
        assert opened.getinfo("merged/config.json").compress_type == zipfile.ZIP_DEFLATED
        opened.extractall(tmp_path / "unzipped")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["merged.zip"]  # the merged folder went
    merged_dir = tmp_path / "unzipped" / "merged"
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "tokenizer.json").is_file()
    assert json.loads((merged_dir / "playground.json").read_text())["merged"] is True
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, use_safetensors=True).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ft_models["llama"]), tiny_adapter).eval()
    base = AutoModelForCausalLM.from_pretrained(ft_models["llama"]).eval()
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, adapted(input_ids=ids).logits, atol=1e-5)
        assert not torch.allclose(merged(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-5)


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "adapter"
    with atomic_directory(target) as partial:
        (partial / "a.txt").write_text("one")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as partial:
            (partial / "a.txt").write_text("two")
            raise RuntimeError("the save broke")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(SaveError, match="Could not write the adapter to .*: Permission denied. Choose a folder"):
        with atomic_directory(target, "the adapter") as partial:
            raise PermissionError(errno.EACCES, "Permission denied")
    with atomic_directory(target) as partial:
        (partial / "b.txt").write_text("three")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_atomic_file_write_failure_names_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SaveError, match="Could not write the metrics to .*file"):
        atomic_write_json(blocker / "metrics.json", {"a": 1}, "the metrics")
