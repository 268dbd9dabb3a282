"""Sweep presets: several runs on the same data and seed, queued one after another in one click.

A sweep preset is YAML in ``examples/finetune/sweep-*.yaml``::

    name: Full fine-tuning vs LoRA           # shown on the page
    description: ...
    base: cpu-demo.yaml                      # a preset beside it (or a mapping of config keys)
    changes: {max_steps: 20}                 # optional: applied to the base for every run
    variations:                              # one run each, in this order
      - {method: full, learning_rate: 5.0e-5}
      - {method: lora, lora_r: 4}
      - {method: lora, lora_r: 16}

Each variation is a mapping of :class:`~playground.finetune.config.FinetuneConfig`
keys laid over the base, so unknown keys are errors with the field's own
message, and ``method`` is checked against the method table
(:mod:`playground.finetune.methods`): a method added to the table is usable in a
sweep with no change here. What makes the runs comparable cannot vary (the data,
its columns and template, the split and the seed: :data:`FIXED_KEYS`), two
variations may not be the same run, and a sweep has at most :data:`MAX_RUNS`
runs (fewer under the room's limits).

:func:`load_sweep` reads a preset into a :class:`Sweep` (its configs checked
as values); the session checks every run against the limits and the world and
hands the configs to :meth:`~playground.finetune.jobs.JobManager.submit_sweep`,
which runs them one after another for one person.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from playground.errors import FinetuneConfigError
from playground.finetune.config import FinetuneConfig
from playground.finetune.methods import METHODS

PRESETS_DIR = Path(__file__).resolve().parents[2] / "examples" / "finetune"
PRESET_GLOB = "sweep-*.yaml"
MAX_RUNS = 8
# What a sweep's runs share, so they differ only in what the variations name.
FIXED_KEYS = ("model", "data", "input_column", "target_column", "template", "validation_fraction", "test_fraction",
              "test_limit", "seed", "sample_count", "forgetting_examples")
_PRESET_KEYS = ("name", "description", "base", "changes", "variations")
MAX_PRESET_BYTES = 64_000


@dataclass(frozen=True)
class Sweep:
    """A sweep preset, read: its name, and one config per run (in the order they run)."""

    id: str  # the preset's file stem (sweep-cpu-demo)
    name: str
    description: str
    configs: tuple[FinetuneConfig, ...]
    variations: tuple[Mapping[str, Any], ...]  # what each run changes, as the preset wrote it

    def labels(self) -> list[str]:
        """One short label per run: what its variation changes ("method=full, learning_rate=5e-05")."""
        return [", ".join(f"{k}={v}" for k, v in variation.items()) or "base" for variation in self.variations]

    def fitted(self, fit) -> "Sweep":
        """The sweep with every config passed through ``fit`` (the room's limits lower numbers to their caps)."""
        return dataclasses.replace(self, configs=tuple(fit(c) for c in self.configs))


def preset_ids(folder: Path = PRESETS_DIR) -> list[str]:
    """The sweep presets that ship in ``folder`` (file stems, sorted)."""
    return sorted(p.stem for p in Path(folder).glob(PRESET_GLOB) if p.is_file())


def load_sweep(preset: str, folder: Path = PRESETS_DIR, max_runs: int | None = None) -> Sweep:
    """The sweep preset ``preset`` (a file stem of ``folder``; never a path), its configs checked as values.

    Raises FinetuneConfigError naming the preset, the variation and what is wrong.
    """
    choices = preset_ids(folder)
    if preset not in choices:
        raise FinetuneConfigError(f"There is no sweep preset {preset!r}. Choose one of: "
                                  f"{', '.join(choices) or '(none)'}.")
    path = Path(folder) / f"{preset}.yaml"
    text = path.read_text(encoding="utf-8")
    if len(text.encode("utf-8")) > MAX_PRESET_BYTES:
        raise FinetuneConfigError(f"{path.name} is larger than {MAX_PRESET_BYTES // 1000} kB.")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FinetuneConfigError(f"{path.name} is not valid YAML: {getattr(exc, 'problem', None) or exc}.") from None
    return sweep_from_dict(data, preset, Path(folder), max_runs=max_runs)


def sweep_from_dict(data: Any, preset: str, folder: Path = PRESETS_DIR, max_runs: int | None = None) -> Sweep:
    """A sweep from the mapping of a preset (see the module's docstring)."""
    where = f"{preset}.yaml"
    if not isinstance(data, Mapping):
        raise FinetuneConfigError(f"{where} must be a mapping with keys {', '.join(_PRESET_KEYS)}.")
    unknown = [str(k) for k in data if k not in _PRESET_KEYS]
    if unknown:
        raise FinetuneConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                                  f"a sweep preset has {', '.join(_PRESET_KEYS)}.")
    base = _base_values(data.get("base"), folder, where)
    changes = data.get("changes") or {}
    if not isinstance(changes, Mapping):
        raise FinetuneConfigError(f"{where}: changes must be a mapping of config keys to values.")
    variations = data.get("variations")
    if not isinstance(variations, list) or not variations:
        raise FinetuneConfigError(f"{where}: variations must be a list of mappings, one run each "
                                  f"(e.g. - {{method: lora, lora_r: 4}}).")
    cap = min(MAX_RUNS, max_runs) if max_runs is not None else MAX_RUNS
    if len(variations) > cap:
        raise FinetuneConfigError(f"{where} has {len(variations)} variations; a sweep runs at most {cap} here "
                                  f"(each one holds the training slot in turn).")
    configs, seen = [], {}
    for number, variation in enumerate(variations, start=1):
        if not isinstance(variation, Mapping):
            raise FinetuneConfigError(f"{where}, variation {number}: give a mapping of config keys, e.g. "
                                      f"{{method: lora, lora_r: 8}}.")
        fixed = [str(k) for k in variation if k in FIXED_KEYS]
        if fixed:
            raise FinetuneConfigError(f"{where}, variation {number} changes {', '.join(fixed)}: the runs of a "
                                      f"sweep share their model, data, split, seed and test examples, so they "
                                      f"compare. Put it in base or changes instead.")
        method = variation.get("method", changes.get("method", base.get("method")))
        if method is not None and str(method) not in METHODS:
            raise FinetuneConfigError(f"{where}, variation {number}: method {method!r} is not in the method "
                                      f"table; choose one of: {', '.join(METHODS)}.")
        try:
            config = FinetuneConfig.from_dict({**base, **changes, **variation}, check=False)
        except FinetuneConfigError as exc:
            raise FinetuneConfigError(f"{where}, variation {number}: {exc}") from None
        key = tuple(sorted(config.to_dict().items(), key=lambda item: item[0]))
        key = repr(key)
        if key in seen:
            raise FinetuneConfigError(f"{where}: variations {seen[key]} and {number} are the same run.")
        seen[key] = number
        configs.append(config)
    return Sweep(id=preset, name=str(data.get("name") or preset), description=str(data.get("description") or ""),
                 configs=tuple(configs), variations=tuple(dict(v) for v in variations))


def _base_values(base: Any, folder: Path, where: str) -> dict[str, Any]:
    """The base config's values: a preset file beside the sweep (a plain name, never a path), or a mapping."""
    if base is None:
        return {}
    if isinstance(base, Mapping):
        return dict(base)
    name = str(base)
    if Path(name).name != name or not name.endswith(".yaml") or name.startswith("sweep-"):
        raise FinetuneConfigError(f"{where}: base must name a preset beside it (e.g. cpu-demo.yaml) or be a "
                                  f"mapping of config keys, not {name!r}.")
    path = Path(folder) / name
    if not path.is_file():
        raise FinetuneConfigError(f"{where}: base preset {name} does not exist.")
    return FinetuneConfig.from_yaml(path, check=False).to_dict()
