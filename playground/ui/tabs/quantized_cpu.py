"""Quantized CPU tab: chat with a GGUF model through llama.cpp, and compare it with full precision.

The tab shows what quantisation buys on a CPU: every answer reports time to
first token and tokens per second, the GGUF facts say what the file holds,
and a side-by-side run puts the fp32 and 4-bit answers, speeds and memory
next to each other. A person's own finished LoRA/QLoRA runs (★) are listed
after the catalog's models: the quantised base with the run's adapter GGUF.
The tab is layout and wiring over :class:`playground.backends.chat.QuantizedChat`,
with the asking person's models (``Services.models_for``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gradio as gr
import pandas as pd

from playground.backends.base import CancelFlag
from playground.backends.chat import ChatRequest, QuantizedChat, check_message
from playground.backends.compare import ComparisonStep, PrecisionComparison, PrecisionRun, speed_verdict
from playground.errors import PlaygroundError
from playground.services import Services
from playground.ui.csv_downloads import csv_download
from playground.ui.i18n import Texts, t
from playground.ui.identity import generating
from playground.ui.soft_errors import message_for, wire
from playground.ui.widgets import empty_table, enable_when_filled, generation_event_options, parameter_widgets, \
    params_from_widgets, queue_status, user_errors

CHAT_SLOT = "quantized-chat"
COMPARE_SLOT = "quantized-compare"
CHAT_TEMPERATURE = 0.0  # greedy: the same question gets the same answer, in the language it was asked in
# The GGUF facts' English names and their locale keys (a run's adapter rows keep their own names).
FACT_KEYS = {
    "name": "name", "base GGUF": "base_gguf", "architecture": "architecture", "quantisation": "quantisation",
    "tensor types": "tensor_types", "file size": "file_size", "parameters": "parameters",
    "bits per weight": "bits", "context length": "context_length", "layers": "layers", "hidden size": "hidden_size",
    "attention heads / KV heads": "heads", "vocabulary": "vocabulary", "chat template": "chat_template",
    "status": "status",
}


@dataclass(frozen=True)
class GgufModelPicker:
    """The tab's model list, which the app refreshes per person (page load, opening the tab): the catalog's
    GGUF models, then the person's runs that answer on llama.cpp."""

    model: gr.Dropdown
    facts: gr.Dataframe
    choices: Callable[[str], list[tuple[str, str]]]  # identity token -> (label, model id)
    facts_rows: Callable[[str, str], list[list[str]]]  # (model id, identity token) -> the facts table

    def refresh(self, token: str) -> dict:
        """An update of ``model``: the token's owner's choices, the value kept."""
        return gr.update(choices=self.choices(token or ""))

    def show_facts(self, model_id: str, token: str, request: gr.Request = None) -> pd.DataFrame:
        """The facts of the chosen model, for a page that just opened (the table starts empty, so building
        the app never reads a GGUF file: the first read of a large vocabulary takes seconds)."""
        return facts_frame(self.facts_rows(model_id, token or ""), Texts.for_request(request))


def facts_frame(rows: list[list[str]], texts: Texts) -> pd.DataFrame:
    """The facts table with its headers and fact names in the reader's language."""
    named = [[texts(f"quant.fact.{FACT_KEYS[name]}") if name in FACT_KEYS else name, value]
             for name, value in rows]
    return pd.DataFrame(named, columns=[texts("quant.col.fact"), texts("quant.col.value")])


def models_of(services: Services, token: str):
    """The models of the token's owner, for read-only uses (no valid token: the catalog's only)."""
    return services.models_for(services.identities.owner_of(token or ""))


def answer_stats(result, texts: Texts) -> str:
    if result is None:
        return ""
    finish = texts(f"status.{'cancelled' if result.finish_reason == 'cancelled' else 'done'}")
    # Time in line behind other people is shown apart: it is the room's, not the model's.
    queued = f" · {texts('stats.queued')}: {result.queued_s:.1f} s" if result.queued_s >= 0.05 else ""
    return (f"{texts('stats.ttft')}: **{result.time_to_first_token_s:.2f} s** · "
            f"**{result.tokens_per_s:.1f}** {texts('stats.speed')} · "
            f"{result.prompt_tokens} {texts('stats.prompt_tokens')} · "
            f"{result.completion_tokens} {texts('stats.completion_tokens')}{queued} · {finish} ({result.finish_reason})")


def run_stats(run: PrecisionRun, texts: Texts) -> str:
    lines = [f"**{run.precision}** · {texts('stats.engine')}: {run.engine}"]
    if run.weights_bytes:
        lines.append(f"{texts('stats.weights')}: **{run.weights_bytes / 1e6:,.0f} MB**")
    if run.result is not None:
        lines.append(answer_stats(run.result, texts))
    else:
        lines.append(f"_{texts('status.' + run.status)}_")
    return "  \n".join(lines)


def comparison_summary(comparison: PrecisionComparison, texts: Texts) -> str:
    """One sentence on speed and memory; a speed ratio under 1 reads as "2.5x slower", never "0.4x faster"."""
    verdict = speed_verdict(comparison.speedup, comparison.memory_ratio)
    if verdict is None:
        return ""
    kind, factor = verdict
    if kind == "faster":
        return texts("stats.speedup", speedup=factor, memory=comparison.memory_ratio)
    if kind == "slower":
        return texts("stats.slowdown", slowdown=factor, memory=comparison.memory_ratio)
    return texts("quant.same_speed", memory=comparison.memory_ratio)


def step_text(step: ComparisonStep, texts: Texts) -> str:
    """The progress bar's line for a comparison step: the side (1 of 2), the phase, the token count and the
    time left, in the reader's language."""
    side = texts(f"quant.side.{step.side}", index=step.index, total=2)
    if step.phase == "loading":
        detail = f" · {step.detail}" if step.detail else ""
        return f"{side}: {texts('quant.phase.loading')}{detail}"
    if step.phase == "done":
        return texts("status.done")
    line = f"{side}: {texts('quant.phase.generating', done=step.done, total=step.total)}"
    if step.eta_s is not None:
        line += f" · {texts('quant.eta', seconds=step.eta_s)}"
    return line


def _reporter(progress: gr.Progress):
    """Adapt the logic's progress(fraction, message) callbacks to Gradio's progress bar."""
    return lambda fraction, message: progress(fraction, desc=message)


def facts_or_status(services: Services, controller: QuantizedChat, model_id: str | None, token: str = "",
                    texts: Texts | None = None) -> list[list[str]]:
    """The facts of what llama.cpp loads for ``model_id`` (a run: its adapter and its base GGUF), or the reason
    they are missing as table rows."""
    if not model_id:
        return []
    try:
        return [[name, value] for name, value in controller.facts(model_id, models_of(services, token))]
    except PlaygroundError as exc:
        return [["status", line] for line in message_for(exc, services.settings, texts).splitlines()]


def build(services: Services, owner: gr.BrowserState) -> GgufModelPicker:
    """The tab; ``owner`` is the browser's identity token, which generations are counted against and which
    unlocks one's own runs. Returns the model list for the app to refresh per person."""
    settings = services.settings
    controller = QuantizedChat(slot=services.generation_slots, max_chars=settings.max_prompt_chars)

    def request_from_widgets(text, history, model_id, system_prompt, *param_values) -> ChatRequest:
        with user_errors(settings):
            params = params_from_widgets(*param_values, token_limit=settings.request_token_limit)
        return ChatRequest(model_id=model_id, message=text or "", history=tuple(history or ()),
                           system=system_prompt or "", params=params)
    choices = services.models_for().gguf_choices()  # the catalog's; a person's runs join after the page loads
    ids = [value for _, value in choices]
    default_model = settings.default_model if settings.default_model in ids else (ids[0] if ids else None)

    gr.Markdown(t("quant.intro"), elem_classes=["tab-intro"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            # Custom values: a run (run:<id>) is in its owner's list only; the logic refuses anyone else's.
            model = gr.Dropdown(choices, value=default_model, label=t("quant.model"), info=t("quant.model_info"),
                                allow_custom_value=True, elem_id="quant-model")
            chatbot = gr.Chatbot(label=t("quant.chatbot"), height=420, elem_id="quant-chatbot",
                                 buttons=["copy"], layout="bubble")
            message = gr.Textbox(label=t("quant.input"), placeholder=t("quant.input_placeholder"), lines=1,
                                 max_lines=6, elem_id="quant-input", autofocus=False)
            with gr.Row():
                send = gr.Button(t("quant.send"), variant="primary", elem_id="quant-send")
                stop = gr.Button(t("quant.stop"), variant="stop", elem_id="quant-stop")
                clear = gr.Button(t("quant.clear"), elem_id="quant-clear")
            stats = gr.Markdown(elem_id="quant-stats")
        with gr.Column(scale=2):
            with gr.Accordion(t("quant.params"), open=False):
                system = gr.Textbox(value="", label=t("quant.system"), info=t("quant.system_info"), lines=2,
                                    elem_id="quant-system")
                params = parameter_widgets(settings, "quant", max_new_tokens=256, temperature=CHAT_TEMPERATURE)
            # Empty until the page opens (the app fills it then, for the page's identity and language).
            facts = gr.Dataframe(empty_table(), label=t("quant.facts"), interactive=False,
                                 wrap=True, elem_id="quant-facts", column_widths=["40%", "60%"])

    gr.Markdown(t("quant.compare_title"), elem_classes=["section-title"])
    gr.Markdown(t("quant.compare_intro"))
    with gr.Row():
        compare_prompt = gr.Textbox(label=t("quant.compare_prompt"), value="", lines=2, scale=4,
                                    placeholder=t("quant.default_prompt"), elem_id="quant-compare-prompt")
        compare_button = gr.Button(t("quant.compare_run"), variant="primary", scale=1, elem_id="quant-compare-run")
    with gr.Row(equal_height=True):
        with gr.Column():
            full_text = gr.Textbox(label=t("quant.full_precision"), lines=6, interactive=False,
                                   elem_id="quant-compare-full")
            full_stats = gr.Markdown(elem_id="quant-compare-full-stats")
        with gr.Column():
            quant_text = gr.Textbox(label=t("quant.quantised"), lines=6, interactive=False,
                                    elem_id="quant-compare-quantised")
            quant_stats = gr.Markdown(elem_id="quant-compare-quantised-stats")
    with gr.Row(equal_height=True):
        compare_summary = gr.Markdown(elem_id="quant-compare-summary")
        compare_csv = gr.DownloadButton(t("quant.download_csv"), value=None, interactive=False, size="sm",
                                        scale=0, min_width=200, elem_id="quant-compare-csv")
    gr.Markdown(t("quant.compare_notice"), elem_classes=["notice"])

    # --- handlers: widget values in, logic called, widget values out ---------
    def show_facts(model_id: str, identity: str, request: gr.Request):
        texts = Texts.for_request(request)
        rows = facts_or_status(services, controller, model_id, identity, texts)
        if rows and rows[0][0] == "status":
            gr.Warning(rows[0][1])
        return facts_frame(rows, texts)

    def chat(text, history, model_id, system_prompt, max_new_tokens, temperature, top_p, top_k,
             repetition_penalty, seed, stop_text, identity, request: gr.Request,
             progress=gr.Progress(track_tqdm=True)):
        texts = Texts.for_request(request)
        with user_errors(settings):  # an empty or over-long message is refused before it counts as a generation
            check_message(text, settings.max_prompt_chars)
        chat_request = request_from_widgets(text, history, model_id, system_prompt, max_new_tokens, temperature,
                                            top_p, top_k, repetition_penalty, seed, stop_text)
        models = services.models_for(generating(services, identity, request).id)
        session = request.session_hash or "anonymous"
        stop_flag = CancelFlag()  # Stop reaches it while the request waits for a slot and while it generates
        services.generations.start(session, CHAT_SLOT, stop_flag)
        try:
            with user_errors(settings):
                for update in controller.reply(chat_request, models, stop_flag, progress=_reporter(progress)):
                    if update.cancelled_waiting:
                        yield update.history, "", f"_{texts('status.cancelled')}_"
                    elif update.result is not None:
                        yield update.history, "", answer_stats(update.result, texts)
                    elif update.queue_position is not None:  # waiting for its turn: say where it is in line
                        yield update.history, "", f"_{queue_status(update.queue_position, texts)}_"
                    else:
                        yield update.history, "", f"_{texts('status.generating')}_"
        finally:
            services.generations.finish(session, CHAT_SLOT, stop_flag)

    def stop_generation(request: gr.Request):
        services.generations.cancel(request.session_hash or "anonymous")

    def compare(prompt, model_id, system_prompt, max_new_tokens, temperature, top_p, top_k, repetition_penalty,
                seed, stop_text, identity, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        texts = Texts.for_request(request)
        models = services.models_for(generating(services, identity, request).id)
        compare_request = request_from_widgets(prompt or texts("quant.default_prompt"), [], model_id, system_prompt,
                                               max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed,
                                               stop_text)
        def show(step: ComparisonStep) -> None:
            progress(step.fraction, desc=step_text(step, texts))

        comparison, shown = None, ()
        with user_errors(settings):
            for comparison in controller.compare(compare_request, models, steps=show):
                shown = (comparison.full.text, run_stats(comparison.full, texts), comparison.quantised.text,
                         run_stats(comparison.quantised, texts), comparison_summary(comparison, texts))
                yield (*shown, gr.skip())
        if comparison is not None and comparison.quantised.result is not None:
            # The last message repeats the results with the CSV file: a script reads its result from it (the
            # page makes the button clickable after, enable_when_filled).
            yield (*shown, csv_download("fp32-vs-quantized.csv", comparison.csv()))

    # In the browser a bad input is one warning and the page as it was (playground.ui.soft_errors); scripts
    # calling the API names get the exception.
    limits = generation_event_options(settings)
    chat_inputs = [message, chatbot, model, system, *params.as_list(), owner]
    chat_outputs = [chatbot, message, stats]
    wire([send.click, message.submit], chat, chat_inputs, chat_outputs, settings=settings,
         api_name="quantized_chat", elem_id="quant-chat-api", show_progress_on=[chatbot], **limits)
    stop.click(stop_generation, None, None, api_name="quantized_stop", queue=False)
    clear.click(lambda: ([], "", ""), None, [chatbot, message, stats], api_name=False, queue=False)
    model.change(show_facts, [model, owner], facts, api_name="quantized_facts")
    compared = wire([compare_button.click], compare, [compare_prompt, model, system, *params.as_list(), owner],
                    [full_text, full_stats, quant_text, quant_stats, compare_summary, compare_csv], settings=settings,
                    api_name="quantized_compare", elem_id="quant-compare-api",
                    show_progress_on=[full_text, quant_text], **limits)
    enable_when_filled(compared, [compare_csv])
    return GgufModelPicker(model, facts, lambda token: models_of(services, token).gguf_choices(),
                           lambda model_id, token: facts_or_status(services, controller, model_id, token))
