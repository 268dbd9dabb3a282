"""About tab: what the app teaches, the order to walk the tabs, the models with their licences and whether each
works offline now (else the command that fetches it), and this machine's engines.

The models table is ``python -m playground download --check``'s (:meth:`Downloader.check`), in the reader's
language, as a Markdown table so every cell wraps (nothing is cut off on a projector). "Check again" reads it
anew, e.g. after a download made while the app runs; it is also the API endpoint ``about_models``.
"""

from __future__ import annotations

import gradio as gr

from playground.backends.selection import choose_engine
from playground.models.catalog import FAMILIES
from playground.models.download import Downloader, OfflineStatus
from playground.services import Services
from playground.ui.i18n import Texts, t

MODEL_COLUMNS = ("model", "family", "parameters", "licence", "offline", "sources")


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def offline_status(services: Services) -> list[OfflineStatus]:
    """What works offline now: the same check as ``python -m playground download --check``."""
    resolver = services.engines.resolver
    return Downloader.from_settings(services.settings, services.catalog,
                                    hub_cache_dir=getattr(resolver, "hub_cache_dir", None)).check()


def model_rows(services: Services, texts: Texts) -> list[list[str]]:
    """One row per catalog model and the data set: name, family, size, licence, offline state, sources."""
    by_id = {spec.id: spec for spec in services.catalog.models}
    rows = []
    for status in offline_status(services):
        if status.ready:
            offline = texts("about.offline.yes", where=status.where)
        elif status.command:
            offline = texts("about.offline.fetch", command=status.command)
        else:
            offline = texts("about.offline.no", needs=status.needs)
        spec = by_id.get(status.id)
        if spec is None:  # the data set
            rows.append([status.name, texts("about.kind.dataset"), "", "", offline, "Hub knkarthick/dialogsum"])
            continue
        sources = "; ".join(s.describe() for s in spec.sources)
        rows.append([spec.name, spec.family, spec.parameters_label, spec.license, offline, sources])
    return rows


def models_markdown(services: Services, texts: Texts) -> str:
    headers = [texts(f"about.col.{column}") for column in MODEL_COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in model_rows(services, texts)]
    return "\n".join(lines)


def machine_markdown(services: Services, texts: Texts) -> str:
    """This machine and the engine each family runs on, and why, as sentences and a small table."""
    hardware = services.hardware
    try:
        served = services.settings.openai_served_models
    except Exception:  # a malformed list is reported where the server is used
        served = None
    lines = [texts("about.machine.summary", summary=hardware.summary), "",
             f"| {texts('about.col.family')} | {texts('about.col.engine')} | {texts('about.col.why')} |",
             "|---|---|---|"]
    for family in FAMILIES:
        specs = services.catalog.by_family(family)
        if not specs:
            continue
        # The family's engine for a model with a GGUF, when it has one (what a decoder on a CPU gets).
        spec = next((s for s in specs if s.has_gguf), specs[0])
        choice = choose_engine(spec, hardware, "auto", served or None)
        lines.append(f"| {_cell(family)} | {_cell(choice.engine)} | {_cell(choice.reason)} |")
    return "\n".join(lines)


def build(services: Services) -> None:
    gr.Markdown(t("about.body"), elem_id="about-body")
    gr.Markdown(t("about.models"), elem_classes=["section-title"])
    models = gr.Markdown(elem_id="about-models", elem_classes=["about-table"])
    gr.Markdown(t("about.offline_hint"), elem_id="about-offline-hint")
    again = gr.Button(t("about.check_again"), elem_id="about-check-again", size="sm")
    gr.Markdown(t("about.machine"), elem_classes=["section-title"])
    machine = gr.Markdown(elem_id="about-machine", elem_classes=["about-table"])

    def about_tables(request: gr.Request):
        texts = Texts.for_request(request)
        return models_markdown(services, texts), machine_markdown(services, texts)

    gr.on(None, about_tables, None, [models, machine], api_name=False, queue=False, show_progress="hidden")
    again.click(about_tables, None, [models, machine], api_name="about_models", queue=False)
