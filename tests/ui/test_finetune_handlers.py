"""The Fine-tune tab's handlers without a running app: each is a plain function of the session, driven here with
the fakes of tests/finetune (a real run store and job manager running the fake jobs, real signed identities) and
checked for the widget values, toasts and languages it gives back."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import gradio as gr
import pytest

from playground.finetune.runs import SUCCEEDED
from playground.finetune.session import FinetuneForm, PollCursor
from playground.ui.downloads import PrivateDownloads
from playground.ui.i18n import Texts
from playground.ui.tabs.finetune import (
    NUMBER_FIELDS,
    form_from_values,
    on_adapter_gguf,
    on_cancel,
    on_download,
    on_estimate,
    on_inspect,
    on_merge,
    on_merged_gguf,
    on_poll,
    on_start,
    on_use_in_lab,
)
from tests.finetune.conftest import ft_models  # noqa: F401  (the tiny models, a session fixture)
from tests.finetune.sessions import finished_run, form
from tests.finetune.test_results import QUANTIZED_METRICS, QUANTIZED_SAMPLE
from tests.finetune.test_session import DECODER_INFO, session, wait_for  # noqa: F401 (session: a fixture)

EN, PT, FR = Texts("en"), Texts("pt"), Texts("fr")


@pytest.fixture
def token(session):
    return session.identities.issuer.issue()


def owner(session, token):
    return session.identities.person(token).id


def toast(action) -> str:
    with pytest.raises(gr.Error) as info:
        action()
    return info.value.message


def test_the_form_takes_the_widgets_in_their_order():
    numbers = list(range(len(NUMBER_FIELDS)))
    made = form_from_values("m", "lora", "upload", "/tmp/x.csv", "q", "a", None, "q_proj, v_proj", *numbers)
    assert made == FinetuneForm("m", "lora", "upload", "/tmp/x.csv", "q", "a", "auto", "q_proj, v_proj",
                                dict(zip(NUMBER_FIELDS, numbers)))


def test_poll_without_runs_and_with_a_finished_one(session, token):
    values = on_poll(session, EN, token, None, None)
    assert values[0] == token and values[2] == "No run yet: start one above." and values[4:8] == (None, "", None, None)
    assert "The loss appears here after the first training step." in values[3]  # an empty chart says what comes
    assert values[1]["choices"] == [] and isinstance(values[8], PollCursor)
    run_id = finished_run(session, owner(session, token), weights=DECODER_INFO,
                          samples=[{"index": 0, "reference": "r", "base_output": "a", "tuned_output": "b",
                                    "base_rougeL": 0.1, "tuned_rougeL": 0.5, "improvement": 0.4}],
                          metrics={"family": "decoder", "sample_count": 1, "duration_s": 3.0,
                                   "rouge_before": {"rouge1": 0.1, "rouge2": 0.0, "rougeL": 0.1},
                                   "rouge_after": {"rouge1": 0.6, "rouge2": 0.3, "rougeL": 0.5}})
    _, picker, status, loss, scores, gain, comparison, runs, cursor, _, _ = on_poll(session, EN, token, None, None)
    assert picker["value"] == run_id and picker["choices"][0][1] == run_id
    name = session.jobs.get(run_id, owner(session, token)).name
    assert f"**{name}** · {SUCCEEDED}" in status and "chart-point" not in loss  # the fake run logged no steps
    assert list(runs.columns[:2]) == ["run", "status"] and list(runs["ROUGE-L gain (points)"]) == [40.0]
    assert len(scores) == 6 and "ROUGE-L went from **10.0** to **50.0** (**+40.0 points**)" in gain
    assert list(comparison["ROUGE-L gain (points)"]) == [40.0] and cursor.run_id == run_id
    # An older run's metrics name no engine: its answers came from transformers, and it has no third system.
    assert {"base · transformers", "fine-tuned · transformers"} <= set(comparison.columns)
    assert set(scores["model"]) == {"base · transformers", "fine-tuned · transformers"}
    assert "quantized" not in gain
    stranger = session.identities.issuer.issue()
    assert on_poll(session, EN, stranger, run_id, None)[2].startswith("⚠ There is no run")


def test_the_quantized_system_shows_with_its_engine_in_the_pages_language(session, token):
    run_id = finished_run(session, owner(session, token), weights=DECODER_INFO, samples=[QUANTIZED_SAMPLE],
                          metrics={**QUANTIZED_METRICS, "duration_s": 3.0})
    _, _, _, _, scores, gain, comparison, _, _, _, _ = on_poll(session, EN, token, run_id, None)
    systems = ["base · transformers fp32", "fine-tuned · transformers fp32",
               "fine-tuned, quantized · llama.cpp Q4_1 + adapter"]
    assert list(comparison.columns[2:5]) == systems and "quantization (ROUGE-L points)" in comparison.columns
    assert list(comparison["fine-tuned, quantized · llama.cpp Q4_1 + adapter"]) == ["z"]
    assert list(scores["model"][:3]) == systems and len(scores) == 9
    assert "Fine-tuned and quantized (llama.cpp Q4_1 + adapter): ROUGE-L **45.0**, **-5.0 points**" in gain
    _, _, _, _, scores, gain, comparison, _, _, _, _ = on_poll(session, PT, token, run_id, None)
    assert "ajustado, quantizado · llama.cpp Q4_1 + adaptador" in comparison.columns
    assert "ajustado · transformers fp32" in set(scores["model"]) and "Ajustado e quantizado" in gain
    # A run whose samples ran on llama.cpp names the engines of its two systems and why there is no third.
    on_llama = {**QUANTIZED_METRICS, "sample_engine": "llama.cpp", "rouge_quantized": None,
                "quantized_unavailable": "the samples ran on llama.cpp",
                "engines": {"base": {"engine": "llama.cpp", "weights": "Q4_1"},
                            "tuned": {"engine": "llama.cpp", "weights": "Q4_1", "adapter": True}}}
    sample = {k: v for k, v in QUANTIZED_SAMPLE.items() if not k.startswith("quantized")}
    run_id = finished_run(session, owner(session, token), weights=DECODER_INFO, samples=[sample], metrics=on_llama)
    _, _, _, _, scores, gain, comparison, _, _, _, _ = on_poll(session, EN, token, run_id, None)
    assert list(comparison.columns[2:4]) == ["base · llama.cpp Q4_1", "fine-tuned · llama.cpp Q4_1 + adapter"]
    assert len(scores) == 6 and "No quantized column: the samples ran on llama.cpp." in gain


def test_start_then_poll_draws_the_loss_curve(session, token, capsys):
    started_token, picker = on_start(session, EN, token, "10.0.0.1", form())
    run_id = picker["value"]
    assert started_token == token and picker["choices"][0][1] == run_id
    name = session.jobs.get(run_id, owner(session, token)).name
    assert name != run_id and name in picker["choices"][0][0]  # the list shows the short name; the id is the value
    assert f"Run {name} is queued" in capsys.readouterr().out  # gr.Info outside an event prints
    view, _ = wait_for(session, token, run_id)
    values = on_poll(session, EN, token, run_id, None)
    chart = values[3]
    train, validation = (chart.split(f'data-series="{kind}"')[1].split("</g>")[0] for kind in ("train", "validation"))
    assert train.count("chart-point") == 3 and validation.count("chart-point") == 1  # a lone point is a dot
    assert [tick.split(">")[1].split("<")[0] for tick in chart.split('class="chart-x-tick"')[1:]] == ["1", "2", "3"]
    # Given the cursor of the last poll, a poll reads nothing new and still draws the whole curve.
    again = on_poll(session, EN, token, run_id, values[8])
    assert again[8] == values[8] and again[3] == values[3]


def test_refusals_are_toasts_in_the_pages_language(session, token):
    assert toast(lambda: on_cancel(session, EN, token, "")) == "No run yet: start one above."
    assert toast(lambda: on_cancel(session, PT, token, "")) == "Ainda não há execuções: inicie uma acima."
    no_weights = finished_run(session, owner(session, token))
    downloads = PrivateDownloads()
    assert toast(lambda: on_download(session, downloads, EN, token, no_weights)) == "This run saved no weights."
    full = finished_run(session, owner(session, token), config={"method": "full"})
    assert toast(lambda: on_merge(session, downloads, EN, token, full)).startswith("A full fine-tune is already")
    queued = session.runs.create(owner(session, token), {"method": "lora"}, "tests.finetune.fake_jobs:quick")
    assert toast(lambda: on_download(session, downloads, PT, token, queued)).startswith("Esta execução está na fila")
    assert "not one this server issues" in toast(lambda: on_cancel(session, EN, "someone-else", queued))
    assert "There is no run" in toast(lambda: on_cancel(session, EN, token, "20200101-000000-000000-abcdef"))


def test_gguf_refusals_are_toasts_in_the_pages_language(session, token, tmp_path):
    downloads = PrivateDownloads(tmp_path / "gradio-cache")
    full = finished_run(session, owner(session, token), config={"method": "full"})
    assert toast(lambda: on_merged_gguf(session, downloads, PT, token, full, "Q4_K_M")).startswith(
        "Um fine-tuning completo já é um modelo inteiro")
    local = finished_run(session, owner(session, token), weights={**DECODER_INFO, "base_model": "/models/my-llama",
                                                                  "base_name": "my-llama"})
    assert toast(lambda: on_adapter_gguf(session, downloads, FR, token, local)) == (
        "Le modèle de base de cette exécution, my-llama, n'a pas de fichier GGUF pour llama.cpp : téléchargez "
        "plutôt le modèle fusionné (safetensors).")
    assert "Unknown GGUF type 'Q1'" in toast(lambda: on_merged_gguf(session, downloads, EN, token, local, "Q1"))
    assert "not one this server issues" in toast(lambda: on_adapter_gguf(session, downloads, EN, "someone-else", local))
    assert not (tmp_path / "gradio-cache").exists()


def test_cancel_of_a_finished_run_warns(session, token):
    run_id = finished_run(session, owner(session, token))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        on_cancel(session, EN, token, run_id)
    assert [str(w.message) for w in caught] == [f"{run_id} has already ended (succeeded): there is nothing to "
                                                f"cancel."]


def test_download_serves_a_link_and_use_in_lab_hands_over(session, token, tmp_path, capsys):
    run_id = finished_run(session, owner(session, token), weights=DECODER_INFO)
    downloads = PrivateDownloads(tmp_path / "gradio-cache")
    served = on_download(session, downloads, EN, token, run_id)
    assert served.startswith(str(tmp_path / "gradio-cache")) and served.endswith(f"{run_id}-adapter.zip")
    assert on_download(session, downloads, EN, token, run_id) == served  # the same link for the next click
    picked = []
    links = SimpleNamespace(prompt_lab_tab_id="tab-prompt-lab", lab_models=SimpleNamespace(
        comparison=lambda token_, tuned, ids: picked.append((token_, tuned.model_id)) or ["task", "model"]))
    tabs, *rest = on_use_in_lab(session, links, EN, token, run_id)
    assert tabs.selected == "tab-prompt-lab" and rest == ["task", "model"] and picked == [(token, f"run:{run_id}")]
    assert "is selected in the Prompt Lab" in capsys.readouterr().out


def test_inspect_and_estimate_on_a_tiny_model(session, ft_models):  # noqa: F811
    moves = []
    tiny = form(model=str(ft_models["llama"]), numbers={"max_length": 512, "batch_size": 2, "max_steps": 4})
    summary, examples, lengths = on_inspect(session, EN, tiny, lambda fraction, desc: moves.append(desc))
    assert summary.startswith("**3** train · **1** validation · **12** test examples from dialogues-small, "
                              "template `summarize-dialogue`")
    assert len(examples) == 3 and "Summarize" in examples["prompt"][0] and lengths.count('class="chart-bar"') > 0
    assert "max_length = 512" in lengths
    text = on_estimate(session, EN, tiny, lambda fraction, desc: moves.append(desc))
    assert "Trainable parameters" in text and "training step took" in text
    assert moves == ["reading and tokenising the data…", "building the model and timing one training step…"]
    assert "is not available here" in toast(lambda: on_inspect(session, EN, form(data="/etc/hostname")))
