"""Every text a person reads exists in English, Brazilian Portuguese and French.

(a) the three locale files have the same keys and placeholders, and a translation is never the English text
    left in place (except the few names in SAME_IN_EVERY_LANGUAGE);
(b) every visible text of every component of the built app is a locale key, or has no word to translate;
(c) every key the code asks for (``t("...")``, ``texts("...")``, ``.keyed("...")``) is in en.yaml;
(d) Portuguese is Brazilian Portuguese and French says "tokens".
"""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType

import pytest

from playground.ui.i18n import LANGUAGES, load_locales

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"{(\w+)")

# (a) Values a translation may keep as they are in English: product, library and metric names, symbols and units
# that read the same in Portuguese and French, and cognates spelled identically. Keep it short: anything else
# that equals its English text is a line someone forgot to translate.
SAME_IN_EVERY_LANGUAGE = frozenset({
    "K7QM-3XRD-P9",  # the example personal code in the paste box
    "LLM Playground", "Top-p", "Top-k", "tokens/s", "total", "{method}", "base · {engine}",
    "PLAYGROUND_MODELS_DIR", "Hugging Face Hub",
    # the course's own terms, used as they are in Brazilian and French classes
    "zero-shot", "few-shot", "prompt", "Prompt", "Tokens", "{count} tokens · {kind}", "loss", "loss {loss:.3f}",
    "base", "max_length = {max_length}", "LoRA", "QLoRA",
    # PEFT methods, named as their papers and peft name them
    "DoRA", "rsLoRA", "IA3", "prompt tuning", "prefix tuning",
    # metric names, symbols and units
    "ROUGE-1 (%)", "ROUGE-2 (%)", "ROUGE-L (%)", "#", "{minutes} min {seconds:02d} s", "{seconds} s",
})
SAME_IN = MappingProxyType({
    # Brazilian courses say encoder/decoder (the about text and the Architectures tab use them as terms).
    "pt": SAME_IN_EVERY_LANGUAGE | {"Encoder", "Encoder-decoder", "Decoder",
                                    # loanwords Brazilian Portuguese uses as they are
                                    "Offline", "**Hardware:** {summary}.", "Status",
                                    "Tutor"},
    # French words spelled as in English.
    "fr": SAME_IN_EVERY_LANGUAGE | {"Architectures", "Attention", "Scores", "gradients", "activations", "type",
                                    "Licence", "Sources", "architecture", "validation",
                                    "tokenizer"},
})


def _placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def test_every_key_is_in_every_language_with_the_same_placeholders():
    locales = load_locales()
    problems = []
    for lang in LANGUAGES:
        if lang == "en":
            continue
        for key, english in locales["en"].items():
            if key not in locales[lang]:
                problems.append(f"{lang}: missing {key}")
            elif _placeholders(locales[lang][key]) != _placeholders(english):
                problems.append(f"{lang}: {key} has {sorted(_placeholders(locales[lang][key]))}, "
                                f"English has {sorted(_placeholders(english))}")
        problems += [f"{lang}: {key} is not in en.yaml" for key in set(locales[lang]) - set(locales["en"])]
    assert not problems, "\n".join(problems)


def test_no_translation_is_the_english_text_left_in_place():
    locales = load_locales()
    same = [f"{lang}: {key} = {text!r}" for lang in SAME_IN for key, text in locales["en"].items()
            if locales[lang].get(key, "").strip() == text.strip() and text.strip() not in SAME_IN[lang]]
    assert not same, "untranslated (translate them, or add a name to SAME_IN with a reason):\n" + "\n".join(same)


# --------------------------------------------------------------------------- (b) the built app

# Words that are names, not text to translate: libraries, formats, units, hardware and metric names. The catalog's
# own model names, ids and licences are added at run time (see _names).
NAMES = frozenset(w.lower() for w in """
    LLM Playground llama cpp transformers openai OpenAI auto Hub Hugging Face GGUF GGML safetensors LoRA QLoRA
    IA3 DPO ROUGE BLEU KL CPU GPU CUDA RAM GiB MiB MB GB KB JSONL CSV YAML Jinja Ollama BERT FLAN T5 GPT Qwen
    SmolLM2 Gemma MiniLM AdamW NF4 PyTorch bf16 fp16 fp32 zip id
""".split())
# Where Gradio 6 (6.31, checked in Chromium) shows a locale key as the raw text "__i18n__{...}" instead of translating
# it: a Dataframe's headers and a plot's axis titles. Those texts must be translated on the server (Texts), for
# instance headers or titles set when the page loads, or left free of words at build time.
RAW_KEY_PLACES = frozenset({"header", "x_title", "y_title"})
I18N_PART = re.compile(r"__i18n__\{.*?\"key\": \"([^\"]+)\"\}")
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")  # letters only; ids with digits, _, -, . are names


def _names(services) -> set[str]:
    names = set(NAMES)
    for spec in services.catalog.models:
        for text in (spec.id, spec.name, getattr(spec, "license", "")):
            names |= {w.lower() for w in WORD.findall(str(text))}
    return names


def _keys_in(value) -> tuple[list[str], str]:
    """(locale keys, the rest of the text) of a component's text: an I18nData, or a string where Gradio wrote
    its keys as ``__i18n__{...}``."""
    from gradio.i18n import I18nData

    if isinstance(value, I18nData):
        return [value.key], ""
    text = str(value)
    return I18N_PART.findall(text), I18N_PART.sub(" ", text)


def _words(text: str, names: set[str]) -> list[str]:
    """The words of ``text`` a translator would translate: runs of two letters or more that are not names and
    not part of an identifier (``max_new_tokens``, ``Q4_K_M``, ``summarize-dialogue``, ``llama.cpp``)."""
    words = []
    for token in re.split(r"\s+", re.sub(r"`[^`]*`|https?://\S+", " ", text)):
        token = token.strip("()[]{}<>,;:!?\"'«»“”*·—–…")
        if not token or re.search(r"[\d_./\\=-]", token):
            continue
        words += [w for w in WORD.findall(token) if len(w) > 1 and w.lower() not in names]
    return words


def _texts_of(block) -> list[tuple[str, object]]:
    """(what, value) of every text ``block`` shows: its label, info, placeholder, choice labels, headers, a
    plot's titles, and the value of a Markdown, HTML or button."""
    import gradio as gr

    shown = []
    if getattr(block, "show_label", True) is not False or isinstance(block, (gr.Tab, gr.Accordion)):
        shown.append(("label", getattr(block, "label", None)))
    shown += [("info", getattr(block, "info", None)), ("placeholder", getattr(block, "placeholder", None))]
    if isinstance(block, (gr.Markdown, gr.HTML, gr.Button, gr.DownloadButton)):
        shown.append(("value", block.value))
    if isinstance(block, (gr.LinePlot, gr.BarPlot, gr.ScatterPlot)):
        shown.append(("title", getattr(block, "title", None)))
        for axis in ("x", "y"):  # without a title (None or ""), an axis is titled with its column's name
            title = getattr(block, f"{axis}_title", None)
            shown.append((f"{axis}_title", title if title not in (None, "") else getattr(block, axis, None)))
    for choice in getattr(block, "choices", None) or []:
        shown.append(("choice", choice[0] if isinstance(choice, (tuple, list)) else choice))
    if isinstance(block, gr.Dataframe):
        shown += [("header", header) for header in (getattr(block, "headers", None) or [])]
    return [(what, value) for what, value in shown if value not in (None, "") and not callable(value)]


def _path(block, parents: list) -> str:
    def name(b):
        ident = getattr(b, "elem_id", None)
        label = getattr(b, "label", None)
        label = _keys_in(label)[0][0] if label is not None and _keys_in(label)[0] else label
        return type(b).__name__ + (f"#{ident}" if ident else f"[{label}]" if isinstance(label, str) else "")
    return " > ".join(name(b) for b in [*parents, block])


def app_offenders(demo, services) -> list[str]:
    """'path: what = text' of every visible text in ``demo`` that is neither a locale key nor free of words."""
    english = load_locales()["en"]
    names = _names(services)
    offenders = []

    def walk(block, parents):
        if getattr(block, "visible", True) is False:  # never shown (an API-only button): nothing to read
            return
        for what, value in _texts_of(block):
            keys, rest = _keys_in(value)
            if keys and what in RAW_KEY_PLACES:
                offenders.append(f"{_path(block, parents)}: {what} is the locale key {keys[0]!r}, which Gradio shows "
                                 f"raw here: translate it on the server (Texts)")
                continue
            offenders.extend(f"{_path(block, parents)}: {what} key {key!r} is not in en.yaml"
                             for key in keys if key not in english)
            if _words(rest, names):
                offenders.append(f"{_path(block, parents)}: {what} = {str(value)[:90]!r}")
        for child in getattr(block, "children", None) or []:
            walk(child, [*parents, block] if block is not demo else parents)

    walk(demo, [])
    return offenders


def test_the_word_filter_tells_names_from_text():
    names = set(NAMES) | {"smollm2", "instruct"}
    for text in ("F32", "Q4_K_M", "SmolLM2-135M-Instruct · 135M · Hub", "llama.cpp", "max_new_tokens", "lora_r",
                 "#", "ROUGE-L", "summarize-dialogue", "`x = y`", "★ run-3", "1e-4"):
        assert _words(text, names) == [], text
    assert _words("Sentiment classification", names) == ["Sentiment", "classification"]
    assert _words("fact", names) == ["fact"]
    _, rest = _keys_in('__i18n__{"__type__": "translation_metadata", "key": "lab.run"}')
    assert _words(rest, names) == []


def test_the_walk_finds_every_kind_of_english_text():
    """The app-wide test below is not strict while the tabs are being translated: this one keeps its walk honest."""
    from types import SimpleNamespace

    import gradio as gr

    from playground.ui.i18n import t

    with gr.Blocks() as demo:
        with gr.Tab(t("tab.about")):
            with gr.Accordion("More options"):
                gr.Textbox(label=t("lab.input"), info="What the model reads", placeholder=t("quant.input_placeholder"))
                gr.Radio(choices=[(t("lab.off"), "off"), ("greedy decoding", "greedy"), ("Q4_K_M", "q4")],
                         label=t("lab.strategy"))
            gr.Markdown(t("about.models"))
            gr.Markdown("## Hello room")
            gr.Button(t("lab.run"))
            gr.Button("Run it")
            gr.Button("Only for scripts", visible=False)  # never shown
            gr.Dataframe(headers=["#", "score", "ROUGE-L"], label=t("lab.eval_summary"))
            gr.HTML("<b>F32</b> 1.0×")
            gr.Number(label="seed", show_label=False)  # not shown
            gr.Textbox(label="max_new_tokens", value="Any text a person typed is content, not a label")
            gr.BarPlot(x="a", y="score", x_title="strategy", y_title="%", label=t("lab.eval_chart"))
            gr.LinePlot(x="step", y="b", x_title=t("lab.eval_chart"), y_title="%", title=t("lab.run"))
            gr.BarPlot(x="model", y="F32", title=t("lab.run"))  # untitled axes are titled with the column names
            gr.Dataframe(headers=[t("facts.field"), "F32"])
    found = app_offenders(demo, SimpleNamespace(catalog=SimpleNamespace(models=[])))
    expected = ["Accordion[More options]: label", "info = 'What the model reads'", "choice = 'greedy decoding'",
                "value = '## Hello room'", "value = 'Run it'", "header = 'score'",
                "x_title = 'strategy'", "x_title = 'model'", "x_title is the locale key", "header is the locale key"]
    for part in expected:
        assert sum(part in line for line in found) == 1, (part, found)
    assert len(found) == len(expected), found
    assert "Tab[tab.about] > Accordion[More options]" in found[0]


@pytest.fixture(scope="module")
def built_app(tmp_path_factory):
    from playground.models.catalog import Catalog
    from playground.services import Services
    from playground.ui.app import build_app
    from tests.helpers import fake_hardware, offline_settings

    services = Services.create(offline_settings(tmp_path_factory.mktemp("i18n-app")), fake_hardware(),
                               Catalog.load())
    try:
        yield build_app(services), services
    finally:
        services.close()


def test_every_visible_text_of_the_app_is_translatable(built_app):
    demo, services = built_app
    offenders = app_offenders(demo, services)
    assert not offenders, f"{len(offenders)} texts shown without a locale key:\n" + "\n".join(offenders)


# --------------------------------------------------------------------------- (c) keys the code asks for

KEY_CALL = re.compile(r"""(?:\bt|\btexts|\bTexts\([^()]*\)|\.keyed)\(\s*(f?)["']([^"']+)["']""")


def _keys_asked_for() -> list[tuple[str, str, bool]]:
    """(file, key, is an f-string) of every literal key in the package's code."""
    found = []
    for path in sorted((ROOT / "playground").rglob("*.py")):
        for f_string, key in KEY_CALL.findall(path.read_text(encoding="utf-8")):
            found.append((str(path.relative_to(ROOT)), key, bool(f_string)))
    return found


def test_every_key_the_code_asks_for_is_in_english():
    english = load_locales()["en"]
    found = _keys_asked_for()
    assert any(key == "error.empty_prompt" for _, key, _ in found), "the scan found no .keyed(...) key"
    missing = []
    for where, key, f_string in found:
        if f_string or key.endswith("."):  # t(f"param.{name}"), texts("ft.mem." + name): a key starts so
            prefix = key.split("{", 1)[0] if f_string else key
            if not any(k.startswith(prefix) for k in english):
                missing.append(f"{where}: no key starts with {prefix!r}")
        elif key not in english:
            missing.append(f"{where}: {key}")
    assert not missing, "\n".join(missing)


# --------------------------------------------------------------------------- (d) the right Portuguese and French

# European-Portuguese words (or uses) a Brazilian reader stumbles on, each with the Brazilian word to use.
EUROPEAN_PORTUGUESE = MappingProxyType({
    r"\bficheiros?\b": "arquivo",
    r"\becrãs?\b": "tela",
    r"\butilizador(es|as?)?\b": "usuário",
    r"\bde facto\b": "de fato",
    r"\bfacto\b": "fato",
    r"\bregistos?\b": "registro",
    r"\btransferir\b": "baixar (a download)",
    r"\bdescarreg\w*": "baixar",
    r"\bguard(ar|e|a|ado|ada|ados|adas|ou|am)\b": "salvar",
    r"\bpartilh\w*": "compartilhar",
    r"\bportáte?is\b|\bportátil\b": "notebook",
    r"\bpredefinid\w*": "padrão",
    r"\bequipas?\b": "equipe",
    r"\bestá a \w+r\b|\bestão a \w+r\b": "está fazendo (gerúndio)",
    r"\ba (carregar|ler|converter|fundir|amostrar|cancelar|construir|medir|gerar|correr|aguardar)\b": "gerúndio",
    r"\bem espera\b": "aguardando",
    r"\bcorre(m)? (no|na|em)\b": "roda(m)",
})


def test_portuguese_is_brazilian():
    found = [f"{key}: {re.search(pattern, text, re.IGNORECASE).group(0)!r} (pt-BR: {brazilian})"
             for key, text in load_locales()["pt"].items()
             for pattern, brazilian in EUROPEAN_PORTUGUESE.items() if re.search(pattern, text, re.IGNORECASE)]
    assert not found, "\n".join(found)


def test_french_says_tokens():
    found = [key for key, text in load_locales()["fr"].items() if re.search(r"\bjetons?\b", text, re.IGNORECASE)]
    assert not found, f"French says 'tokens', never 'jetons': {found}"


def test_the_checks_catch_what_they_look_for():
    assert re.search(r"\bficheiros?\b", "Carregar um ficheiro")
    assert not re.search(r"\bguard(ar|e|a|ado|ada|ados|adas|ou|am)\b", "aguardando o modelo")
    assert re.search(r"\ba (carregar|ler)\b", "a carregar o modelo")
