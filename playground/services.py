"""The shared, heavy things of one running app, made once and passed to every tab.

``Services`` holds the settings, the hardware facts, the catalog, the engine
provider (with its process-wide model cache), the Architectures tab's lab
(which loads its models through that same cache) and the registry of generations
in flight, so the Stop button of one browser session can reach its own
generation and nobody else's. It also holds the fine-tuning run store and the
job manager that trains each run in its own child process (under the data dir's size budget,
``disk``), and ``engine`` serves a person's finished runs (``run:<id>``) next to the catalog's
models (a LoRA run on llama.cpp as its base plus its adapter, where the base has a GGUF);
``models_for(owner)`` is one person's view of them for the tabs. ``identities`` issues and checks the signed identity tokens and applies the room's rate
limits; ``generation_slots`` lets a set number of generations run at once, each held only while a
model generates; ``load_summary`` counts them (and those in engines' shared decode loops) for the health
endpoint without waiting for any of them. Nothing here imports gradio.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from playground.architectures.lab import ArchitectureLab
from playground.backends.base import CancelFlag, Engine
from playground.backends.chat import QuantizedFacts
from playground.backends.provider import EngineProvider
from playground.backends.slots import GenerationSlots
from playground.backends.selection import LLAMA_CPP, OPENAI, TRANSFORMERS
from playground.config import Settings
from playground.errors import EngineUnavailableError, PlaygroundError
from playground.finetune.finetuned import FinetunedModel, finetuned_model, finetuned_models, is_finetuned_id, load_for_generation
from playground.finetune.gguf_adapter import AdapterConversionError, adapter_download_name, check_adapter, \
    read_adapter_facts, run_adapter_gguf
from playground.finetune.jobs import JobManager, automatic_slots, visible_gpus
from playground.finetune.methods import get_method
from playground.finetune.runs import RunStore
from playground.finetune.storage import DataBudget
from playground.hardware import Hardware, detect
from playground.identity import Identities
from playground.models.catalog import Catalog
from playground.prompting.demos import MiniLMEmbedder


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class ActiveGenerations:
    """Work in flight (generations, evaluations), keyed by (session id, slot name), so Stop can cancel it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], Cancellable] = {}

    def start(self, session: str, slot: str, generation: Cancellable) -> None:
        with self._lock:
            self._running[(session, slot)] = generation

    def finish(self, session: str, slot: str, generation: Cancellable) -> None:
        with self._lock:
            if self._running.get((session, slot)) is generation:
                del self._running[(session, slot)]

    @contextlib.contextmanager
    def running(self, session: str, slot: str):
        """A new cancel flag registered under (session, slot) while the block runs: that session's Stop reaches it."""
        flag = CancelFlag()
        self.start(session, slot, flag)
        try:
            yield flag
        finally:
            self.finish(session, slot, flag)

    def cancel(self, session: str, slot: str | None = None) -> int:
        with self._lock:
            keys = [k for k in self._running if k[0] == session and (slot is None or k[1] == slot)]
            generations = [self._running[k] for k in keys]
        for generation in generations:
            generation.cancel()
        return len(generations)


@dataclass(frozen=True)
class LoadSummary:
    """How busy the app is, as plain numbers (the ``/health`` endpoint's body).

    Generations that hold one of the app's generation slots are counted by the slots; generations that joined
    a llama.cpp engine's shared decode loop (batched, no slot) are counted by that loop.
    """

    uptime_s: float
    slots: int  # generation slots (PLAYGROUND_CONCURRENCY)
    slots_busy: int  # generations holding a slot now
    slots_waiting: int  # generations in line for a slot
    decoding: int  # sequences the engines' shared decode loops are decoding now
    decode_waiting: int  # requests waiting for a place in those loops
    models: tuple[dict, ...]  # the loaded engines: {"id": catalog id, "engine": llama.cpp | transformers | ...}
    runs_loaded: int  # fine-tuned runs loaded (counted, not named: a run is its owner's business)

    @property
    def running(self) -> int:
        return self.slots_busy + self.decoding

    @property
    def waiting(self) -> int:
        return self.slots_waiting + self.decode_waiting

    def as_dict(self) -> dict:
        fields = asdict(self)
        body = {"uptime_s": fields.pop("uptime_s"), "generations": {"running": self.running, "waiting": self.waiting}}
        body.update(fields, models=[dict(model) for model in self.models])
        return body


def loop_counts(engine) -> tuple[int, int]:
    """(decoding, waiting) of an engine's shared decode loop; (0, 0) for an engine without one.

    A batched llama.cpp engine provides ``loop_summary() -> {"decoding": int, "waiting": int}``: counters the
    loop keeps up to date, read without waiting for the loop (never a lock it holds while it decodes), since the
    health endpoint calls it on the server's event loop. Anything else (no such method, an error, odd values)
    counts as no loop.
    """
    summary = getattr(engine, "loop_summary", None)
    if summary is None:
        return 0, 0
    try:
        numbers = summary() if callable(summary) else summary
        return max(0, int(numbers.get("decoding", 0))), max(0, int(numbers.get("waiting", 0)))
    except Exception:  # a health check reports what it can; a broken counter is not the app being down
        return 0, 0


class OwnedModels:
    """The models one person may use (``ModelChoices`` of the Prompt Lab, ``QuantizedModels`` of the Quantized
    CPU tab): the catalog's models, then their own finished fine-tuning runs, newest first; another person's run
    reads as no run at all."""

    def __init__(self, services: "Services", owner: str) -> None:
        self._services = services
        self.owner = owner

    @property
    def hardware(self) -> Hardware:
        return self._services.hardware

    def engine(self, model_id: str, engine: str = "auto", progress=None) -> Engine:
        return self._services.engine(model_id, engine or "auto", self.owner, progress)

    def chat_engine(self, model_id: str) -> str:
        """The Quantized CPU chat's engine: the OpenAI-compatible server for a catalog model it serves
        (PLAYGROUND_OPENAI_MODELS), so a room shares the server; else llama.cpp (a run: its base with its adapter,
        whose weights exist only here)."""
        if not is_finetuned_id(model_id) and self._services.engines.served_remotely(model_id):
            return OPENAI
        return LLAMA_CPP

    @functools.cached_property
    def runs(self) -> list:
        """The owner's finished runs, read once per request (columns name their models at every update)."""
        return finetuned_models(self._services.runs, self.owner)

    def choices(self) -> list[tuple[str, str]]:
        """(label, model id) for the model pickers: the catalog's decoders, its encoder-decoders (FLAN-T5) whose
        weights are on this machine (PLAYGROUND_MODELS_DIR, the Hub cache: they are never fetched for a prompt),
        then the owner's finished runs, decoders and encoder-decoders alike."""
        services = self._services
        resolver = services.engines.resolver
        catalog = [(s.picker_label(resolver.is_available_offline(s)), s.id)
                   for s in services.catalog.by_family("decoder")]
        text_to_text = [(s.picker_label(True), s.id) for s in services.catalog.by_family("encoder-decoder")
                        if s.is_generative and resolver.is_available_offline(s, "transformers")]
        return catalog + text_to_text + [(model.label, model.model_id) for model in self.runs]

    def gguf_choices(self) -> list[tuple[str, str]]:
        """(label, model id) for the Quantized CPU tab: the catalog's GGUF models, then the owner's runs that
        answer on llama.cpp (a LoRA or QLoRA adapter over a base with a GGUF); the others stay in the Prompt Lab."""
        services = self._services
        resolver = services.engines.resolver
        catalog = [(s.picker_label(resolver.is_available_offline(s, "gguf")), s.id)
                   for s in services.catalog.with_gguf()]
        return catalog + [(model.label, model.model_id) for model in self.runs
                          if not services.llama_cpp_refusal(model)]

    def quantized_facts(self, model_id: str, progress=None) -> QuantizedFacts:
        """What llama.cpp loads for ``model_id``: a catalog model's GGUF, or a run's base GGUF and its adapter
        (converted on first use). A run that cannot answer on llama.cpp raises EngineUnavailableError."""
        services = self._services
        if not is_finetuned_id(model_id):
            return QuantizedFacts(services.engines.gguf_facts(model_id))
        tuned = finetuned_model(services.runs, model_id, self.owner)
        services.run_engine_name(tuned, LLAMA_CPP)
        adapter = read_adapter_facts(services.run_adapter_gguf(tuned, progress))
        return QuantizedFacts(services.engines.gguf_facts(tuned.base_model),
                              (*tuned.facts_rows(), ("adapter file", adapter_download_name(tuned.run_id)),
                               *adapter.as_rows()), tuned.method.upper())

    def label(self, model_id: str) -> str:
        if not is_finetuned_id(model_id):
            return model_id
        return next((model.label for model in self.runs if model.model_id == model_id), model_id)

    def code_source(self, model_id: str, engine: str) -> dict:
        """Where the code takes the model from: the catalog's source, or a run's base plus its adapter."""
        services = self._services
        threads = services.settings.threads or None
        if not is_finetuned_id(model_id):
            spec = services.catalog.get(model_id)
            if spec.family == "encoder-decoder" and engine == LLAMA_CPP:
                return dict(engine=TRANSFORMERS, spec=spec, threads=threads,
                            note=f"llama.cpp cannot run {spec.name}: it is an encoder-decoder (text-to-text) "
                                 f"model, and llama.cpp here runs decoders only.")
            return dict(engine=engine, spec=spec, threads=threads)
        tuned = finetuned_model(services.runs, model_id, self.owner)
        base_spec = services.catalog.get(tuned.base_model) if tuned.base_model in services.catalog.ids else None
        refusal = services.llama_cpp_refusal(tuned)
        if engine == LLAMA_CPP and not refusal:  # the quantised base with the run's adapter GGUF
            return dict(engine=LLAMA_CPP, spec=base_spec, lora_path=adapter_download_name(tuned.run_id),
                        threads=threads)
        note = f"llama.cpp cannot run this run: {refusal}." if engine == LLAMA_CPP else ""
        if not tuned.is_adapter:  # a full fine-tune: the downloaded model folder is the model
            return dict(engine=TRANSFORMERS, model_ref=tuned.result_dir.name, threads=threads, note=note)
        return dict(engine=TRANSFORMERS, spec=base_spec, model_ref=None if base_spec else tuned.base_model,
                    adapter=tuned.result_dir.name, threads=threads, note=note,
                    merge=get_method(tuned.method).mergeable)


@dataclass
class Services:
    settings: Settings
    hardware: Hardware
    catalog: Catalog
    engines: EngineProvider
    generations: ActiveGenerations = field(default_factory=ActiveGenerations)
    architectures: ArchitectureLab = field(init=False)  # the Architectures tab's logic, made from ``engines``
    runs: RunStore = field(init=False)  # fine-tuning runs under ``data_dir/runs``
    jobs: JobManager = field(init=False)  # queues runs and trains each in its own child process
    disk: DataBudget = field(init=False)  # the data dir's size budget (PLAYGROUND_DATA_BUDGET_GB), used by ``jobs``
    embedder: MiniLMEmbedder = field(init=False)  # the Prompt Lab's "most similar demonstrations"; loads on first use
    identities: Identities = field(init=False)  # signed identity tokens and the room's rate limits
    generation_slots: GenerationSlots = field(init=False)  # settings.concurrency generations at once, app-wide
    started: float = field(init=False)  # time.monotonic() when the app's services were made (for the uptime)

    def __post_init__(self) -> None:
        self.architectures = ArchitectureLab(self.engines)
        self.runs = RunStore(self.settings.data_dir / "runs")
        self.disk = DataBudget(self.settings.data_dir, self.runs, self.settings.data_budget_bytes)
        gpus = visible_gpus(self.hardware)
        # Workers read their settings from the environment: pass the app's, flags included.
        self.jobs = JobManager(self.runs, automatic_slots(self.settings.job_slots, gpus), gpus=gpus,
                               env=self.settings.as_environment(), budget=self.disk)
        self.embedder = MiniLMEmbedder(self.engines)
        self.identities = Identities.from_settings(self.settings)
        self.generation_slots = GenerationSlots(self.settings.concurrency)
        self.started = time.monotonic()

    @classmethod
    def create(cls, settings: Settings, hardware: Hardware | None = None, catalog: Catalog | None = None
               ) -> "Services":
        hardware = hardware or detect(settings.threads)
        catalog = catalog or Catalog.load()
        return cls(settings, hardware, catalog, EngineProvider(settings, hardware, catalog))

    def engine(self, model_id: str, engine: str = "auto", owner: str = "", progress=None) -> Engine:
        """A loaded engine for a catalog id, or for ``run:<id>``: the owner's fine-tuned run.

        A LoRA or QLoRA run whose base has a GGUF answers on llama.cpp where the base would (``auto`` on a
        CPU, or when asked): the loaded base with the run's adapter converted to a llama.cpp adapter GGUF
        (once, into the run's folder) and applied per request. Otherwise the run answers through
        transformers (the base with its adapter merged). Another owner's run reads as no run at all.
        """
        if not is_finetuned_id(model_id):
            return self.engines.get(model_id, engine, progress)
        model = finetuned_model(self.runs, model_id, owner)
        if self.run_engine_name(model, engine) == LLAMA_CPP:
            return self._run_on_llama_cpp(model, progress)

        def load(device):
            return load_for_generation(model, self.settings.data_dir, self.engines.resolver, self.catalog,
                                       dtype_name=device.dtype_name)

        return self.engines.get_transformers(model_id, load)

    def run_engine_name(self, model: FinetunedModel, engine: str = "auto") -> str:
        """The engine a run answers on for the request ``engine``: llama.cpp or transformers.

        EngineUnavailableError when llama.cpp is asked for a run it cannot serve, with the reason.
        """
        engine = engine or "auto"
        if engine == OPENAI:
            raise EngineUnavailableError(f"Run {model.run_id} cannot answer on the OpenAI-compatible server: its "
                                         f"weights are on this machine, not on the server. Choose auto, llama.cpp or "
                                         f"transformers.")
        reason = self.llama_cpp_refusal(model)
        if engine == LLAMA_CPP and reason:
            raise EngineUnavailableError(f"Run {model.run_id} cannot answer on llama.cpp: {reason}. Choose auto or "
                                         f"transformers.")
        if reason or engine == TRANSFORMERS:
            return TRANSFORMERS
        # The server serves the base, not this run: choose among this machine's engines.
        return self.engines.choose(model.base_model, engine, remote=False).engine

    def llama_cpp_refusal(self, model: FinetunedModel) -> str:
        """Why the run cannot answer on llama.cpp ("" when it can): a full fine-tune, a base without a GGUF in
        the catalog, or an adapter with parts a llama.cpp adapter cannot carry (DoRA, trained biases, ...)."""
        spec = self.catalog.get(model.base_model) if model.base_model in self.catalog.ids else None
        if model.is_encoder_decoder:
            return "it is an encoder-decoder (text-to-text) model, and llama.cpp here runs decoders only"
        if not model.is_adapter:
            return ("a full fine-tune changes every weight, so it answers through transformers; its merged "
                    "download runs anywhere")
        if spec is None or not spec.has_gguf:
            return f"its base {model.base_name} has no GGUF file in the catalog for llama.cpp to load"
        try:
            check_adapter(model.result_dir)
        except AdapterConversionError as exc:
            return str(exc).rstrip(".")
        return ""

    def _run_on_llama_cpp(self, model: FinetunedModel, progress=None) -> Engine:
        """The run's base on llama.cpp with the run's adapter GGUF (converted on first use) applied."""
        base = self.engines.get(model.base_model, LLAMA_CPP, progress)
        return base.with_adapter(model.model_id, self.run_adapter_gguf(model, progress))

    def run_adapter_gguf(self, model: FinetunedModel, progress=None) -> Path:
        """The run's llama.cpp adapter GGUF for its base's GGUF, converted on first use (in the run's folder)."""
        weights = self.engines.resolve(model.base_model, "gguf", progress)
        try:
            return run_adapter_gguf(model.result_dir.parent, model.result_dir, weights.path, name=model.label)
        except AdapterConversionError as exc:
            raise EngineUnavailableError(f"Run {model.run_id} cannot answer on llama.cpp: {exc} Choose "
                                         f"transformers.") from None

    def models_for(self, owner: str = "") -> "OwnedModels":
        """One person's view of the models: the catalog's decoders, its encoder-decoders whose weights are here,
        and their own finished runs."""
        return OwnedModels(self, owner)

    def load_summary(self) -> LoadSummary:
        """How many generations run and wait, and which models are loaded: plain numbers, read at once.

        Nothing here waits for a generation or a model load: the slots and the model cache take their locks only
        for a moment (never while a model generates or loads), and an engine's decode loop is only asked for its
        counters (:func:`loop_counts`).
        """
        slots = self.generation_slots
        decoding = decode_waiting = runs = 0
        models = []
        for key in self.engines.cache.keys():
            if not (isinstance(key, tuple) and len(key) == 3 and key[0] == "engine"):
                continue  # the Architectures tab's models, attention maps: not generation engines
            _, engine_name, model_id = key
            if is_finetuned_id(model_id):
                runs += 1
            else:
                models.append({"id": model_id, "engine": engine_name})
            loop_decoding, loop_waiting = loop_counts(self.engines.cache.peek(key))
            decoding += loop_decoding
            decode_waiting += loop_waiting
        return LoadSummary(uptime_s=round(time.monotonic() - self.started, 3), slots=slots.slots,
                           slots_busy=slots.busy, slots_waiting=slots.waiting, decoding=decoding,
                           decode_waiting=decode_waiting, models=tuple(models), runs_loaded=runs)

    def warm_up(self) -> str:
        """Read the default model's GGUF facts and load its engine, so the first answer is fast.

        Meant for a background thread after start-up; returns what happened, never raises.
        """
        model_id = self.settings.default_model
        try:
            spec = self.catalog.get(model_id)
            if spec.has_gguf:
                self.engines.gguf_facts(model_id)
            if spec.family == "decoder":
                engine = self.engines.get(model_id)
                return f"warm: {model_id} loaded on {engine.name}"
            return f"warm: {model_id} is not a decoder; nothing to load"
        except PlaygroundError as exc:
            return f"warm-up skipped: {str(exc).splitlines()[0]}"

    def close(self) -> None:
        self.jobs.shutdown()  # running workers go on; the next start adopts them
        self.architectures.clear()
        self.engines.cache.clear()
