"""Requests that do not generate never wait behind generations: every event of the built app is classified.

Generating events share Gradio's "generation" concurrency group (sized by ``generation_handlers``); every other
event is unqueued (``queue=False``) or in a concurrency group that no generating event is in. Each handler is
listed below by module and qualified name, so a new event fails here until it is put on one side or the other.
"""

from __future__ import annotations

import pytest

from playground.ui.widgets import GENERATION_GROUP, generation_handlers
from tests.helpers import fake_hardware, offline_settings

GENERATING = {
    "playground.ui.tabs.quantized_cpu:build.<locals>.chat",  # Send and Enter
    "playground.ui.tabs.quantized_cpu:build.<locals>.compare",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.run",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.compare",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.evaluate",
    "playground.ui.tabs.prompt_search:PromptSearchHandlers.run",
    "playground.ui.tabs.quantization:build.<locals>.build_ladder",
    "playground.ui.tabs.arena:ArenaHandlers.match",  # two answers for a blind vote
    "playground.ui.tabs.arena:ArenaHandlers.judge",  # an evaluation, then the judge model on every answer
}
NOT_GENERATING = {
    # the page and identity
    "playground.ui.identity:welcome.<locals>.issue",
    "playground.ui.identity:carry_panel.<locals>.show_code",
    "playground.ui.identity:carry_panel.<locals>.use_code",
    "playground.ui.tabs.prompt_lab:ModelPickers.refresh",
    "playground.ui.tabs.quantized_cpu:GgufModelPicker.refresh",
    "playground.ui.tabs.quantized_cpu:GgufModelPicker.show_facts",
    # Architectures: its own small models, in its own group ("architectures")
    "playground.ui.tabs.architectures:build.<locals>.run_tab",
    "playground.ui.tabs.architectures:build.<locals>.view_attention",
    "playground.ui.tabs.architectures:build.<locals>.step_decoder",
    "playground.ui.tabs.architectures:build.<locals>.continue_decoder",
    "playground.ui.tabs.architectures:build.<locals>.show_does",  # what each chosen model does (text only)
    # Prompt Lab: controls, preview and token counts, templates, uploads, Stop
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.on_task",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.on_setup",  # a bundled setup fills the controls
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.on_strategy",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.on_template",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.save_template",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.reset_template",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.random_example",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.preview",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.check_run",  # the checks before Run, Compare and Evaluate
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.check_compare",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.check_evaluation",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.stop",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.stop_evaluation",
    "playground.ui.tabs.prompt_lab:PromptLabHandlers.upload_columns",
    # Prompt search: its controls, the check before Search, Cancel, and saving the winner
    "playground.ui.tabs.prompt_search:PromptSearchHandlers.on_task",
    "playground.ui.tabs.prompt_search:PromptSearchHandlers.check",
    "playground.ui.tabs.prompt_search:PromptSearchHandlers.stop",
    "playground.ui.tabs.prompt_search:PromptSearchHandlers.use_winner",
    # Fine-tune: training runs in child processes; the page polls them
    "playground.ui.tabs.finetune:build.<locals>.inspect_data",
    "playground.ui.tabs.finetune:build.<locals>.estimate",
    "playground.ui.tabs.finetune:build.<locals>.start_run",
    "playground.ui.tabs.finetune:build.<locals>.poll",
    "playground.ui.tabs.finetune:build.<locals>.cancel_run",
    "playground.ui.tabs.finetune:build.<locals>.download",
    "playground.ui.tabs.finetune:build.<locals>.merge_and_download",
    "playground.ui.tabs.finetune:build.<locals>.adapter_gguf_download",
    "playground.ui.tabs.finetune:build.<locals>.merged_gguf_download",
    "playground.ui.tabs.finetune:build.<locals>.open_in_prompt_lab",
    "playground.ui.tabs.finetune:build.<locals>.comparison_csv_download",  # CSV files of finished results
    "playground.ui.tabs.finetune:build.<locals>.runs_csv_download",
    "playground.ui.tabs.finetune:build.<locals>.runs_of_new_identity",  # after a carry code
    "playground.ui.tabs.finetune:build.<locals>.uploaded",  # an upload checked at once
    "playground.ui.tabs.finetune:build.<locals>.start_sweep",  # queues a sweep's runs: the worker trains them
    "playground.ui.tabs.finetune:build.<locals>.sweep_described",  # reads a preset file
    "playground.ui.tabs.finetune:build.<locals>.show_knobs",  # the chosen method's own settings
    # Quantized CPU and the ladder: facts, Stop, Clear, a kept ladder
    "playground.ui.tabs.quantized_cpu:build.<locals>.show_facts",
    "playground.ui.tabs.quantized_cpu:build.<locals>.stop_generation",
    "playground.ui.tabs.quantized_cpu:build.<locals>.<lambda>",  # Clear
    "playground.ui.tabs.quantization:build.<locals>.stop_build",
    "playground.ui.tabs.quantization:build.<locals>.show_kept",
    "playground.ui.tabs.about:build.<locals>.about_tables",  # the models table: what works offline now
    # Replay: a recorded walk, shown step by step (waits between frames, computes nothing)
    "playground.ui.tabs.replay:build.<locals>.show_first",
    "playground.ui.tabs.replay:build.<locals>.show",
    "playground.ui.tabs.replay:build.<locals>.go_next",
    "playground.ui.tabs.replay:build.<locals>.go_previous",
    "playground.ui.tabs.replay:build.<locals>.play_walk",
    "playground.ui.tabs.replay:build.<locals>.stop_replay",
    "playground.ui.tabs.replay:build.<locals>.delete_walk",
    "playground.ui.tabs.replay:build.<locals>.refresh",
    "gradio.renderable:Renderable.apply",  # the Replay tab's blocks (gr.render)
    # Arena: the controls, votes, the leaderboard, the export, the rubrics, Stop
    "playground.ui.tabs.arena:ArenaHandlers.on_task",
    "playground.ui.tabs.arena:ArenaHandlers.random_example",
    "playground.ui.tabs.arena:ArenaHandlers.stop",
    "playground.ui.tabs.arena:ArenaHandlers.vote",
    "playground.ui.tabs.arena:ArenaHandlers.vote_a",
    "playground.ui.tabs.arena:ArenaHandlers.vote_b",
    "playground.ui.tabs.arena:ArenaHandlers.vote_tie",
    "playground.ui.tabs.arena:ArenaHandlers.leaderboard",
    "playground.ui.tabs.arena:ArenaHandlers.export",
    "playground.ui.tabs.arena:ArenaHandlers.rubric_text",
    "playground.ui.tabs.arena:ArenaHandlers.on_judge_task",
    "playground.ui.widgets:_follow_values.<locals>.follow",  # shows or enables the results' files and tables
}


def handler_name(block_fn) -> str:
    fn = block_fn.fn
    return f"{fn.__module__}:{fn.__qualname__}"


@pytest.fixture(scope="module")
def built(tmp_path_factory, catalog):
    from playground.services import Services
    from playground.ui.app import build_app, launch_options

    services = Services.create(offline_settings(tmp_path_factory.mktemp("event-queues")), fake_hardware(), catalog)
    try:
        yield services, build_app(services), launch_options(services)
    finally:
        services.close()


def test_every_event_is_classified(built):
    _, demo, _ = built
    names = {handler_name(block_fn) for block_fn in demo.fns.values() if block_fn.fn is not None}
    assert not names - GENERATING - NOT_GENERATING, "classify the new handlers in this test"
    assert not (GENERATING | NOT_GENERATING) - names, "handlers listed here that the app no longer has"


def test_generating_events_share_the_generation_group_and_nothing_else_is_in_it(built):
    services, demo, _ = built
    groups_of_generating = set()
    for block_fn in demo.fns.values():
        name = handler_name(block_fn)
        if name in GENERATING:
            assert block_fn.queue and block_fn.concurrency_id == GENERATION_GROUP, name
            assert block_fn.concurrency_limit == generation_handlers(services.settings), name
            groups_of_generating.add(block_fn.concurrency_id)
    assert groups_of_generating == {GENERATION_GROUP}
    for block_fn in demo.fns.values():
        name = handler_name(block_fn)
        if name in NOT_GENERATING:
            assert not block_fn.queue or block_fn.concurrency_id not in groups_of_generating, name


def test_gradio_keeps_threads_and_queue_workers_for_what_does_not_generate(built):
    """Gradio's queue runs at most ``max_threads`` events at once, whatever their groups, and with the default
    40 its handlers share Starlette's 40 threads with the page and its files. Generations may take their whole
    group; 40 stay for the rest, and a limit other than 40 gives Gradio a thread limiter of its own."""
    services, _, options = built
    assert options["max_threads"] - generation_handlers(services.settings) >= 40
    assert options["max_threads"] != 40
