"""Services and the registry of generations in flight; gradio stays out of the core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from playground.services import ActiveGenerations, Services
from tests.helpers import fake_hardware, offline_settings

ROOT = Path(__file__).resolve().parents[1]


class _FakeGeneration:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def test_cancel_reaches_only_the_sessions_own_generations():
    registry = ActiveGenerations()
    mine_chat, mine_compare, theirs = _FakeGeneration(), _FakeGeneration(), _FakeGeneration()
    registry.start("alice", "chat", mine_chat)
    registry.start("alice", "compare", mine_compare)
    registry.start("bob", "chat", theirs)
    assert registry.cancel("alice", "chat") == 1
    assert mine_chat.cancelled and not mine_compare.cancelled and not theirs.cancelled
    assert registry.cancel("alice") == 2
    assert mine_compare.cancelled and not theirs.cancelled
    assert registry.cancel("carol") == 0


def test_finish_removes_only_the_same_generation():
    registry = ActiveGenerations()
    old, new = _FakeGeneration(), _FakeGeneration()
    registry.start("alice", "chat", old)
    registry.start("alice", "chat", new)  # a newer request replaced the old one
    registry.finish("alice", "chat", old)  # the old one finishing must not forget the new one
    assert registry.cancel("alice", "chat") == 1 and new.cancelled
    registry.finish("alice", "chat", new)
    assert registry.cancel("alice", "chat") == 0


def test_services_create_and_close(tmp_path, catalog):
    services = Services.create(offline_settings(tmp_path), fake_hardware(), catalog)
    assert services.engines.catalog is catalog
    assert services.engines.cache.budget_bytes == int(services.settings.memory_budget_gb * 2**30)
    services.close()
    assert services.engines.cache.keys() == []


def test_core_packages_do_not_import_gradio():
    code = (
        "import sys\n"
        "import playground.config, playground.errors, playground.hardware, playground.services\n"
        "import playground.backends, playground.backends.base, playground.backends.chat, playground.backends.compare\n"
        "import playground.backends.provider, playground.backends.selection\n"
        "import playground.backends.llama_cpp_engine, playground.backends.transformers_engine\n"
        "import playground.models.catalog, playground.models.sources, playground.models.cache\n"
        "import playground.models.gguf_info\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'torch', 'llama_cpp'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # gradio never; torch and llama_cpp only lazily, when an engine loads.
    assert out.stdout.strip() == ""


def test_warm_up_loads_the_default_model_and_never_raises(tmp_path):
    from playground.config import Settings
    from playground.services import Services

    services = Services.create(Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path), "PLAYGROUND_OFFLINE": "1"}))
    try:
        assert services.warm_up() == "warm: smollm2-135m-instruct loaded on llama.cpp"
        assert services.engines.loaded("smollm2-135m-instruct", "llama.cpp") is not None
    finally:
        services.close()
    offline_hub = Services.create(Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path), "PLAYGROUND_OFFLINE": "1",
                                                     "PLAYGROUND_DEFAULT_MODEL": "gpt2"}))
    assert offline_hub.warm_up().startswith("warm-up skipped: No weights found for model 'gpt2'")


class _LoopEngine:
    """An engine whose shared decode loop reports its counters (what a batched llama.cpp engine provides)."""

    def __init__(self, decoding, waiting):
        self.numbers = {"decoding": decoding, "waiting": waiting}

    def loop_summary(self):
        return self.numbers


class _BrokenLoopEngine:
    def loop_summary(self):
        raise RuntimeError("the counters are broken")


def test_load_summary_counts_slots_and_decode_loops_without_naming_runs(tmp_path, catalog):
    import threading

    services = Services.create(offline_settings(tmp_path, PLAYGROUND_CONCURRENCY="1"), fake_hardware(), catalog)
    cache = services.engines.cache
    try:
        empty = services.load_summary()
        assert (empty.running, empty.waiting, empty.models, empty.runs_loaded) == (0, 0, (), 0)
        cache.get_or_load(("engine", "llama.cpp", "smollm2-135m-instruct"), lambda: (_LoopEngine(3, 5), 0))
        cache.get_or_load(("engine", "transformers", "gemma-3-270m"), lambda: (object(), 0))  # no loop
        cache.get_or_load(("engine", "llama.cpp", "qwen2.5-0.5b-instruct"), lambda: (_BrokenLoopEngine(), 0))
        cache.get_or_load(("engine", "transformers", "run:abc123"), lambda: (object(), 0))
        cache.get_or_load(("architecture", "bert-tiny"), lambda: (object(), 0))  # not a generation engine
        cancel = threading.Event()
        with services.generation_slots.hold():  # one generation holds the slot, one waits for it
            waiter = threading.Thread(target=_wait_for_a_slot, args=(services, cancel))
            waiter.start()
            while services.generation_slots.waiting < 1:
                threading.Event().wait(0.005)
            summary = services.load_summary()
            cancel.set()
            waiter.join(5)
        assert (summary.slots, summary.slots_busy, summary.slots_waiting) == (1, 1, 1)
        assert (summary.decoding, summary.decode_waiting) == (3, 5)
        assert (summary.running, summary.waiting) == (4, 6)
        assert {m["id"] for m in summary.models} == {"smollm2-135m-instruct", "gemma-3-270m",
                                                     "qwen2.5-0.5b-instruct"}
        assert summary.runs_loaded == 1 and "abc123" not in str(summary.as_dict())
        body = summary.as_dict()
        assert body["generations"] == {"running": 4, "waiting": 6} and body["uptime_s"] >= 0
    finally:
        cache.clear()
        services.close()



def _wait_for_a_slot(services, cancel):
    with services.generation_slots.hold(cancel):
        pass
