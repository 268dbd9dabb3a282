"""Per-run limits on fine-tuning submitted from the app, so one hosted instance serves a whole room.

In ``workshop`` mode (DESIGN rule 10) many attendees share one machine and
usually one training slot, so every run the app accepts must be cheap and
must end: only catalog models, no ``full`` fine-tuning, a bounded number of
steps, examples per step, tokens per example and test examples, and at most
one queued-or-running run per person. In ``local`` mode there are no caps
beyond the bounds :class:`~playground.finetune.config.FinetuneConfig` itself
enforces.

:class:`FinetuneLimits` is derived from :class:`~playground.config.Settings`;
its :meth:`~FinetuneLimits.check` refuses a config with a message naming each
field, its value and the cap, and :meth:`~FinetuneLimits.check_active` refuses
a second active run (pass it to :meth:`JobManager.submit` as ``admit`` so two
clicks at the same moment cannot both pass). The Fine-tune tab calls both
before any work; ``python -m playground finetune`` does not: it trains in the
caller's own process, outside the shared queue, so it stays unlimited.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from playground.errors import FinetuneConfigError, InvalidParameterError
from playground.finetune.config import FinetuneConfig
from playground.finetune.methods import get_method

if TYPE_CHECKING:
    from playground.config import Settings
    from playground.finetune.runs import RunRecord
    from playground.models.catalog import Catalog

# Workshop caps. A LoRA step of SmolLM2 at batch 2 x 384 tokens takes seconds on a CPU and well under one on a
# GPU, so 200 steps of at most 16 x 512 tokens keep one run to minutes on the GPU a workshop host should have;
# the shipped defaults (30 steps, batch 2, 384 tokens) sit well inside every cap.
WORKSHOP_MAX_STEPS = 200
WORKSHOP_MAX_EFFECTIVE_BATCH = 16  # batch_size x grad_accum: the examples behind one optimizer step
WORKSHOP_MAX_LENGTH = 512
# Test loss and the before/after answers are computed twice (base and tuned), and generating answers is the slow
# part of a run after training, so both are kept to a screenful of examples.
WORKSHOP_MAX_TEST_EXAMPLES = 16
WORKSHOP_MAX_SAMPLES = 16
# Each sample is answered twice inside the training slot, so half the chat tabs' per-request token cap (256).
WORKSHOP_MAX_NEW_TOKENS = 128
# Rank 64 is already generous for 135M-500M models; rank 1024 would make the "adapter" as big as the weights.
WORKSHOP_MAX_LORA_R = 64
WORKSHOP_MAX_ACTIVE_RUNS = 1
# The forgetting check answers this many examples of each other task, twice (base and tuned), greedy and short.
WORKSHOP_MAX_FORGETTING_EXAMPLES = 8
# A sweep holds the training slot for all its runs in turn: a few variations, not a grid search.
WORKSHOP_MAX_SWEEP_RUNS = 3
# Prompt and prefix tuning: each virtual token is a position of every example (and, for prefix tuning, a key and a
# value in every layer); 64 is more than their papers use on small models.
WORKSHOP_MAX_VIRTUAL_TOKENS = 64


class ActiveRunLimitError(InvalidParameterError):
    """The person already has as many queued-or-running runs as the limits allow."""


@dataclass(frozen=True)
class FinetuneLimits:
    """What one fine-tuning run from the app may ask for; ``None`` means no cap beyond the config's own bounds."""

    mode: str = "local"
    catalog_only: bool = False
    allow_full: bool = True
    max_steps: int | None = None  # also makes max_steps=0 ("train for epochs") unavailable
    max_effective_batch: int | None = None
    max_length: int | None = None
    max_test_examples: int | None = None  # also makes test_limit=0 ("all") unavailable
    max_samples: int | None = None
    max_new_tokens: int | None = None
    max_lora_r: int | None = None
    max_active_runs: int | None = None
    max_forgetting_examples: int | None = None
    max_sweep_runs: int | None = None  # runs in one sweep (the sweep module's own cap applies anyway)
    max_virtual_tokens: int | None = None

    @classmethod
    def from_settings(cls, settings: "Settings") -> "FinetuneLimits":
        """The workshop caps when ``settings.mode`` is workshop; no caps otherwise."""
        if settings.mode != "workshop":
            return cls(mode=settings.mode)
        return cls(mode=settings.mode, catalog_only=settings.catalog_only, allow_full=False,
                   max_steps=WORKSHOP_MAX_STEPS, max_effective_batch=WORKSHOP_MAX_EFFECTIVE_BATCH,
                   max_length=WORKSHOP_MAX_LENGTH, max_test_examples=WORKSHOP_MAX_TEST_EXAMPLES,
                   max_samples=WORKSHOP_MAX_SAMPLES,
                   max_new_tokens=min(WORKSHOP_MAX_NEW_TOKENS, settings.request_token_limit),
                   max_lora_r=WORKSHOP_MAX_LORA_R, max_active_runs=WORKSHOP_MAX_ACTIVE_RUNS,
                   max_forgetting_examples=WORKSHOP_MAX_FORGETTING_EXAMPLES, max_sweep_runs=WORKSHOP_MAX_SWEEP_RUNS,
                   max_virtual_tokens=WORKSHOP_MAX_VIRTUAL_TOKENS)

    @property
    def unlimited(self) -> bool:
        return self == FinetuneLimits(mode=self.mode)

    # ------------------------------------------------------------------ per field, for widgets
    def maximum(self, name: str) -> int | None:
        """The cap on one FinetuneConfig field (None: only the config's own bound), for a widget's label."""
        return {"max_steps": self.max_steps, "batch_size": self.max_effective_batch,
                "grad_accum": self.max_effective_batch, "max_length": self.max_length,
                "test_limit": self.max_test_examples, "sample_count": self.max_samples,
                "max_new_tokens": self.max_new_tokens, "lora_r": self.max_lora_r,
                "forgetting_examples": self.max_forgetting_examples,
                "num_virtual_tokens": self.max_virtual_tokens}.get(name)

    def fit(self, config: FinetuneConfig) -> FinetuneConfig:
        """``config`` with every capped number lowered to its cap: starting values a form can submit as is.

        "No limit" values (max_steps 0, test_limit 0) become the cap; the effective batch is met by lowering
        grad_accum first, since it only trades time for a bigger batch.
        """
        changes = {}
        for name in ("max_steps", "max_length", "test_limit", "sample_count", "max_new_tokens", "lora_r",
                     "forgetting_examples", "num_virtual_tokens"):
            cap, value = self.maximum(name), getattr(config, name)
            if cap is not None and (value > cap or (value == 0 and name in ("max_steps", "test_limit"))):
                changes[name] = cap
        if self.max_effective_batch is not None and config.batch_size * config.grad_accum > self.max_effective_batch:
            batch = min(config.batch_size, self.max_effective_batch)
            changes.update(batch_size=batch, grad_accum=max(1, self.max_effective_batch // batch))
        return dataclasses.replace(config, **changes) if changes else config

    # ------------------------------------------------------------------ checks
    def check(self, config: FinetuneConfig, catalog: "Catalog | None" = None) -> FinetuneConfig:
        """Refuse a run these limits do not allow; returns ``config``.

        Looks at values only (no file, no model is touched), so it can run before any other work.
        Every problem is reported at once, each naming the field, the value and the cap.
        """
        if self.unlimited:
            return config
        where = f"in {self.mode} mode"
        problems = []
        if self.catalog_only:
            from playground.models.catalog import Catalog

            catalog = catalog or Catalog.load()
            if config.model not in catalog.ids:
                problems.append(f"model {config.model!r} cannot be fine-tuned {where}: only catalog models may "
                                f"load here (no local folders, no other ids). Choose one of: "
                                f"{', '.join(catalog.ids)}.")
        method = get_method(config.method)
        adapter = method.adapter
        if not self.allow_full and not adapter:
            problems.append(f"method {config.method!r} is not available {where}: it trains every weight, needs several times "
                            f"the model's memory for gradients and optimizer states, and holds the shared training "
                            f"slot far longer than an adapter. Choose lora or qlora (Estimate still shows what full "
                            f"fine-tuning would cost).")
        if self.max_steps is not None:
            if config.max_steps == 0:
                problems.append(f"max_steps=0 (train for 'epochs') is not available {where}: every run must name "
                                f"its number of steps so it ends in bounded time. Set max_steps between 1 and "
                                f"{self.max_steps} (epochs is then not used).")
            else:
                problems.append(_above("max_steps", config.max_steps, self.max_steps, "steps per run", where))
        if self.max_effective_batch is not None:
            effective = config.batch_size * config.grad_accum
            if effective > self.max_effective_batch:
                problems.append(f"batch_size x grad_accum = {config.batch_size} x {config.grad_accum} = {effective} "
                                f"is above the limit of {self.max_effective_batch} examples per optimizer step "
                                f"{where}. Lower batch_size or grad_accum so their product is at most "
                                f"{self.max_effective_batch}.")
        if self.max_length is not None:
            problems.append(_above("max_length", config.max_length, self.max_length, "tokens per example", where))
        if self.max_test_examples is not None:
            if config.test_limit == 0:
                problems.append(f"test_limit=0 (score every test example) is not available {where}. Set test_limit "
                                f"between 1 and {self.max_test_examples}.")
            else:
                problems.append(_above("test_limit", config.test_limit, self.max_test_examples, "test examples",
                                       where))
        if self.max_samples is not None:
            problems.append(_above("sample_count", config.sample_count, self.max_samples,
                                   "examples answered before and after", where))
        if self.max_new_tokens is not None:
            problems.append(_above("max_new_tokens", config.max_new_tokens, self.max_new_tokens,
                                   "new tokens per answer", where))
        if self.max_lora_r is not None and "lora_r" in method.knobs:  # the methods that read a rank
            problems.append(_above("lora_r", config.lora_r, self.max_lora_r, "for the adapter's rank", where))
        if self.max_forgetting_examples is not None:
            problems.append(_above("forgetting_examples", config.forgetting_examples, self.max_forgetting_examples,
                                   "examples per task in the forgetting check", where))
        if self.max_virtual_tokens is not None and "num_virtual_tokens" in method.knobs:
            problems.append(_above("num_virtual_tokens", config.num_virtual_tokens, self.max_virtual_tokens,
                                   "virtual tokens", where))
        problems = [p for p in problems if p]
        if problems:
            raise FinetuneConfigError(" ".join(problems))
        return config

    def check_active(self, runs: Iterable["RunRecord"]) -> None:
        """Refuse a new run while the owner already has ``max_active_runs`` runs queued or running.

        ``runs`` are one owner's records; the message names the active run, so the person can find and cancel it.
        The runs of one sweep (queued to run one after another) count as one.
        """
        if self.max_active_runs is None:
            return
        active = [run for run in runs if not run.terminal]
        units = {getattr(run, "sweep", "") or run.id for run in active}
        if len(units) < self.max_active_runs:
            return
        run = next((r for r in active if r.queue_position == 0), active[0])
        state = f"waiting in the queue at position {run.queue_position}" if run.queue_position else run.status
        one = "one run" if self.max_active_runs == 1 else f"{self.max_active_runs} runs"
        raise ActiveRunLimitError(
            f"You already have run {run.id} ({state}). In {self.mode} mode each person may have {one} queued or "
            f"running at a time: wait for it to finish, or pick it under 'Your runs' and cancel it, then start again."
        ).keyed("error.active_run", run=run.id, limit=self.max_active_runs)


def _above(name: str, value: int, cap: int, what: str, where: str) -> str:
    """The message for one value above its cap ("" when within it)."""
    if value <= cap:
        return ""
    return f"{name}={value} is above the limit of {cap} {what} {where}. Set {name} to {cap} or less."
