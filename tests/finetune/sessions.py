"""A fine-tuning session over fakes: a real run store and job manager whose runs are the fake jobs of
``fake_jobs.py``, real signed identities, the catalog, and an offline resolver. No app, no gradio."""

from __future__ import annotations

import json
from pathlib import Path

from playground.finetune.jobs import JobManager
from playground.finetune.runs import SUCCEEDED, RunStore
from playground.finetune.session import FinetuneForm, FinetuneSession
from playground.identity import Identities
from playground.models.catalog import Catalog
from playground.models.sources import SourceResolver
from tests.helpers import offline_settings

QUICK = "tests.finetune.fake_jobs:quick"  # a few steps, an eval, metrics.json and a done event
UNTIL_STOPPED = "tests.finetune.fake_jobs:until_stopped"
NUMBERS = dict(max_steps=3, batch_size=1, max_length=160, sample_count=1, max_new_tokens=8, test_limit=2)


def fake_session(root: Path, entry: str = QUICK, slots: int = 1, **environment: str) -> FinetuneSession:
    """A session whose runs execute ``entry`` in real worker processes; call ``.jobs.shutdown`` when done."""
    settings = offline_settings(root / "data", **environment)
    runs = RunStore(settings.data_dir / "runs")
    jobs = JobManager(runs, slots, poll_s=0.05)
    resolver = SourceResolver(None, offline=True, hub_cache_dir=root / "empty-hub")
    return FinetuneSession(runs=runs, jobs=jobs, identities=Identities.from_settings(settings),
                           catalog=Catalog.load(), resolver=resolver, settings=settings, entry=entry)


def form(**changes) -> FinetuneForm:
    """A form the page could send: SmolLM2, LoRA, the bundled small dialogues and quick numbers."""
    values = dict(model="smollm2-135m-instruct", method="lora", data="dialogues-small", numbers=dict(NUMBERS))
    values.update(changes)
    return FinetuneForm(**values)


def finished_run(session: FinetuneSession, owner: str, config: dict | None = None, weights: dict | None = None,
                 samples: list | None = None, metrics: dict | None = None) -> str:
    """A run marked succeeded with the result files given (``weights``: the adapter's playground.json)."""
    run_id = session.runs.create(owner, config or {"model": "smollm2-135m-instruct", "method": "lora"}, QUICK)
    folder = session.runs.path(run_id)
    if weights is not None:
        (folder / "adapter").mkdir()
        (folder / "adapter" / "playground.json").write_text(json.dumps(weights))
        (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    if samples is not None:
        (folder / "samples.jsonl").write_text("".join(json.dumps(row) + "\n" for row in samples))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    session.runs.set_status(run_id, SUCCEEDED, force=True)
    return run_id
