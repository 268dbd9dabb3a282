"""Training runs on tiny random models: every family, events, results on disk, cancel, save failure, memory refusal."""

from __future__ import annotations

import errno
import json

import pytest

from playground.errors import InsufficientMemoryError, SaveError
from playground.finetune.config import FinetuneConfig
from playground.finetune.train import train
from tests.finetune.conftest import RecordingControl, assert_event_shapes, dialogue_rows, write_jsonl

FAST = dict(max_steps=4, batch_size=2, learning_rate=1e-2, max_length=128, sample_count=2, max_new_tokens=6,
            validation_fraction=0.2, seed=3)


def _dialogue_config(model, data, **extra) -> FinetuneConfig:
    return FinetuneConfig.from_dict({"model": str(model), "data": str(data), "input_column": "dialogue",
                                     "target_column": "summary", "template": "dialogue-tldr", **FAST, **extra})


def _adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory, ft_models, dialogue_file, offline_resolver):
    run_dir = tmp_path_factory.mktemp("run") / "decoder"
    control = RecordingControl()
    config = _dialogue_config(ft_models["llama"], dialogue_file, eval_every=2)
    outcome = train(config, run_dir, control, tmp_path_factory.mktemp("data"), resolver=offline_resolver)
    return outcome, control, run_dir


def test_decoder_lora_run_emits_the_documented_events(decoder_run):
    outcome, control, _ = decoder_run
    assert outcome.status == "done" and outcome.step == 4
    assert_event_shapes(control.events)
    assert control.of("start") == [{"event": "start", "total_steps": 4}]
    steps = control.of("step")
    assert [e["step"] for e in steps] == [1, 2, 3, 4] and all(e["total_steps"] == 4 for e in steps)
    # The ETA counts every phase left: after the last step the fine-tuned model is still to be scored.
    assert steps[0]["learning_rate"] == pytest.approx(1e-2) and steps[-1]["eta_s"] > 0.0
    assert all(e["tokens_per_s"] > 0 for e in steps)
    assert [e["step"] for e in control.of("eval")] == [2, 4]  # eval_every=2; no duplicate at the end
    assert control.events[-1]["event"] == "done" and control.events[-1]["metrics"] == outcome.metrics.to_json()


def test_every_phase_reports_its_counts_and_an_eta_over_all_phases(decoder_run):
    _, control, _ = decoder_run
    counted = [e for e in control.of("stage") if "phase" in e]
    phases = [e["phase"] for e in counted]
    # 12 test examples in batches of 2, two answers, 4 steps, validation passes at steps 2 and 4.
    for phase in ("baseline_loss", "baseline", "training", "validation", "tuned_loss", "tuned", "saving"):
        assert phase in phases, phases
    assert phases.index("baseline") < phases.index("training") < phases.index("tuned_loss") < phases.index("tuned")
    answers = [(e["done"], e["total"]) for e in counted if e["phase"] == "baseline" and e["done"]]
    assert answers == [(2, 2)]  # transformers answers a batch of 2 at once: "Base model: generating 2 of 2"
    assert all(e["done"] <= e["total"] for e in counted)
    validation = [e for e in counted if e["phase"] == "validation"]
    assert validation and validation[-1]["total"] == validation[-1]["done"]  # the passes planned were made
    # Once the base model's first test batch is timed, every event has an ETA, falling to 0 when saving.
    timed = counted[next(i for i, e in enumerate(counted) if e["eta_s"] is not None):]
    assert all(e["eta_s"] is not None for e in timed) and timed[-1]["phase"] == "saving"
    assert [e["eta_s"] for e in counted if e["phase"] == "tuned_loss"][0] > 0  # the answers are still to come


def test_decoder_lora_run_writes_adapter_samples_metrics(decoder_run):
    outcome, _, run_dir = decoder_run
    assert sorted(p.name for p in run_dir.iterdir()) == ["adapter", "config.yaml", "metrics.json", "samples.jsonl"]
    assert FinetuneConfig.from_yaml(run_dir / "config.yaml").template == "dialogue-tldr"
    adapter = run_dir / "adapter"
    assert (adapter / "adapter_config.json").is_file() and not list(adapter.glob("*.bin"))
    tensors = _adapter_tensors(adapter)
    lora_b = [v for k, v in tensors.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().sum()) > 0 for v in lora_b)  # B starts at zero: training moved it
    info = json.loads((adapter / "playground.json").read_text())
    assert info["method"] == "lora" and info["family"] == "decoder" and info["target_modules"] == ["q_proj", "v_proj"]  # peft default for llama
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train_loss_first", "train_loss_last", "test_loss_before", "test_loss_after", "tokens_per_s",
                "padding_share", "truncated", "duration_s", "rouge_before", "rouge_after", "trainable_share"):
        assert metrics[key] is not None, key
    assert set(metrics["rouge_before"]) == {"rouge1", "rouge2", "rougeL"}
    # Wall time per section, in run order, adding up to (at most) the whole run's.
    phases = metrics["phase_seconds"]
    assert list(phases) == ["load", "base_scoring", "training", "tuned_scoring", "save"]
    assert all(v >= 0 for v in phases.values()) and sum(phases.values()) <= metrics["duration_s"] + 0.01
    assert len(metrics["data"]["train_token_lengths"]) == metrics["data"]["train"]["examples"] + \
        metrics["data"]["train"]["dropped"]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2
    for row in samples:
        for key in ("input", "reference", "base_output", "tuned_output", "base_rouge1", "base_rouge2", "base_rougeL",
                    "tuned_rouge1", "tuned_rouge2", "tuned_rougeL", "improvement"):
            assert key in row, key
        assert row["improvement"] == pytest.approx(row["tuned_rougeL"] - row["base_rougeL"], abs=1e-4)
        assert "quantized_output" not in row and "quantized_rougeL" not in row
    # A folder has no GGUF for llama.cpp: auto answers on transformers, with no quantized system, and says why.
    assert metrics["sample_engine"] == "transformers" and metrics["rouge_quantized"] is None
    assert "local folder" in metrics["quantized_unavailable"]
    assert set(metrics["engines"]) == {"base", "tuned"}
    assert not [p for p in run_dir.parent.rglob(".*partial*")]


def test_seq2seq_lora_on_tiny_t5(tmp_path, ft_models, dialogue_file, offline_resolver, control):
    config = _dialogue_config(ft_models["t5"], dialogue_file, validation_fraction=0)
    outcome = train(config, tmp_path / "run", control, tmp_path / "data", resolver=offline_resolver)
    assert outcome.status == "done" and outcome.metrics.family == "encoder-decoder"
    assert_event_shapes(control.events)
    assert not control.of("eval")  # no validation rows, no validation loss
    tensors = _adapter_tensors(tmp_path / "run" / "adapter")
    assert {k.split(".")[-2] for k in tensors} == {"lora_A", "lora_B"}
    assert any(".q." in k for k in tensors) and any(".v." in k for k in tensors)  # peft's T5 default: q and v
    assert any(float(v.abs().sum()) > 0 for k, v in tensors.items() if "lora_B" in k)
    assert outcome.metrics.test_loss_after < outcome.metrics.test_loss_before


def test_classifier_on_tiny_bert(tmp_path, ft_models, offline_resolver, control):
    rows = [{"text": t, "label": lab, "split": s} for s in ("train", "test") for t, lab in (
        ("the quick fox is quick", "fast"), ("the lazy dog is lazy", "slow"), ("small models run fast", "fast"),
        ("the dog sleeps all day", "slow"))]
    data = write_jsonl(tmp_path / "labels.jsonl", rows * 2)
    config = FinetuneConfig.from_dict({"model": str(ft_models["bert"]), "method": "classifier", "data": str(data),
                                       "input_column": "text", "target_column": "label", **FAST,
                                       "learning_rate": 5e-2, "max_steps": 6, "sample_count": 3})
    outcome = train(config, tmp_path / "run", control, tmp_path / "data", resolver=offline_resolver)
    metrics = outcome.metrics
    assert outcome.status == "done" and metrics.labels == ("fast", "slow")
    assert metrics.accuracy_before is not None and metrics.accuracy_after is not None
    assert_event_shapes(control.events)
    adapter = tmp_path / "run" / "adapter"
    info = json.loads((adapter / "playground.json").read_text())
    assert info["label2id"] == {"fast": 0, "slow": 1} and info["method"] == "classifier"
    assert any("classifier" in k for k in _adapter_tensors(adapter))  # the new head is saved with the adapter
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(s["tuned_output"] in ("fast", "slow") for s in samples)
    assert all(isinstance(s["tuned_correct"], bool) for s in samples)


def test_batches_follow_the_config_and_extra_callbacks_join_the_loop(tmp_path, ft_models, dialogue_file,
                                                                     offline_resolver, control):
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        """Notes the Trainer's batch settings and the width of every training batch the model reads."""

        def __init__(self):
            self.args, self.batches, self.steps = None, [], 0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.args = args
            model.register_forward_pre_hook(
                lambda module, a, kw: self.batches.append(len(kw["input_ids"])) if module.training else None,
                with_kwargs=True)

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1

    recorder = Recorder()
    config = _dialogue_config(ft_models["llama"], dialogue_file, batch_size=2, grad_accum=2, max_steps=2,
                              validation_fraction=0, sample_count=0)
    outcome = train(config, tmp_path / "run", control, tmp_path / "data", resolver=offline_resolver,
                    callbacks=[recorder])
    assert outcome.status == "done" and recorder.steps == 2
    assert recorder.args.per_device_train_batch_size == 2 and recorder.args.gradient_accumulation_steps == 2
    assert recorder.args.optim == "adamw_torch_fused"  # one kernel per step, not a loop over the parameters
    assert recorder.args.train_sampling_strategy == "group_by_length"  # similar lengths batched: less padding
    assert recorder.batches and max(recorder.batches) == 2  # six training rows: never all of them at once
    assert outcome.metrics.tokens_seen > 0 and [e["step"] for e in control.of("step")] == [1, 2]


def test_cancel_is_honoured_within_one_step(tmp_path, ft_models, dialogue_file, offline_resolver):
    control = RecordingControl(stop_after_steps=1)
    config = _dialogue_config(ft_models["llama"], dialogue_file, max_steps=50, validation_fraction=0)
    outcome = train(config, tmp_path / "run", control, tmp_path / "data", resolver=offline_resolver)
    steps = [e["step"] for e in control.of("step")]
    assert outcome.cancelled and steps and steps[-1] <= 2  # asked after step 1, stopped by the end of step 2
    assert control.events[-1] == {"event": "cancelled", "step": steps[-1]}
    assert not control.of("done")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml"]  # nothing half-saved


def test_cancel_before_training_stops_at_step_zero(tmp_path, ft_models, dialogue_file, offline_resolver):
    control = RecordingControl(stop_after_steps=0)
    config = _dialogue_config(ft_models["llama"], dialogue_file)
    outcome = train(config, tmp_path / "run", control, tmp_path / "data", resolver=offline_resolver)
    assert outcome.cancelled and control.events[-1] == {"event": "cancelled", "step": 0}
    assert not control.of("start")


def test_save_failure_is_clear_and_leaves_no_half_adapter(tmp_path, ft_models, dialogue_file, offline_resolver,
                                                          monkeypatch, control):
    from peft import PeftModel

    def disk_full(self, save_directory, **kwargs):
        (save_directory / "adapter_model.safetensors").write_bytes(b"half of it")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PeftModel, "save_pretrained", disk_full)
    run_dir = tmp_path / "run"
    config = _dialogue_config(ft_models["llama"], dialogue_file, max_steps=1, validation_fraction=0)
    with pytest.raises(SaveError) as info:
        train(config, run_dir, control, tmp_path / "data", resolver=offline_resolver)
    message = str(info.value)
    assert message.startswith("Could not save the adapter: the server's disk is full")
    assert "Free some space" in message and str(tmp_path) not in message and "Errno" not in message
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]  # no adapter, no partial copy, no metrics
    assert not control.of("done")


def test_unwritable_run_dir_is_a_clear_error(tmp_path, ft_models, dialogue_file, offline_resolver, control):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = _dialogue_config(ft_models["llama"], dialogue_file)
    with pytest.raises(SaveError, match=r"Could not write the run directory to .*file/run"):
        train(config, blocker / "run", control, tmp_path / "data", resolver=offline_resolver)


def test_full_finetune_is_refused_when_the_estimate_does_not_fit(tmp_path, ft_models, dialogue_file,
                                                                 offline_resolver, control):
    config = _dialogue_config(ft_models["llama"], dialogue_file, method="full")
    with pytest.raises(InsufficientMemoryError) as info:
        train(config, tmp_path / "run", control, tmp_path / "data", resolver=offline_resolver,
              memory_budget_bytes=200_000)
    message = str(info.value)
    assert message.startswith("full fine-tuning of tiny-llama needs about")
    assert "the memory budget given to this run has 0.00 GiB available" in message
    assert "use method lora or qlora" in message
    assert not control.of("start") and not (tmp_path / "run" / "model").exists()


def test_full_finetune_saves_the_whole_model(tmp_path, ft_models, dialogue_file, offline_resolver, control):
    from transformers import AutoModelForCausalLM

    config = _dialogue_config(ft_models["llama"], dialogue_file, method="full", max_steps=2, learning_rate=1e-3,
                              validation_fraction=0, sample_count=1)
    outcome = train(config, tmp_path / "run", control, tmp_path / "data", resolver=offline_resolver)
    assert outcome.metrics.trainable_share == 1.0 and outcome.metrics.output_dir == "model"
    model_dir = tmp_path / "run" / "model"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "playground.json").is_file()
    trained = AutoModelForCausalLM.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(ft_models["llama"])
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not trained.state_dict()[name].equal(base.state_dict()[name])


def test_run_job_reads_the_saved_config(tmp_path, ft_models, dialogue_file, monkeypatch, control):
    from playground.finetune.train import run_job

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = _dialogue_config(ft_models["llama"], dialogue_file, max_steps=1, sample_count=0, validation_fraction=0)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    monkeypatch.setenv("PLAYGROUND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PLAYGROUND_OFFLINE", "1")
    outcome = run_job(run_dir, control)
    assert outcome.status == "done" and outcome.metrics.sample_count == 0
    assert outcome.metrics.rouge_before is None
    assert (run_dir / "config.yaml").read_text() == config.to_yaml()  # the job's config is never rewritten
