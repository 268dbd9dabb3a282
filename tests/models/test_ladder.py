"""The quantization ladder on the real packaged SmolLM2 (Q4_1): quantized files, figures, cache, locks, cleanup.

One ladder of three types (F32, Q8_0, Q4_K_M) is built once for the module through the tab's controller
(about 15 s on two idle cores); the other tests read it, or build a one-type ladder in their own folder.
No test asserts a time: speeds are only checked to be measured.
"""

from __future__ import annotations

import json
import math
import os
import threading

import pytest

from playground.errors import InvalidInputError, InvalidParameterError, ModelUnavailableError
from playground.models import ladder as ladder_module
from playground.models.ladder import (
    LadderCancelled,
    LadderResult,
    QuantizationLadder,
    build_ladder,
    cached_ladder,
    ladder_key,
    ladder_types,
)
from tests.helpers import SMOLLM2

TYPES = ["Q4_K_M", "Q8_0"]  # F32 joins by itself; the order given does not matter


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ladder")


@pytest.fixture(scope="module")
def controller(provider, hardware, work_dir):
    return QuantizationLadder(provider, work_dir, hardware.cpu_threads)


@pytest.fixture(scope="module")
def built(controller):
    steps = []
    result = controller.build(SMOLLM2, TYPES, progress=lambda fraction, step: steps.append((fraction, str(step))))
    return result, steps


@pytest.fixture(scope="module")
def source(provider):
    return provider.resolve(SMOLLM2, "gguf").path


def _ggufs(folder):
    return sorted(p.name for p in folder.rglob("*") if p.suffix == ".gguf" or ".partial-" in p.name)


# --------------------------------------------------------------------------- inputs (no model)


def test_types_come_in_ladder_order_with_f32_as_the_reference():
    assert ladder_types(["q4_k_m", "Q8_0", "Q4_K_M"]) == ("F32", "Q8_0", "Q4_K_M")
    assert ladder_types(None) == ("F32", "F16", "Q8_0", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
    assert ladder_types("Q2_K") == ("F32", "Q2_K")


@pytest.mark.parametrize("types, message", [
    (["Q4_K_X"], r"Unknown GGUF type 'Q4_K_X': choose one of F32, F16, Q8_0, Q5_K_M, Q4_K_M, Q3_K_M, Q2_K"),
    ([], "Choose at least one GGUF type"),
])
def test_bad_types_are_refused_before_any_work(types, message, tmp_path, monkeypatch):
    monkeypatch.setattr(ladder_module, "quantize_gguf", lambda *a, **k: pytest.fail("quantized"))
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF")
    with pytest.raises(InvalidParameterError, match=message):
        build_ladder(source, tmp_path / "ladder", types)
    assert not (tmp_path / "ladder").exists()


def test_empty_and_oversized_texts_are_refused(tmp_path):
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF")
    with pytest.raises(InvalidInputError, match="empty"):
        build_ladder(source, tmp_path / "ladder", ["F32"], text="   ")
    with pytest.raises(InvalidInputError, match="the limit is 20,000"):
        build_ladder(source, tmp_path / "ladder", ["F32"], text="word " * 5000)


def test_the_key_follows_the_file_the_text_and_the_types(tmp_path):
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF one")
    key = ladder_key(source, "a text", ("F32", "Q8_0"))
    assert key == ladder_key(source, "a text", ("F32", "Q8_0"))
    assert key != ladder_key(source, "another text", ("F32", "Q8_0"))
    assert key != ladder_key(source, "a text", ("F32", "Q4_K_M"))
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert key != ladder_key(source, "a text", ("F32", "Q8_0"))
    source.write_bytes(b"GGUF one plus more")
    assert key != ladder_key(source, "a text", ("F32", "Q8_0"))


def test_the_bundled_text_is_prose_of_a_few_hundred_words():
    words = ladder_module.bundled_text().split()
    assert 350 <= len(words) <= 450


# --------------------------------------------------------------------------- the ladder of the packaged model


def test_each_type_is_quantized_and_sizes_fall_with_the_bits(built):
    result, _ = built
    assert result.types == ("F32", "Q8_0", "Q4_K_M")
    f32, q8, q4 = result.rungs
    assert f32.bits_per_weight == pytest.approx(32.0, abs=0.01)
    assert 8.0 < q8.bits_per_weight < 9.0
    assert q4.bits_per_weight < q8.bits_per_weight
    assert f32.file_mb > q8.file_mb > q4.file_mb
    assert f32.file_mb == pytest.approx(4 * 134.5, rel=0.05)  # 4 bytes for each of SmolLM2's 134.5 M weights


def test_quality_figures_hold_for_eight_bits_and_slip_for_four(built):
    result, _ = built
    f32, q8, q4 = result.rungs
    assert f32.top1_agreement_pct == 100.0 and f32.kl_to_f32 == 0.0
    for rung in result.rungs:
        assert math.isfinite(rung.perplexity) and 1.0 < rung.perplexity < 200.0
    assert q8.top1_agreement_pct >= 90.0
    assert 50.0 <= q4.top1_agreement_pct <= q8.top1_agreement_pct + 2.0
    assert 0.0 < q8.kl_to_f32 < q4.kl_to_f32 < 1.0
    assert q8.perplexity == pytest.approx(f32.perplexity, rel=0.1)


def test_speeds_are_measured_and_compared_with_f32(built):
    result, _ = built
    assert all(r.decode_tokens_per_s > 0 for r in result.rungs)
    assert result.rung("F32").speed_vs_f32 == 1.0
    q4 = result.rung("Q4_K_M")
    assert q4.speed_vs_f32 == pytest.approx(q4.decode_tokens_per_s / result.rung("F32").decode_tokens_per_s,
                                            rel=0.01)


def test_the_result_says_where_the_weights_came_from(built):
    result, _ = built
    assert (result.source_label, result.source_type, result.source_origin) == ("SmolLM2-135M-Instruct", "Q4_1",
                                                                             "packaged")
    assert result.requantized
    assert "every type is re-quantized from its dequantized weights" in result.source_note()
    assert result.tokens == ladder_module.MAX_TEXT_TOKENS  # the bundled text is a little longer
    assert result.k_quants_fall_back and result.hidden_size == 576
    assert "Q4_K_M" in result.table() and "Q4_1" in result.table()


def test_progress_counts_each_step(built):
    _, steps = built
    messages = [message for _, message in steps]
    assert "quantizing F32 (1 of 3)" in messages
    assert "quantizing Q4_K_M (3 of 3)" in messages
    assert "scoring Q4_K_M: perplexity... (3 of 3)" in messages
    assert "scoring Q8_0: decode speed... (2 of 3)" in messages
    fractions = [fraction for fraction, _ in steps]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0


def test_only_the_results_file_is_kept(built, work_dir):
    result, _ = built
    assert _ggufs(work_dir) == []
    stored = json.loads((work_dir / result.key / "ladder.json").read_text(encoding="utf-8"))
    assert [r["type"] for r in stored["rungs"]] == ["F32", "Q8_0", "Q4_K_M"]
    assert LadderResult.from_dict(stored) == result


def test_a_second_build_reads_the_cache_and_quantizes_nothing(built, controller, source, work_dir, monkeypatch):
    result, _ = built
    monkeypatch.setattr(ladder_module, "quantize_gguf", lambda *a, **k: pytest.fail("quantized again"))
    again = controller.build(SMOLLM2, ["Q8_0", "Q4_K_M", "F32"])
    assert again.cached and again.rungs == result.rungs
    assert build_ladder(source, work_dir, TYPES).cached
    assert controller.cached(SMOLLM2, TYPES).rungs == result.rungs
    assert controller.cached(SMOLLM2, ["Q2_K"]) is None  # another type list is another ladder
    assert cached_ladder(source, work_dir, TYPES, text="Some other text to score.") is None


def test_models_without_a_gguf_or_offline_weights_are_refused(controller):
    with pytest.raises(InvalidParameterError, match="has no GGUF source"):
        controller.build("flan-t5-small", ["F32"])
    with pytest.raises(ModelUnavailableError, match="PLAYGROUND_MODELS_DIR"):
        controller.build("qwen2.5-0.5b-instruct", ["F32"])
    assert controller.cached("qwen2.5-0.5b-instruct") is None
    with pytest.raises(InvalidParameterError, match="Unknown GGUF type"):
        controller.build(SMOLLM2, ["Q1_X"])


# --------------------------------------------------------------------------- one type in a fresh folder


def test_callers_at_the_same_moment_wait_for_one_build(source, tmp_path, monkeypatch):
    calls = []
    real = ladder_module.quantize_gguf

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(ladder_module, "quantize_gguf", counting)
    results, waited = [], []

    def build():
        results.append(build_ladder(source, tmp_path, ["F32"], threads=2,
                                    progress=lambda fraction, step: waited.append(step.stage == "waiting")))

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert calls == ["F32"]
    assert len(results) == 2 and results[0].rungs == results[1].rungs
    assert sorted(r.cached for r in results) == [False, True]
    assert _ggufs(tmp_path) == []


def test_a_stopped_build_keeps_nothing(source, tmp_path):
    cancel = threading.Event()

    def progress(fraction, step):
        if step.stage == "perplexity":
            cancel.set()  # the F32 file is written and about to be scored

    with pytest.raises(LadderCancelled, match="nothing of it was kept"):
        build_ladder(source, tmp_path, ["F32"], threads=2, progress=progress, cancel=cancel)
    assert _ggufs(tmp_path) == []
    assert not list(tmp_path.rglob("ladder.json"))


def test_a_failing_type_leaves_no_files_behind(source, tmp_path, monkeypatch):
    def failing(source_path, target, type_name, threads=0):
        target.write_bytes(b"half a file")
        raise InvalidParameterError(f"cannot make {type_name}")

    monkeypatch.setattr(ladder_module, "quantize_gguf", failing)
    with pytest.raises(InvalidParameterError, match="cannot make F32"):
        build_ladder(source, tmp_path, ["F32"], threads=2)
    assert _ggufs(tmp_path) == []
    assert not list(tmp_path.rglob("ladder.json"))
