"""The load figure: N people chatting at once with one running app, as a room of attendees would.

The bench starts the app as a room gets it (``python app.py --mode workshop``, offline, its own scratch
data dir, a free loopback port) and waits for it to answer, with a bound. One untimed chat then loads the
model. For each N (1, 8 and 32 unless ``--load`` says otherwise) N new people join at once; each, like an
attendee's script with ``gradio_client``'s default timeouts, makes a ``Client``, gets an identity token
from ``/identity`` (what a browser does when the page opens) and, once all have joined, sends one short
Quantized CPU chat message of its own (``/quantized_chat``, the model under test, 16 new tokens, greedy,
seed 0) with ``client.submit``. The job's updates stream back; a person's time to first token is the
first update whose assistant text is not empty, counted from the submit, and their time to the last
token is the job's end.

Per N the figures are the errors (their count and the first one's text), p50 and p90 of both times and
the aggregate speed (completion tokens over the wall time of the burst, from the first submit to the last
job's end; the tokens come from the ``N new tokens`` the endpoint's stats report, else from the answer
through the model's tokenizer, and the detail says which). The targets are the room's (issue: a room of
30-50 on one instance): no error at N = 32, the aggregate speed at N = 32 at least 3x that at N = 1 (many
people must share the decode, not queue behind one another), p90 time to first token at N = 32 under
3 s, and, during the largest burst, a plain page request (``GET /``) and a health request
(``GET /health``; a 404 reads as "missing") both under 1 s at p90.

The updates of all jobs are read by one watcher thread every few milliseconds: iterating a
``gradio_client`` job busy-waits at 1 ms per person, which on a small box would take the CPU from the app
it measures (in a room each attendee's script runs on their own laptop). A person still waiting after
:data:`BURST_TIMEOUT_S` counts as an error: that is the bench's bound, not a client timeout.

With ``--load-server llama.cpp`` the bench first starts llama-cpp-python's own OpenAI-compatible server
on the model's GGUF and starts the app with ``PLAYGROUND_OPENAI_BASE_URL``, ``PLAYGROUND_OPENAI_API_KEY``
and ``PLAYGROUND_OPENAI_MODELS`` pointing at it; which engine answered comes from the endpoint's stats
when they name it, and from the number of completion requests the server logged during each burst.

Everything started here runs in its own process group and is killed when the suite ends, fails or is
interrupted (Ctrl-C, SIGTERM). The pure parts (:func:`parse_loads`, :func:`percentile`,
:func:`load_figures`) are separate from the running ones so they can be tested without an app.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from playground.bench.core import REPO_ROOT, Figure, Measure, error_text, free_port, log

DEFAULT_LOADS = (1, 8, 32)
TARGET_PEOPLE = 32  # the N the room's targets are set at
BASE_PEOPLE = 1  # the N the aggregate speed at TARGET_PEOPLE is compared with
SPEED_TARGET = ">= 3"
TTFT_TARGET = "< 3 s"
ERRORS_TARGET = "<= 0"
PROBE_TARGET = "< 1 s"
MAX_PEOPLE = 128  # in one burst: a room is 30-50; each simulated person is a Client with its own threads
MAX_PEOPLE_IN_ALL = 256  # over all bursts: every person is a new identity from one address (workshop: 300/hour)
NEW_TOKENS = 16
SEED = 0
SERVERS = ("llama.cpp",)

READY_TIMEOUT_S = 180.0  # the app (or the server) answering its first request
WARM_UP_TIMEOUT_S = 300.0  # the untimed chat that loads the model
JOIN_TIMEOUT_S = 120.0  # every person of a burst has a Client and an identity token
BURST_TIMEOUT_S = 300.0  # a person without a finished answer by then counts as an error
WATCH_INTERVAL_S = 0.005
PROBE_INTERVAL_S = 0.25
PROBES_PER_PATH = 10
PROBE_TIMEOUT_S = 30.0
SERVER_N_CTX = 2048
SERVER_LOG_REQUEST = re.compile(r'"POST /v1/(?:chat/)?completions[^"]*" 200')
STATS_TOKENS = re.compile(r"(\d+)\s+new tokens")  # answer_stats in English (the bench sends no language)
STATS_ENGINE = re.compile(r"engine\**:\s*\**([^·*\n]+)")

TOPICS = (
    "a rainbow", "gravity", "a volcano", "photosynthesis", "the moon", "a glacier", "an atom", "a comet",
    "the tide", "a desert", "thunder", "a honeybee", "a tornado", "an eclipse", "a coral reef", "a magnet",
    "the wind", "a fossil", "an earthquake", "a star", "a river delta", "a penguin", "a cactus", "the ocean",
    "a cloud", "a battery", "a telescope", "a compass", "a snowflake", "a mountain", "a forest", "a bridge",
    "a lighthouse", "a windmill", "a violin", "a library", "a calendar", "a map", "a clock", "a bicycle",
)


class LoadSpecError(ValueError):
    """A ``--load`` value the bench refuses; the text says what is allowed."""


# --------------------------------------------------------------------------- pure parts
def parse_loads(text: str | None) -> tuple[int, ...]:
    """``"1,8,32"`` (or ``"32"``) as sorted distinct people counts; None or empty gives the default."""
    if text is None or not text.strip():
        return DEFAULT_LOADS
    loads: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not re.fullmatch(r"[+-]?\d+", part):
            raise LoadSpecError(f"--load {text}: {part!r} is not a whole number of people; give one or more, "
                                f"comma-separated, e.g. --load 1,8,32 or --load 32.")
        people = int(part)
        if people < 1:
            raise LoadSpecError(f"--load {text}: {people} people; each value must be at least 1.")
        if people > MAX_PEOPLE:
            raise LoadSpecError(f"--load {text}: {people} people is more than the {MAX_PEOPLE} this bench "
                                f"simulates at once (a room is 30-50 people).")
        loads.add(people)
    if sum(loads) > MAX_PEOPLE_IN_ALL:
        raise LoadSpecError(f"--load {text}: {sum(loads)} people in all; at most {MAX_PEOPLE_IN_ALL} over all the "
                            f"values (each is a new identity from this one address).")
    return tuple(sorted(loads))


def question(person: int) -> str:
    """A different short chat message for each person of a burst."""
    topic = TOPICS[person % len(TOPICS)]
    text = f"In one sentence, what is {topic}?"
    return text if person < len(TOPICS) else f"{text} (I am person {person + 1}.)"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks; None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not between 0 and 100")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class PersonResult:
    """One simulated person's chat: times from their submit, or the error that stopped them."""

    ttft_s: float | None = None
    total_s: float | None = None
    tokens: int | None = None  # completion tokens of the answer
    tokens_from: str = "stats"  # "stats": the endpoint's stats; "tokenizer": the answer through the tokenizer
    engine: str = ""  # as the endpoint's stats name it ("" when they do not)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class Probe:
    """One timed ``GET`` during a burst: seconds to the whole body, its status, or the error."""

    path: str
    seconds: float | None
    status: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.seconds is not None


@dataclass(frozen=True)
class Burst:
    """N people at once: each one's result, the wall time from the first submit to the last job's end."""

    people: int
    results: tuple[PersonResult, ...]
    wall_s: float
    probes: tuple[Probe, ...] = ()
    served: int | None = None  # completion requests the OpenAI-compatible server logged in the burst (None: none)
    cpu: str = ""  # the CPU seconds the app and the bench's own clients used during the burst

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.results if not r.ok]

    @property
    def tokens(self) -> int:
        return sum(r.tokens or 0 for r in self.results if r.ok)

    @property
    def speed(self) -> float | None:
        return self.tokens / self.wall_s if self.wall_s > 0 and self.tokens else None


def people_text(n: int) -> str:
    return f"{n} person" if n == 1 else f"{n} people"


def _seconds(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in sorted(values))


@dataclass(frozen=True)
class Engines:
    """What could have answered: the OpenAI-compatible server started for the run (if any), and whether the app
    reads the settings that point it there."""

    server: str | None = None
    app_reads_settings: bool = True


def engine_text(burst: Burst, engines: Engines = Engines()) -> str:
    """Which engine answered the burst: the endpoint's stats when they name it, else the server's log."""
    named = sorted({r.engine for r in burst.results if r.ok and r.engine})
    if named:
        return f"engine (from the endpoint's stats): {', '.join(named)}" + (
            f"; the {engines.server} server logged {burst.served} completion requests" if engines.server else "")
    if engines.server is None or burst.served is None:
        return "engine: the app's in-process llama.cpp (the endpoint's stats do not name the engine)"
    if burst.served > 0:
        return (f"engine: the {engines.server} server (it logged {burst.served} completion requests during the "
                f"burst; the endpoint's stats do not name the engine)")
    why = "" if engines.app_reads_settings else "; this app does not read PLAYGROUND_OPENAI_BASE_URL yet"
    return (f"engine: the app's in-process llama.cpp (the {engines.server} server logged no completion request "
            f"during the burst{why})")


def burst_figures(burst: Burst, engines: Engines = Engines()) -> list[Figure]:
    """The errors, p50/p90 of both times and the aggregate speed of one burst; targets at N = 32 only."""
    n = burst.people
    at_target = n == TARGET_PEOPLE
    prefix = f"load N={n}:"
    ok = [r for r in burst.results if r.ok]
    errors = burst.errors
    first_error = f"; first error: {errors[0]}" if errors else ""
    counted_errors = Measure(f"{prefix} errors", f"of {n}", ERRORS_TARGET if at_target else "").measured(
        float(len(errors)), f"{len(errors)} of {people_text(n)} got no answer{first_error}")
    figures = [dataclasses.replace(counted_errors, value=len(errors))]  # a count: shown without decimals
    firsts = [r.ttft_s for r in ok if r.ttft_s is not None]
    lasts = [r.total_s for r in ok if r.total_s is not None]
    for label, values, target in (("first token", firsts, TTFT_TARGET), ("last token", lasts, "")):
        for q in (50, 90):
            measure = Measure(f"{prefix} {label} p{q}", "s", target if (at_target and q == 90) else "")
            value = percentile(values, q)
            if value is None:
                figures.append(measure.not_measured(f"no person got an answer{first_error}"))
            else:
                detail = (f"of {people_text(len(values))}, seconds from their submit: {_seconds(values)}"
                          if q == 90 else f"of {people_text(len(values))}")  # the values once, on the p90 row
                figures.append(measure.measured(value, detail))
    counted = {r.tokens_from for r in ok}
    source = " and ".join(sorted("the endpoint's stats" if c == "stats" else "the answers through the model's "
                                 "tokenizer" for c in counted)) or "nothing"
    detail = (f"{burst.tokens} completion tokens (counted from {source}) in {len(ok)} of {n} answers over the "
              f"burst's {burst.wall_s:.2f} s wall time; {engine_text(burst, engines)}"
              f"{f'; {burst.cpu}' if burst.cpu else ''}")
    speed = Measure(f"{prefix} aggregate speed", "tok/s")
    figures.append(speed.measured(burst.speed, detail) if burst.speed else speed.not_measured(
        f"no tokens in the burst{first_error}"))
    return figures


def speed_ratio_figure(bursts: Sequence[Burst]) -> Figure:
    """The aggregate speed of the largest burst over the smallest; judged at N = 32 over N = 1."""
    if len(bursts) < 2:
        measure = Measure(f"load: speed N={TARGET_PEOPLE} / N={BASE_PEOPLE}", "x", SPEED_TARGET)
        return measure.skipped(f"needs two loads, e.g. --load {BASE_PEOPLE},{TARGET_PEOPLE}")
    small, big = min(bursts, key=lambda b: b.people), max(bursts, key=lambda b: b.people)
    judged = (small.people, big.people) == (BASE_PEOPLE, TARGET_PEOPLE)
    measure = Measure(f"load: speed N={big.people} / N={small.people}", "x", SPEED_TARGET)
    if not (small.speed and big.speed):
        return measure.not_measured("a burst made no tokens") if judged else measure.skipped(
            "a burst made no tokens")
    note = "" if judged else f"; the target is set for N={TARGET_PEOPLE} over N={BASE_PEOPLE}"
    return measure.measured(big.speed / small.speed, f"{big.speed:.1f} over {small.speed:.1f} tok/s{note}",
                            judged=judged)


def probe_figures(burst: Burst) -> list[Figure]:
    """p90 of ``GET /`` and ``GET /health`` during ``burst``; a health endpoint that answers 404 is missing."""
    judged = burst.people == TARGET_PEOPLE
    note = "" if judged else f"; the target is set for N={TARGET_PEOPLE}"
    figures = []
    for path in ("/", "/health"):
        measure = Measure(f"load N={burst.people}: GET {path} p90", "s", PROBE_TARGET)
        probes = [p for p in burst.probes if p.path == path]
        if path == "/health" and any(p.status == 404 for p in probes):
            figures.append(measure.skipped("missing: GET /health answered 404 (the app has no health endpoint "
                                           "yet)"))
            continue
        times = [p.seconds for p in probes if p.ok]
        failed = [p for p in probes if not p.ok]
        trouble = (f"; {len(failed)} failed, the first: "
                   f"{failed[0].error or f'HTTP {failed[0].status}'}") if failed else ""
        if not times:
            figures.append(measure.not_measured(f"no request answered 200 during the burst{trouble}"))
            continue
        figures.append(measure.measured(percentile(times, 90), f"{len(times)} requests during the burst: "
                                                               f"{_seconds(times)} s{trouble}{note}",
                                        judged=judged))
    return figures


def load_figures(bursts: Sequence[Burst], setup: Figure | None = None,
                 engines: Engines = Engines()) -> list[Figure]:
    """Every figure of the load run: the setup (if given), each burst's, the speed ratio, the probes."""
    figures = [setup] if setup is not None else []
    ordered = sorted(bursts, key=lambda b: b.people)
    for burst in ordered:
        figures += burst_figures(burst, engines)
    figures.append(speed_ratio_figure(ordered))
    probed = [b for b in ordered if b.probes]
    if probed:
        figures += probe_figures(probed[-1])
    return figures


def assistant_text(history) -> str:
    """The text of the last assistant message of a Chatbot value (``""`` when there is none)."""
    if not isinstance(history, (list, tuple)):
        return ""
    for message in reversed(history):
        if isinstance(message, dict) and message.get("role") == "assistant":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return content if isinstance(content, str) else ""
    return ""


def stats_tokens(stats: str) -> int | None:
    match = STATS_TOKENS.search(stats or "")
    return int(match.group(1)) if match else None


def stats_engine(stats: str) -> str:
    match = STATS_ENGINE.search(stats or "")
    return match.group(1).strip() if match else ""


def count_served(log_path: Path | None) -> int:
    """Completion requests the OpenAI-compatible server answered so far (its access log)."""
    if log_path is None:
        return 0
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return len(SERVER_LOG_REQUEST.findall(text))


# --------------------------------------------------------------------------- processes
@dataclass
class Started:
    """A child process the suite started and must stop; ``url`` is where it answers."""

    name: str
    process: subprocess.Popen
    url: str
    log_path: Path
    ready_s: float | None = None

    def log_tail(self, lines: int = 5) -> str:
        try:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return " | ".join(tail)

    def stop(self) -> None:
        """Terminate the process group, then kill it if it does not go within 10 s."""
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


@contextlib.contextmanager
def running(name: str, command: list[str], env: dict[str, str], url: str, ready_path: str, log_path: Path,
            timeout_s: float = READY_TIMEOUT_S) -> Iterator[Started]:
    """Run ``command`` in its own process group until the block ends; ready once ``url + ready_path`` is 200."""
    with open(log_path, "wb") as out:
        begun = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        child = Started(name, process, url, log_path)
        try:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {process.returncode} before answering; log: "
                                       f"{child.log_tail()}")
                if time.perf_counter() - begun > timeout_s:
                    raise RuntimeError(f"{name} did not answer {url + ready_path} within {timeout_s:.0f} s; log: "
                                       f"{child.log_tail()}")
                try:
                    with urllib.request.urlopen(url + ready_path, timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                time.sleep(0.2)
            child.ready_s = time.perf_counter() - begun
            yield child
        finally:
            child.stop()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the block (main thread only), so the children are stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set variables of this process for the block (gradio_client reads its telemetry switch from one)."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def app_environment(data_dir: Path, port: int, model: str, threads: int, extra: dict[str, str]) -> dict[str, str]:
    """The app's variables: this process's, then the room's mode, offline, its own data dir and port."""
    env = {**os.environ, "PLAYGROUND_MODE": "workshop", "PLAYGROUND_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "PLAYGROUND_DATA_DIR": str(data_dir), "PLAYGROUND_HOST": "127.0.0.1", "PLAYGROUND_PORT": str(port),
           "PLAYGROUND_DEFAULT_MODEL": model, "GRADIO_ANALYTICS_ENABLED": "False", **extra}
    if threads:
        env["PLAYGROUND_THREADS"] = str(threads)
    return env


def server_command(gguf: Path, port: int, alias: str, threads: int, n_ctx: int = SERVER_N_CTX) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server on ``gguf`` (pip install sse-starlette starlette-context
    pydantic-settings). It answers one request at a time; without ``--interrupt_requests False`` each new
    request would cut off the one being answered."""
    command = [sys.executable, "-m", "playground.backends.llama_server", "--model", str(gguf), "--model_alias", alias,
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--interrupt_requests", "False"]
    if threads:
        command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    return command


def openai_environment(base_url: str, model: str, served_name: str) -> dict[str, str]:
    """The settings that point the app's OpenAI-compatible engine at a server."""
    return {"PLAYGROUND_OPENAI_BASE_URL": base_url, "PLAYGROUND_OPENAI_API_KEY": "bench",
            "PLAYGROUND_OPENAI_MODELS": f"{model}={served_name}"}


def app_reads_openai_settings() -> bool:
    """Whether this app has the OpenAI-compatible engine's settings (until then it ignores the variables)."""
    from playground.config import Settings

    return any(f.name == "openai_base_url" for f in dataclasses.fields(Settings))


# --------------------------------------------------------------------------- people
def chat_arguments(message: str, model: str, token: str) -> tuple:
    """``/quantized_chat``'s inputs: message, history, model, system, the sampling sliders, identity."""
    from playground.backends.base import GenerationParams

    defaults = GenerationParams()
    return (message, [], model, "", NEW_TOKENS, 0.0, defaults.top_p, defaults.top_k, defaults.repetition_penalty,
            SEED, "", token)


@dataclass
class _Person:
    index: int
    client: object = None
    token: str = ""
    error: str = ""
    job: object = None
    submitted: float = 0.0
    first: float | None = None
    ended: float | None = None


def _join(person: _Person, url: str) -> None:
    from gradio_client import Client

    try:
        person.client = Client(url, verbose=False)
        person.token = person.client.predict("", api_name="/identity")
    except Exception as exc:  # noqa: BLE001 - a person who cannot join is an error of the burst
        person.error = f"joining: {error_text(exc)}"


def _close(person: _Person) -> None:
    with contextlib.suppress(Exception):
        if person.client is not None:
            person.client.close()


def _finish(person: _Person, count_tokens) -> PersonResult:
    job = person.job
    try:
        exc = job.exception(timeout=0)
    except Exception as error:  # noqa: BLE001 - cancelled
        exc = error
    if exc is not None:
        return PersonResult(error=error_text(exc))
    outputs = job.outputs()
    last = outputs[-1] if outputs else None
    history, stats = (last[0], last[2]) if isinstance(last, (list, tuple)) and len(last) >= 3 else (None, "")
    answer = assistant_text(history)
    if not answer.strip():
        return PersonResult(error=f"an empty answer (stats: {stats!r})")
    tokens, source = stats_tokens(stats), "stats"
    if tokens is None:
        tokens, source = count_tokens(answer), "tokenizer"
    first = person.first if person.first is not None else person.ended
    return PersonResult(ttft_s=first - person.submitted, total_s=person.ended - person.submitted, tokens=tokens,
                        tokens_from=source, engine=stats_engine(stats))


class _Prober:
    """Times ``GET /`` and ``GET /health`` in turn, in a thread, until stopped (a few of each at most)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.probes: list[Probe] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-probe", daemon=True)

    def _get(self, path: str) -> Probe:
        begun = time.perf_counter()
        try:
            with urllib.request.urlopen(self.url + path, timeout=PROBE_TIMEOUT_S) as response:
                response.read()
                return Probe(path, time.perf_counter() - begun, response.status)
        except urllib.error.HTTPError as exc:
            return Probe(path, None, exc.code, f"HTTP {exc.code}")
        except (urllib.error.URLError, OSError) as exc:
            return Probe(path, None, None, error_text(exc))

    def _run(self) -> None:
        paths = ["/", "/health"]
        while not self._stop.is_set() and paths:
            for path in list(paths):
                probe = self._get(path)
                self.probes.append(probe)
                if probe.status == 404 or sum(p.path == path for p in self.probes) >= PROBES_PER_PATH:
                    paths.remove(path)
            self._stop.wait(PROBE_INTERVAL_S)

    def __enter__(self) -> "_Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(PROBE_TIMEOUT_S * 2 + 1)


class CpuShare:
    """CPU seconds used by the app's process (and a server's, if any) and by this one (the simulated people) over a
    block: on one box the clients compete with the app for the same cores, so the detail says how much they took."""

    def __init__(self, pids: Sequence[int] = ()) -> None:
        import psutil

        self._processes = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                self._processes.append(psutil.Process(pid))
        self._start = self._sample()

    def _sample(self) -> tuple[float, float]:
        import psutil

        served = 0.0
        for process in self._processes:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                served += times.user + times.system
        own = os.times()
        return served, own.user + own.system

    def text(self, wall_s: float) -> str:
        end = self._sample()
        served, own = end[0] - self._start[0], end[1] - self._start[1]
        if wall_s <= 0:
            return ""
        return (f"CPU meanwhile: the app{' and server' if len(self._processes) > 1 else ''} {served:.1f} s, the "
                f"bench's clients {own:.1f} s over {wall_s:.1f} s of wall time on {os.cpu_count()} CPUs")


def run_burst(url: str, people: int, model: str, count_tokens, probe: bool = False,
              server_log: Path | None = None, first_person: int = 0, pids: Sequence[int] = ()) -> Burst:
    """``people`` join at once (Client and identity), then all submit one chat; the burst's results."""
    crowd = [_Person(first_person + i) for i in range(people)]
    log(f"load N={people}: {people_text(people)} join (Client, /identity)")
    joining = [threading.Thread(target=_join, args=(p, url), daemon=True, name=f"join-{p.index}") for p in crowd]
    for thread in joining:
        thread.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for thread in joining:
        thread.join(max(0.0, deadline - time.monotonic()))
    for person, thread in zip(crowd, joining):
        if thread.is_alive() and not person.error:
            person.error = f"joining: no Client and identity within {JOIN_TIMEOUT_S:.0f} s"
    served_before = count_served(server_log)
    ready = [p for p in crowd if not p.error and p.token]
    log(f"load N={people}: {people_text(len(ready))} send their message at once")
    prober = _Prober(url) if probe else contextlib.nullcontext()
    cpu = CpuShare(pids)
    try:
        with prober:
            begun = time.perf_counter()
            for person in ready:
                person.submitted = time.perf_counter()
                try:
                    person.job = person.client.submit(*chat_arguments(question(person.index), model, person.token),
                                                      api_name="/quantized_chat")
                except Exception as exc:  # noqa: BLE001
                    person.error = f"submitting: {error_text(exc)}"
                    person.ended = time.perf_counter()
            waiting = [p for p in ready if p.job is not None]
            deadline = time.perf_counter() + BURST_TIMEOUT_S
            while waiting:
                now = time.perf_counter()
                for person in list(waiting):
                    if person.first is None and any(assistant_text(o[0] if isinstance(o, (list, tuple)) else o)
                                                    for o in person.job.outputs()[-1:]):
                        person.first = now
                    if person.job.done():
                        person.ended = now
                        waiting.remove(person)
                if waiting and now > deadline:
                    for person in waiting:
                        person.error = (f"no finished answer within {BURST_TIMEOUT_S:.0f} s (the bench's bound; "
                                        f"gradio_client's own timeouts were left at their defaults)")
                        person.ended = now
                        with contextlib.suppress(Exception):
                            person.job.cancel()
                    break
                time.sleep(WATCH_INTERVAL_S)
            ends = [p.ended for p in ready if p.ended is not None]
            wall = (max(ends) - begun) if ends else 0.0
            cpu_text = cpu.text(wall)
        results = []
        for person in crowd:
            if person.error:
                results.append(PersonResult(error=person.error))
            else:
                results.append(_finish(person, count_tokens))
    finally:
        for person in crowd:
            _close(person)
    served = None if server_log is None else count_served(server_log) - served_before
    return Burst(people, tuple(results), wall, tuple(prober.probes) if probe else (), served, cpu_text)


def warm_up(url: str, model: str) -> float:
    """One untimed chat, so the bursts do not include loading the model; its seconds."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    try:
        token = client.predict("", api_name="/identity")
        begun = time.perf_counter()
        job = client.submit(*chat_arguments("Say hello.", model, token), api_name="/quantized_chat")
        try:
            outputs = job.result(timeout=WARM_UP_TIMEOUT_S)
        except Exception as exc:
            raise RuntimeError(f"the warm-up chat failed: {error_text(exc)}") from exc
        if not assistant_text(outputs[0]).strip():
            raise RuntimeError(f"the warm-up chat gave an empty answer (stats: {outputs[2]!r})")
        return time.perf_counter() - begun
    finally:
        client.close()


def tokenizer_counter(gguf: Path | None):
    """Counts an answer's tokens through the model's tokenizer (llama.cpp, vocabulary only), loaded on first use."""
    holder: dict[str, object] = {}
    lock = threading.Lock()

    def count(text: str) -> int:
        if gguf is None:
            raise RuntimeError("the endpoint's stats give no token count and the model has no GGUF to count with")
        with lock:
            if "llm" not in holder:
                from playground.backends.llama_loading import llama_class

                Llama = llama_class()
                holder["llm"] = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
            return len(holder["llm"].tokenize(text.encode("utf-8"), add_bos=False, special=False))

    return count


# --------------------------------------------------------------------------- the suite
LOAD_SETUP = Measure("load: app ready (workshop mode)", "s")


def bench_load(loads: Sequence[int], model: str, scratch: Path, threads: int = 0, server: str | None = None,
               gguf: Path | None = None) -> list[Figure]:
    """Start the app (and the server), then one burst per value of ``loads``; every figure of the load run."""
    if server is not None and server not in SERVERS:
        raise ValueError(f"unknown server {server!r}; one of: {', '.join(SERVERS)}")
    loads = sorted(loads)
    scratch.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(terminate_as_interrupt())
        stack.enter_context(environment(GRADIO_ANALYTICS_ENABLED="False"))  # offline: no telemetry from the clients
        extra: dict[str, str] = {}
        server_log: Path | None = None
        server_child: Started | None = None
        engines = Engines()
        setup_notes = []
        if server is not None:
            if gguf is None:
                raise RuntimeError(f"{model} has no GGUF file for the {server} server")
            port = free_port()
            alias = gguf.stem
            log(f"starting the {server} server on port {port} ({gguf.name})")
            child = stack.enter_context(running(
                f"the {server} server", server_command(gguf, port, alias, threads), dict(os.environ),
                f"http://127.0.0.1:{port}", "/v1/models", scratch / "server.log"))
            server_log, server_child = child.log_path, child
            extra = openai_environment(f"{child.url}/v1", model, alias)
            reads = app_reads_openai_settings()
            engines = Engines(server, reads)
            setup_notes.append(f"{server} server ready in {child.ready_s:.1f} s at {child.url}/v1 serving "
                               f"{alias} (n_ctx {SERVER_N_CTX}); the app got PLAYGROUND_OPENAI_BASE_URL, "
                               f"PLAYGROUND_OPENAI_API_KEY and PLAYGROUND_OPENAI_MODELS={model}={alias}"
                               f"{'' if reads else ', which this app ignores until its OpenAI engine lands'}")
        port = free_port()
        data_dir = scratch / "app-data"
        data_dir.mkdir(exist_ok=True)
        log(f"starting app.py --mode workshop on port {port} (up to {READY_TIMEOUT_S:.0f} s)")
        app = stack.enter_context(running(
            "app.py", [sys.executable, str(REPO_ROOT / "app.py")], app_environment(data_dir, port, model, threads,
                                                                                  extra),
            f"http://127.0.0.1:{port}", "/", scratch / "app.log"))
        log("warm-up chat (untimed: loads the model)")
        warm_s = warm_up(app.url + "/", model)
        count = tokenizer_counter(gguf)
        pids = [app.process.pid] + ([server_child.process.pid] if server_child is not None else [])
        bursts = []
        person = 0
        for i, people in enumerate(loads):
            bursts.append(run_burst(app.url + "/", people, model, count, probe=i == len(loads) - 1,
                                    server_log=server_log, first_person=person, pids=pids))
            person += people
            log(f"load N={people}: {len(bursts[-1].errors)} errors, {bursts[-1].tokens} tokens in "
                f"{bursts[-1].wall_s:.2f} s")
    setup = LOAD_SETUP.measured(app.ready_s, "; ".join([
        f"python app.py, PLAYGROUND_MODE=workshop, offline, a scratch data dir, 127.0.0.1:{port}; other "
        f"PLAYGROUND_* variables of this shell passed on",
        *setup_notes,
        f"warm-up chat {warm_s:.1f} s (untimed)",
        f"each person: gradio_client.Client, /identity, then /quantized_chat with {model}, {NEW_TOKENS} new tokens, "
        f"greedy, seed {SEED}, a different question each; gradio_client's default timeouts (telemetry off: "
        f"offline); the bench counts a person still waiting after {BURST_TIMEOUT_S:.0f} s as an error",
    ]))
    return load_figures(bursts, setup, engines)
