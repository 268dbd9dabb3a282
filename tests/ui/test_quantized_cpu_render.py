"""The Quantized CPU tab's logic and rendering without a model: the speed verdict in three languages, the
comparison's counted progress with a time left, its CSV, the translated facts, and soft errors."""

from __future__ import annotations

import csv
import io
import time
from types import SimpleNamespace

import gradio as gr
import pytest

from playground.backends.base import Generation, GenerationParams, GenerationResult
from playground.backends.compare import (ComparisonStep, PrecisionComparison, PrecisionRun, compare_precisions,
                                         eta_seconds, speed_verdict)
from playground.errors import InvalidPromptError
from playground.ui.i18n import Texts
from playground.ui.soft_errors import message_for, soft
from playground.ui.tabs.quantized_cpu import comparison_summary, facts_frame, step_text


@pytest.mark.parametrize("speedup, expected", [
    (2.5, ("faster", 2.5)), (0.4, ("slower", 2.5)), (1.02, ("same", 1.0)), (0.0, None), (None, None)])
def test_the_speed_verdict_never_says_a_fraction_faster(speedup, expected):
    verdict = speed_verdict(speedup, 4.0)
    assert verdict == (expected if expected is None else (expected[0], pytest.approx(expected[1])))


@pytest.mark.parametrize("language, faster, slower, same", [
    ("en", "2.5× faster", "2.5× slower", "about as fast"),
    ("pt", "2.5× mais rápido", "2.5× mais lento", "tão rápido"),
    ("fr", "2.5× plus rapide", "2.5× plus lent", "aussi rapide"),
])
def test_the_summary_says_faster_or_slower_in_each_language(language, faster, slower, same):
    texts = Texts(language)
    assert faster in comparison_summary(SimpleNamespace(speedup=2.5, memory_ratio=4.0), texts)
    slow = comparison_summary(SimpleNamespace(speedup=0.4, memory_ratio=4.0), texts)
    assert slower in slow and "0.4" not in slow
    assert same in comparison_summary(SimpleNamespace(speedup=1.01, memory_ratio=4.0), texts)


def _result(tokens: int, seconds: float) -> GenerationResult:
    return GenerationResult(text="x" * tokens, prompt_tokens=3, completion_tokens=tokens,
                            time_to_first_token_s=0.1, total_s=seconds, finish_reason="length", engine="e",
                            model_id="m")


class _Engine:
    """Streams ``pieces`` one token at a time, as both real engines do."""

    weights_bytes = 100

    def __init__(self, pieces):
        self.pieces = pieces

    def memory_bytes(self):
        return 400

    def format_chat(self, messages):
        return messages[-1]["content"]

    def stream(self, prompt, params):
        return Generation(iter(self.pieces), prompt_tokens=3, params=params, engine="e", model_id="m",
                          started=time.perf_counter())


def test_the_comparison_reports_each_side_and_counts_its_tokens():
    heard: list[ComparisonStep] = []
    loads: list[tuple] = []

    def engine_for(model_id, engine, progress=None):
        progress(0.5, "converting the GGUF")
        loads.append(engine)
        return _Engine(["a", "b", "c", "d"])

    updates = list(compare_precisions(engine_for, "m", [{"role": "user", "content": "hi"}],
                                      GenerationParams(max_new_tokens=4, temperature=0), full_precision="fp32",
                                      quantised_precision="Q4_1", steps=heard.append))
    assert updates[-1].quantised.status == "done" and updates[-1].full.text == "abcd"
    assert [s.side for s in heard if s.phase == "loading"][:1] == ["full"]
    assert any(s.detail == "converting the GGUF" for s in heard)  # a slow load's own words come through
    generating = [s for s in heard if s.phase == "generating"]
    for side in ("full", "quantised"):
        counts = [s.done for s in generating if s.side == side]
        assert counts == [0, 1, 2, 3, 4] and all(s.total == 4 for s in generating)
    fractions = [s.fraction for s in heard]
    assert fractions == sorted(fractions) and heard[-1].phase == "done" and heard[-1].fraction == 1.0
    assert all(s.eta_s is None for s in generating if s.done <= 1)  # no speed yet
    assert any(s.eta_s is not None for s in generating if s.done >= 2)


def test_the_time_left_is_the_rest_of_the_tokens_at_the_speed_so_far():
    assert eta_seconds(0, 10, 1.0) is None
    assert eta_seconds(5, 10, 2.0) == pytest.approx(2.0)
    assert eta_seconds(10, 10, 2.0) == 0


@pytest.mark.parametrize("language, generating, left", [
    ("en", "generating, 12 of at most 256 tokens", "s left"), ("pt", "gerando, 12 de no máximo 256 tokens", "restantes"),
    ("fr", "génération, 12 sur 256 tokens au plus", "restantes")])
def test_the_progress_line_names_the_side_the_count_and_the_time_left(language, generating, left):
    texts = Texts(language)
    line = step_text(ComparisonStep("quantised", "generating", 12, 256, 30.4, 0.8), texts)
    assert generating in line and "2" in line and "30 s" in line and left in line
    loading = step_text(ComparisonStep("full", "loading", detail="converting"), texts)
    assert "1" in loading and "converting" in loading


def test_the_comparison_downloads_as_csv_with_both_sides():
    full = PrecisionRun("transformers", "fp32", "Paris, \"the\" capital", _result(8, 2.0), 540_000_000, "done")
    quant = PrecisionRun("llama.cpp", "Q4_1", "Paris", _result(8, 0.5), 98_000_000, "done")
    rows = list(csv.reader(io.StringIO(PrecisionComparison(full, quant).csv())))
    assert rows[0][:3] == ["side", "engine", "precision"] and rows[0][-1] == "text"
    assert [r[0] for r in rows[1:]] == ["full", "quantised"]
    assert rows[1][-1] == "Paris, \"the\" capital" and rows[1][3] == "540.0" and rows[2][2] == "Q4_1"


@pytest.mark.parametrize("language, header, fact", [("en", "fact", "quantisation"), ("pt", "dado", "quantização"),
                                                    ("fr", "caractéristique", "quantification")])
def test_the_facts_are_named_in_the_readers_language(language, header, fact):
    frame = facts_frame([["quantisation", "Q4_1"], ["adapter rank", "8"]], Texts(language))
    assert list(frame.columns)[0] == header
    assert frame.iloc[0, 0] == fact and frame.iloc[1, 0] == "adapter rank"  # a run's own rows keep their names


@pytest.mark.parametrize("language, expected", [("en", "The message is empty"), ("pt", "A mensagem está vazia"),
                                                ("fr", "Le message est vide")])
def test_a_keyed_error_reads_in_the_readers_language(app_settings, language, expected):
    error = InvalidPromptError("The message is empty: type something to send.").keyed("error.empty_message")
    assert message_for(error, app_settings, Texts(language)).startswith(expected)
    assert message_for(error, app_settings).startswith("The message is empty")  # no language: the English text


def test_soft_errors_warn_and_leave_the_outputs_as_they_were(app_settings, monkeypatch):
    warned: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda message, **_: warned.append(message))

    def handler(text):
        raise gr.Error("Bad input: say what to change.")

    def streaming(text):
        yield "first", "shown"
        raise InvalidPromptError("The prompt is too long.")

    skipped = soft(handler, app_settings, 2)("x")
    assert warned == ["Bad input: say what to change."]
    assert all(value == gr.skip() for value in skipped)
    updates = list(soft(streaming, app_settings, 2)("x"))
    assert updates[0] == ("first", "shown") and all(v == gr.skip() for v in updates[-1])
    assert warned[-1] == "The prompt is too long."


@pytest.fixture
def app_settings(tmp_path):
    from playground.config import Settings

    return Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path), "PLAYGROUND_OFFLINE": "1"})
