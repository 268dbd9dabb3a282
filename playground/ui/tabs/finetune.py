"""Fine-tune tab: filled by a later release; for now it says in one line what it will hold."""

from __future__ import annotations

import gradio as gr

from playground.services import Services
from playground.ui.i18n import t


def build(services: Services) -> None:
    gr.Markdown(t("finetune.pending"), elem_id="finetune-pending")
