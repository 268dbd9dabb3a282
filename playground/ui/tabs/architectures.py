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
import pandas as pd

from playground.architectures.lab import CompareOptions, ModelReport, ModelTask
from playground.architectures.tasks import DEFAULT_CANDIDATES, DEFAULT_INSTRUCTION, DEFAULT_LABELS, DEFAULT_TEXT
from playground.errors import PlaygroundError
from playground.models.catalog import FAMILIES
from playground.services import Services
from playground.ui.i18n import Texts, load_locales, t
from playground.ui.render import heatmap_html, md_escape, role_chips_html, table_html, token_chips_html
from playground.ui.soft_errors import message_for, wire
from playground.ui.widgets import empty_table, user_errors

SLUG = {"encoder": "enc", "encoder-decoder": "encdec", "decoder": "dec"}
FACT_COLUMNS = ("fact", "value")


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
    return [(s.picker_label(lab.available_offline(s.id)), s.id) for s in lab.models(family)]


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


def _known(key: str) -> bool:
    return key in load_locales()["en"]


def _or(texts: Texts, key: str, fallback: str, **values) -> str:
    """The key's text in the reader's language, or ``fallback`` (the logic's English) for an id without a key."""
    return texts(key, **values) if _known(key) else fallback


def facts_table(report: ModelReport, texts: Texts = Texts()) -> pd.DataFrame:
    """The model's facts, named in the reader's language; the class and the model type on rows of their own
    (one long "BertModel (bert)" value was cut off in a narrow column)."""
    f = report.facts
    headers = [texts(f"arch.col.{c}") for c in FACT_COLUMNS]
    if f is None:
        return pd.DataFrame([], columns=headers)
    layers = f"{f.layers}" + (f" + {texts('arch.fact.decoder_layers', count=f.decoder_layers)}"
                              if f.decoder_layers else "")
    objective = _or(texts, f"arch.objective.{f.objective}", f.objective_name)
    rows = [
        ["architecture", f.architecture],
        ["model_type", f.model_type],
        ["parameters", f"{f.total_parameters:,}"],
        ["embedding", f"{f.embedding_parameters:,}"],
        ["non_embedding", f"{f.non_embedding_parameters:,}"],
        ["layers", layers],
        ["hidden_size", str(f.hidden_size)],
        ["heads", f"{f.attention_heads} / {f.kv_heads}"],
        ["vocabulary", f"{f.vocab_size:,}"],
        ["context_length", f"{f.context_length:,}"],
        ["objective", objective],
        ["tokenizer", f.tokenizer_kind],
        ["tokenizer_class", f.tokenizer_class],
    ]
    named = [[texts(f"arch.fact.{key}"), value] for key, value in rows]
    named += [[texts("arch.fact.weights", precision=m.precision), f"{m.bytes / 1e6:,.0f} MB"] for m in f.memory]
    return pd.DataFrame(named, columns=headers)


def _note(note: str) -> str:
    return f"_{md_escape(note)}_" if note else ""


def task_outputs(report: ModelReport, texts: Texts = Texts()) -> tuple[dict, str]:
    """(label values for gr.Label, markdown) of the model's native task; the model's and the person's text is
    escaped, so special tokens (</s>) and stray ** show as they are."""
    notes = []
    if report.fill_mask is not None:
        r = report.fill_mask
        label = _distribution(r.predictions[0].candidates) if r.predictions else {}
        notes.append(f"**{texts('arch.read')}** {md_escape(r.masked_text)}  \n"
                     f"**{texts('arch.filled')}** {md_escape(r.filled_text)}")
        notes.append(_note(r.note))
        return label, "\n\n".join(n for n in notes if n)
    if report.zero_shot is not None or report.similarity is not None:
        label = {s.label: s.probability for s in report.zero_shot.labels} if report.zero_shot else {}
        if report.similarity is not None:
            rows = [[f"{s.rank}", f"{s.score:.2f}", s.text] for s in report.similarity.ranked]
            notes.append(table_html([texts("arch.col.rank"), texts("arch.col.cosine"), texts("arch.col.sentence")],
                                    rows, "arch-table", numeric=(0, 1)))
            notes.append(_note(report.similarity.note))
        return label, "\n\n".join(n for n in notes if n)
    if report.span_corruption is not None:
        r = report.span_corruption
        notes.append(f"**{texts('arch.encoder_reads')}** `{r.example.model_input}`  \n"
                     f"**{texts('arch.target')}** `{r.example.target}`  \n**{texts('arch.model_wrote')}** `{r.output}`")
        if r.fills:
            rows = [[f.sentinel, f.original, f.predicted if f.found else "—"] for f in r.fills]
            notes.append(table_html([texts("arch.col.sentinel"), texts("arch.col.hidden"), texts("arch.col.fill")],
                                    rows, "arch-table"))
        if report.text_to_text is not None:
            notes.append(f"**{md_escape(report.text_to_text.instruction)}** → {md_escape(report.text_to_text.output)}")
        notes.append(_note(r.note))
        return {}, "\n\n".join(n for n in notes if n)
    if report.next_token is not None:
        text = report.continuation.full_text if report.continuation else report.next_token.text
        return _distribution(report.next_token.candidates), f"**{texts('arch.text_so_far')}** {md_escape(text)}"
    return {}, ""


def _title(report: ModelReport, texts: Texts) -> str:
    family = _or(texts, f"arch.model.{SLUG.get(report.family, '')}", report.family)
    head = f"### {md_escape(report.name)}\n{family} · {report.seconds:.2f} s"
    if report.error:
        if report.error_kind == "unavailable":
            head += f"\n\n> {texts('arch.unavailable', model=md_escape(report.model_id))}"
        head += f"\n\n> {md_escape(report.error)}"
    return head


def objective_html(report: ModelReport, texts: Texts = Texts()) -> str:
    """The pre-training objective on the person's text: its name and explanation, the tokens coloured by role
    and a legend of the roles, all in the reader's language."""
    from playground.architectures.objectives import ROLES

    example = report.objective_example
    if example is None:
        return ""
    title = _or(texts, f"arch.objective.{example.objective}", example.title)
    description = _or(texts, f"arch.objective.{example.objective}.help", example.description)
    legend = {role: _or(texts, f"arch.role.{role}.help", text) for role, text in ROLES.items()}
    names = {role: _or(texts, f"arch.role.{role}", role) for role in ROLES}
    return (f"<p><b>{html.escape(title)}</b>: {html.escape(description)}</p>"
            + role_chips_html([(tok.text, tok.role, tok.target) for tok in example.tokens], legend, names))


def column_values(report: ModelReport | None, texts: Texts = Texts()) -> list:
    if report is None:
        return ["", facts_table(ModelReport("", "", "", ""), texts), {}, "", "", ""]
    label, task = task_outputs(report, texts)
    tokens = ""
    if report.tokens is not None:
        caption = texts("arch.token_count", count=report.tokens.count, kind=report.tokens.tokenizer_kind)
        tokens = token_chips_html([(p.label, p.id) for p in report.tokens.tokens],
                                  caption + (f" · {report.tokens.note}" if report.tokens.note else ""))
    return [_title(report, texts), facts_table(report, texts), label, task, tokens, objective_html(report, texts)]


def does_text(tasks: tuple[ModelTask, ...], texts: Texts = Texts()) -> str:
    """What each chosen model will do with the text (one line each), from the models actually chosen."""
    lines = []
    for task in tasks:
        family = _or(texts, f"arch.model.{SLUG.get(task.family, '')}", task.family)
        what = _or(texts, f"arch.does.{task.task}", task.task)
        where = "" if task.available else f" {texts('arch.does.download')}"
        lines.append(f"- **{md_escape(task.name)}** ({family}): {what}{where}")
    return "\n".join(lines)


def attention_outputs(services: Services, model_id: str, text: str, kind: str | None, layer: int, head: int,
                      texts: Texts = Texts()):
    lab = services.architectures
    maps = lab.attention(model_id, text)
    kind = kind if kind in maps.kinds else maps.kinds[0]
    layers = maps.layers(kind)
    heads = maps.heads(kind)
    layer = max(0, min(int(layer), layers - 1))
    head_index = None if int(head) < 0 else min(int(head), heads - 1)
    view = maps.view(kind, layer, head_index)
    which = texts("arch.heads_mean") if head_index is None else texts("arch.head_n", head=head_index)
    kind_name = _or(texts, f"arch.kind.{kind}", kind)
    heat = heatmap_html(view.rows, view.cols, view.weights,
                        title=f"{model_id} · {kind_name} · {texts('arch.layer_n', layer=layer)} · {which}",
                        caption=view.note or maps.note)
    patterns = lab.masks(model_id, text)
    mask_html = "".join(heatmap_html(m.rows, m.cols, m.values, title=_or(texts, f"arch.mask.{m.name}", f"{m.name} mask"),
                                     caption=_or(texts, f"arch.mask.{m.name}.help", m.description), binary=True)
                        for m in patterns.matrices)
    kinds = [(_or(texts, f"arch.kind.{k}", k), k) for k in maps.kinds]
    return (heat, mask_html, gr.update(choices=kinds, value=kind),
            gr.update(maximum=layers - 1, value=layer), gr.update(maximum=heads - 1, value=-1 if head_index is None
                                                                   else head_index))


def build(services: Services) -> None:
    settings = services.settings
    gr.Markdown(t("arch.intro"), elem_classes=["tab-intro"])
    text = gr.Textbox(value=DEFAULT_TEXT, label=t("arch.text"), info=t("arch.text.info"), lines=2,
                      elem_id="arch-text")
    # What each chosen model will do with the text, from the models chosen (filled when the page opens).
    does = gr.Markdown(elem_id="arch-does", elem_classes=["arch-does"])
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
                    facts = gr.Dataframe(empty_table(), interactive=False, wrap=True,
                                         column_widths=["48%", "52%"], elem_id=f"arch-{slug}-facts")
                gr.Markdown(t("arch.tokens"))
                tokens = gr.HTML(elem_id=f"arch-{slug}-tokens")
                gr.Markdown(t("arch.objective"))
                objective = gr.HTML(elem_id=f"arch-{slug}-objective")
            columns.append(FamilyColumn(family, model, title, facts, task_label, task_text, tokens, objective))
    gr.Markdown(t("arch.notice.families"), elem_classes=["notice"])

    gr.Markdown(t("arch.attention_title"), elem_classes=["section-title"])
    gr.Markdown(t("arch.attention_intro"))
    with gr.Row():
        attn_model = gr.Radio([], label=t("arch.attn_model"), elem_id="arch-attn-model")
        attn_kind = gr.Dropdown([(t("arch.kind.self"), "self")], value="self", label=t("arch.attn_kind"),
                                elem_id="arch-attn-kind")
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
                attention = attention_outputs(services, first, text_value, None, 0, -1, texts)
            except PlaygroundError as exc:
                attention = (f"<p>{html.escape(message_for(exc, settings, texts))}</p>", "", gr.update(),
                             gr.update(), gr.update())
        summary_text = texts("arch.summary", count=len(comparison.reports), seconds=comparison.seconds)
        return [summary_text, *values, gr.update(choices=[r.model_id for r in ok], value=first), *attention,
                text_value]

    def view_attention(model_id, text_value, kind, layer_value, head_value, request: gr.Request):
        if not model_id:
            return "", "", gr.update(), gr.update(), gr.update()
        with user_errors(settings):
            return attention_outputs(services, model_id, text_value, kind, layer_value, head_value,
                                     Texts.for_request(request))

    def step_decoder(dec_id, current, text_value, top_k_value, request: gr.Request):
        texts = Texts.for_request(request)
        with user_errors(settings):
            result = services.architectures.step(dec_id, current or text_value, top_k=int(top_k_value))
        added = texts("arch.added", token=md_escape(repr(result.chosen.token)),
                      percent=f"{result.chosen.probability:.0%}")
        return (_distribution(result.distribution),
                f"**{texts('arch.text_so_far')}** {md_escape(result.text)}  \n_{added}_", result.text)

    def continue_decoder(dec_id, current, text_value, tokens_value, temperature_value, seed_value,
                         request: gr.Request):
        texts = Texts.for_request(request)
        with user_errors(settings):
            result = services.architectures.continue_text(dec_id, current or text_value, int(tokens_value),
                                                          temperature=float(temperature_value),
                                                          seed=int(seed_value or 0))
        last = result.steps[-1].alternatives if result.steps else ()
        how = texts("arch.sampled" if result.sampled else "arch.greedy")
        done = texts("arch.continued", count=len(result.steps), how=how, finish=result.finish_reason)
        # The continuation in bold as HTML: Markdown's ** does not close after a space (" Paris**").
        return (_distribution(last), f"**{texts('arch.text_so_far')}** {md_escape(result.text)}"
                f"<strong>{md_escape(result.continuation)}</strong>  \n_{done}_", result.full_text)

    def show_does(enc_id, encdec_id, dec_id, request: gr.Request):
        return does_text(services.architectures.tasks_for([enc_id, encdec_id, dec_id]), Texts.for_request(request))

    column_outputs = []
    for column in columns:
        column_outputs += [column.title, column.facts, column.task_label, column.task_text, column.tokens,
                           column.objective]
    attention_widgets = [heatmap, mask_view, attn_kind, layer, head]
    model_inputs = [columns[0].model, columns[1].model, columns[2].model]
    # In the browser a bad input is one warning and the results as they were (playground.ui.soft_errors);
    # scripts calling the API names get the exception.
    busy = dict(concurrency_limit=settings.concurrency, concurrency_id="architectures")
    run_outputs = [summary, *column_outputs, attn_model, *attention_widgets, decoder_text]
    wire([run.click], run_tab, [text, *model_inputs, mask, instruction, candidates, labels, seed, top_k],
         run_outputs, settings=settings, api_name="architectures_run", elem_id="arch-run-api", **busy)
    attention_inputs = [attn_model, text, attn_kind, layer, head]
    wire([attn_model.change, attn_kind.input, layer.release, head.release], view_attention, attention_inputs,
         attention_widgets, settings=settings, api_name="architectures_attention", elem_id="arch-attention-api",
         show_progress="hidden")
    decoder_outputs = [columns[2].task_label, columns[2].task_text, decoder_text]
    wire([step.click], step_decoder, [columns[2].model, decoder_text, text, top_k], decoder_outputs,
         settings=settings, api_name="architectures_step", elem_id="arch-step-api", **busy)
    wire([continue_button.click], continue_decoder, [columns[2].model, decoder_text, text, continue_tokens,
                                                     continue_temperature, seed],
         decoder_outputs, settings=settings, api_name="architectures_continue", elem_id="arch-continue-api", **busy)
    gr.on(None, show_does, model_inputs, does, api_name=False, queue=False, show_progress="hidden")
