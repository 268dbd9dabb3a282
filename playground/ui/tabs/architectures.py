"""Architectures tab: filled by a later release; for now it says in one line what it will hold."""

from __future__ import annotations

import gradio as gr

from playground.services import Services
from playground.ui.i18n import t


def build(services: Services) -> None:
    gr.Markdown(t("architectures.pending"), elem_id="architectures-pending")
