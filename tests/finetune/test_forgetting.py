"""The catastrophic forgetting check: which tasks it scores, the Prompt Lab's prompts and scoring on a scripted
engine (base with the adapter off, then tuned), the report in metrics.json, cancel, and one real tiny run."""

from __future__ import annotations

import contextlib

import pytest

from playground.finetune import forgetting
from playground.finetune.config import FinetuneConfig
from playground.finetune.forgetting import ForgettingCheck, ForgettingReport, TaskForgetting, other_tasks, target_task
from playground.finetune.result import RunMetrics
from playground.prompting.data import load_bundled
from tests.prompting.fakes import ScriptedEngine


class FakeModel:
    """What the check needs of a model: train/eval, and peft's disable_adapter as a switch it can watch."""

    def __init__(self):
        self.training = True
        self.adapter_on = True
        self.adapter_switched_off = 0

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    @contextlib.contextmanager
    def disable_adapter(self):
        self.adapter_on = False
        self.adapter_switched_off += 1
        try:
            yield
        finally:
            self.adapter_on = True


def _answers_for(model: FakeModel):
    """A scripted reply: the gold answer of the test example in the prompt while the adapter is off (the base),
    something useless once it is on (a model that forgot)."""
    examples = [e for task in ("sentiment", "arithmetic", "translation", "summarization")
                for e in load_bundled(task).examples]

    def reply(prompt, params):
        if model.adapter_on:
            return "banana"
        found = [e for e in examples if e.input in prompt]
        return max(found, key=lambda e: prompt.rindex(e.input)).target if found else "?"

    return reply


@pytest.fixture
def scripted(monkeypatch):
    engines = []

    def engine(model, tokenizer):
        made = ScriptedEngine(_answers_for(model))
        engines.append(made)
        return made

    monkeypatch.setattr(forgetting, "_engine", engine)
    return engines


def _config(**changes) -> FinetuneConfig:
    return FinetuneConfig(**{"data": "dialogues", "forgetting_examples": 3, **changes})


def test_the_check_scores_the_prompt_labs_other_tasks():
    assert target_task("dialogues") == target_task("dialogues-small") == "summarization"
    assert target_task("sentiment") == "sentiment"
    assert target_task("/somewhere/upload.jsonl") == "" and target_task("hub:owner/name") == ""
    assert other_tasks("dialogues") == ["sentiment", "arithmetic", "translation"]
    assert other_tasks("sentiment") == ["arithmetic", "summarization", "translation"]
    assert set(other_tasks("my.jsonl")) == {"sentiment", "arithmetic", "translation", "summarization"}


def test_base_answers_with_the_adapter_off_and_the_tuned_model_with_it_on(scripted):
    model = FakeModel()
    stages = []
    check = ForgettingCheck(_config(), "decoder", stage=lambda side, message: stages.append((side, message)))
    check.base(model, None)
    assert model.adapter_switched_off == 1 and model.training  # the mode comes back after answering
    check.tuned(model, None)
    report = check.report()
    assert [t.task for t in report.tasks] == ["sentiment", "arithmetic", "translation"]
    assert [t.metric for t in report.tasks] == ["accuracy", "exact_match", "rougeL"]
    assert all(t.examples == 3 for t in report.tasks) and report.target_task == "summarization"
    assert [t.before for t in report.tasks] == [1.0, 1.0, 1.0]  # scored by the Prompt Lab: gold answers are right
    assert [t.after for t in report.tasks] == [0.0, 0.0, 0.0]
    assert report.mean_change == -100.0 and report.change_of("arithmetic") == -100.0
    assert [side for side, _ in stages] == ["base"] * 3 + ["tuned"] * 3
    assert "sentiment" in stages[0][1] and "3 examples" in stages[0][1]
    # The prompts are the Prompt Lab's own few-shot templates, each with two demonstrations.
    prompts = scripted[0].prompts
    assert len(prompts) == 9 and sum("How does the writer feel" in p for p in prompts) == 3
    assert prompts[0].count("How does the writer feel") == 3  # two demonstrations and the question


def test_answers_are_short_and_greedy(scripted):
    check = ForgettingCheck(_config(forgetting_examples=1), "decoder")
    assert all(plan.params.temperature == 0.0 for plan in check._plans)
    assert max(plan.params.max_new_tokens for plan in check._plans) <= forgetting.MAX_NEW_TOKENS


def test_the_report_travels_in_metrics_json(scripted):
    model = FakeModel()
    check = ForgettingCheck(_config(forgetting_examples=2), "decoder")
    check.base(model, None)
    check.tuned(model, None)
    metrics = RunMetrics(family="decoder", forgetting=check.report().to_json())
    again = RunMetrics.from_json(metrics.to_json())
    assert again.forgetting_report == check.report()
    assert RunMetrics.from_json({}).forgetting_report is None  # an older run has none


def test_off_for_zero_examples_and_decoders_only(scripted):
    assert ForgettingCheck(_config(forgetting_examples=0), "decoder").report() is None
    encoder = ForgettingCheck(_config(), "encoder")
    encoder.base(FakeModel(), None)
    report = encoder.report()
    assert not report.tasks and "decoder" in report.unavailable and not scripted
    assert ForgettingCheck(_config(), "decoder", active=False).report() is None  # not the main process


def test_a_cancel_ends_the_check_and_leaves_no_change(scripted):
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 2

    model = FakeModel()
    check = ForgettingCheck(_config(), "decoder", should_stop=should_stop)
    check.base(model, None)
    check.tuned(model, None)
    report = check.report()
    assert all(t.change is None for t in report.tasks[1:]) and report.tasks[0].after is None


def test_a_task_that_cannot_be_prompted_is_left_out(monkeypatch):
    monkeypatch.setattr(forgetting, "_engine", lambda model, tokenizer: ScriptedEngine("x", context=64))
    check = ForgettingCheck(_config(forgetting_examples=1), "decoder")
    check.base(FakeModel(), None)
    assert set(check.problems) == {"sentiment", "arithmetic", "translation"}
    assert check.report().mean_change is None and all("context" in t.problem for t in check.report().tasks)


def test_task_forgetting_json_reads_back():
    task = TaskForgetting("sentiment", "accuracy", 8, 0.5, 0.375)
    assert task.change == -0.125 and TaskForgetting.from_json(task.to_json()) == task
    assert ForgettingReport.from_json(None) is None and ForgettingReport.from_json({}) is None


@pytest.mark.slow
def test_a_tiny_decoder_run_measures_forgetting(tmp_path, ft_models, dialogue_file, offline_resolver):
    """The real phase on the fixture's tiny Llama: one example per task, base and tuned, in metrics.json."""
    from playground.finetune.result import RunResult
    from playground.finetune.train import train
    from tests.finetune.conftest import RecordingControl

    config = FinetuneConfig.from_dict({"model": str(ft_models["llama"]), "data": str(dialogue_file),
                                       "input_column": "dialogue", "target_column": "summary",
                                       "template": "dialogue-tldr", "max_steps": 1, "batch_size": 2,
                                       "max_length": 96, "sample_count": 1, "max_new_tokens": 4,
                                       "validation_fraction": 0.0, "forgetting_examples": 1})
    control = RecordingControl()
    outcome = train(config, tmp_path / "run", control, tmp_path / "data", resolver=offline_resolver)
    assert outcome.status == "done"
    report = RunResult(tmp_path / "run").metrics().forgetting_report
    assert report.examples == 1 and report.target_task == ""  # a file: every Prompt Lab task is "another" one
    scored = [t for t in report.tasks if t.change is not None]
    # The tiny model's 512-token context may not hold a few-shot prompt of every task: such a task says why.
    assert all(t.problem for t in report.tasks if t.change is None)
    assert len(scored) >= 3 and all(0.0 <= t.before <= 1.0 and 0.0 <= t.after <= 1.0 for t in scored)
    messages = [e["message"] for e in control.of("stage")]
    assert any(m.startswith("Forgetting check, base model") for m in messages)
    assert any(m.startswith("Forgetting check, fine-tuned model") for m in messages)
    metrics = outcome.metrics
    assert metrics.peak_memory_bytes and metrics.peak_memory_kind == "rss" and metrics.weights_bytes
