"""The Fine-tune tab's words: every config field it shows has a label and help in English, Portuguese and French
(the English help is the config dataclass's own), every phase and status has its line, and the page starts
from the CPU demo preset."""

from __future__ import annotations

import json
import urllib.request

import pytest
import yaml

from playground.finetune.config import CPU_DEMO_PRESET, FinetuneConfig
from playground.finetune.progress import PHASES
from playground.ui.i18n import LANGUAGES, Texts, load_locales
from playground.ui.tabs.finetune import NUMBER_FIELDS, SHOWN_FIELDS, STATUSES


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_shown_field_has_a_label_and_help_in_every_language(language):
    texts = load_locales()[language]
    missing = [key for name in SHOWN_FIELDS for key in (f"ft.field.{name}", f"ft.help.{name}") if key not in texts]
    assert not missing, missing
    for name in SHOWN_FIELDS:
        assert texts[f"ft.field.{name}"].strip() and texts[f"ft.help.{name}"].strip()


def test_the_english_help_is_the_config_dataclasss_help():
    english = load_locales()["en"]
    assert {name: english[f"ft.help.{name}"] for name in SHOWN_FIELDS} == {
        name: FinetuneConfig.help(name) for name in SHOWN_FIELDS}


def test_portuguese_and_french_help_is_translated():
    locales = load_locales()
    for language in ("pt", "fr"):
        same = [n for n in SHOWN_FIELDS if locales[language][f"ft.help.{n}"] == locales["en"][f"ft.help.{n}"]]
        assert not same, (language, same)
    assert "jeton" not in " ".join(v for k, v in locales["fr"].items() if k.startswith("ft.")).lower()


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_phase_and_status_has_its_words(language):
    texts = Texts(language)
    for phase in PHASES:
        line = texts(f"ft.phase.{phase}", done=3, total=12)
        assert line and "{" not in line
    assert "3" in texts("ft.phase.baseline", done=3, total=12) and "12" in texts("ft.phase.baseline", done=3, total=12)
    for status in STATUSES:
        assert texts(f"ft.status.{status}")


def test_english_progress_reads_as_the_issue_asked():
    assert Texts("en")("ft.phase.baseline", done=3, total=12) == "Base model: generating 3 of 12"


def test_the_page_starts_from_the_cpu_demo_preset(app_url):
    """The widgets' starting values, read from the running app's config, are the preset's."""
    with urllib.request.urlopen(app_url + "config") as answer:
        config = json.load(answer)
    values = {c["props"].get("elem_id"): c["props"].get("value") for c in config["components"]
              if c.get("props", {}).get("elem_id", "") and str(c["props"]["elem_id"]).startswith("ft-")}
    preset = yaml.safe_load(CPU_DEMO_PRESET.read_text(encoding="utf-8"))
    for name in NUMBER_FIELDS:
        if name in preset:
            assert values[f"ft-{name.replace('_', '-')}"] == preset[name], name
    assert values["ft-test-limit"] == 20 and values["ft-eval-every"] == 20
    assert values["ft-model"] == preset["model"] and values["ft-template"] == preset["template"]
    assert values["ft-target-modules"] == ", ".join(preset["target_modules"])


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_finished_runs_summary_gives_the_time_of_each_phase(language):
    from playground.finetune.result import RunMetrics
    from playground.ui.tabs.finetune import gain_text

    metrics = RunMetrics(rouge_before={"rougeL": 0.2}, rouge_after={"rougeL": 0.4}, sample_count=8, duration_s=200.0,
                         phase_seconds={"load": 12.0, "base_scoring": 30.0, "training": 140.0,
                                        "tuned_scoring": 15.0, "save": 3.0})
    text = gain_text(metrics, Texts(language))
    assert "140 s" in text and "12 s" in text and "{" not in text
    assert "140" not in gain_text(RunMetrics(rouge_before={"rougeL": 0.2}, rouge_after={"rougeL": 0.4}),
                                  Texts(language))  # an older run has no phase times


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_estimate_gives_the_whole_run_beside_the_training(language):
    from playground.finetune.costs import CostReport, MemoryEstimate, RunEstimate
    from playground.ui.tabs.finetune import cost_text

    memory = MemoryEstimate(2 ** 30, 0, 0, 0)
    report = CostReport("m", "lora", 1000, 10, 40, memory, memory, 2 ** 31, "RAM", 40, step_seconds=3.0,
                        run_estimate=RunEstimate(12.0, 30.0, 120.0, 30.0))
    text = cost_text(report, Texts(language))
    assert "3.2" in text and "120" in text and "{" not in text  # 192 s: 3.2 minutes
