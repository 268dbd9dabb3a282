"""GPU presets: the FLAN-T5 base LoRA lab (1.41% of parameters train). Needs CUDA and FLAN-T5 from the Hub."""

from __future__ import annotations

import pytest

from playground.errors import ModelUnavailableError
from playground.finetune.config import FinetuneConfig
from playground.finetune.train import train
from playground.prompting.tasks import EXAMPLES_DIR
from tests.finetune.conftest import RecordingControl, assert_event_shapes


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["flan-t5-base-lora.yaml", "flan-t5-base-qlora.yaml"])
def test_flan_t5_base_preset_trains_on_the_gpu(preset, tmp_path):
    from playground.config import Settings
    from playground.finetune.methods import locate_model
    from playground.models.sources import SourceResolver

    settings = Settings.load()
    resolver = SourceResolver(settings.models_dir, settings.offline)
    config = FinetuneConfig.from_yaml(EXAMPLES_DIR / "finetune" / preset).replace(max_steps=10, sample_count=2,
                                                                                 test_limit=8, eval_every=5)
    try:
        locate_model(config, resolver, settings.data_dir)
    except ModelUnavailableError as exc:
        pytest.skip(f"FLAN-T5 base is not available here: {str(exc).splitlines()[0]}")
    control = RecordingControl()
    outcome = train(config, tmp_path / "run", control, settings.data_dir, resolver=resolver)
    assert outcome.status == "done"
    assert_event_shapes(control.events)
    assert round(100 * outcome.metrics.trainable_share, 2) == 1.41
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.gpu
def test_flan_t5_base_lora_on_dialogsum_reaches_the_labs_rouge(tmp_path):
    """The lab's figure: LoRA on FLAN-T5 base, one epoch of DialogSum, ROUGE-1 >= 0.40 on its test dialogues."""
    from playground.config import Settings
    from playground.errors import DataFileError
    from playground.finetune.data import load_records
    from playground.finetune.methods import locate_model
    from playground.models.sources import SourceResolver

    settings = Settings.load()
    resolver = SourceResolver(settings.models_dir, settings.offline)
    config = FinetuneConfig.from_yaml(EXAMPLES_DIR / "finetune" / "flan-t5-base-lora-dialogsum.yaml")
    try:
        locate_model(config, resolver, settings.data_dir)
        load_records(config)
    except (ModelUnavailableError, DataFileError) as exc:
        pytest.skip(f"FLAN-T5 base or DialogSum is not available here: {str(exc).splitlines()[0]}")
    outcome = train(config, tmp_path / "run", RecordingControl(), settings.data_dir, resolver=resolver)
    assert outcome.status == "done"
    rouge = outcome.metrics.rouge_after
    print(f"DialogSum test ({outcome.metrics.sample_count} dialogues): ROUGE-1 {rouge['rouge1']:.3f}, "
          f"ROUGE-2 {rouge['rouge2']:.3f}, ROUGE-L {rouge['rougeL']:.3f}; base ROUGE-1 "
          f"{outcome.metrics.rouge_before['rouge1']:.3f}")
    assert rouge["rouge1"] >= 0.40
