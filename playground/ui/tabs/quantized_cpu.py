"""Quantized CPU tab: chat with a GGUF model through llama.cpp, and compare it with full precision.

The tab shows what quantisation buys on a CPU: every answer reports time to
first token and tokens per second, the GGUF facts say what the file holds,
and a side-by-side run puts the fp32 and 4-bit answers, speeds and memory
next to each other. The tab is layout and wiring over
:class:`playground.backends.chat.QuantizedChat`.
"""

from __future__ import annotations

import gradio as gr

from playground.backends.base import CancelFlag
from playground.backends.chat import ChatRequest, QuantizedChat
from playground.backends.compare import PrecisionComparison, PrecisionRun
from playground.errors import PlaygroundError
from playground.services import Services
from playground.ui.i18n import Texts, t
from playground.ui.identity import generating
from playground.ui.widgets import generation_event_options, parameter_widgets, params_from_widgets, user_errors, \
    user_message

CHAT_SLOT = "quantized-chat"
COMPARE_SLOT = "quantized-compare"


def _model_choices(services: Services) -> list[tuple[str, str]]:
    resolver = services.engines.resolver
    choices = []
    for spec in services.catalog.with_gguf():
        where = "offline" if resolver.is_available_offline(spec, "gguf") else "Hub"
        choices.append((f"{spec.name} · {spec.parameters_label} · {where}", spec.id))
    return choices


def facts_rows(services: Services, model_id: str) -> list[list[str]]:
    facts = services.engines.gguf_facts(model_id)
    return [[name, value] for name, value in facts.as_rows()]


def answer_stats(result, texts: Texts) -> str:
    if result is None:
        return ""
    finish = texts(f"status.{'cancelled' if result.finish_reason == 'cancelled' else 'done'}")
    return (f"{texts('stats.ttft')}: **{result.time_to_first_token_s:.2f} s** · "
            f"**{result.tokens_per_s:.1f}** {texts('stats.speed')} · "
            f"{result.prompt_tokens} {texts('stats.prompt_tokens')} · "
            f"{result.completion_tokens} {texts('stats.completion_tokens')} · {finish} ({result.finish_reason})")


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
    if comparison.speedup and comparison.memory_ratio:
        return texts("stats.speedup", speedup=comparison.speedup, memory=comparison.memory_ratio)
    return ""


def _reporter(progress: gr.Progress):
    """Adapt the logic's progress(fraction, message) callbacks to Gradio's progress bar."""
    return lambda fraction, message: progress(fraction, desc=message)


def facts_or_status(services: Services, model_id: str | None) -> list[list[str]]:
    """The GGUF facts of ``model_id``, or the reason they are missing as table rows."""
    if not model_id:
        return []
    try:
        return facts_rows(services, model_id)
    except PlaygroundError as exc:
        return [["status", line] for line in user_message(exc, services.settings).splitlines()]


def build(services: Services, owner: gr.BrowserState) -> None:
    """The tab; ``owner`` is the browser's identity token, which generations are counted against."""
    settings = services.settings
    controller = QuantizedChat(services.engines, slot=services.generation_slots.hold,
                               max_chars=settings.max_prompt_chars)

    def request_from_widgets(text, history, model_id, system_prompt, *param_values) -> ChatRequest:
        with user_errors(settings):
            params = params_from_widgets(*param_values, token_limit=settings.request_token_limit)
        return ChatRequest(model_id=model_id, message=text or "", history=tuple(history or ()),
                           system=system_prompt or "", params=params)
    choices = _model_choices(services)
    ids = [value for _, value in choices]
    default_model = settings.default_model if settings.default_model in ids else (ids[0] if ids else None)

    gr.Markdown(t("quant.intro"), elem_classes=["tab-intro"])
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            model = gr.Dropdown(choices, value=default_model, label=t("quant.model"), info=t("quant.model_info"),
                                elem_id="quant-model")
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
                params = parameter_widgets(settings, "quant", max_new_tokens=256)
            # A callable value is computed when a page opens, so reading the GGUF never delays start-up.
            facts = gr.Dataframe(value=lambda model_id: facts_or_status(services, model_id), inputs=[model],
                                 headers=["fact", "value"], label=t("quant.facts"), interactive=False,
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
    compare_summary = gr.Markdown(elem_id="quant-compare-summary")
    gr.Markdown(t("quant.compare_notice"), elem_classes=["notice"])

    # --- handlers: widget values in, logic called, widget values out ---------
    def show_facts(model_id: str):
        rows = facts_or_status(services, model_id)
        if rows and rows[0][0] == "status":
            gr.Warning(rows[0][1])
        return rows

    def chat(text, history, model_id, system_prompt, max_new_tokens, temperature, top_p, top_k,
             repetition_penalty, seed, stop_text, identity, request: gr.Request,
             progress=gr.Progress(track_tqdm=True)):
        texts = Texts.for_request(request)
        generating(services, identity, request)
        chat_request = request_from_widgets(text, history, model_id, system_prompt, max_new_tokens, temperature,
                                            top_p, top_k, repetition_penalty, seed, stop_text)
        session = request.session_hash or "anonymous"
        stop_flag = CancelFlag()  # Stop reaches it while the request waits for a slot and while it generates
        services.generations.start(session, CHAT_SLOT, stop_flag)
        try:
            with user_errors(settings):
                for update in controller.reply(chat_request, stop_flag, progress=_reporter(progress)):
                    if update.cancelled_waiting:
                        yield update.history, "", f"_{texts('status.cancelled')}_"
                    elif update.result is not None:
                        yield update.history, "", answer_stats(update.result, texts)
                    else:
                        yield update.history, "", f"_{texts('status.generating')}_"
        finally:
            services.generations.finish(session, CHAT_SLOT, stop_flag)

    def stop_generation(request: gr.Request):
        services.generations.cancel(request.session_hash or "anonymous")

    def compare(prompt, model_id, system_prompt, max_new_tokens, temperature, top_p, top_k, repetition_penalty,
                seed, stop_text, identity, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        texts = Texts.for_request(request)
        generating(services, identity, request)
        compare_request = request_from_widgets(prompt or texts("quant.default_prompt"), [], model_id, system_prompt,
                                               max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed,
                                               stop_text)
        with user_errors(settings):
            for comparison in controller.compare(compare_request, progress=_reporter(progress)):
                yield (comparison.full.text, run_stats(comparison.full, texts), comparison.quantised.text,
                       run_stats(comparison.quantised, texts), comparison_summary(comparison, texts))

    limits = generation_event_options(settings)
    chat_inputs = [message, chatbot, model, system, *params.as_list(), owner]
    chat_outputs = [chatbot, message, stats]
    send.click(chat, chat_inputs, chat_outputs, api_name="quantized_chat", show_progress_on=[chatbot], **limits)
    message.submit(chat, chat_inputs, chat_outputs, api_name=False, show_progress_on=[chatbot], **limits)
    stop.click(stop_generation, None, None, api_name="quantized_stop", queue=False)
    clear.click(lambda: ([], "", ""), None, [chatbot, message, stats], api_name=False, queue=False)
    model.change(show_facts, model, facts, api_name="quantized_facts")
    compare_button.click(compare, [compare_prompt, model, system, *params.as_list(), owner],
                         [full_text, full_stats, quant_text, quant_stats, compare_summary],
                         api_name="quantized_compare", show_progress_on=[full_text, quant_text], **limits)
