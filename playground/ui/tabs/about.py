"""About tab: what the app teaches, the order to walk the tabs, and the models with their licences."""

from __future__ import annotations

import gradio as gr

from playground.backends.selection import startup_line
from playground.services import Services
from playground.ui.i18n import t


def model_rows(services: Services) -> list[list[str]]:
    resolver = services.engines.resolver
    rows = []
    for spec in services.catalog.models:
        offline = resolver.is_available_offline(spec)
        sources = "; ".join(s.describe() for s in spec.sources)
        rows.append([spec.name, spec.family, spec.parameters_label, spec.license,
                     "✓ packaged" if offline else "Hub", sources])
    return rows


def build(services: Services) -> None:
    gr.Markdown(t("about.body"), elem_id="about-body")
    gr.Markdown(t("about.models"), elem_classes=["section-title"])
    gr.Dataframe(value=model_rows(services),
                 headers=["model", "family", "parameters", "licence", "offline", "sources"],
                 interactive=False, wrap=True, elem_id="about-models")
    gr.Markdown(t("about.machine"), elem_classes=["section-title"])
    gr.Markdown(f"`{startup_line(services.hardware)}`", elem_id="about-machine")
