"""The load figure (`python -m playground bench --load`): its pure parts, its command line, and one small run."""

from __future__ import annotations

import socket
import sys

import pytest

from playground.bench import format_table, main
from playground.bench.load import (
    DEFAULT_LOADS,
    MAX_PEOPLE,
    Burst,
    Engines,
    LoadSpecError,
    PersonResult,
    Probe,
    assistant_text,
    engine_text,
    load_figures,
    parse_loads,
    percentile,
    question,
    running,
    stats_engine,
    stats_tokens,
)


# ---------------------------------------------------------------- percentiles
def test_percentiles_interpolate_between_ranks():
    values = [float(v) for v in range(10, 0, -1)]  # unordered on purpose
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 90) == pytest.approx(9.1)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 10.0
    assert percentile([2.5], 90) == 2.5
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# ---------------------------------------------------------------- --load values
@pytest.mark.parametrize("text, expected", [
    ("1,8,32", (1, 8, 32)),
    ("32", (32,)),
    (" 32, 1 ,8", (1, 8, 32)),
    ("8,8", (8,)),
    (None, DEFAULT_LOADS),
    (str(MAX_PEOPLE), (MAX_PEOPLE,)),
])
def test_load_values_are_parsed(text, expected):
    assert parse_loads(text) == expected


@pytest.mark.parametrize("text, message", [
    ("0", "at least 1"),
    ("-3", "at least 1"),
    ("x", "'x' is not a whole number"),
    ("1,,8", "'' is not a whole number"),
    ("1.5", "'1.5' is not a whole number"),
    ("1000", f"more than the {MAX_PEOPLE}"),
    ("128,127,2", "257 people in all"),
])
def test_bad_load_values_are_refused_with_a_clear_message(text, message):
    with pytest.raises(LoadSpecError, match=message):
        parse_loads(text)


@pytest.mark.parametrize("value, message", [("0", "at least 1"), ("x", "whole number"), ("1000", "more than")])
def test_the_command_line_refuses_bad_load_values_before_starting_anything(capsys, value, message):
    assert main(["--load", value]) == 2
    err = capsys.readouterr().err
    assert f"--load {value}:" in err and message in err


def test_help_says_the_load_figure_is_its_own_run(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--load" in out and "only the load figure" in out and "--load-server" in out


def test_each_person_asks_a_different_question():
    questions = [question(i) for i in range(MAX_PEOPLE)]
    assert len(set(questions)) == MAX_PEOPLE
    assert all(len(q) < 80 for q in questions)


# ---------------------------------------------------------------- what the endpoint returns
def test_tokens_are_read_from_the_chat_stats():
    from playground.backends.base import GenerationResult
    from playground.ui.i18n import Texts
    from playground.ui.tabs.quantized_cpu import answer_stats

    result = GenerationResult("Paris is", 31, 16, 0.12, 0.4, "length", "llama.cpp", "smollm2-135m-instruct")
    assert stats_tokens(answer_stats(result, Texts())) == 16
    assert stats_tokens("_generating…_") is None
    assert stats_engine("**4-bit** · engine: llama.cpp  \ntime to first token") == "llama.cpp"
    assert stats_engine(answer_stats(result, Texts())) == ""  # the chat's stats do not name the engine


def test_assistant_text_reads_both_message_shapes():
    assert assistant_text([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]) == "Hello"
    assert assistant_text([{"role": "assistant", "content": [{"type": "text", "text": "He"}, {"text": "y"}]}]) == "Hey"
    assert assistant_text([{"role": "user", "content": "Hi"}]) == ""
    assert assistant_text(None) == ""


# ---------------------------------------------------------------- aggregation and targets
def _ok(ttft: float, total: float, tokens: int = 16, **extra) -> PersonResult:
    return PersonResult(ttft_s=ttft, total_s=total, tokens=tokens, **extra)


def _burst(people: int, ttft: float = 0.5, total: float = 2.0, wall: float = 2.0, errors: int = 0,
           probes=(), **extra) -> Burst:
    results = [_ok(ttft, total) for _ in range(people - errors)]
    results += [PersonResult(error=f"AppError: too busy {i}") for i in range(errors)]
    return Burst(people, tuple(results), wall, tuple(probes), **extra)


def _by_name(figures):
    return {f.name: f for f in figures}


PAGE_PROBES = [Probe("/", 0.1 * i, 200) for i in range(1, 6)] + [Probe("/health", 0.05, 200)] * 3


def test_a_room_that_meets_every_target_passes():
    # N=1: 16 tokens in 2 s (8 tok/s); N=32: 512 tokens in 8 s (64 tok/s, 8x).
    bursts = [_burst(1), _burst(8, wall=3.0), _burst(32, ttft=2.0, total=7.5, wall=8.0, probes=PAGE_PROBES)]
    figures = _by_name(load_figures(bursts))
    assert figures["load N=32: errors"].value == 0 and figures["load N=32: errors"].passed is True
    assert figures["load N=32: first token p90"].passed is True
    assert figures["load N=32: first token p90"].target == "< 3 s"
    assert figures["load N=32: aggregate speed"].value == pytest.approx(64.0)
    ratio = figures["load: speed N=32 / N=1"]
    assert ratio.value == pytest.approx(8.0) and ratio.passed is True and ratio.target == ">= 3"
    assert figures["load N=32: GET / p90"].value == pytest.approx(0.46) and figures["load N=32: GET / p90"].passed
    assert figures["load N=32: GET /health p90"].passed is True
    # Targets hang on N=32 only; the other bursts are informational.
    assert all(f.passed is None for name, f in figures.items() if name.startswith(("load N=1:", "load N=8:")))
    assert "16 completion tokens (counted from the endpoint's stats)" in figures["load N=1: aggregate speed"].detail
    assert not any(name.startswith(("load N=1: GET", "load N=8: GET")) for name in figures)


def test_errors_slow_first_tokens_and_a_flat_speed_fail_with_the_first_error():
    bursts = [_burst(1, wall=2.0), _burst(32, ttft=3.5, total=30.0, wall=30.0, errors=2)]
    figures = _by_name(load_figures(bursts))
    errors = figures["load N=32: errors"]
    assert (errors.value, errors.passed) == (2, False)
    assert "2 of 32 people got no answer; first error: AppError: too busy 0" in errors.detail
    assert figures["load N=32: first token p90"].passed is False
    assert "of 30 people" in figures["load N=32: first token p90"].detail  # percentiles of the answered ones
    ratio = figures["load: speed N=32 / N=1"]
    assert ratio.value == pytest.approx((30 * 16 / 30.0) / 8.0) and ratio.passed is False


def test_a_burst_with_no_answer_fails_its_times_instead_of_hiding_them():
    figures = _by_name(load_figures([_burst(1), _burst(32, errors=32)]))
    assert figures["load N=32: first token p90"].passed is False
    assert "no person got an answer; first error: AppError" in figures["load N=32: first token p90"].detail
    assert figures["load N=32: aggregate speed"].value is None
    assert figures["load: speed N=32 / N=1"].passed is False


def test_other_loads_show_the_targets_without_judging_them():
    figures = _by_name(load_figures([_burst(1), _burst(4, probes=PAGE_PROBES)]))
    ratio = figures["load: speed N=4 / N=1"]
    assert ratio.passed is None and ratio.target == ">= 3" and "set for N=32 over N=1" in ratio.detail
    assert figures["load N=4: GET / p90"].passed is None
    assert figures["load N=4: errors"].target == ""
    single = _by_name(load_figures([_burst(32)]))
    assert single["load: speed N=32 / N=1"].passed is None and "needs two loads" in single[
        "load: speed N=32 / N=1"].detail


def test_a_missing_health_endpoint_is_reported_as_missing_not_failed():
    probes = [Probe("/", 0.2, 200), Probe("/health", None, 404, "HTTP 404")]
    figures = _by_name(load_figures([_burst(1), _burst(32, probes=probes)]))
    health = figures["load N=32: GET /health p90"]
    assert health.passed is None and health.detail.startswith("missing:")
    broken = [Probe("/", None, None, "TimeoutError: timed out"), Probe("/health", 0.1, 200)]
    page = _by_name(load_figures([_burst(32, probes=broken)]))["load N=32: GET / p90"]
    assert page.passed is False and "TimeoutError" in page.detail


def test_tokens_counted_through_the_tokenizer_are_said_so():
    burst = Burst(2, (_ok(0.1, 1.0, tokens_from="tokenizer"), _ok(0.1, 1.0)), 1.0)
    detail = _by_name(load_figures([burst]))["load N=2: aggregate speed"].detail
    assert "the answers through the model's tokenizer and the endpoint's stats" in detail


def test_the_engine_that_answered_is_named():
    named = Burst(1, (_ok(0.1, 1.0, engine="openai"),), 1.0, served=1)
    assert engine_text(named, Engines("llama.cpp")).startswith("engine (from the endpoint's stats): openai")
    served = _burst(2, served=2)
    assert "the llama.cpp server (it logged 2 completion requests" in engine_text(served, Engines("llama.cpp"))
    ignored = engine_text(_burst(2, served=0), Engines("llama.cpp", app_reads_settings=False))
    assert "in-process llama.cpp" in ignored and "does not read PLAYGROUND_OPENAI_BASE_URL" in ignored
    assert "in-process" in engine_text(_burst(2))


def test_the_table_prints_error_counts_as_whole_numbers():
    table = format_table(load_figures([_burst(1), _burst(32)]))
    row = next(line for line in table.splitlines() if line.startswith("load N=32: errors"))
    assert "0 of 32" in row and row.endswith("pass")


# ---------------------------------------------------------------- processes
def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_started_process_is_stopped_when_the_block_is_interrupted(tmp_path):
    from playground.bench.core import free_port

    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    with pytest.raises(KeyboardInterrupt):
        with running("http.server", command, None, f"http://127.0.0.1:{port}", "/", tmp_path / "log",
                     timeout_s=30) as child:
            assert _answers(port) and child.ready_s is not None
            raise KeyboardInterrupt
    assert child.process.poll() is not None and not _answers(port)


def test_a_process_that_dies_before_answering_says_so_with_its_log(tmp_path):
    command = [sys.executable, "-c", "print('no such model'); raise SystemExit(3)"]
    with pytest.raises(RuntimeError, match=r"exited with code 3 before answering; log: no such model"):
        with running("app.py", command, None, "http://127.0.0.1:9", "/", tmp_path / "log", timeout_s=30):
            pass


# ---------------------------------------------------------------- one small run
@pytest.mark.slow
def test_two_people_chat_with_a_running_app(tmp_path):
    """The whole suite with N=2 against app.py and the packaged SmolLM2 (about half a minute on two cores)."""
    from playground.bench.load import bench_load

    figures = _by_name(bench_load([2], "smollm2-135m-instruct", tmp_path))
    setup = figures["load: app ready (workshop mode)"]
    assert setup.value is not None and "PLAYGROUND_MODE=workshop" in setup.detail
    errors = figures["load N=2: errors"]
    assert errors.value == 0, errors.detail
    first, last = figures["load N=2: first token p90"].value, figures["load N=2: last token p90"].value
    assert 0 < first <= last
    speed = figures["load N=2: aggregate speed"]
    assert speed.value > 0 and "completion tokens (counted from the endpoint's stats) in 2 of 2" in speed.detail
    assert "CPU meanwhile: the app" in speed.detail and "the bench's clients" in speed.detail
    assert figures["load N=2: GET / p90"].value is not None
    assert "load N=2: GET /health p90" in figures
    # The app is gone once the suite returns: its port answers no more.
    port = int(setup.detail.split("127.0.0.1:")[1].split(";")[0])
    assert not _answers(port)
