"""Architectures tab: encoder, encoder-decoder and decoder side by side on the user's own text.

Each column runs one family's native task (fill-mask or similarity, span
corruption and text-to-text, next token), shows the model's facts, its
tokenisation and its pre-training objective on the same text; below, real
attention maps with the family's mask pattern next to them. The logic is
``playground.architectures``; this module only wires widgets to it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from playground.architectures.lab import CompareOptions, ModelReport
from playground.architectures.tasks import DEFAULT_CANDIDATES, DEFAULT_INSTRUCTION, DEFAULT_LABELS, DEFAULT_TEXT
from playground.errors import PlaygroundError
from playground.models.catalog import FAMILIES
from playground.services import Services
from playground.ui.i18n import Texts, t
from playground.ui.render import heatmap_html, role_chips_html, token_chips_html
from playground.ui.widgets import user_errors, user_message

SLUG = {"encoder": "enc", "encoder-decoder": "encdec", "decoder": "dec"}


@dataclass
class FamilyColumn:
    family: str
    model: gr.Dropdown
    title: gr.Markdown
    facts: gr.Dataframe
    task_label: gr.Label
    task_text: gr.Markdown
    tokens: gr.HTML
    objective: gr.HTML


def _choices(services: Services, family: str) -> list[tuple[str, str]]:
    lab = services.architectures
    return [(f"{s.name} · {s.parameters_label} · {'offline' if lab.available_offline(s.id) else 'Hub'}", s.id)
            for s in lab.models(family)]


def _default(services: Services, family: str) -> str | None:
    defaults = services.architectures.default_models()
    offline = [m for m in defaults if services.catalog.get(m).family == family]
    if offline:
        return offline[0]
    models = services.architectures.models(family)
    return models[0].id if models else None


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in (text or "").splitlines() if line.strip())


def _labels(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for line in _lines(text):
        label, _, description = line.partition(":")
        pairs.append((label.strip(), (description or label).strip()))
    return tuple(pairs)


def _mask_choice(text: str):
    text = (text or "").strip()
    if not text:
        return None
    return int(text) if text.isdigit() else text


def _token_key(text: str, used: dict) -> str:
    shown = repr(text)
    if shown in used:
        shown = f"{shown} #{len(used)}"
    used[shown] = True
    return shown


def _distribution(candidates) -> dict[str, float]:
    used: dict = {}
    return {_token_key(c.token, used): float(c.probability) for c in candidates}


def facts_table(report: ModelReport) -> list[list[str]]:
    f = report.facts
    if f is None:
        return []
    rows = [
        ["architecture", f"{f.architecture} ({f.model_type})"],
        ["parameters", f"{f.total_parameters:,}"],
        ["embedding / non-embedding", f"{f.embedding_parameters:,} / {f.non_embedding_parameters:,}"],
        ["layers", f"{f.layers}" + (f" + {f.decoder_layers} decoder" if f.decoder_layers else "")],
        ["hidden size", str(f.hidden_size)],
        ["attention heads / KV heads", f"{f.attention_heads} / {f.kv_heads}"],
        ["vocabulary", f"{f.vocab_size:,}"],
        ["context length", f"{f.context_length:,}"],
        ["objective", f.objective_name],
        ["tokenizer", f"{f.tokenizer_kind} ({f.tokenizer_class})"],
    ]
    rows += [[f"weights at {m.precision}", f"{m.bytes / 1e6:,.0f} MB"] for m in f.memory]
    return rows


def task_outputs(report: ModelReport) -> tuple[dict, str]:
    """(label values for gr.Label, markdown) of the model's native task."""
    notes = []
    if report.fill_mask is not None:
        r = report.fill_mask
        label = _distribution(r.predictions[0].candidates) if r.predictions else {}
        notes.append(f"**Read:** {r.masked_text}  \n**Filled:** {r.filled_text}")
        if r.note:
            notes.append(f"_{r.note}_")
        return label, "\n\n".join(notes)
    if report.zero_shot is not None or report.similarity is not None:
        label = {s.label: s.probability for s in report.zero_shot.labels} if report.zero_shot else {}
        if report.similarity is not None:
            rows = "\n".join(f"| {s.rank} | {s.score:+.2f} | {s.text} |" for s in
                             sorted(report.similarity.scores, key=lambda s: s.rank))
            notes.append(f"| rank | cosine | sentence |\n|---|---|---|\n{rows}")
        return label, "\n\n".join(notes)
    if report.span_corruption is not None:
        r = report.span_corruption
        fills = "\n".join(f"| `{f.sentinel}` | {f.original} | {f.predicted if f.found else '—'} |" for f in r.fills)
        notes.append(f"**Encoder reads:** `{r.example.model_input}`  \n**Target:** `{r.example.target}`  \n"
                     f"**Model wrote:** `{r.output}`")
        if fills:
            notes.append(f"| sentinel | hidden | model's fill |\n|---|---|---|\n{fills}")
        if report.text_to_text is not None:
            notes.append(f"**{report.text_to_text.instruction}** → {report.text_to_text.output}")
        return {}, "\n\n".join(notes)
    if report.next_token is not None:
        text = report.continuation.full_text if report.continuation else report.next_token.text
        return _distribution(report.next_token.candidates), f"**Text so far:** {text}"
    return {}, ""


def _title(report: ModelReport, texts: Texts) -> str:
    head = f"### {report.name}\n{report.family} · {report.seconds:.2f} s"
    if report.error:
        head += f"\n\n> {report.error}"
    return head


def column_values(report: ModelReport | None, texts: Texts) -> list:
    if report is None:
        return ["", [], {}, "", "", ""]
    label, task = task_outputs(report)
    tokens = ""
    if report.tokens is not None:
        tokens = token_chips_html([(p.label, p.id) for p in report.tokens.tokens],
                                  f"{report.tokens.count} tokens · {report.tokens.tokenizer_kind}"
                                  + (f" · {report.tokens.note}" if report.tokens.note else ""))
    objective = ""
    if report.objective_example is not None:
        from playground.architectures.objectives import ROLES

        example = report.objective_example
        objective = f"<p><b>{example.title}</b>: {example.description}</p>" + role_chips_html(
            [(tok.text, tok.role, tok.target) for tok in example.tokens], ROLES)
    return [_title(report, texts), facts_table(report), label, task, tokens, objective]


def attention_outputs(services: Services, model_id: str, text: str, kind: str | None, layer: int, head: int):
    lab = services.architectures
    maps = lab.attention(model_id, text)
    kind = kind if kind in maps.kinds else maps.kinds[0]
    layers = maps.layers(kind)
    heads = maps.heads(kind)
    layer = max(0, min(int(layer), layers - 1))
    head_index = None if int(head) < 0 else min(int(head), heads - 1)
    view = maps.view(kind, layer, head_index)
    which = "mean of the heads" if head_index is None else f"head {head_index}"
    heat = heatmap_html(view.rows, view.cols, view.weights, title=f"{model_id} · {kind} · layer {layer} · {which}",
                        caption=view.note or maps.note)
    patterns = lab.masks(model_id, text)
    mask_html = "".join(heatmap_html(m.rows, m.cols, m.values, title=f"{m.name} mask", caption=m.description,
                                     binary=True) for m in patterns.matrices)
    return (heat, mask_html, gr.update(choices=list(maps.kinds), value=kind),
            gr.update(maximum=layers - 1, value=layer), gr.update(maximum=heads - 1, value=-1 if head_index is None
                                                                   else head_index))


def build(services: Services) -> None:
    settings = services.settings
    gr.Markdown(t("arch.intro"), elem_classes=["tab-intro"])
    text = gr.Textbox(value=DEFAULT_TEXT, label=t("arch.text"), info=t("arch.text.help"), lines=2,
                      elem_id="arch-text")
    with gr.Accordion(t("arch.options"), open=False):
        with gr.Row():
            mask = gr.Textbox(label=t("arch.mask"), info=t("arch.mask.help"), elem_id="arch-mask")
            instruction = gr.Textbox(value=DEFAULT_INSTRUCTION, label=t("arch.instruction"),
                                     info=t("arch.instruction.help"), elem_id="arch-instruction")
        with gr.Row():
            candidates = gr.Textbox(value="\n".join(DEFAULT_CANDIDATES), lines=4, label=t("arch.candidates"),
                                    info=t("arch.candidates.help"), elem_id="arch-candidates")
            labels = gr.Textbox(value="\n".join(f"{a}: {b}" for a, b in DEFAULT_LABELS), lines=4,
                                label=t("arch.labels"), info=t("arch.labels.help"), elem_id="arch-labels")
        with gr.Row():
            seed = gr.Number(value=0, precision=0, label=t("arch.seed"), info=t("arch.seed.help"), elem_id="arch-seed")
            top_k = gr.Slider(1, 20, value=8, step=1, label=t("arch.top_k"), info=t("arch.top_k.help"),
                              elem_id="arch-top-k")
    run = gr.Button(t("arch.run"), variant="primary", elem_id="arch-run")
    summary = gr.Markdown(elem_id="arch-summary")

    columns: list[FamilyColumn] = []
    with gr.Row(equal_height=False):
        for family in FAMILIES:
            slug = SLUG[family]
            with gr.Column(elem_classes=["family-card"]):
                model = gr.Dropdown(_choices(services, family), value=_default(services, family),
                                    label=t(f"arch.model.{slug}"), elem_id=f"arch-{slug}-model")
                title = gr.Markdown(elem_id=f"arch-{slug}-title")
                task_label = gr.Label(num_top_classes=8, label=t(f"arch.task.{slug}"), elem_id=f"arch-{slug}-label")
                task_text = gr.Markdown(elem_id=f"arch-{slug}-task")
                if family == "decoder":
                    with gr.Row():
                        step = gr.Button(t("arch.step"), elem_id="arch-step", size="sm")
                        continue_button = gr.Button(t("arch.continue"), elem_id="arch-continue", size="sm")
                    with gr.Row():
                        continue_tokens = gr.Slider(1, 64, value=16, step=1, label=t("arch.continue_tokens"),
                                                    elem_id="arch-continue-tokens")
                        continue_temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05,
                                                         label=t("param.temperature"),
                                                         info=t("param.temperature.help"),
                                                         elem_id="arch-continue-temperature")
                with gr.Accordion(t("arch.facts"), open=False):
                    facts = gr.Dataframe(headers=["fact", "value"], interactive=False, wrap=True,
                                         elem_id=f"arch-{slug}-facts")
                gr.Markdown(t("arch.tokens"))
                tokens = gr.HTML(elem_id=f"arch-{slug}-tokens")
                gr.Markdown(t("arch.objective"))
                objective = gr.HTML(elem_id=f"arch-{slug}-objective")
            columns.append(FamilyColumn(family, model, title, facts, task_label, task_text, tokens, objective))
    gr.Markdown(t("arch.notice.columns"), elem_classes=["notice"])

    gr.Markdown(t("arch.attention_title"), elem_classes=["section-title"])
    gr.Markdown(t("arch.attention_intro"))
    with gr.Row():
        attn_model = gr.Radio([], label=t("arch.attn_model"), elem_id="arch-attn-model")
        attn_kind = gr.Dropdown(["self"], value="self", label=t("arch.attn_kind"), elem_id="arch-attn-kind")
        layer = gr.Slider(0, 1, value=0, step=1, label=t("arch.layer"), elem_id="arch-attn-layer")
        head = gr.Slider(-1, 1, value=-1, step=1, label=t("arch.head"), info=t("arch.head.help"),
                         elem_id="arch-attn-head")
    with gr.Row(equal_height=False):
        heatmap = gr.HTML(elem_id="arch-attn-heatmap")
        mask_view = gr.HTML(elem_id="arch-attn-mask")
    gr.Markdown(t("arch.notice.attention"), elem_classes=["notice"])
    decoder_text = gr.State("")

    # --- handlers -------------------------------------------------------------------------
    def run_tab(text_value, enc_id, encdec_id, dec_id, mask_value, instruction_value, candidates_value,
                labels_value, seed_value, top_k_value, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        texts = Texts.for_request(request)
        with user_errors(settings):
            options = CompareOptions(top_k=int(top_k_value), candidates=_lines(candidates_value) or DEFAULT_CANDIDATES,
                                     labels=_labels(labels_value) or DEFAULT_LABELS, mask=_mask_choice(mask_value),
                                     instruction=instruction_value or "", seed=int(seed_value or 0))
            ids = [m for m in (enc_id, encdec_id, dec_id) if m]
            comparison = services.architectures.run_all(
                text_value, ids, options, progress=lambda f, m: progress(f, desc=m))
        by_family = {r.family: r for r in comparison.reports}
        values = []
        for column in columns:
            values += column_values(by_family.get(column.family), texts)
        ok = [r for r in comparison.reports if r.ok or r.facts is not None]
        first = ok[0].model_id if ok else None
        attention = ("", "", gr.update(), gr.update(), gr.update())
        if first:
            try:
                attention = attention_outputs(services, first, text_value, None, 0, -1)
            except PlaygroundError as exc:
                attention = (f"<p>{html.escape(user_message(exc, settings))}</p>", "", gr.update(), gr.update(),
                             gr.update())
        summary_text = f"{len(comparison.reports)} models · {comparison.seconds:.2f} s"
        return [summary_text, *values, gr.update(choices=[r.model_id for r in ok], value=first), *attention,
                text_value]

    def view_attention(model_id, text_value, kind, layer_value, head_value):
        if not model_id:
            return "", "", gr.update(), gr.update(), gr.update()
        with user_errors(settings):
            return attention_outputs(services, model_id, text_value, kind, layer_value, head_value)

    def step_decoder(dec_id, current, text_value, top_k_value):
        with user_errors(settings):
            result = services.architectures.step(dec_id, current or text_value, top_k=int(top_k_value))
        chosen = repr(result.chosen.token)
        return (_distribution(result.distribution),
                f"**Text so far:** {result.text}  \n_added {chosen} ({result.chosen.probability:.0%})_", result.text)

    def continue_decoder(dec_id, current, text_value, tokens_value, temperature_value, seed_value):
        with user_errors(settings):
            result = services.architectures.continue_text(dec_id, current or text_value, int(tokens_value),
                                                          temperature=float(temperature_value),
                                                          seed=int(seed_value or 0))
        last = result.steps[-1].alternatives if result.steps else ()
        how = "sampled" if result.sampled else "greedy"
        return (_distribution(last), f"**Text so far:** {result.text}**{result.continuation}**  \n"
                f"_{len(result.steps)} tokens, {how}, finish: {result.finish_reason}_", result.full_text)

    column_outputs = []
    for column in columns:
        column_outputs += [column.title, column.facts, column.task_label, column.task_text, column.tokens,
                           column.objective]
    attention_widgets = [heatmap, mask_view, attn_kind, layer, head]
    run.click(run_tab, [text, columns[0].model, columns[1].model, columns[2].model, mask, instruction, candidates,
                        labels, seed, top_k],
              [summary, *column_outputs, attn_model, *attention_widgets, decoder_text],
              api_name="architectures_run", concurrency_limit=settings.concurrency, concurrency_id="architectures")
    attention_inputs = [attn_model, text, attn_kind, layer, head]
    attn_model.change(view_attention, attention_inputs, attention_widgets, api_name="architectures_attention",
                      show_progress="hidden")
    for trigger in (attn_kind.input, layer.release, head.release):
        trigger(view_attention, attention_inputs, attention_widgets, api_name=False, show_progress="hidden")
    step.click(step_decoder, [columns[2].model, decoder_text, text, top_k],
               [columns[2].task_label, columns[2].task_text, decoder_text], api_name="architectures_step",
               concurrency_limit=settings.concurrency, concurrency_id="architectures")
    continue_button.click(continue_decoder, [columns[2].model, decoder_text, text, continue_tokens,
                                             continue_temperature, seed],
                          [columns[2].task_label, columns[2].task_text, decoder_text],
                          api_name="architectures_continue", concurrency_limit=settings.concurrency,
                          concurrency_id="architectures")
