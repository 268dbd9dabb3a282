"""The Fine-tune tab's controller: one fine-tuning session, from a filled-in form to a run's result.

:class:`FinetuneSession` gets the app's shared things when it is made (the run
store, the job manager, the identities, the catalog, the source resolver, the
settings and the run limits) and answers each of the tab's buttons with plain
data; it never imports gradio, so a test, a script and the tab all drive it the
same way:

- :meth:`~FinetuneSession.inspect` and :meth:`~FinetuneSession.estimate` read a
  :class:`FinetuneForm` (the widgets' values) and give the data report and the
  cost report;
- :meth:`~FinetuneSession.start` queues a run for the person behind an identity
  token, within the room's limits; :meth:`~FinetuneSession.start_sweep` queues a
  sweep preset's runs (:mod:`~playground.finetune.sweep`), one after another, as
  one start;
- :meth:`~FinetuneSession.poll` reads a run's progress from where the last poll
  stopped (a :class:`PollCursor` the page keeps), so each poll reads only the
  lines the trainer appended since;
- :meth:`~FinetuneSession.cancel`, :meth:`~FinetuneSession.download`,
  :meth:`~FinetuneSession.merge`, :meth:`~FinetuneSession.adapter_gguf`,
  :meth:`~FinetuneSession.merged_gguf` and :meth:`~FinetuneSession.use_in_lab` act on
  one of the person's runs.

Who asks is the identity behind the signed token the server gave the browser
(:class:`~playground.identity.Identities`), checked on every call: a token that
does not verify sees no runs and can start, cancel or download nothing, and
someone else's run reads as no run at all. Refusals the page words itself are
:class:`SessionRefusal` subclasses; every other problem is a PlaygroundError
with its message.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from playground.errors import FinetuneConfigError, PlaygroundError
from playground.finetune.config import FinetuneConfig
from playground.finetune.costs import CostReport
from playground.finetune.data import DataFileSummary, check_data_file, data_file_columns
from playground.finetune.data_ids import BUNDLED_DATA, HUB_PREFIX, PREFERENCE_FIELDS
from playground.finetune.export import merge_problem, merged_archive, result_archive
from playground.finetune.finetuned import FinetunedModel, usable_result
from playground.finetune.gguf_export import NoGGUFBaseError, adapter_gguf_export, base_gguf_of, quantized_export
from playground.finetune.jobs import TRAIN_ENTRY, JobManager
from playground.finetune.limits import FinetuneLimits
from playground.finetune.methods import TABLE
from playground.finetune.preflight import DataReport, data_report, preflight
from playground.finetune.result import (
    LossPoint,
    RunMetrics,
    RunResult,
    aggregate_rows,
    chart_rows,
    comparison_rows,
    loss_points,
    run_rows,
    table_csv,
)
from playground.finetune.runs import SUCCEEDED, RunRecord, RunStore
from playground.finetune.sweep import Sweep, load_sweep, preset_ids
from playground.finetune.templates import load_templates
from playground.atomic import atomic_write_text, save_error
from playground.identity import Identities
from playground.models.quantize import quant_type

UPLOAD = "upload"  # the data choice that means "the file I uploaded"
INTEGER_FIELDS = frozenset(f.name for f in fields(FinetuneConfig) if f.type in ("int", int))


class SessionRefusal(PlaygroundError):
    """A request the session turns down for a reason the page words itself (in the person's language)."""


class NoRunChosen(SessionRefusal):
    def __init__(self) -> None:
        super().__init__("No run chosen: start one, or pick one of yours.")


class RunNotFinished(SessionRefusal):
    def __init__(self, status: str) -> None:
        super().__init__(f"This run is {status}; only a finished run can be downloaded or used.")
        self.status = status


class NothingSaved(SessionRefusal):
    def __init__(self) -> None:
        super().__init__("This run saved no weights.")


class NotAnAdapter(SessionRefusal):
    def __init__(self) -> None:
        super().__init__("This run trained every weight: its result is already a whole model, with no adapter to "
                         "merge. Download it instead.")


class NotMergeable(SessionRefusal):
    """The run's adapter (prompt or prefix tuning) has no weight change to merge into its base."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class NoGGUFBase(SessionRefusal):
    def __init__(self, base: str) -> None:
        super().__init__(f"This run's base {base} has no GGUF file for llama.cpp; download the merged model "
                         f"(safetensors) instead.")
        self.base = base


# ------------------------------------------------------------------------------ requests and answers


@dataclass(frozen=True)
class FinetuneForm:
    """The Fine-tune form as the page fills it in: a model, a method, data (a bundled set, an upload or a Hub
    id) with its column mapping, a template, target modules and the numbers of the hyperparameter panel."""

    model: str
    method: str
    data: str
    upload: str | None = None  # the uploaded file's path, when ``data`` is "upload"
    input_column: str = ""
    target_column: str = ""
    template: str = "auto"
    target_modules: str = ""  # comma-separated
    numbers: Mapping[str, Any] = field(default_factory=dict)  # FinetuneConfig field -> widget value

    @property
    def uploaded(self) -> bool:
        return str(self.data or "").strip() == UPLOAD

    def config(self) -> FinetuneConfig:
        """The FinetuneConfig it asks for; the dataclass refuses bad values with the field's name.

        An upload is read first, so a file that is not usable says so under its own name (never the
        server's temporary path); a missing column mapping lists the file's columns. A path typed into
        the page would read files of the server: only bundled sets, uploads and Hub ids are taken.
        """
        data = str(self.data or "").strip()
        source = data
        input_column, target_column = str(self.input_column or "").strip(), str(self.target_column or "").strip()
        if self.uploaded:
            if not self.upload:
                raise PlaygroundError("Upload a JSONL or CSV file first, or choose a bundled data set.")
            source = str(self.upload)
            file_name = Path(source).name
            columns = data_file_columns(source)
            chosen = (("input", input_column), ("target", target_column))
            if TABLE.get(self.method) is not None and TABLE[self.method].preference:
                chosen = ()  # preference pairs have fixed fields
                missing_fields = [name for name in PREFERENCE_FIELDS if name not in columns]
                if missing_fields:
                    raise PlaygroundError(f"{file_name} has no {', '.join(map(repr, missing_fields))} field: method "
                                          f"{self.method} reads preference pairs with the fields "
                                          f"{', '.join(PREFERENCE_FIELDS)} (its fields: {', '.join(columns)}).")
            missing = [role for role, column in chosen if not column]
            if missing:
                raise PlaygroundError(f"Name the columns of {file_name}: choose the {' and the '.join(missing)} "
                                      f"column (its columns: {', '.join(columns)}).")
            for role, column in chosen:
                if column not in columns:
                    raise PlaygroundError(f"{file_name} has no column {column!r} (the {role} column); its columns: "
                                          f"{', '.join(columns)}.")
        elif data not in BUNDLED_DATA and not data.startswith(HUB_PREFIX):
            raise PlaygroundError(f"Data {data!r} is not available here: choose a bundled set "
                                  f"({', '.join(BUNDLED_DATA)}), upload a file, or give hub:owner/name.")
        values = {name: (int(value) if name in INTEGER_FIELDS and value is not None else value)
                  for name, value in self.numbers.items()}
        modules = tuple(m.strip() for m in (self.target_modules or "").split(",") if m.strip())
        return FinetuneConfig(model=self.model, method=self.method, data=source, input_column=self.input_column or "",
                              target_column=self.target_column or "", template=self.template or "auto",
                              target_modules=modules, **values)


@dataclass(frozen=True)
class Started:
    """A run that was queued: its id and its owner's runs (newest first, the new one among them); for a sweep,
    its first run's id, the sweep's name and all its run ids (in the order they run)."""

    run_id: str
    runs: tuple[RunRecord, ...]
    sweep: str = ""
    sweep_runs: tuple[str, ...] = ()


@dataclass(frozen=True)
class PollCursor:
    """How far the page has read a run's progress: the next line of progress.jsonl, and the loss points so far."""

    run_id: str = ""
    next_line: int = 0
    points: tuple[LossPoint, ...] = ()


@dataclass(frozen=True)
class RunView:
    """What one poll shows: the person's runs, the chosen one's record, loss curve and results."""

    runs: tuple[RunRecord, ...]  # newest first: the run picker's choices
    cursor: PollCursor
    record: RunRecord | None = None  # None: no run to show (then ``error`` may say why)
    error: PlaygroundError | None = None  # the chosen run cannot be read (someone else's, removed)
    metrics: RunMetrics | None = None
    comparison: tuple[dict[str, Any], ...] = ()  # one row per test example, largest gain first

    @property
    def points(self) -> tuple[LossPoint, ...]:
        return self.cursor.points

    @property
    def run_rows(self) -> list[dict[str, Any]]:
        """The person's runs side by side (the run comparison)."""
        return run_rows(self.runs)

    def compared(self, chosen: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The run comparison of the chosen runs (ids; None: the newest MAX_COMPARED)."""
        return run_rows(self.runs, chosen)

    def chart(self, chosen: Sequence[str] | None, metric: str) -> list[dict[str, Any]]:
        """The runs chart's bars for the chosen runs and ``metric`` (result.CHART_METRICS)."""
        return chart_rows(self.compared(chosen), metric)

    @property
    def scores(self) -> list[dict[str, Any]]:
        """The before/after bars (ROUGE, or accuracy for a classifier)."""
        return aggregate_rows(self.metrics)


@dataclass(frozen=True)
class CancelOutcome:
    run_id: str
    stopping: bool  # False: the run had already ended
    status: str  # its status right after the cancel ("cancelled" at once when it was still queued)
    sweep: str = ""  # the sweep the run belongs to: every run of it left was stopped
    stopped: int = 0  # how many runs the cancel stopped


# ------------------------------------------------------------------------------ the controller


class FinetuneSession:
    """The Fine-tune tab's logic over the app's run store and job manager; one per app, shared by every browser."""

    def __init__(self, *, runs: RunStore, jobs: JobManager, identities: Identities, catalog, resolver, settings,
                 limits: FinetuneLimits | None = None, entry: str = TRAIN_ENTRY):
        self.runs = runs
        self.jobs = jobs
        self.identities = identities
        self.catalog = catalog
        self.resolver = resolver
        self.settings = settings
        self.limits = limits if limits is not None else FinetuneLimits.from_settings(settings)
        self.entry = entry  # the job a run executes ("module:function"); tests give a fake trainer

    # -- what the form offers ---------------------------------------------------------------------------
    def defaults(self) -> FinetuneConfig:
        """The CPU demo preset (examples/finetune/cpu-demo.yaml), lowered to the limits: starting values a person
        can submit unchanged, and the same run as ``python -m playground finetune examples/finetune/cpu-demo.yaml``."""
        return self.limits.fit(FinetuneConfig.cpu_demo())

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, catalog id) of every catalog model, saying whether it works offline."""
        return [(s.picker_label(self.resolver.is_available_offline(s)), s.id) for s in self.catalog.models]

    @staticmethod
    def data_choices() -> list[tuple[str, str]]:
        return [(f"{d.name} — {d.description}", d.name) for d in BUNDLED_DATA.values()]

    @staticmethod
    def template_choices() -> list[str]:
        return ["auto"] + [template.id for template in load_templates().templates]

    @staticmethod
    def check_upload(path: str) -> DataFileSummary:
        """An uploaded file checked at once (kind, size, encoding, rows), named by its own name."""
        return check_data_file(path)

    # -- before a run -----------------------------------------------------------------------------------
    def inspect(self, form: FinetuneForm, progress: Callable[[], None] | None = None) -> DataReport:
        """The data as the run would see it; ``progress`` is called once the form has been read."""
        config = form.config()
        _report(progress)
        return data_report(config, self.resolver, self.settings.data_dir, self.catalog)

    def estimate(self, form: FinetuneForm, progress: Callable[[], None] | None = None) -> CostReport:
        """What the run would cost, after the limits (before any model loads)."""
        config = self.limits.check(form.config(), self.catalog)
        _report(progress)
        return preflight(config, self.settings.data_dir, resolver=self.resolver, catalog=self.catalog)

    # -- a run ------------------------------------------------------------------------------------------
    def start(self, form: FinetuneForm, token: str, address: str) -> Started:
        """Queue a run for the person behind ``token``, asking from ``address``, within the limits.

        The limits come first (they touch no file and no model), then the config is checked against the
        world, then the room's run limits hold while the run is submitted, so two clicks at once cannot
        both pass the one-run rule. An upload is copied into the run's folder: Gradio's cache is cleaned.
        """
        config = self.limits.check(form.config(), self.catalog)
        config.check(self.catalog)
        with self.identities.starting_run(token, address, is_active=self._active) as admission:
            owner = admission.identity.id
            run_id = self.jobs.submit(owner, config.to_dict(), entry=self.entry, admit=self.limits.check_active,
                                      keep_files=("data",) if form.uploaded else ())
            admission.started(run_id)
        return Started(run_id, tuple(self.jobs.list_runs(owner)))

    @staticmethod
    def sweep_choices() -> list[tuple[str, str]]:
        """(name, preset id) of every sweep preset (examples/finetune/sweep-*.yaml)."""
        choices = []
        for preset in preset_ids():
            try:
                choices.append((load_sweep(preset).name, preset))
            except PlaygroundError:  # a broken preset is refused when chosen, with its message
                choices.append((preset, preset))
        return choices

    def sweep(self, preset: str) -> Sweep:
        """The sweep preset, its configs lowered to the room's caps (as the form's defaults are)."""
        return load_sweep(str(preset or ""), max_runs=self.limits.max_sweep_runs).fitted(self.limits.fit)

    def start_sweep(self, preset: str, token: str, address: str) -> Started:
        """Queue every run of a sweep preset for the person behind ``token``: one after another, on the same data
        and seed. Every run is checked against the limits and the world before any is queued; the room's
        one-active-run rule and rate limits count the sweep as one start."""
        chosen = self.sweep(preset)
        configs = []
        for number, config in enumerate(chosen.configs, start=1):
            try:
                configs.append(self.limits.check(config, self.catalog).check(self.catalog))
            except PlaygroundError as exc:
                raise FinetuneConfigError(f"{chosen.id}, run {number} ({chosen.labels()[number - 1]}): {exc}") \
                    from None
        name = f"{chosen.id}-{secrets.token_hex(3)}"
        with self.identities.starting_run(token, address, is_active=self._active) as admission:
            owner = admission.identity.id
            ids = self.jobs.submit_sweep(owner, [c.to_dict() for c in configs], name, entry=self.entry,
                                         admit=self.limits.check_active)
            admission.started(ids[0])
        return Started(ids[0], tuple(self.jobs.list_runs(owner)), name, tuple(ids))

    def poll(self, token: str, run_id: str | None, cursor: PollCursor | None = None) -> RunView:
        """The person's runs and the chosen one (default: the newest), read from ``cursor`` on.

        A token that does not verify sees no runs; a run that cannot be read comes back as ``error``.
        """
        owner = self.identities.owner_of(token)  # a token that does not verify sees no runs
        runs = tuple(self.jobs.list_runs(owner)) if owner else ()
        if not run_id and runs:
            run_id = runs[0].id
        if not run_id:
            return RunView(runs, PollCursor())
        if cursor is None or cursor.run_id != run_id:
            cursor = PollCursor(run_id)
        try:
            record = self.jobs.get(run_id, owner)
            batch = self.runs.read_events(run_id, cursor.next_line, owner=owner)
            if batch.next_line < cursor.next_line:  # the progress file started over: read it all again
                cursor = PollCursor(run_id)
                batch = self.runs.read_events(run_id, 0, owner=owner)
        except PlaygroundError as exc:
            return RunView(runs, cursor, error=exc)
        cursor = PollCursor(run_id, batch.next_line, cursor.points + tuple(loss_points(batch.events)))
        result = RunResult(record.path)
        return RunView(runs, cursor, record, metrics=result.metrics(),
                       comparison=tuple(comparison_rows(result.samples())))

    def cancel(self, token: str, run_id: str | None) -> CancelOutcome:
        """Stop the person's run: a queued one at once, a running one within a training step."""
        owner = self._owner(token)
        if not run_id:
            raise NoRunChosen()
        sweep = self.jobs.get(run_id, owner).sweep
        if sweep:  # a run of a sweep: the sweep stops (its queued runs never start)
            stopped = self.jobs.cancel_sweep(sweep, owner)
            return CancelOutcome(run_id, stopped > 0, self.jobs.get(run_id, owner).status, sweep, stopped)
        stopping = self.jobs.cancel(run_id, owner)
        return CancelOutcome(run_id, stopping, self.jobs.get(run_id, owner).status, stopped=int(stopping))

    def download(self, token: str, run_id: str | None) -> Path:
        """The finished run's adapter (or whole model) as a zip, built once and kept in the run's folder."""
        record = self._finished(token, run_id)
        if RunResult(record.path).weights_dir is None:
            raise NothingSaved()
        return result_archive(record.path, make_room=self._room_for(record.id))

    def merge(self, token: str, run_id: str | None, progress: Callable[[], None] | None = None) -> Path:
        """The finished run's adapter merged into its base, as a zip, built once; ``progress`` is called when the
        merge begins."""
        record = self._finished(token, run_id)
        method = TABLE.get(str(record.config.get("method")))
        if method is None or not method.adapter:
            raise NotAnAdapter()
        if not method.mergeable:
            raise NotMergeable(method.adapter_kind, merge_problem(method.name))
        _report(progress)
        return merged_archive(record.path, self.settings.data_dir, resolver=self.resolver, catalog=self.catalog,
                              make_room=self._room_for(record.id))

    def adapter_gguf(self, token: str, run_id: str | None, progress: Callable[[], None] | None = None) -> Path:
        """The finished LoRA run's adapter as a llama.cpp adapter GGUF (for ``--lora`` over its base's GGUF), built
        once; ``progress`` is called when the conversion begins."""
        record, base = self._gguf_run(token, run_id)
        _report(progress)
        return adapter_gguf_export(record.path, base, make_room=self._room_for(record.id))

    def merged_gguf(self, token: str, run_id: str | None, type_name: str,
                    progress: Callable[[], None] | None = None) -> Path:
        """The finished LoRA run merged into its base's GGUF and quantized to ``type_name`` (one of QUANT_TYPES),
        built once per type; ``progress`` is called when the merge begins."""
        chosen = quant_type(type_name)  # a bad type is refused before anything is read
        record, base = self._gguf_run(token, run_id)
        _report(progress)
        return quantized_export(record.path, base, chosen.name, make_room=self._room_for(record.id),
                                threads=self.settings.threads or 0)

    def comparison_csv(self, token: str, run_id: str | None, headers: Mapping[str, str] | None = None,
                       language: str = "en") -> Path:
        """The run's before/after table as a CSV file in its downloads folder (headers renamed by ``headers``,
        the page's language); refused while the run has no answers yet."""
        owner = self._owner(token)
        if not run_id:
            raise NoRunChosen()
        record = self.jobs.get(run_id, owner)
        rows = comparison_rows(RunResult(record.path).samples())
        if not rows:
            raise RunNotFinished(record.status)
        return self._write_csv(RunResult(record.path).downloads_dir / f"before-after-{_safe(language)}.csv",
                               table_csv(rows, headers), record.id)

    def runs_csv(self, token: str, headers: Mapping[str, str] | None = None, language: str = "en",
                 chosen: Sequence[str] | None = None) -> Path:
        """The person's runs side by side (the run comparison; ``chosen`` ids, None: the newest) as a CSV file,
        in their newest run's folder."""
        owner = self._owner(token)
        runs = self.jobs.list_runs(owner)
        if not runs:
            raise NoRunChosen()
        return self._write_csv(RunResult(runs[0].path).downloads_dir / f"runs-{_safe(language)}.csv",
                               table_csv(run_rows(runs, chosen), headers), runs[0].id)

    def _write_csv(self, path: Path, text: str, run_id: str) -> Path:
        self._room_for(run_id)(len(text.encode("utf-8")))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise save_error(f"the table {path.name}", path.parent, exc) from None
        atomic_write_text(path, text, f"the table {path.name}")
        return path

    def use_in_lab(self, token: str, run_id: str | None) -> FinetunedModel:
        """The finished run as a model the Prompt Lab can generate with."""
        return usable_result(self._finished(token, run_id))

    # -- helpers ----------------------------------------------------------------------------------------
    def _owner(self, token: str) -> str:
        """The verified owner id behind ``token``; IdentityError with the reason otherwise."""
        return self.identities.person(token).id

    def _finished(self, token: str, run_id: str | None) -> RunRecord:
        owner = self._owner(token)
        if not run_id:
            raise NoRunChosen()
        record = self.jobs.get(run_id, owner)
        if record.status != SUCCEEDED:
            raise RunNotFinished(record.status)
        return record

    def _gguf_run(self, token: str, run_id: str | None) -> tuple[RunRecord, Path]:
        """The person's finished adapter run and its base's GGUF file, or the refusal that says why not."""
        record = self._finished(token, run_id)
        method = TABLE.get(str(record.config.get("method")))
        if method is None or not method.adapter:
            raise NotAnAdapter()
        try:
            return record, base_gguf_of(record.path, self.catalog, self.resolver)
        except NoGGUFBaseError as exc:
            raise NoGGUFBase(exc.base) from None

    def _active(self, run_id: str) -> bool:
        """Whether a run, or any run of its sweep, is still queued or running."""
        sweep = self.runs.sweep_of(run_id)
        if not sweep:
            return not self.runs.status(run_id).terminal
        return any(not self.runs.status(other).terminal for other in self.runs.run_ids()
                   if self.runs.sweep_of(other) == sweep)

    def _room_for(self, run_id: str) -> Callable[[int], Sequence[str]]:
        """The data dir's budget, asked to make room for a download of ``run_id`` (never removing that run)."""
        return lambda needed: self.jobs.make_room(needed, keep=(run_id,))


def _safe(language: str) -> str:
    return "".join(c for c in str(language) if c.isalnum())[:8] or "en"


def _report(progress: Callable[[], None] | None) -> None:
    if progress is not None:
        progress()
