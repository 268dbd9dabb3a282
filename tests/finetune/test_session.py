"""The Fine-tune tab's controller without an app: start, poll from the last line read, cancel, download, merge and
use in the Prompt Lab, all behind the signed identity; runs are the fake jobs, in real worker processes."""

from __future__ import annotations

import time
import zipfile

import pytest

from playground.errors import FinetuneConfigError, PlaygroundError
from playground.finetune.limits import ActiveRunLimitError
from playground.finetune.runs import CANCELLED, RUNNING, SUCCEEDED, RunNotFoundError
from playground.finetune.session import (
    NoRunChosen,
    NotAnAdapter,
    NothingSaved,
    PollCursor,
    RunNotFinished,
)
from playground.identity import IdentityError
from tests.finetune.sessions import UNTIL_STOPPED, fake_session, finished_run, form

TIMEOUT = 120.0
DECODER_INFO = {"base_model": "smollm2-135m-instruct", "base_name": "SmolLM2-135M-Instruct", "family": "decoder",
                "method": "lora", "data": "dialogues", "template": "auto"}


@pytest.fixture
def session(tmp_path):
    made = fake_session(tmp_path)
    yield made
    made.jobs.shutdown(cancel_running=True)


@pytest.fixture
def person(session):
    """(token, owner id) of a new person with an identity the server issued."""
    token = session.identities.issuer.issue()
    return token, session.identities.person(token).id


def wait_for(session, token, run_id, statuses=(SUCCEEDED,)):
    deadline = time.monotonic() + TIMEOUT
    cursor = None
    views = []
    while time.monotonic() < deadline:
        view = session.poll(token, run_id, cursor)
        views.append(view)
        cursor = view.cursor
        if view.record is not None and view.record.status in statuses:
            return view, views
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {statuses}")


def test_a_run_starts_and_each_poll_reads_only_the_new_lines(session, person, monkeypatch):
    token, owner = person
    started = session.start(form(), token, "10.0.0.1")
    assert [r.id for r in started.runs] == [started.run_id] and started.runs[0].owner == owner
    assert session.runs.config(started.run_id)["model"] == "smollm2-135m-instruct"

    asked = []
    read_events = session.runs.read_events
    monkeypatch.setattr(session.runs, "read_events",
                        lambda run_id, since_line=0, owner=None: asked.append(since_line) or
                        read_events(run_id, since_line, owner=owner))
    view, views = wait_for(session, token, started.run_id)
    events = read_events(started.run_id, 0).events
    assert view.cursor.next_line == len(events) == 7  # stage, start, three steps, eval, done
    # Each poll started where the one before it stopped; none read the file from its first line again.
    assert asked == [0] + [v.cursor.next_line for v in views[:-1]]
    assert [(p.step, p.kind) for p in view.points] == [(1, "train"), (2, "train"), (3, "train"), (3, "validation")]
    again = session.poll(token, started.run_id, view.cursor)
    assert asked[-1] == view.cursor.next_line and again.points == view.points  # nothing new: the same curve
    assert again.metrics is not None and again.scores == [] and again.comparison == ()

    other = session.poll(token, "", None)  # no run chosen: the newest is shown
    assert other.record.id == started.run_id and other.cursor.run_id == started.run_id


def test_the_cursor_of_another_run_is_not_reused(session, person):
    token, owner = person
    run_id = finished_run(session, owner)
    stale = PollCursor("20200101-000000-000000-abcdef", 99, ())
    view = session.poll(token, run_id, stale)
    assert view.cursor.run_id == run_id and view.record.id == run_id


def test_nobody_else_sees_or_touches_the_run(session, person):
    token, owner = person
    run_id = finished_run(session, owner, weights=DECODER_INFO)
    stranger = session.identities.issuer.issue()
    assert session.poll(stranger, None).runs == ()
    view = session.poll(stranger, run_id)
    assert view.record is None and isinstance(view.error, RunNotFoundError)
    for act in (session.cancel, session.download, session.merge, session.use_in_lab):
        with pytest.raises(RunNotFoundError, match="There is no run"):
            act(stranger, run_id)
    # A token the server did not issue sees nothing and may do nothing, with the reason.
    forged = "pg1.someone.1.0000"
    assert session.poll(forged, run_id).record is None and session.poll("", None).runs == ()
    for act in (session.cancel, session.download, session.use_in_lab):
        with pytest.raises(IdentityError):
            act(forged, run_id)
    with pytest.raises(IdentityError):
        session.start(form(), forged, "10.0.0.1")


def test_refusals_the_page_words_itself(session, person):
    token, owner = person
    for act in (session.cancel, session.download, session.merge, session.use_in_lab):
        with pytest.raises(NoRunChosen):
            act(token, "")
    running = session.runs.create(owner, {"method": "lora"}, UNTIL_STOPPED)
    session.runs.set_status(running, RUNNING)
    with pytest.raises(RunNotFinished) as info:
        session.download(token, running)
    assert info.value.status == RUNNING
    with pytest.raises(NothingSaved):
        session.download(token, finished_run(session, owner))
    with pytest.raises(NotAnAdapter):
        session.merge(token, finished_run(session, owner, config={"method": "full"}))


def test_download_and_use_in_the_lab(session, person):
    token, owner = person
    run_id = finished_run(session, owner, weights=DECODER_INFO,
                          samples=[{"index": 0, "reference": "r", "base_output": "a", "tuned_output": "b",
                                    "base_rougeL": 0.1, "tuned_rougeL": 0.5, "improvement": 0.4}],
                          metrics={"family": "decoder", "sample_count": 1, "duration_s": 3.0,
                                   "rouge_before": {"rouge1": 0.1, "rouge2": 0.0, "rougeL": 0.1},
                                   "rouge_after": {"rouge1": 0.6, "rouge2": 0.3, "rougeL": 0.5}})
    archive = session.download(token, run_id)
    assert archive == session.runs.path(run_id) / "downloads" / f"{run_id}-adapter.zip"
    assert "adapter/playground.json" in zipfile.ZipFile(archive).namelist()
    assert session.download(token, run_id) == archive  # built once
    tuned = session.use_in_lab(token, run_id)
    assert tuned.model_id == f"run:{run_id}" and tuned.task == "summarization"
    view = session.poll(token, run_id)
    assert view.metrics.rouge_after["rougeL"] == 0.5 and len(view.scores) == 6
    assert view.comparison[0]["ROUGE-L gain"] == 40.0


def test_cancel_a_queued_run_and_a_finished_one(tmp_path):
    session = fake_session(tmp_path, entry=UNTIL_STOPPED)
    try:
        token = session.identities.issuer.issue()
        first = session.start(form(), token, "10.0.0.1").run_id
        second = session.start(form(), token, "10.0.0.1").run_id  # waits behind the first (one slot)
        queued = session.cancel(token, second)
        assert queued.stopping and queued.status == CANCELLED  # cancelled at once
        running = session.cancel(token, first)
        assert running.stopping
        view, _ = wait_for(session, token, first, (CANCELLED,))
        ended = session.cancel(token, first)
        assert not ended.stopping and ended.status == CANCELLED
    finally:
        session.jobs.shutdown(cancel_running=True)


def test_the_workshop_limits_hold(tmp_path):
    session = fake_session(tmp_path, entry=UNTIL_STOPPED, PLAYGROUND_MODE="workshop")
    try:
        token = session.identities.issuer.issue()
        assert session.defaults().test_limit == 16  # lowered to the cap, so the form submits as it is
        with pytest.raises(FinetuneConfigError, match="max_steps=500 is above the limit of 200"):
            session.start(form(numbers={"max_steps": 500}), token, "10.0.0.1")
        with pytest.raises(FinetuneConfigError, match="method 'full' is not available in workshop mode"):
            session.estimate(form(method="full"))
        run_id = session.start(form(numbers={"test_limit": 2}), token, "10.0.0.1").run_id
        with pytest.raises(ActiveRunLimitError, match=f"You already have run {run_id}"):
            session.start(form(numbers={"test_limit": 2}), token, "10.0.0.1")
        session.cancel(token, run_id)
    finally:
        session.jobs.shutdown(cancel_running=True)


def test_an_upload_is_read_checked_and_kept_by_the_run(session, person, tmp_path):
    token, _ = person
    upload = tmp_path / "gradio" / "0a1b" / "mine.jsonl"
    upload.parent.mkdir(parents=True)
    upload.write_text("".join(f'{{"text": "A: Hi {i}.\\nB: Hello.", "gist": "They greet {i}."}}\n' for i in range(8)))
    with pytest.raises(PlaygroundError, match=r"Name the columns of mine.jsonl: .*\(its columns: text, gist\)"):
        session.start(form(data="upload", upload=str(upload)), token, "10.0.0.1")
    started = session.start(form(data="upload", upload=str(upload), input_column="text", target_column="gist"),
                            token, "10.0.0.1")
    kept = session.runs.config(started.run_id)["data"]
    assert kept == str(session.runs.path(started.run_id) / "inputs" / "mine.jsonl")
