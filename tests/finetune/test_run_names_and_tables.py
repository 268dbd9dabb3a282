"""Short run names, progress folded into a run's record, the run comparison, CSV tables and upload checks."""

from __future__ import annotations

import csv
import io
import json

import pytest
import yaml

from playground.errors import DataFileError
from playground.finetune.config import CPU_DEMO_PRESET, FinetuneConfig
from playground.finetune.data import check_data_file
from playground.finetune.result import run_rows, table_csv
from playground.finetune.runs import PROGRESS_FILE, RUNNING, RunStore, model_short_name, short_run_name
from playground.finetune.session import NoRunChosen, RunNotFinished
from tests.finetune.sessions import fake_session, finished_run

ENTRY = "tests.finetune.fake_jobs:quick"
CONFIG = {"model": "smollm2-135m-instruct", "method": "lora"}


@pytest.mark.parametrize("model, short", [
    ("smollm2-135m-instruct", "smollm2"), ("flan-t5-base", "flan-t5"), ("all-minilm-l6-v2", "all-minilm"),
    ("gemma-3-270m", "gemma-3"), ("/models/My.Model_v2", "mymodel-v2"), ("", "model"),
])
def test_a_models_short_name(model, short):
    assert model_short_name(model) == short


def test_a_run_name_is_short_readable_and_free():
    april = 1775980800.0  # 2026-04-12
    tails = iter(["a3", "a3", "b7"])
    name = short_run_name(CONFIG, april, taken={"smollm2-lora-0412-a3"}, token=lambda n: next(tails))
    assert name == "smollm2-lora-0412-b7"


def test_names_are_unique_per_owner_and_the_id_stays_the_key(tmp_path):
    store = RunStore(tmp_path)
    ids = [store.create("alice", CONFIG, ENTRY) for _ in range(30)]
    names = [store.get(run_id, "alice").name for run_id in ids]
    assert len(set(names)) == 30 and all(n.startswith("smollm2-lora-") and len(n) <= 24 for n in names)
    assert all(name != run_id for name, run_id in zip(names, ids))
    assert store.list_runs("alice")[0].id == ids[-1]


def test_progress_events_fold_into_the_record(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create("alice", CONFIG, ENTRY)
    store.set_status(run_id, RUNNING, started=1.0)
    events = [{"event": "stage", "stage": "baseline", "phase": "baseline", "done": 3, "total": 12, "eta_s": 200.0,
               "message": "Base model: generating 3 of 12"}]
    (store.path(run_id) / PROGRESS_FILE).write_text("".join(json.dumps(e) + "\n" for e in events))
    record = store.get(run_id, "alice")
    assert (record.phase, record.phase_done, record.phase_total) == ("baseline", 3, 12)
    assert 0 < record.eta_s <= 200.0
    with open(store.path(run_id) / PROGRESS_FILE, "a") as handle:
        handle.write(json.dumps({"event": "step", "step": 5, "total_steps": 40, "loss": 1.5, "eta_s": 90.0}) + "\n")
    record = store.get(run_id, "alice")
    assert (record.phase, record.phase_done, record.phase_total) == ("training", 5, 40) and record.eta_s <= 90.0


def test_the_run_comparison_and_its_csv(tmp_path):
    session = fake_session(tmp_path)
    try:
        token = session.identities.issuer.issue()
        owner = session.identities.person(token).id
        with pytest.raises(NoRunChosen):
            session.runs_csv(token)
        run_id = finished_run(session, owner, samples=[{"index": 0, "reference": "r", "base_output": "a",
                                                        "tuned_output": "b", "base_rougeL": 0.1,
                                                        "tuned_rougeL": 0.5, "improvement": 0.4}],
                              metrics={"family": "decoder", "steps": 3, "duration_s": 12.4, "eval_loss": 1.23456,
                                       "train_losses": [2.0, 1.5], "rouge_before": {"rougeL": 0.1},
                                       "rouge_after": {"rougeL": 0.5}})
        queued = session.runs.create(owner, {"model": "flan-t5-base", "method": "qlora"}, ENTRY)
        rows = run_rows(session.jobs.list_runs(owner))
        assert [r["status"] for r in rows] == ["queued", "succeeded"]
        assert rows[1] == {"name": session.jobs.get(run_id, owner).name, "status": "succeeded",
                           "model": "smollm2-135m-instruct", "method": "lora", "steps": 3, "train_loss": 1.5,
                           "validation_loss": 1.2346, "rougeL_before": 10.0, "rougeL_after": 50.0,
                           "rougeL_gain": 40.0, "duration_s": 12}
        assert "accuracy_before" not in rows[0]  # a column empty for every run is left out
        path = session.runs_csv(token, {"name": "execução"}, "pt")
        text = path.read_text(encoding="utf-8")
        assert text.startswith("\ufeff") and path.name == "runs-pt.csv"
        table = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
        assert table[0][0] == "execução" and len(table) == 3
        comparison = session.comparison_csv(token, run_id, {"reference": "référence"}, "fr")
        table = list(csv.reader(io.StringIO(comparison.read_text(encoding="utf-8").lstrip("\ufeff"))))
        assert "référence" in table[0] and table[1][table[0].index("référence")] == "r"
        with pytest.raises(RunNotFinished):
            session.comparison_csv(token, queued)
    finally:
        session.jobs.shutdown(cancel_running=True)


def test_table_csv_leaves_none_empty():
    assert table_csv([{"a": 1, "b": None}], {"a": "A"}) == "\ufeffA,b\n1,\n"


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00\x00binary", "my data.csv cannot be used: The file is not UTF-8 text"),
    (b"", "my data.csv cannot be used: The file holds no examples"),
    (b"a,b\n", "my data.csv cannot be used: The file holds no examples"),
])
def test_an_upload_is_checked_first_and_named_by_its_own_name(tmp_path, content, message):
    folder = tmp_path / "gradio" / "0123456789abcdef"
    folder.mkdir(parents=True)
    path = folder / "my data.csv"
    path.write_bytes(content)
    with pytest.raises(DataFileError) as info:
        check_data_file(path)
    assert message in str(info.value) and str(tmp_path) not in str(info.value)


def test_a_good_upload_says_its_rows_and_columns(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text('{"q": "a", "r": "b"}\n{"q": "c", "r": "d", "extra": 1}\n')
    found = check_data_file(path)
    assert (found.name, found.rows, found.columns) == ("notes.jsonl", 2, ("q", "r", "extra"))


def test_the_tabs_defaults_are_the_cpu_demo_preset(tmp_path):
    preset = yaml.safe_load(CPU_DEMO_PRESET.read_text(encoding="utf-8"))
    session = fake_session(tmp_path)
    try:
        defaults = session.defaults().to_dict()
    finally:
        session.jobs.shutdown(cancel_running=True)
    assert {key: defaults[key] for key in preset} == preset
    assert FinetuneConfig.cpu_demo().test_limit == 20 and FinetuneConfig.cpu_demo().eval_every == 20
