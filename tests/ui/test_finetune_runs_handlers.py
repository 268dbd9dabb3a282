"""The Fine-tune tab's run comparison, chart, forgetting line and sweep handlers without a running app (the fakes of
tests/finetune: a real run store and job manager running fake jobs, real signed identities)."""

from __future__ import annotations

import pytest

from playground.ui.i18n import Texts
from playground.ui.tabs.finetune import forgetting_text, on_cancel, on_poll, on_start_sweep, on_sweep_info
from playground.finetune.result import RunMetrics
from tests.finetune.sessions import UNTIL_STOPPED, fake_session, finished_run
from tests.finetune.test_runs_table import FORGETTING, _metrics

EN, PT, FR = Texts("en"), Texts("pt"), Texts("fr")
TIMEOUT = 120.0


@pytest.fixture
def session(tmp_path):
    made = fake_session(tmp_path, entry=UNTIL_STOPPED)
    yield made
    made.jobs.shutdown(cancel_running=True)


def _person(session):
    token = session.identities.issuer.issue()
    return token, session.identities.person(token).id


def test_the_table_and_chart_compare_the_picked_runs_in_the_pages_language(session):
    token, owner = _person(session)
    full = finished_run(session, owner, {"model": "smollm2-135m-instruct", "method": "full"},
                        metrics=_metrics("full", trainable_share=1.0, forgetting={}))
    lora = finished_run(session, owner, {"model": "smollm2-135m-instruct", "method": "lora", "lora_r": 4},
                        metrics=_metrics("lora"))
    values = on_poll(session, EN, token, None, None)
    runs, compare, chart = values[7], values[9], values[10]["value"]
    assert values[10]["sort"] == list(chart["bar"])  # the bars keep the order the runs ran in
    assert list(runs["method"]) == ["lora", "full"] and list(runs["rank"]) == [4, "—"]
    assert list(runs["forgetting (points)"]) == [-7.5, "—"] and "peak memory (MB)" in runs.columns
    assert [value for _, value in compare["choices"]] == [lora, full] and compare["value"] == []
    # By default the chart sets each run's gain beside its forgetting, oldest run first.
    full_name, lora_name = (session.jobs.get(i, owner).name for i in (full, lora))
    assert list(chart["run"]) == [full_name, lora_name, lora_name]
    assert list(chart["series"]) == ["ROUGE-L gain (points)"] * 2 + ["forgetting (points)"]
    assert list(chart["bar"]) == [f"{full_name} · gain", f"{lora_name} · gain", f"{lora_name} · forgetting"]
    # Picking one run and another chart metric, in Portuguese.
    values = on_poll(session, PT, token, None, None, [full, "someone-elses-run"], "tokens_per_s")
    runs, compare, chart = values[7], values[9], values[10]["value"]
    assert list(runs.iloc[:, 3]) == ["full"] and len(runs) == 1
    assert compare["value"] == [full] and list(chart["value"]) == [151.3]
    assert list(chart["series"]) == ["tokens de treino/s"]


@pytest.mark.parametrize("texts, words", [(EN, "Forgetting (8 examples per task"), (PT, "Esquecimento"),
                                          (FR, "Oubli")])
def test_the_runs_summary_sets_forgetting_beside_the_gain(texts, words):
    metrics = RunMetrics.from_json(_metrics("lora"))
    line = forgetting_text(metrics, texts)
    assert line.startswith(words) and "-7.5" in line and "+15.0" in line
    assert forgetting_text(RunMetrics.from_json(_metrics("lora", forgetting={})), texts) == ""
    off = RunMetrics.from_json(_metrics("lora", forgetting={"examples": 8, "unavailable": "decoder runs only"}))
    assert "decoder runs only" in forgetting_text(off, texts)
    assert EN("ft.task.sentiment") in forgetting_text(metrics, EN) and "50 → 38" in forgetting_text(metrics, EN)
    assert FORGETTING["tasks"][0]["task"] == "sentiment"


def test_a_sweep_starts_from_one_click_and_cancel_stops_it(session, capsys):
    token, owner = _person(session)
    assert "3 runs, one after another" in on_sweep_info(session, EN, "sweep-lora-ranks")
    assert "`lora_r=4, lora_alpha=8`" in on_sweep_info(session, EN, "sweep-lora-ranks")
    assert "3 execuções" in on_sweep_info(session, PT, "sweep-lora-ranks")
    assert on_sweep_info(session, EN, "no-such-sweep").startswith("⚠")
    token_back, picker = on_start_sweep(session, EN, token, "10.0.0.2", "sweep-lora-ranks")
    assert token_back == token and "Sweep sweep-lora-ranks-" in capsys.readouterr().out
    first = picker["value"]
    sweep = session.jobs.get(first, owner).sweep
    assert len(session.jobs.sweep_runs(sweep, owner)) == 3
    on_cancel(session, EN, token, first)
    assert f"Sweep {sweep} stopped: 3 of its runs cancelled." in capsys.readouterr().out
    assert {session.jobs.wait(r.id, TIMEOUT).status for r in session.jobs.sweep_runs(sweep, owner)} == {"cancelled"}
