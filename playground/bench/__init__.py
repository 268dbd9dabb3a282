"""``python -m playground bench``: the speed figures the design promises, measured in one run.

Tests never assert wall-clock times; this module is where speed is checked
instead. One run of the process measures, on this machine:

1. llama.cpp streaming decode speed through the app's engine against plain
   llama-cpp-python on the same GGUF file, with the same prompt tokens,
   context size and threads, timed the same way (tokens after the first over
   the time after the first); the two alternate several times and the medians
   are compared (target: the app keeps at least 90 % of the direct speed);
2. llama.cpp decode speed over the transformers engine's CPU speed on the same
   model, prompt and greedy settings (informational);
3. the warm time to first token of a short chat prompt through the app's
   llama.cpp engine (target: under half a second);
4. the time from starting ``app.py`` to its first HTTP 200, no model loaded
   (target: under 10 s);
5. the transformers engine's first load of the GGUF model (dequantising and
   writing a safetensors copy) and its second load from that copy, through a
   new provider and cache so it really loads again (target: under 5 s);
6. the training speed of the app's fine-tuning trainer (``playground.finetune.train``,
   behind the Fine-tune tab and ``python -m playground finetune``) over a plain
   peft + transformers ``Trainer`` script (:mod:`playground.bench.plain_trainer`)
   on the same model, rows and settings: non-padding tokens per second of the
   training steps after the first, counted and timed by the same callback in
   both, the two alternating and their medians compared (target: the app is at
   least as fast); ``--skip-finetune`` leaves it out.

It prints an aligned table (or JSON with ``--json``) and returns 1 when a
figure misses its target or could not be measured, else 0. Heavy libraries are
imported inside the functions that need them; everything written goes to a
scratch folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

DEFAULT_MODEL = "smollm2-135m-instruct"
# One timed stream stops after this long (the speed counts the tokens made so far), so a machine
# whose cores are busy with other programs cannot stretch the run to many minutes.
RUN_CAP_S = 10.0  # llama.cpp makes 128 tokens in about 2 s on two quiet cores
TRANSFORMERS_RUN_CAP_S = 30.0  # fp32 transformers on two cores: about 10 s
REPO_ROOT = Path(__file__).resolve().parents[2]

# A plain-text prompt the model continues at length (greedy decoding rarely ends it before N tokens).
THROUGHPUT_PROMPT = (
    "The history of the lighthouse begins in the ancient world. Sailors needed a way to find the "
    "harbour at night, so the people of the coast lit fires on hills and towers. Over the centuries"
)
# Short chat questions for the time to first token; each run asks a different one, as a real chat
# would. The cache is reused only in whole 64-token blocks, so these short prompts are read in full.
CHAT_QUESTIONS = (
    "What is the capital of France?",
    "Name three primary colours.",
    "How many legs does a spider have?",
    "What does a thermometer measure?",
    "Why is the sky blue?",
    "What is two plus three?",
    "Which planet is closest to the Sun?",
    "What do bees make?",
)


@dataclass
class Figure:
    """One measured number and how it compares with its target."""

    name: str
    value: float | None
    unit: str
    target: str = ""  # e.g. ">= 0.9", "< 0.5 s"; empty when the figure is informational
    passed: bool | None = None  # None: no target, or not measured on purpose
    detail: str = ""

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if isinstance(self.value, float):
            data["value"] = round(self.value, 4)
        return data


@dataclass(frozen=True)
class BenchOptions:
    json: bool = False
    quick: bool = False
    data_dir: Path | None = None  # parent of the scratch folder; None: the system temp folder
    threads: int = 0  # 0: one per physical core, as the app does
    model: str = DEFAULT_MODEL
    skip_startup: bool = False
    skip_finetune: bool = False

    @property
    def rounds(self) -> int:
        return 2 if self.quick else 3

    @property
    def new_tokens(self) -> int:
        return 64 if self.quick else 128

    @property
    def ttft_runs(self) -> int:
        return 3 if self.quick else 5

    @property
    def transformers_runs(self) -> int:
        return 1 if self.quick else 2

    @property
    def finetune_rounds(self) -> int:  # each round trains once with the app and once with the plain script
        return 1 if self.quick else 2

    @property
    def finetune_steps(self) -> int:  # the first step of each run is warm-up and not timed
        return 5 if self.quick else 8


# --------------------------------------------------------------------------- helpers
def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _at_least(value: float, target: float) -> bool:
    return value >= target


def _below(value: float, target: float) -> bool:
    return value < target


def _measured(name: str, unit: str, target: str, check: Callable[[float], bool] | None,
              value: float | None, detail: str) -> Figure:
    if value is None:
        return Figure(name, None, unit, target, False if target else None, detail)
    return Figure(name, value, unit, target, check(value) if check else None, detail)


def _failed(name: str, unit: str, target: str, exc: BaseException) -> Figure:
    return Figure(name, None, unit, target, False, f"not measured: {_error_text(exc)}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _CpuWatch:
    """How much of the machine's CPU other programs used while a block ran (Linux ``/proc/stat``).

    Speed figures measured while other programs compete for the cores (llama.cpp's threads wait
    for each other at every token) say little about the code; the details quote this share.
    """

    def __init__(self) -> None:
        self._start = self._sample()
        self._start_own = self._own()

    @staticmethod
    def _sample() -> tuple[float, float] | None:
        try:
            fields = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:]
            ticks = [float(x) for x in fields[:8]]
            hz = float(os.sysconf("SC_CLK_TCK"))
        except (OSError, ValueError, IndexError, AttributeError):
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = ticks
        busy = user + nice + system + irq + softirq + steal
        return busy / hz, (busy + idle + iowait) / hz

    @staticmethod
    def _own() -> float:
        t = os.times()  # children count once reaped (the app.py started for the start-up figure)
        return t.user + t.system + t.children_user + t.children_system

    def others_share(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None:
            return None
        busy, total = end[0] - self._start[0], end[1] - self._start[1]
        if total <= 0:
            return None
        own = self._own() - self._start_own
        return min(1.0, max(0.0, (busy - own) / total))

    def note(self) -> str:
        share = self.others_share()
        if share is None:
            return ""
        return f"; other programs used {share:.0%} of the CPU meanwhile" + (
            " (figures unreliable)" if share >= 0.15 else "")


@dataclass(frozen=True)
class _Run:
    """One timed stream: counted and timed exactly like ``GenerationResult``."""

    tokens: int
    ttft_s: float
    total_s: float
    text: str

    @property
    def tokens_per_s(self) -> float:
        decode = self.total_s - self.ttft_s
        return (self.tokens - 1) / decode if self.tokens >= 2 and decode > 0 else 0.0


def _app_run(engine, prompt: str, params, cap_s: float = RUN_CAP_S) -> _Run:
    generation = engine.stream(prompt, params)
    started = time.perf_counter()
    pieces = []
    for piece in generation:
        pieces.append(piece)
        if time.perf_counter() - started > cap_s:
            generation.cancel()  # the speed still counts the tokens made so far
    result = generation.result
    return _Run(result.completion_tokens, result.time_to_first_token_s, result.total_s, "".join(pieces))


def _direct_run(llm, prompt_ids: list[int], new_tokens: int, cap_s: float = RUN_CAP_S) -> _Run:
    """Plain llama-cpp-python streaming; one chunk per token (the closing chunk carries no token)."""
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    pieces: list[str] = []
    stream = llm.create_completion(prompt_ids, max_tokens=new_tokens, temperature=0.0, stream=True,
                                   repeat_penalty=1.0)
    try:
        for chunk in stream:
            choice = chunk["choices"][0]
            if choice.get("finish_reason") is not None and not choice.get("text"):
                continue
            tokens += 1
            if first is None:
                first = time.perf_counter()
            pieces.append(choice.get("text") or "")
            if time.perf_counter() - started > cap_s:
                break
    finally:
        stream.close()
    end = time.perf_counter()
    return _Run(tokens, (first or end) - started, end - started, "".join(pieces))


def _median_speed(runs: list[_Run]) -> float:
    return statistics.median(r.tokens_per_s for r in runs)


def _speeds(runs: list[_Run]) -> str:
    return ", ".join(f"{r.tokens_per_s:.1f}" for r in runs)


# --------------------------------------------------------------------------- machine
def machine_summary(hardware, threads: int, options: BenchOptions) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for package in ("llama-cpp-python", "torch", "transformers", "gradio"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "summary": hardware.summary,
        **dataclasses.asdict(hardware),
        "cpu": cpu,
        "threads_used": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "model": options.model,
        "quick": options.quick,
        "others_cpu_share_at_start": _others_cpu_share(),
    }


def _others_cpu_share(seconds: float = 1.0) -> float | None:
    """The share of the CPU other programs use right now, sampled over ``seconds``.

    (The load average is no guide here: on some virtual machines it stays high while the cores idle.)
    """
    watch = _CpuWatch()
    time.sleep(seconds)
    share = watch.others_share()
    return None if share is None else round(share, 3)


# --------------------------------------------------------------------------- figures
def bench_startup(scratch: Path, timeout_s: float = 60.0) -> Figure:
    """Seconds from starting ``app.py`` (no model loaded) to its first HTTP 200."""
    import urllib.error
    import urllib.request

    name, unit, target = "app start-up to ready", "s", "< 10 s"
    app = REPO_ROOT / "app.py"
    if not app.is_file():
        return Figure(name, None, unit, target, False, f"not measured: {app} does not exist")
    port = _free_port()
    data_dir = scratch / "startup-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = scratch / "startup.log"
    env = {**os.environ, "PLAYGROUND_OFFLINE": "1"}
    url = f"http://127.0.0.1:{port}/"
    _log(f"starting app.py on port {port} (up to {timeout_s:.0f} s)")
    watch = _CpuWatch()
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(app), "--port", str(port), "--data-dir", str(data_dir)],
                                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        ready: float | None = None
        problem = ""
        try:
            while time.perf_counter() - started < timeout_s:
                if proc.poll() is not None:
                    problem = f"app.py exited with code {proc.returncode} before answering"
                    break
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            ready = time.perf_counter() - started
                            break
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                time.sleep(0.1)
            else:
                problem = f"no HTTP 200 from {url} within {timeout_s:.0f} s"
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if ready is None:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        return Figure(name, None, unit, target, False,
                      f"not measured: {problem}" + (f"; log: {' | '.join(tail)}" if tail else ""))
    return _measured(name, unit, target, lambda v: _below(v, 10.0), ready,
                     f"python app.py with PLAYGROUND_OFFLINE=1 until GET / answered 200{watch.note()}")


def bench_llama_cpp(provider, options: BenchOptions) -> tuple[list[Figure], float | None]:
    """Figures 1 and 3: app engine against direct llama-cpp-python, then the warm time to first token.

    Returns the figures and the app's median decode speed (for the ratio with transformers).
    """
    from playground.backends.base import GenerationParams
    from playground.backends.llama_cpp_engine import PROMPT_BLOCK

    n = options.new_tokens
    figures: list[Figure] = []
    app_speed: float | None = None
    _log(f"loading {options.model} in the app's llama.cpp engine")
    engine = provider.get(options.model, "llama.cpp")
    direct = None
    try:
        # ---- 1: app against direct, alternating
        try:
            from llama_cpp import Llama

            weights = provider.resolve(options.model, "gguf")
            threads, n_ctx = engine.threads, engine.context_window
            # The app's prompt blocks, so both sides compute the same numbers and the texts can be compared.
            direct = Llama(model_path=str(weights.path), n_ctx=n_ctx, n_threads=threads,
                           n_threads_batch=threads, n_batch=PROMPT_BLOCK, n_ubatch=PROMPT_BLOCK, verbose=False)
            ids = engine.tokenize(THROUGHPUT_PROMPT)
            params = GenerationParams(max_new_tokens=n, temperature=0.0, repetition_penalty=1.0, seed=0)
            _log(f"warming up both, then {options.rounds} alternating rounds of {n} tokens")
            _app_run(engine, THROUGHPUT_PROMPT, GenerationParams(max_new_tokens=8, temperature=0.0,
                                                                  repetition_penalty=1.0, seed=0))
            _direct_run(direct, ids, 8)
            app_runs: list[_Run] = []
            direct_runs: list[_Run] = []
            watch = _CpuWatch()
            for round_ in range(options.rounds):  # ABBA order, so neither side always goes first
                if round_ % 2 == 0:
                    app_runs.append(_app_run(engine, THROUGHPUT_PROMPT, params))
                    direct_runs.append(_direct_run(direct, ids, n))
                else:
                    direct_runs.append(_direct_run(direct, ids, n))
                    app_runs.append(_app_run(engine, THROUGHPUT_PROMPT, params))
            app_speed = _median_speed(app_runs)
            direct_speed = _median_speed(direct_runs)
            same = all(a.text.startswith(d.text) or d.text.startswith(a.text)  # a run cut short is a prefix
                       for a, d in zip(app_runs, direct_runs))
            cut = sum(r.total_s > RUN_CAP_S for r in app_runs + direct_runs)
            setup = (f"{len(ids)} prompt tokens, {n} new, greedy, n_ctx={n_ctx}, {threads} threads, "
                     f"{options.rounds} rounds")
            figures.append(Figure("llama.cpp decode, app engine", app_speed, "tok/s", "", None,
                                  f"median of {_speeds(app_runs)}; tokens: "
                                  f"{', '.join(str(r.tokens) for r in app_runs)}"))
            figures.append(Figure("llama.cpp decode, direct", direct_speed, "tok/s", "", None,
                                  f"median of {_speeds(direct_runs)}; tokens: "
                                  f"{', '.join(str(r.tokens) for r in direct_runs)}"))
            ratio = app_speed / direct_speed if direct_speed > 0 else None
            paired = [a.tokens_per_s / d.tokens_per_s for a, d in zip(app_runs, direct_runs) if d.tokens_per_s]
            figures.append(_measured("llama.cpp app / direct speed", "x", ">= 0.9",
                                     lambda v: _at_least(v, 0.9), ratio,
                                     f"ratio of the medians; per round {', '.join(f'{r:.2f}' for r in paired)}; "
                                     f"{setup}; same text: {'yes' if same else 'NO'}"
                                     f"{f'; {cut} run(s) cut at {RUN_CAP_S:.0f} s' if cut else ''}{watch.note()}"))
        except Exception as exc:
            figures.append(_failed("llama.cpp app / direct speed", "x", ">= 0.9", exc))
        finally:
            if direct is not None:
                direct.close()
                direct = None

        # ---- 3: warm time to first token on a short chat prompt
        try:
            runs = options.ttft_runs
            _log(f"time to first token: one warm-up, then {runs} chat prompts")
            params = GenerationParams(max_new_tokens=4, seed=0)  # the app's default sampling
            times: list[float] = []
            prompt_tokens: list[int] = []
            watch = _CpuWatch()
            for i in range(runs + 1):
                question = CHAT_QUESTIONS[i % len(CHAT_QUESTIONS)]
                prompt = engine.format_chat([{"role": "user", "content": question}])
                generation = engine.stream(prompt, params)
                generation.run()
                if i > 0:  # the first is the warm-up
                    times.append(generation.result.time_to_first_token_s)
                    prompt_tokens.append(generation.result.prompt_tokens)
            ttft = statistics.median(times)
            figures.append(_measured(
                f"warm time to first token ({options.model})", "s", "< 0.5 s", lambda v: _below(v, 0.5), ttft,
                f"median of {', '.join(f'{t:.3f}' for t in times)} s; chat prompts of "
                f"{min(prompt_tokens)}-{max(prompt_tokens)} tokens, a different question each time{watch.note()}"))
        except Exception as exc:
            figures.append(_failed(f"warm time to first token ({options.model})", "s", "< 0.5 s", exc))
    finally:
        if direct is not None:
            direct.close()
    return figures, app_speed


def bench_transformers(settings, hardware, catalog, options: BenchOptions, scratch: Path,
                       llama_speed: float | None) -> list[Figure]:
    """Figures 5 and 2: first and second transformers load, then the speed ratio."""
    from playground.backends.base import GenerationParams
    from playground.backends.provider import EngineProvider

    figures: list[Figure] = []
    data_dir = scratch / "transformers-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    tf_settings = dataclasses.replace(settings, data_dir=data_dir)
    n = options.new_tokens

    t0 = time.perf_counter()
    import torch  # noqa: F401  (already imported by hardware.detect in most runs)
    import transformers  # noqa: F401

    import_s = time.perf_counter() - t0

    # ---- 5a: first load, converting the GGUF into a fresh data dir
    first_name = "transformers first load (GGUF conversion)"
    first_provider = EngineProvider(tf_settings, hardware, catalog)
    try:
        _log("transformers first load: dequantising the GGUF file (tens of seconds on a CPU)")
        started = time.perf_counter()
        first_provider.get(options.model, "transformers")
        first_s = time.perf_counter() - started
        converted = any((data_dir / "converted").glob("*/config.json"))
        figures.append(Figure(first_name, first_s, "s", "", None,
                              f"fresh data dir; safetensors copy written: {'yes' if converted else 'NO'}; "
                              f"importing torch+transformers before it took {import_s:.1f} s"))
    except Exception as exc:
        figures.append(_failed(first_name, "s", "", exc))
        figures.append(Figure("transformers second load (cached copy)", None, "s", "< 5 s", False,
                              "not measured: the first load failed"))
        return figures
    finally:
        first_provider.cache.clear()

    # ---- 5b: second load from the safetensors copy, through a new provider and cache
    second_name = "transformers second load (cached copy)"
    provider = EngineProvider(tf_settings, hardware, catalog)
    try:
        try:
            _log("transformers second load: from the cached safetensors copy")
            started = time.perf_counter()
            engine = provider.get(options.model, "transformers")
            second_s = time.perf_counter() - started
            figures.append(_measured(second_name, "s", "< 5 s", lambda v: _below(v, 5.0), second_s,
                                     "new EngineProvider and ModelCache, same data dir"))
        except Exception as exc:
            figures.append(_failed(second_name, "s", "< 5 s", exc))
            return figures

        # ---- 2: llama.cpp speed over transformers CPU speed
        ratio_name = "llama.cpp / transformers speed"
        try:
            runs_wanted = options.transformers_runs
            _log(f"transformers decode: one warm-up, then {runs_wanted} run(s) of {n} tokens")
            params = GenerationParams(max_new_tokens=n, temperature=0.0, repetition_penalty=1.0, seed=0)
            _app_run(engine, THROUGHPUT_PROMPT, dataclasses.replace(params, max_new_tokens=8))
            watch = _CpuWatch()
            runs = [_app_run(engine, THROUGHPUT_PROMPT, params, TRANSFORMERS_RUN_CAP_S)
                    for _ in range(runs_wanted)]
            cpu_note = watch.note()
            tf_speed = _median_speed(runs)
            figures.append(Figure(f"transformers decode ({engine.device.device}, {engine.device.dtype_name})",
                                  tf_speed, "tok/s", "", None,
                                  f"median of {_speeds(runs)}; tokens: {', '.join(str(r.tokens) for r in runs)}; "
                                  f"{hardware.cpu_threads} torch threads{cpu_note}"))
            if llama_speed is None:
                figures.append(Figure(ratio_name, None, "x", "", None,
                                      "not measured: the llama.cpp speed is missing"))
            else:
                figures.append(Figure(ratio_name, llama_speed / tf_speed if tf_speed > 0 else None, "x", "", None,
                                      f"app llama.cpp {llama_speed:.1f} tok/s over transformers "
                                      f"{tf_speed:.1f} tok/s, same prompt, greedy, {n} tokens"))
        except Exception as exc:
            figures.append(_failed(ratio_name, "x", "", exc))
    finally:
        provider.cache.clear()
    return figures


# --------------------------------------------------------------------------- fine-tuning
FINETUNE_FIGURE = "fine-tune trainer: app / plain peft+Trainer"
FINETUNE_DATA = "dialogues"  # the bundled set the Fine-tune tab offers first
FINETUNE_BATCH = 4


@dataclass(frozen=True)
class _TrainRun:
    """One timed training run: what the steps after the first read, how long they took, and their padding."""

    steps: int  # optimizer steps timed (the first, which carries one-off set-up, is not)
    tokens: int  # non-padding tokens the timed steps' forward passes read
    seconds: float
    padding_share: float  # padding tokens / all tokens, over every step's batches
    first_loss: float | None = None  # the first forward pass's loss: equal when both read the same first batch

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def step_clock():
    """A ``TrainerCallback`` that times each optimizer step and counts the tokens of its training batches.

    The same clock goes into both trainers, so they are measured the same way: a forward pre-hook on
    the model counts the real (attention-mask) and all (padded) tokens of every forward pass made in
    training mode (evaluation and generation run in eval mode and are not counted), and each
    ``on_step_end`` notes the time and the running counts. :meth:`result` leaves out the first step.
    A forward hook keeps the first training loss (detached, so no device sync is added; the token
    count does sync on a GPU, once per forward pass, in both trainers alike).
    """
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.real = 0
            self.total = 0
            self.marks: list[tuple[float, int, int]] = []  # (time at step end, real tokens, all tokens) so far
            self._hooks: list = []
            self.first_loss = None

        def _count(self, module, args, kwargs):
            if module.training:
                ids = kwargs.get("input_ids", args[0] if args else None)
                mask = kwargs.get("attention_mask")
                if ids is not None:
                    self.total += int(ids.numel())
                    self.real += int(mask.sum()) if mask is not None else int(ids.numel())

        def _loss(self, module, args, output):
            if module.training and self.first_loss is None and getattr(output, "loss", None) is not None:
                self.first_loss = output.loss.detach()

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._hooks = [model.register_forward_pre_hook(self._count, with_kwargs=True),
                           model.register_forward_hook(self._loss)]
            self.marks = [(time.perf_counter(), 0, 0)]

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), self.real, self.total))

        def on_train_end(self, args, state, control, **kwargs):
            for hook in self._hooks:
                hook.remove()
            self._hooks = []

        def result(self) -> _TrainRun:
            steps = len(self.marks) - 1
            if steps < 2:
                raise RuntimeError(f"training made {steps} step(s); the first is warm-up, so at least 2 are needed")
            (t1, real1, _), (tn, realn, _) = self.marks[1], self.marks[-1]
            share = 1.0 - self.real / self.total if self.total else 0.0
            loss = None if self.first_loss is None else float(self.first_loss)
            return _TrainRun(steps - 1, realn - real1, tn - t1, share, loss)

    return StepClock()


def finetune_config(options: BenchOptions, steps: int | None = None):
    """The run both trainers make: LoRA on the bench's model, the bundled dialogues, no evaluation during training.

    Validation is off (so the train split is the whole of the set's train rows for both), nothing is
    generated and the app scores a single test example before and after, outside the timed steps.
    """
    from playground.finetune.config import LORA, FinetuneConfig

    return FinetuneConfig(model=options.model, method=LORA, data=FINETUNE_DATA, batch_size=FINETUNE_BATCH,
                          grad_accum=1, max_length=384, learning_rate=2e-4,
                          max_steps=steps or options.finetune_steps, validation_fraction=0.0, eval_every=0,
                          sample_count=0, test_limit=1, seed=0)


def train_pairs(config) -> list[tuple[str, str]]:
    """The (prompt, completion) pairs of the config's train split, through its template, as the app makes them."""
    from playground.finetune.data import format_pairs, load_splits, template_for

    return [(p.prompt, p.completion) for p in format_pairs(load_splits(config).train, template_for(config))]


def app_training_run(config, run_dir: Path, data_dir: Path, resolver, catalog) -> _TrainRun:
    """One run of the app's trainer (``playground.finetune.train.train``), its steps timed by a step clock."""
    import contextlib

    from playground.finetune.train import train

    clock = step_clock()
    with contextlib.redirect_stdout(sys.stderr):  # the bench's stdout is its table or JSON
        outcome = train(config, run_dir, None, data_dir, resolver=resolver, catalog=catalog, callbacks=[clock])
    if outcome.cancelled:
        raise RuntimeError("the app's run was cancelled")
    return clock.result()


def plain_training_run(config, model_folder: Path, targets, pairs, output_dir: Path) -> _TrainRun:
    """One run of the plain peft + Trainer script on the same folder, pairs and settings."""
    import contextlib

    from playground.bench.plain_trainer import PlainSettings, build_trainer

    clock = step_clock()
    with contextlib.redirect_stdout(sys.stderr):  # the stock Trainer prints its final log line
        trainer = build_trainer(model_folder, pairs, PlainSettings.from_config(config, targets), output_dir,
                                callbacks=[clock])
        trainer.train()
    return clock.result()


def bench_finetune(settings, hardware, catalog, options: BenchOptions, scratch: Path, config=None) -> Figure:
    """Training speed of the app's trainer over a plain peft + Trainer script: same model, data, settings.

    ``config`` (default :func:`finetune_config`) lets a test run the figure on a tiny model and data file.
    """
    import gc

    import torch

    from playground.finetune.config import model_family
    from playground.finetune.methods import locate_model
    from playground.models.sources import SourceResolver

    name, unit, target = FINETUNE_FIGURE, "x", ">= 1.0"
    config = config or finetune_config(options)
    if model_family(config.model, catalog) != "decoder":
        return Figure(name, None, unit, target, None, f"skipped: {config.model} is not a decoder")
    torch.set_num_threads(hardware.cpu_threads)  # both trainers run in this process, on the same threads
    resolver = SourceResolver(settings.models_dir, settings.offline)
    data_dir = scratch / "transformers-data"  # the transformers figures' converted copy, when they made one
    work = scratch / "finetune"
    work.mkdir(parents=True, exist_ok=True)
    _log(f"fine-tuning: locating {config.model} (converts the GGUF once if no copy exists yet)")
    source = locate_model(config, resolver, data_dir, catalog)
    pairs = train_pairs(config)
    targets = tuple(config.target_modules or source.lora_targets)

    def app(i: int) -> _TrainRun:
        return app_training_run(config, work / f"app-{i}", data_dir, resolver, catalog)

    def plain(i: int) -> _TrainRun:
        return plain_training_run(config, source.folder, targets, pairs, work / f"plain-{i}")

    rounds = options.finetune_rounds
    _log(f"fine-tuning: {rounds} round(s) of app and plain runs, {config.max_steps} steps of batch "
         f"{config.batch_size} each")
    app_runs: list[_TrainRun] = []
    plain_runs: list[_TrainRun] = []
    watch = _CpuWatch()
    for round_ in range(rounds):  # ABBA order, so neither side always goes first
        order = (("app", app, app_runs), ("plain", plain, plain_runs))
        for label, run, runs in order if round_ % 2 == 0 else reversed(order):
            _log(f"fine-tuning: {label} run {round_ + 1}")
            runs.append(run(round_))
            gc.collect()  # the finished run's model goes before the next one loads
    cpu_note = watch.note()
    app_speed = statistics.median(r.tokens_per_s for r in app_runs)
    plain_speed = statistics.median(r.tokens_per_s for r in plain_runs)
    app_padding = statistics.median(r.padding_share for r in app_runs)
    plain_padding = statistics.median(r.padding_share for r in plain_runs)
    paired = [a.tokens_per_s / p.tokens_per_s for a, p in zip(app_runs, plain_runs) if p.tokens_per_s]
    detail = (f"app {app_speed:.1f} tok/s (runs {_train_speeds(app_runs)}), plain {plain_speed:.1f} tok/s "
              f"(runs {_train_speeds(plain_runs)}); padding share app {app_padding:.1%}, plain {plain_padding:.1%}; "
              f"per round {', '.join(f'{r:.2f}' for r in paired)}; {config.max_steps} steps of batch "
              f"{config.batch_size} (x{config.grad_accum} accumulation) per run, the first not timed; "
              f"{len(pairs)} {config.data} train rows, max_length {config.max_length}, LoRA r={config.lora_r} "
              f"alpha={config.lora_alpha:g} on {','.join(targets) or 'peft default'}, lr {config.learning_rate:g}, "
              f"seed {config.seed}, {hardware.cpu_threads} threads; "
              f"first-step loss app {_losses(app_runs)}, plain {_losses(plain_runs)}{cpu_note}")
    ratio = app_speed / plain_speed if plain_speed > 0 else None
    return _measured(name, unit, target, lambda v: _at_least(v, 1.0), ratio, detail)


def _train_speeds(runs: list[_TrainRun]) -> str:
    return ", ".join(f"{r.tokens_per_s:.1f}" for r in runs)


def _losses(runs: list[_TrainRun]) -> str:
    return ", ".join("-" if r.first_loss is None else f"{r.first_loss:.4f}" for r in runs)


# --------------------------------------------------------------------------- driver
ARCHITECTURE_TEXTS = (
    "The capital of France is Paris, a city famous for its museums.",
    "My grandmother bakes bread every Sunday morning before church.",
    "The train to Lisbon was late because of the storm last night.",
    "Students learn faster when they explain ideas to each other.",
    "A small robot cleaned the kitchen floor while we were asleep.",
)


def bench_architectures(settings, hardware, catalog, options: BenchOptions) -> Figure:
    """Warm latency of the whole Architectures tab on the default offline models (one per family found)."""
    from playground.architectures.lab import ArchitectureLab
    from playground.backends.provider import EngineProvider

    provider = EngineProvider(settings, hardware, catalog)
    lab = ArchitectureLab(provider)
    try:
        models = lab.default_models()
        lab.run_all(ARCHITECTURE_TEXTS[0], models)  # loads (and converts) the models once
        times = []
        for text in ARCHITECTURE_TEXTS[1: 3 if options.quick else None]:  # new text: attention is extracted again
            started = time.perf_counter()
            comparison = lab.run_all(text, models)
            times.append(time.perf_counter() - started)
            if comparison.errors:
                raise RuntimeError(f"the tab failed for {comparison.errors}")
        value = statistics.median(times)
        return _measured("Architectures tab, warm", "s", "< 2 s", lambda v: _below(v, 2.0), value,
                         f"models {', '.join(models)}; median of " + ", ".join(f"{t:.2f}" for t in times)
                         + " s; a new text each run (facts, tokens, objective, attention, native task)")
    finally:
        lab.clear()
        provider.cache.clear()


def bench_prompt_lab(provider, options: BenchOptions) -> list[Figure]:
    """Self-consistency's cost over one sample, and a sentiment evaluation of the bundled set, on llama.cpp."""
    from playground.bench.prompt_lab import time_self_consistency, time_sentiment_evaluation

    figures = []
    try:
        engine = provider.get(options.model, "llama.cpp")
    except Exception as exc:
        return [_failed("Prompt Lab: self-consistency N=5 / one sample", "x", "<= 2.5", exc),
                _failed("Prompt Lab: evaluate 60 sentiment examples", "s", "< 120 s", exc)]
    try:
        timing = time_self_consistency(engine, samples=5, rounds=2 if options.quick else 3)
        figures.append(_measured(
            "Prompt Lab: self-consistency N=5 / one sample", "x", "<= 2.5", lambda v: v <= 2.5, timing.ratio,
            f"{timing.parallel_s:.2f} s for 5 paths ({timing.parallel_tokens} tokens) vs {timing.single_s:.2f} s "
            f"for one ({timing.single_tokens:.0f} tokens); prompt of {timing.prompt_tokens} tokens read once; "
            f"median of {timing.rounds} rounds"))
    except Exception as exc:
        figures.append(_failed("Prompt Lab: self-consistency N=5 / one sample", "x", "<= 2.5", exc))
    try:
        limit = 20 if options.quick else None
        report = time_sentiment_evaluation(engine, limit=limit)
        score = report.scores[0]
        examples = score.examples
        name = f"Prompt Lab: evaluate {examples} sentiment examples"
        figures.append(_measured(
            name, "s", "< 120 s", (lambda v: _below(v, 120.0)) if examples >= 60 else None, report.elapsed_s,
            f"zero-shot, accuracy {score.metrics['accuracy']:.2f}, {score.completion_tokens} new tokens"))
    except Exception as exc:
        figures.append(_failed("Prompt Lab: evaluate 60 sentiment examples", "s", "< 120 s", exc))
    return figures


def _settings_for(options: BenchOptions, data_dir: Path):
    from playground.config import Settings

    settings = Settings.load()
    changes: dict[str, Any] = {"data_dir": data_dir}
    if options.threads:
        changes["threads"] = options.threads
    return dataclasses.replace(settings, **changes)


def run_benchmarks(options: BenchOptions, machine: dict | None = None) -> list[Figure]:
    """Measure every figure in this process; ``machine`` (if given) receives the hardware summary."""
    from playground.backends.provider import EngineProvider
    from playground.hardware import detect
    from playground.models.catalog import Catalog

    catalog = Catalog.load()
    spec = catalog.get(options.model)  # an unknown id stops here with the list of known ones
    if options.data_dir is not None:
        Path(options.data_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="playground-bench-", dir=options.data_dir))
    figures: list[Figure] = []
    try:
        settings = _settings_for(options, scratch / "app-data")
        hardware = detect(settings.threads)
        if machine is not None:
            machine.update(machine_summary(hardware, hardware.cpu_threads, options))
        _log(hardware.summary)

        if options.skip_startup:
            figures.append(Figure("app start-up to ready", None, "s", "< 10 s", None, "skipped (--skip-startup)"))
        else:
            try:
                figures.append(bench_startup(scratch))
            except Exception as exc:
                figures.append(_failed("app start-up to ready", "s", "< 10 s", exc))

        llama_speed: float | None = None
        if spec.has_gguf:
            provider = EngineProvider(settings, hardware, catalog)
            try:
                llama_figures, llama_speed = bench_llama_cpp(provider, options)
                figures += llama_figures
            except Exception as exc:
                figures.append(_failed("llama.cpp app / direct speed", "x", ">= 0.9", exc))
            figures += bench_prompt_lab(provider, options)  # reports its own failures
            provider.cache.clear()
        else:
            figures.append(Figure("llama.cpp app / direct speed", None, "x", ">= 0.9", None,
                                  f"skipped: {options.model} has no GGUF source"))

        try:
            figures += bench_transformers(settings, hardware, catalog, options, scratch, llama_speed)
        except Exception as exc:  # e.g. torch or transformers missing
            figures.append(_failed("transformers second load (cached copy)", "s", "< 5 s", exc))

        if options.skip_finetune:
            figures.append(Figure(FINETUNE_FIGURE, None, "x", ">= 1.0", None, "skipped (--skip-finetune)"))
        else:
            try:
                figures.append(bench_finetune(settings, hardware, catalog, options, scratch))
            except Exception as exc:
                figures.append(_failed(FINETUNE_FIGURE, "x", ">= 1.0", exc))

        try:
            figures.append(bench_architectures(settings, hardware, catalog, options))
        except Exception as exc:
            figures.append(_failed("Architectures tab, warm", "s", "< 2 s", exc))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return figures


def _value_text(figure: Figure) -> str:
    if figure.value is None:
        return "-"
    value = figure.value
    digits = 3 if abs(value) < 1 else 2 if abs(value) < 100 else 1
    return f"{value:.{digits}f} {figure.unit}"


def _result_text(figure: Figure) -> str:
    if figure.passed is None:
        return "info" if figure.value is not None else "skipped"
    return "pass" if figure.passed else "FAIL"


def format_table(figures: list[Figure], machine: dict | None = None) -> str:
    header = ("figure", "value", "target", "result")
    rows = [(f.name, _value_text(f), f.target or "-", _result_text(f)) for f in figures]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells) -> str:
        return "  ".join([cells[0].ljust(widths[0]), cells[1].rjust(widths[1]),
                          cells[2].ljust(widths[2]), cells[3]]).rstrip()

    out = []
    if machine:
        out.append(f"machine: {machine.get('summary', '')}; {machine.get('cpu', '')}")
        packages = machine.get("packages") or {}
        out.append("versions: " + ", ".join(f"{k} {v}" for k, v in packages.items() if v))
        share = machine.get("others_cpu_share_at_start")
        if share is not None:
            out.append(f"CPU used by other programs at start: {share:.0%}" + (
                " (they compete with the benchmark: speed figures will be noisy)" if share >= 0.15 else ""))
        out.append("")
    out.append(line(header))
    out.append(line(["-" * w for w in widths]))
    out += [line(r) for r in rows]
    out.append("")
    out.append("details:")
    out += [f"  {f.name}: {f.detail}" for f in figures if f.detail]
    return "\n".join(out)


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m playground bench",
        description="Measure the playground's speed figures on this machine and compare them with their targets.",
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    parser.add_argument("--quick", action="store_true",
                        help="Fewer rounds and tokens for a rough answer (the one-off GGUF conversion still runs).")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Folder in which the scratch folder is made (default: the system temp folder); "
                             "everything written there is removed at the end.")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for llama.cpp and torch (default 0: one per physical core).")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"Catalog id to measure (default {DEFAULT_MODEL}).")
    parser.add_argument("--skip-startup", action="store_true", help="Do not measure the app's start-up time.")
    parser.add_argument("--skip-finetune", action="store_true",
                        help="Do not compare the app's fine-tuning trainer with a plain peft + Trainer script "
                             "(the slowest figure: a few minutes on two cores).")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    if args.threads < 0:
        print("--threads must be 0 or more.", file=sys.stderr)
        return 2
    options = BenchOptions(json=args.json, quick=args.quick, data_dir=args.data_dir, threads=args.threads,
                           model=args.model, skip_startup=args.skip_startup, skip_finetune=args.skip_finetune)
    from playground.errors import PlaygroundError

    machine: dict[str, Any] = {}
    try:
        figures = run_benchmarks(options, machine)
    except PlaygroundError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if options.json:
        print(json.dumps({"machine": machine, "figures": [f.to_dict() for f in figures]}, indent=2))
    else:
        print(format_table(figures, machine))
    return 1 if any(f.passed is False for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
