"""Walks through the API, as gradio_client sees them, on an app in presenter mode: the bundled course listed and
shown step by step under the replay banner, its loss curve redrawn from the recorded events; a recording made with
Record on, saved, listed for its owner only; ids that are not walks refused."""

from __future__ import annotations

import re

import pytest
from gradio_client.exceptions import AppError

from playground.walks import BUNDLED_DIR, WalkStore, walk_from_json
from tests.ui.conftest import _free_port, issue_token, launched, owner_id

COURSE = "bundled:course"


@pytest.fixture(scope="module")
def presenter(tmp_path_factory):
    from playground.services import Services
    from tests.helpers import offline_settings

    settings = offline_settings(tmp_path_factory.mktemp("replay-data"), PLAYGROUND_MODE="presenter",
                                PLAYGROUND_HOST="127.0.0.1", PLAYGROUND_PORT=str(_free_port()))
    services = Services.create(settings)
    try:
        with launched(services) as url:
            yield services, url
    finally:
        services.close()


@pytest.fixture
def client(presenter):
    from gradio_client import Client

    return Client(presenter[1], verbose=False)


def course():
    return walk_from_json((BUNDLED_DIR / "course.json").read_bytes())


def test_the_bundled_course_is_listed_and_each_step_shows_under_the_banner(client):
    listed = client.predict("", None, api_name="/replay_walks")
    ids = [walk_id for _, walk_id in listed["choices"]]
    assert ids[0] == COURSE and listed["value"] == COURSE
    walk = course()
    assert listed["choices"][0][0] == "The course on the packaged models"  # the bundled walk's title
    first = next(i for i, step in enumerate(walk.steps) if step.loss_block is None)
    banner, heading, loss = client.predict(COURSE, first + 1, 3, "", api_name="/replay_show")
    assert f"REPLAY — recorded on {walk.recorded_on}, nothing is computed" in banner
    assert heading.startswith(f"### Step {first + 1} of {len(walk.steps)} · ")
    assert loss["visible"] is False  # a step without a curve hides it


def test_the_loss_curve_is_redrawn_from_the_recorded_events(client):
    walk = course()
    index = next(i for i, step in enumerate(walk.steps) if step.loss_block is not None)
    events = walk.steps[index].loss_block.events
    banner, heading, loss = client.predict(COURSE, index + 1, 3, "", api_name="/replay_show")
    drawn = loss["value"] if isinstance(loss, dict) else loss
    assert "Fine-tune" in heading and "<svg" in drawn and "Recorded loss curve" in drawn
    assert drawn.count('class="chart-point"') == len(events)  # the last frame draws every event
    train = [e for e in events if e.kind == "train"]
    assert f"train: {train[-1].step:g} → {train[-1].loss:.4f}" in drawn


def test_the_banner_and_headings_follow_the_readers_language(presenter):
    from gradio_client import Client

    portuguese = Client(presenter[1], verbose=False, headers={"Accept-Language": "pt-BR,pt;q=0.9"})
    banner, heading, _ = portuguese.predict(COURSE, 1, 3, "", api_name="/replay_show")
    assert "REPRODUÇÃO — gravada em" in banner and "nada é calculado" in banner
    assert heading.startswith("### Passo 1 de ") and "gravado em inglês" in heading


@pytest.mark.parametrize("walk_id", ["../../etc/passwd", "bundled:../../etc/passwd", "bundled:/etc/passwd",
                                     "recorded:" + "a" * 200, "bundled:course\x00", "file:course"])
def test_ids_that_are_not_walks_are_refused(client, walk_id):
    with pytest.raises(AppError, match="no walk"):
        client.predict(walk_id, 1, 3, "", api_name="/replay_show")


def test_a_recording_is_saved_for_its_owner_and_replayed_for_them_only(client, presenter):
    from gradio_client import Client

    services, url = presenter
    token = issue_token(client)
    with pytest.raises(AppError, match="Nothing was recorded"):
        client.predict("Empty", token, api_name="/walk_save")
    assert client.predict(True, api_name="/walk_record").startswith("● Recording — steps: 0")
    client.predict("Say hello in three words.", [], "smollm2-135m-instruct", "", 8, 0.0, 1.0, 40, 1.0, 0, "",
                   token, api_name="/quantized_chat")
    assert client.predict(api_name="/walk_status").startswith("● Recording — steps: 1 ")
    # Another browser session does not record, and does not see this one's steps.
    stranger = Client(url, verbose=False)
    assert stranger.predict(api_name="/walk_status") == "Not recording."
    status, title = client.predict("Room 101 rehearsal", token, api_name="/walk_save")
    assert status.startswith("● Recording — steps: 0") and title == ""

    listed = client.predict(token, None, api_name="/replay_walks")
    mine = [(label, walk_id) for label, walk_id in listed["choices"] if walk_id.startswith("recorded:")]
    assert len(mine) == 1 and mine[0][0] == "★ Room 101 rehearsal"  # one's own walk, marked as one's runs are
    walk_id = mine[0][1]
    banner, heading, _ = client.predict(walk_id, 1, 3, token, api_name="/replay_show")
    assert "REPLAY — recorded on" in banner and "Quantized CPU" in heading
    walk = WalkStore(BUNDLED_DIR, services.settings.data_dir / "walks").load(walk_id, owner_id(services, token))
    chat = next(block for block in walk.steps[0].blocks if block.kind == "chat")
    assert chat.messages[0] == ("user", "Say hello in three words.") and chat.messages[1][0] == "assistant"

    other = issue_token(stranger)
    assert all(not w.startswith("recorded:") for _, w in stranger.predict(other, None,
                                                                          api_name="/replay_walks")["choices"])
    with pytest.raises(AppError, match="no walk"):
        stranger.predict(walk_id, 1, 3, other, api_name="/replay_show")
    with pytest.raises(AppError):
        stranger.predict(walk_id, other, api_name="/replay_delete")
    with pytest.raises(AppError, match="comes with the app"):
        client.predict(COURSE, token, api_name="/replay_delete")
    client.predict(walk_id, token, api_name="/replay_delete")
    assert all(w != walk_id for _, w in client.predict(token, None, api_name="/replay_walks")["choices"])


def test_stop_ends_a_replay_before_its_curve_is_whole(client):
    from tests.helpers import wait_until

    walk = course()
    index = next(i for i, step in enumerate(walk.steps) if step.loss_block is not None)
    total = len(walk.steps[index].loss_block.events)
    job = client.submit(COURSE, index + 1, 60, "", api_name="/replay_show")  # a frame every 2.5 s
    wait_until(lambda: len(job.outputs()) >= 2, "the first frames of the curve", 60)
    client.predict(api_name="/replay_stop")  # the same browser session as the replay
    job.result(timeout=60)
    drawn = [output[2] for output in job.outputs()]
    last = drawn[-1]["value"] if isinstance(drawn[-1], dict) else drawn[-1]
    assert len(drawn) < total + 1 and last.count('class="chart-point"') < total
