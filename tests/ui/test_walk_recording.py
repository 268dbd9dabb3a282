"""Recording a walk (playground.ui.walk_recording): outputs turned into blocks by component kind, what the page
hides left out, the hook on a built app's handlers (plain and generators, the page's unnamed twins too), a
failing recording that never costs the result, and no recording outside presenter mode."""

from __future__ import annotations

import gradio as gr
import pandas as pd
from playground.finetune.result import LossPoint
from playground.finetune.session import PollCursor
from playground.ui.i18n import Texts, t
from playground.ui.soft_errors import soft
from playground.ui.walk_recording import (
    RECORDED_EVENTS,
    Shown,
    block_for,
    install_recording,
    merged_outputs,
    step_from_outputs,
)
from playground.walks import WalkRecorder, walk_from_json, walk_json_bytes

EN = Texts("en")


def test_the_last_values_shown_are_kept_as_an_event_updates_its_outputs():
    with gr.Blocks():
        a, b, c = gr.Markdown(), gr.Textbox(), gr.Dataframe()
    shown = merged_outputs(None, ("first", "text", gr.update(visible=False)), [a, b, c])
    shown = merged_outputs(shown, (gr.skip(), gr.update(value="new"), gr.update()), [a, b, c])
    assert shown.values == ["first", "new", None] and shown.visible == [None, None, False]
    assert merged_outputs(None, {b: "only b"}, [a, b, c]).values == [None, "only b", None]
    assert merged_outputs(None, ["a", "list"], [gr.Chatbot()]).values == [["a", "list"]]  # one output: as it is


def test_each_kind_of_output_becomes_its_block():
    with gr.Blocks():
        markdown, text, page = gr.Markdown(), gr.Textbox(label=t("lab.output")), gr.HTML()
        table, label, chat, state = gr.Dataframe(), gr.Label(label=t("lab.votes")), gr.Chatbot(), gr.State()
        drawn_loss, dropdown = gr.HTML(elem_id="ft-loss"), gr.Dropdown()
    assert block_for(markdown, "**Answer**", EN).kind == "markdown"
    output = block_for(text, "positive", EN)
    assert output.kind == "text" and output.label == "Model output"  # the label in the recording's language
    assert block_for(text, "positive", Texts("pt")).label == "Saída do modelo"
    cleaned = block_for(page, '<div onclick="x()">hi<script>bad()</script></div>', EN)
    assert cleaned.text == "<div>hi</div>"
    frame = block_for(table, pd.DataFrame({"score": [0.5], "model": ["base"]}), EN)
    assert frame.columns == ("score", "model") and frame.rows == (("0.5", "base"),)
    assert block_for(table, {"headers": ["a"], "data": [[1]]}, EN).rows == (("1",),)
    assert block_for(label, {"Paris": 0.7, "Rome": 0.3}, EN).labels == (("Paris", 0.7), ("Rome", 0.3))
    assert block_for(label, {"confidences": [{"label": "x", "confidence": 0.9}]}, EN).labels == (("x", 0.9),)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "text", "text": "Yo"}]}]
    assert block_for(chat, messages, EN).messages == (("user", "Hi"), ("assistant", "Yo"))
    cursor = PollCursor("run-1", 9, (LossPoint(1, 2.0, "train"), LossPoint(1, 2.2, "validation")))
    assert [e.kind for e in block_for(state, cursor, EN).events] == ["train", "validation"]
    assert block_for(state, "a token", EN) is None  # other states are not results
    for component, value in ((drawn_loss, "<svg></svg>"), (dropdown, "x"), (markdown, "  "), (table, None),
                             (table, pd.DataFrame()), (chat, [])):
        assert block_for(component, value, EN) is None


def test_a_step_leaves_out_what_the_page_hides_and_lists_what_was_asked():
    with gr.Blocks() as demo:
        with gr.Row(visible=False):
            trigger = gr.Textbox("Let's think.", label=t("lab.trigger"))
        question = gr.Textbox(label=t("lab.input"))
        strategy = gr.Radio([(t("strategy.zero_shot"), "zero_shot")], label=t("lab.strategy"))
        answer, hidden_table = gr.Textbox(label=t("lab.output")), gr.Dataframe(visible=False)
        button = gr.Button()
        button.click(lambda *a: None, [trigger, question, strategy], [answer, hidden_table])
    block_fn = next(iter(demo.fns.values()))
    shown = Shown(["positive", pd.DataFrame({"a": [1]})], [None, None])
    step, key = step_from_outputs("prompt_lab_run", block_fn, ["Let's think.", "I love it", "zero_shot"], shown, EN)
    assert key == "" and step.tab == "prompt_lab" and step.title == "a prompt and the model's answer"
    asked, output = step.blocks
    assert asked.label == "What was asked" and asked.columns == ("field", "value")
    assert asked.rows == (("Input", "I love it"), ("Strategy", "Zero-shot (instruction only)"))
    assert output.text == "positive"
    # The event made the table visible: then it is part of the step.
    step, _ = step_from_outputs("prompt_lab_run", block_fn, [], Shown(["positive", pd.DataFrame({"a": [1]})],
                                                                      [None, True]), EN)
    assert [b.kind for b in step.blocks] == ["text", "table"]
    walk_from_json(walk_json_bytes(_walk(step)))  # what is recorded reads back


def _walk(step):
    from playground.walks import Walk

    return Walk("t", "2026-12-03T10:00:00Z", (step,))


def test_a_poll_is_a_step_only_with_a_curve_and_replaces_itself_per_run():
    with gr.Blocks() as demo:
        status, cursor_state = gr.Markdown(), gr.State()
        button = gr.Button()
        button.click(lambda *a: None, None, [status, cursor_state])
    block_fn = next(iter(demo.fns.values()))
    none, _ = step_from_outputs("finetune_poll", block_fn, [], Shown(["queued", PollCursor("run-1")], [None, None]), EN)
    assert none is None
    cursor = PollCursor("run-1", 3, (LossPoint(1, 2.0, "train"),))
    step, key = step_from_outputs("finetune_poll", block_fn, [], Shown(["running", cursor], [None, None]), EN)
    assert key == "finetune_poll:run-1" and [b.kind for b in step.blocks] == ["markdown", "loss"]


# --------------------------------------------------------------------------- the hook


def recording_app():
    """A small app with two recorded API names (a plain handler with a soft twin, and a generator)."""
    calls = []

    def run(text, request: gr.Request):
        calls.append(text)
        return f"**{text.upper()}**"

    def stream(text, request: gr.Request):
        yield "", "starting"
        yield text[:2], gr.skip()
        yield text, gr.update(value="done")

    with gr.Blocks() as demo:
        box = gr.Textbox(label=t("lab.input"))
        out, status = gr.Markdown(), gr.Markdown()
        page_button, api_button, stream_button = gr.Button(), gr.Button(), gr.Button()
        page_button.click(soft(run, None, 1), box, out, api_name=False)
        api_button.click(run, box, out, api_name="architectures_run")
        stream_button.click(stream, box, [out, status], api_name="quantized_chat")
    return demo, calls


def request(session: str) -> gr.Request:
    return gr.Request(session_hash=session)


def test_the_hook_records_named_handlers_and_their_unnamed_twins_for_a_recording_session():
    demo, calls = recording_app()
    recorder = WalkRecorder()
    assert install_recording(demo, recorder) == ["architectures_run", "quantized_chat"]
    fns = [block_fn for block_fn in demo.fns.values() if block_fn.fn is not None]
    assert all(hasattr(block_fn.fn, "__wrapped__") for block_fn in fns)
    assert [block_fn.types_generator for block_fn in fns] == [False, False, True]  # Gradio still sees a generator
    recorder.set_recording("presenter", True)
    assert fns[0].fn("hello", request("presenter")) == "**HELLO**"  # the page's button, soft-wrapped
    assert fns[1].fn("api", request("presenter")) == "**API**"
    assert fns[1].fn("other", request("someone else")) == "**OTHER**"  # not recording: nothing kept
    assert list(fns[2].fn("streamed", request("presenter")))[-1] == ("streamed", {"__type__": "update",
                                                                                  "value": "done"})
    walk = recorder.take("presenter", "t")
    assert [step.endpoint for step in walk.steps] == ["architectures_run", "architectures_run", "quantized_chat"]
    assert walk.steps[0].blocks[-1].text == "**HELLO**"
    assert [b.text for b in walk.steps[2].blocks[1:]] == ["streamed", "done"]  # the last yield, skips kept
    assert walk.steps[2].blocks[0].rows == (("Input", "streamed"),)
    assert calls == ["hello", "api", "other"]


def test_a_failing_recording_never_costs_the_result(monkeypatch):
    import playground.ui.walk_recording as module

    demo, _ = recording_app()
    recorder = WalkRecorder()
    install_recording(demo, recorder)
    recorder.set_recording("presenter", True)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the recorder")

    monkeypatch.setattr(module, "step_from_outputs", broken)
    named = next(block_fn for block_fn in demo.fns.values() if block_fn.api_name == "architectures_run")
    assert named.fn("still here", request("presenter")) == "**STILL HERE**"
    assert recorder.status("presenter").steps == 0


def test_recorded_names_are_the_apps_and_only_presenter_mode_records(tmp_path, catalog):
    from playground.services import Services
    from playground.ui.app import build_app
    from tests.helpers import fake_hardware, offline_settings

    for mode, recorded in (("local", False), ("presenter", True)):
        services = Services.create(offline_settings(tmp_path / mode, PLAYGROUND_MODE=mode), fake_hardware(), catalog)
        try:
            demo = build_app(services)
        finally:
            services.close()
        names = {block_fn.api_name for block_fn in demo.fns.values()}
        assert set(RECORDED_EVENTS) <= names  # every recorded name is one of the app's events
        assert ("walk_record" in names) is recorded and ("walk_save" in names) is recorded
        assert {"replay_show", "replay_walks"} <= names  # the Replay tab is there in every mode
        wrapped = [b for b in demo.fns.values() if b.api_name in RECORDED_EVENTS and
                   getattr(b.fn, "__qualname__", "").startswith("recording.")]
        assert not wrapped  # wrappers keep the handler's own name (the event-queue test reads it)

