"""Build the Blocks app from ``Services`` and launch it.

The app is one ``gr.Blocks`` with a tab per module in ``playground.ui.tabs``; the
browser's identity token and the model pickers that list a person's runs (Prompt Lab,
Quantized CPU) are shared between tabs and refreshed here.
The queue is on: generating events share one concurrency group ("generation") and their
generations wait for one of the app's generation slots (``services.generation_slots``, held only
while a model generates) or for a place in an engine's shared decode loop; every other event is
unqueued or in a group of its own, so rendering a template, loading a model and everything that does
not generate never wait behind someone's answer (tests/ui/test_event_queues.py). ``launch_options``
also gives Gradio a thread limit of its own (the generating handlers plus Gradio's default 40), so the
page, its files and the ``/health`` endpoint never queue for a thread behind generations.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from playground.services import Services
from playground.ui.health import health_route
from playground.ui.i18n import make_i18n, t
from playground.ui.identity import carry_panel, identity_state, welcome
from playground.ui.tabs import about, arena, architectures, finetune, prompt_lab, prompt_search, quantization, \
    quantized_cpu, replay
from playground.ui.tabs.finetune import FinetuneLinks
from playground.ui.walk_recording import install_recording, recording_panel
from playground.ui.widgets import generation_handlers
from playground.walks import BUNDLED_DIR, WalkRecorder, WalkStore

ASSETS = Path(__file__).resolve().parents[2] / "assets"
# Gradio's cache (uploads, and the links to served downloads) cleans itself: every hour, files older than a day
# go (a queued fine-tuning run still reads its upload when it starts), and all of them when the app stops.
CACHE_CLEANUP = (3600, 86400)
# Threads (and queue workers) Gradio keeps for everything that does not generate, on top of the generating
# handlers: Gradio's own default. Any other total than exactly 40 also gives Gradio's handlers a thread limiter
# of their own, apart from the pool that serves the page, its files and /health.
OTHER_HANDLERS = 40
TAB_IDS = {"architectures": "tab-architectures", "prompt_lab": "tab-prompt-lab", "ape": "tab-ape",
           "finetune": "tab-finetune",
           "quantized": "tab-quantized", "quantization": "tab-quantization", "about": "tab-about",
           "replay": "tab-replay", "arena": "tab-arena"}


def build_app(services: Services) -> gr.Blocks:
    mode_class = f"mode-{services.settings.mode}"
    presenting = services.settings.mode == "presenter"
    # Walks to replay: the bundled ones and each person's recordings; a presenter's page records its results.
    walks = WalkStore(BUNDLED_DIR, services.settings.data_dir / "walks")
    recorder = WalkRecorder() if presenting else None
    with gr.Blocks(title="LLM Playground", analytics_enabled=False, fill_width=True,
                   delete_cache=CACHE_CLEANUP) as demo:
        # Who is asking: an identity token the server signs, kept in this browser's local storage and issued
        # when the page opens (playground.ui.identity). Runs, the one-run rule and rate limits hang on it.
        owner = identity_state(services)
        with gr.Column(elem_classes=["app-root", mode_class]):
            gr.Markdown(t("app.title"), elem_classes=["app-title"], elem_id="app-title")
            gr.Markdown(t("app.subtitle"), elem_classes=["app-subtitle"])
            # The walk starts on its first step (the About tab's order): the app opens on Architectures.
            gr.Markdown(t("app.start_here"), elem_classes=["start-here"], elem_id="start-here")
            carry = carry_panel(services, owner)  # a personal code takes this browser's runs to another one
            if recorder is not None:
                recording_panel(services, owner, recorder, walks)
            # On a phone every tab stays in sight, on two lines, rather than behind a "..." menu.
            with gr.Tabs(elem_id="main-tabs", selected=TAB_IDS["architectures"], overflow_behavior="wrap") as tabs:
                with _tab("tab.architectures", TAB_IDS["architectures"]):
                    architectures.build(services)
                with _tab("tab.prompt_lab", TAB_IDS["prompt_lab"]) as lab_tab:
                    lab_models = prompt_lab.build(services, owner)
                with _tab("tab.ape", TAB_IDS["ape"]):
                    prompt_search.build(services, owner, lab_models.saved_templates)
                with _tab("tab.finetune", TAB_IDS["finetune"]):
                    finetune_runs = finetune.build(services, owner,
                                                   FinetuneLinks(tabs, TAB_IDS["prompt_lab"], lab_models))
                # After the Fine-tune tab, so the tabs the walks and tests count keep their places.
                with _tab("tab.arena", TAB_IDS["arena"]) as arena_tab:
                    arena_board = arena.build(services, owner)
                with _tab("tab.quantized", TAB_IDS["quantized"]) as quantized_tab:
                    quantized_models = quantized_cpu.build(services, owner)
                with _tab("tab.quantization", TAB_IDS["quantization"]):
                    quantization.build(services, owner)
                with _tab("tab.about", TAB_IDS["about"]):
                    about.build(services)
                with _tab("tab.replay", TAB_IDS["replay"]) as replay_tab:
                    replayed = replay.build(services, owner, walks)
        # The token first (a script gets one from /identity), then this person's fine-tuned models; runs
        # finish while the page is open, so opening the Prompt Lab or the Quantized CPU tab lists them again.
        loaded = demo.load(welcome(services), owner, owner, api_name="identity", show_progress="hidden",
                           concurrency_id="identity", concurrency_limit=8)
        loaded.then(lab_models.refresh, owner, lab_models.dropdowns, api_name=False, queue=False,
                    show_progress="hidden")
        loaded.then(quantized_models.refresh, owner, quantized_models.model, api_name=False, queue=False,
                    show_progress="hidden")
        loaded.then(quantized_models.show_facts, [quantized_models.model, owner], quantized_models.facts,
                    api_name=False, queue=False, show_progress="hidden")
        carry.then_refresh([(lab_models.refresh, owner, lab_models.dropdowns),
                            (quantized_models.refresh, owner, quantized_models.model), finetune_runs])
        lab_tab.select(lab_models.refresh, owner, lab_models.dropdowns, api_name=False, queue=False,
                       show_progress="hidden")
        # Also an endpoint: a script sees the models its token may chat with.
        quantized_tab.select(quantized_models.refresh, owner, quantized_models.model, api_name="quantized_models",
                             queue=False, show_progress="hidden")
        arena_tab.select(arena_board.refresh, None, arena_board.leaderboard, api_name=False, queue=False,
                         show_progress="hidden")  # the room's leaderboard as it is now
        # Opening the Replay tab lists the person's own saved walks after the bundled ones (also an endpoint).
        replay_tab.select(replayed.refresh, [owner, replayed.walk], replayed.walk, api_name="replay_walks",
                          queue=False, show_progress="hidden")
    if recorder is not None:
        install_recording(demo, recorder)  # after every event exists: it wraps the tabs' result handlers
    demo.queue(default_concurrency_limit=services.settings.concurrency, max_size=256)
    return demo


def _tab(key: str, tab_id: str) -> gr.Tab:
    return gr.Tab(t(key), id=tab_id, elem_id=tab_id)


def launch_options(services: Services) -> dict:
    """Keyword arguments for ``Blocks.launch`` (Gradio 6 takes theme, CSS and i18n here)."""
    css_files = [ASSETS / "style.css"]
    if services.settings.mode == "presenter":
        css_files.append(ASSETS / "presenter.css")
    return dict(
        # Routes of Gradio's FastAPI app ahead of its own: GET /health (playground.ui.health).
        app_kwargs={"routes": [health_route(services)]},
        max_threads=generation_handlers(services.settings) + OTHER_HANDLERS,
        server_name=services.settings.host,
        server_port=services.settings.port,
        share=services.settings.share,
        i18n=make_i18n(),
        theme=gr.themes.Soft(primary_hue="indigo", text_size="lg" if services.settings.mode == "presenter"
                             else "md"),
        css_paths=[str(p) for p in css_files if p.is_file()],
        footer_links=["api", "settings"],
        show_error=True,
        # Refused by Gradio's upload route before the file lands on disk (decimal MB, like the data limits).
        max_file_size=services.settings.max_upload_mb * 1_000_000,
    )


def launch(services: Services, **overrides) -> None:
    demo = build_app(services)
    options = launch_options(services)
    options.update(overrides)
    demo.launch(**options)
