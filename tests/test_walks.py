"""Recorded walks (playground.walks): the strict reader and its budgets, the HTML allow-list, walk ids that could
reach outside their folders, the store's per-person cap and privacy, the recorder's budgets and the loss-curve
pacing (computed, never slept)."""

from __future__ import annotations

import json
import threading

import pytest

from playground.errors import WalkError
from playground.walks import (
    BUNDLED_DIR,
    FORMAT,
    MAX_FILE_BYTES,
    MAX_STEPS,
    Block,
    LossEvent,
    Walk,
    WalkRecorder,
    WalkStep,
    WalkStore,
    loss_frames,
    owner_folder,
    parse_walk_id,
    sanitize_html,
    walk_from_json,
    walk_json_bytes,
)


def sample_walk(steps: int = 2) -> Walk:
    blocks = (Block.markdown("**3 models** answered", "arch.summary"), Block.plain("Positive"),
              Block.html('<div class="tokens"><span class="tok tok-0">The</span></div>'),
              Block.table(["fact", "value"], [["layers", 6], ["parameters", "22,713,216"]]),
              Block.scores({"Paris": 0.6, "London": 0.3}), Block.chat([("user", "Hi"), ("assistant", "Hello!")]),
              Block.loss([LossEvent(1, 2.5), LossEvent(2, 2.1), LossEvent(2, 2.3, "validation")]))
    return Walk("Course", "2026-12-03T15:30:00Z", tuple(WalkStep("architectures", "architectures_run", f"Step {i}",
                                                                 blocks) for i in range(steps)),
                language="en", app_version="0.1.0", models=("smollm2-135m-instruct",))


def as_data(walk: Walk) -> dict:
    return json.loads(walk_json_bytes(walk))


# --------------------------------------------------------------------------- reading and writing


def test_a_walk_reads_back_as_it_was_written():
    walk = sample_walk()
    again = walk_from_json(walk_json_bytes(walk))
    assert again == walk
    assert again.recorded_on == "2026-12-03"
    kinds = [block.kind for block in again.steps[0].blocks]
    assert kinds == ["markdown", "text", "html", "table", "label", "chat", "loss"]
    assert again.steps[0].loss_block.events[-1] == LossEvent(2, 2.3, "validation")
    assert again.steps[0].blocks[4].labels[0] == ("Paris", 0.6)


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.update(format="other/2"), "format"),
    (lambda d: d.update(extra=1), "unknown keys 'extra'"),
    (lambda d: d.pop("steps"), "lacks 'steps'"),
    (lambda d: d.update(recorded_at="yesterday"), "ISO 8601"),
    (lambda d: d.update(title=5), "'title' is not text"),
    (lambda d: d.update(title="x" * 201), "longer than 200"),
    (lambda d: d.update(language="english"), "'language'"),
    (lambda d: d["steps"][0]["blocks"].append({"kind": "video", "text": "x"}), "unknown kind 'video'"),
    (lambda d: d["steps"][0]["blocks"].append({"kind": "markdown", "text": "x", "rows": []}), "unknown keys 'rows'"),
    (lambda d: d["steps"][0]["blocks"].append({"kind": "markdown"}), "lacks 'text'"),
    (lambda d: d["steps"][0].update(tab="../etc"), "not a valid name"),
    (lambda d: d["steps"][0]["blocks"][5]["messages"].append(["root", "x"]), "role, text"),
    (lambda d: d["steps"][0]["blocks"][6]["events"].append({"step": 1.5, "loss": 1, "kind": "train"}), "whole"),
    (lambda d: d["steps"][0]["blocks"][6]["events"].append({"step": 3, "loss": 1, "kind": "test"}), "kind"),
    (lambda d: d["steps"][0]["blocks"][6]["events"].append({"step": 3, "loss": True, "kind": "train"}), "finite"),
    (lambda d: d["steps"][0]["blocks"][4]["labels"].append(["x", 1.5]), "between 0 and 1"),
    (lambda d: d["steps"][0]["blocks"][3]["rows"].append(["a", 1]), "is not text"),
    (lambda d: d["steps"][0]["blocks"][0].update(text="a\x00b"), "NUL"),
    (lambda d: d.update(steps={}), "not a list"),
])
def test_a_bad_walk_file_is_refused_saying_where(change, expected):
    data = as_data(sample_walk())
    change(data)
    with pytest.raises(WalkError, match="cannot be replayed") as info:
        walk_from_json(json.dumps(data))
    assert expected in str(info.value)
    assert info.value.key == "replay.error.bad_file"


def test_budgets_are_enforced_on_read():
    data = as_data(sample_walk(1))
    data["steps"] = data["steps"] * (MAX_STEPS + 1)
    with pytest.raises(WalkError, match="more than 100 items"):
        walk_from_json(json.dumps(data))
    data = as_data(sample_walk(1))
    data["steps"][0]["blocks"][3]["rows"] = [["a", "b"]] * 201
    with pytest.raises(WalkError, match="more than 200 items"):
        walk_from_json(json.dumps(data))
    with pytest.raises(WalkError, match="at most 2,000,000"):
        walk_from_json(b" " * (MAX_FILE_BYTES + 1))
    for raw in (b"{", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b"null"):
        with pytest.raises(WalkError):
            walk_from_json(raw)


def test_the_makers_clip_what_a_recording_holds_so_it_always_reads_back():
    long_rows = [[str(i)] * 30 for i in range(500)]
    table = Block.table([f"c{i}" for i in range(30)], long_rows)
    assert len(table.columns) == 24 and len(table.rows) == 200 and all(len(r) == 24 for r in table.rows)
    text = Block.markdown("x" * 300_000)
    assert len(text.text) == 200_000 and text.text.endswith("…")
    loss = Block.loss([LossEvent(1, float("nan")), LossEvent(2, 1.0), LossEvent(-1, 1.0), LossEvent(3, 1.0, "test")])
    assert loss.events == (LossEvent(2, 1.0),)
    chat = Block.chat([("user", "a"), ("tool", "b"), ("assistant", "c")])
    assert chat.messages == (("user", "a"), ("assistant", "c"))
    walk = Walk("t", "2026-12-03T15:30:00Z", (WalkStep("a", "b", "c", (table, text, loss, chat)),))
    assert walk_from_json(walk_json_bytes(walk)) == walk


# --------------------------------------------------------------------------- HTML


@pytest.mark.parametrize("hostile, forbidden", [
    ('<script>alert(1)</script><b>ok</b>', ["script", "alert"]),
    ('<img src=x onerror="alert(1)">', ["img", "onerror"]),
    ('<div onclick="steal()">x</div>', ["onclick", "steal"]),
    ('<a href="javascript:alert(1)">x</a>', ["href", "javascript", "<a"]),
    ('<div style="background:url(https://evil.example/x)">x</div>', ["url(", "evil"]),
    ('<div style="width: expression(alert(1))">x</div>', ["expression"]),
    ('<iframe src="https://evil.example"></iframe>', ["iframe", "evil"]),
    ('<svg><foreignObject><script>alert(1)</script></foreignObject></svg>', ["script", "foreignobject"]),
    ('<style>body{display:none}</style>', ["style", "display"]),
    ('<span title="&quot; onmouseover=&quot;x">t</span>', ['" onmouseover']),
    ('<form action="/x"><input name="q"></form>', ["form", "input"]),
])
def test_html_keeps_only_what_the_apps_own_charts_use(hostile, forbidden):
    cleaned = sanitize_html(hostile).lower()
    for word in forbidden:
        assert word not in cleaned, (hostile, cleaned)


def test_the_apps_own_charts_survive_the_allow_list():
    from playground.ui.render import line_chart_html, token_chips_html

    chart = line_chart_html({"train": [(1, 2.0), (2, 1.5)]}, title="loss", x_title="step", y_title="loss")
    cleaned = sanitize_html(chart)
    for part in ("<svg", 'viewBox="0 0 640 280"', "<polyline", "<circle", "<title>train: 1", "chart-legend"):
        assert part in cleaned
    chips = token_chips_html([("<s>", 1), ("Hi", 2)])
    assert sanitize_html(chips) == chips


# --------------------------------------------------------------------------- ids and the store


@pytest.mark.parametrize("walk_id", [
    "../../etc/passwd", "bundled:../../etc/passwd", "recorded:../x", "bundled:/etc/passwd", "/etc/passwd",
    "bundled:course\x00.json", "bundled:" + "a" * 100, "bundled:", ":course", "course", "bundled:Course",
    "bundled:.hidden", "bundled:a/b", "bundled:a\\b", "file:course", "bundled:course.json", "", None, 5,
    ["bundled:course"], "recorded:%2e%2e", "bundled: course", "bundled:course\n",
])
def test_hostile_walk_ids_are_refused(walk_id, tmp_path):
    with pytest.raises(WalkError, match="no walk"):
        parse_walk_id(walk_id)
    store = WalkStore(tmp_path / "bundled", tmp_path / "recorded")
    with pytest.raises(WalkError):
        store.load(walk_id, "someone")


def test_a_link_out_of_the_folder_is_not_followed(tmp_path):
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    outside = tmp_path / "secret.json"
    outside.write_bytes(walk_json_bytes(sample_walk()))
    (bundled / "leak.json").symlink_to(outside)
    store = WalkStore(bundled, tmp_path / "recorded")
    with pytest.raises(WalkError, match="no walk"):
        store.load("bundled:leak")
    assert store.list("") == []


def test_the_store_keeps_each_persons_walks_apart_and_caps_them(tmp_path):
    store = WalkStore(tmp_path / "bundled", tmp_path / "recorded", per_owner=2)
    first = store.save(sample_walk(), "alice")
    assert first.startswith("recorded:20261203-153000-")
    assert store.load(first, "alice") == sample_walk()
    with pytest.raises(WalkError, match="no walk"):
        store.load(first, "bob")
    assert [info.walk_id for info in store.list("bob")] == []
    later = Walk("Later", "2026-12-04T09:00:00Z", sample_walk().steps)
    second = store.save(later, "alice")
    assert [info.title for info in store.list("alice")] == ["Later", "Course"]  # newest first
    with pytest.raises(WalkError, match="2 saved walks") as info:
        store.save(sample_walk(), "alice")
    assert info.value.key == "replay.error.too_many"
    store.save(sample_walk(), "bob")  # another person's cap is their own
    store.delete(second, "alice")
    assert [info.walk_id for info in store.list("alice")] == [first]
    folder = tmp_path / "recorded" / owner_folder("alice")
    assert "alice" not in str(folder) and not list(folder.glob(".*"))  # no temporary file left behind
    with pytest.raises(WalkError):
        store.save(sample_walk(), "")
    with pytest.raises(WalkError, match="Nothing was recorded"):
        store.save(Walk("empty", "2026-12-03T15:30:00Z", ()), "alice")


def test_a_broken_or_oversized_file_is_left_out_of_the_list_and_refused_when_asked_for(tmp_path):
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    (bundled / "good.json").write_bytes(walk_json_bytes(sample_walk()))
    (bundled / "broken.json").write_text("{not json")
    (bundled / "huge.json").write_bytes(b" " * (MAX_FILE_BYTES + 1))
    store = WalkStore(bundled, tmp_path / "recorded")
    assert [info.walk_id for info in store.list("")] == ["bundled:good"]
    with pytest.raises(WalkError, match="not JSON"):
        store.load("bundled:broken")
    with pytest.raises(WalkError, match="at most"):
        store.load("bundled:huge")
    with pytest.raises(WalkError, match="no walk"):
        store.load("bundled:missing")


def test_the_bundled_walk_reads_and_stays_small():
    files = sorted(BUNDLED_DIR.glob("*.json"))
    assert files, "examples/walks/ holds the recorded course"
    for path in files:
        assert path.stat().st_size < 1_000_000, path
        walk = walk_from_json(path.read_bytes())
        assert walk.steps and walk.title
        assert any(step.loss_block is not None and len(step.loss_block.events) > 1 for step in walk.steps)
        endpoints = {step.endpoint for step in walk.steps}
        assert {"architectures_run", "prompt_lab_run", "quantized_chat", "finetune_poll"} <= endpoints
    raw = json.loads(files[0].read_text(encoding="utf-8"))
    assert raw["format"] == FORMAT


# --------------------------------------------------------------------------- the recorder


def step(i: int, size: int = 10) -> WalkStep:
    return WalkStep("prompt_lab", "prompt_lab_run", f"run {i}", (Block.markdown("x" * size),))


def test_the_recorder_records_only_while_on_and_keeps_sessions_apart():
    recorder = WalkRecorder(now_text=lambda: "2026-12-03T15:30:00Z")
    assert not recorder.add("a", step(0)).recording
    recorder.set_recording("a", True)
    recorder.add("a", step(1), language="pt")
    recorder.add("b", step(2))  # b never turned it on
    assert recorder.status("a").steps == 1 and recorder.status("b").steps == 0
    recorder.set_recording("a", False)
    recorder.add("a", step(3))
    assert recorder.status("a").steps == 1 and not recorder.status("a").recording
    walk = recorder.take("a", "  My walk  ")
    assert walk.title == "My walk" and walk.language == "pt" and walk.recorded_at == "2026-12-03T15:30:00Z"
    assert [s.title for s in walk.steps] == ["run 1"]
    recorder.clear("a")
    assert recorder.status("a").steps == 0


def test_a_keyed_step_replaces_itself_in_place():
    recorder = WalkRecorder()
    recorder.set_recording("s", True)
    recorder.add("s", step(1))
    recorder.add("s", step(2), key="finetune_poll:run-1")
    recorder.add("s", step(3))
    recorder.add("s", step(4, 50), key="finetune_poll:run-1")
    assert [s.title for s in recorder.take("s", "t").steps] == ["run 1", "run 4", "run 3"]


def test_the_recorder_stops_at_its_step_and_byte_budgets():
    recorder = WalkRecorder(max_steps=3, max_bytes=10_000)
    recorder.set_recording("s", True)
    for i in range(5):
        status = recorder.add("s", step(i))
    assert status.steps == 3 and status.full
    recorder.clear("s")
    status = recorder.add("s", step(9, 20_000))
    assert status.steps == 0 and status.full
    status = recorder.add("s", step(10, 100))
    assert status.steps == 1 and status.size < 10_000


def test_the_recorder_forgets_the_longest_unused_session_first():
    ticks = iter(range(100))
    recorder = WalkRecorder(max_sessions=2, clock=lambda: next(ticks))
    recorder.set_recording("a", True)
    recorder.set_recording("b", True)
    recorder.add("a", step(1))  # a was used after b
    recorder.set_recording("c", True)
    assert recorder.is_recording("a") and recorder.is_recording("c") and not recorder.is_recording("b")


def test_the_recorder_is_safe_from_many_threads():
    recorder = WalkRecorder(max_steps=50)
    recorder.set_recording("s", True)
    threads = [threading.Thread(target=lambda: [recorder.add("s", step(i)) for i in range(20)]) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = recorder.status("s")
    assert status.steps == 50 and status.full


# --------------------------------------------------------------------------- pacing


@pytest.mark.parametrize("count, seconds", [(40, 10), (3, 10), (1, 3), (500, 60), (40, 3), (10, 0.1)])
def test_a_loss_curve_redraws_evenly_over_the_chosen_seconds(count, seconds):
    frames = loss_frames(count, seconds)
    assert frames[-1].shown == count
    assert frames[-1].at_s == pytest.approx(seconds)
    assert len(frames) <= min(count, 120)
    assert all(b.shown > a.shown and b.at_s > a.at_s for a, b in zip(frames, frames[1:]))
    gaps = {round(b.at_s - a.at_s, 4) for a, b in zip((type(frames[0])(0.0, 0), *frames), frames)}
    assert len(gaps) <= 2  # even spacing (rounding aside)


def test_pacing_is_bounded_whatever_is_asked():
    assert loss_frames(10, 10_000)[-1].at_s == 60  # the slider's top
    assert loss_frames(10, -5)[-1].at_s == 0
    assert loss_frames(0, 10) == (type(loss_frames(0, 10)[0])(0.0, 0),)
    assert len(loss_frames(100_000, 60)) == 120
    assert len(loss_frames(8, 10)) == 8  # a short curve appears point by point
