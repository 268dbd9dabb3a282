"""Build the Blocks app from ``Services`` and launch it.

The app is one ``gr.Blocks`` with a tab per module in ``playground.ui.tabs``.
The queue is on: each generating event has a concurrency limit, so a long
answer for one user waits for nobody else's page, and the rest wait in line.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from playground.services import Services
from playground.ui.i18n import make_i18n, t
from playground.ui.tabs import about, architectures, finetune, prompt_lab, quantized_cpu

ASSETS = Path(__file__).resolve().parents[2] / "assets"
TABS = (
    ("tab.architectures", "tab-architectures", architectures),
    ("tab.prompt_lab", "tab-prompt-lab", prompt_lab),
    ("tab.finetune", "tab-finetune", finetune),
    ("tab.quantized", "tab-quantized", quantized_cpu),
    ("tab.about", "tab-about", about),
)


def build_app(services: Services) -> gr.Blocks:
    mode_class = f"mode-{services.settings.mode}"
    with gr.Blocks(title="LLM Playground", analytics_enabled=False, fill_width=True) as demo:
        with gr.Column(elem_classes=["app-root", mode_class]):
            gr.Markdown(t("app.title"), elem_classes=["app-title"], elem_id="app-title")
            gr.Markdown(t("app.subtitle"), elem_classes=["app-subtitle"])
            with gr.Tabs(elem_id="main-tabs", selected="tab-quantized"):
                for key, tab_id, module in TABS:
                    with gr.Tab(t(key), id=tab_id, elem_id=tab_id):
                        module.build(services)
    demo.queue(default_concurrency_limit=services.settings.concurrency, max_size=256)
    return demo


def launch_options(services: Services) -> dict:
    """Keyword arguments for ``Blocks.launch`` (Gradio 6 takes theme, CSS and i18n here)."""
    css_files = [ASSETS / "style.css"]
    if services.settings.mode == "presenter":
        css_files.append(ASSETS / "presenter.css")
    return dict(
        server_name=services.settings.host,
        server_port=services.settings.port,
        share=services.settings.share,
        i18n=make_i18n(),
        theme=gr.themes.Soft(primary_hue="indigo", text_size="lg" if services.settings.mode == "presenter"
                             else "md"),
        css_paths=[str(p) for p in css_files if p.is_file()],
        footer_links=["api", "settings"],
        show_error=True,
    )


def launch(services: Services, **overrides) -> None:
    demo = build_app(services)
    options = launch_options(services)
    options.update(overrides)
    demo.launch(**options)
