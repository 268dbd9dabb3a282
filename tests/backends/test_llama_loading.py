"""The llama.cpp model-parameter policy: no extra buffer types on a CPU that reports AMX."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from playground.backends.llama_loading import (
    AMX_VARIABLE,
    cpu_flags,
    extra_buffers_allowed,
    install_parameter_policy,
)

CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nbogomips\t: 4000\n"


@pytest.mark.parametrize("extra, amx", [("", False), ("amx_tile amx_int8 amx_bf16", True), ("amx_bf16", True),
                                        ("amxx", False)])
def test_the_flags_are_read_from_cpuinfo(extra, amx):
    flags = cpu_flags(CPUINFO.format(extra=extra))
    assert "avx2" in flags and ("amx_bf16" in flags or "amx_tile" in flags) == amx
    assert extra_buffers_allowed(flags, environ={}) is not amx


@pytest.mark.parametrize("value, allowed", [("1", True), ("yes", True), ("on", True), ("0", False), ("", False),
                                            ("no", False)])
def test_the_variable_turns_extra_buffers_back_on_for_amx(value, allowed):
    flags = cpu_flags(CPUINFO.format(extra="amx_tile amx_int8"))
    assert extra_buffers_allowed(flags, environ={AMX_VARIABLE: value}) is allowed
    assert extra_buffers_allowed(frozenset({"avx2"}), environ={AMX_VARIABLE: value})  # no AMX: always allowed


def test_no_cpuinfo_means_no_flags():
    assert cpu_flags("") == frozenset()


def fake_low_level():
    class Params:
        use_extra_bufts = True
        n_gpu_layers = 0

    return types.SimpleNamespace(llama_model_default_params=lambda: Params())


@pytest.mark.parametrize("allowed", [True, False])
def test_the_policy_sets_the_defaults_once(allowed):
    low = fake_low_level()
    assert install_parameter_policy(low, allowed=allowed) is allowed
    assert low.llama_model_default_params().use_extra_bufts is allowed
    wrapped = low.llama_model_default_params
    # A second install (another thread, another module) keeps the first wrapper and its answer.
    assert install_parameter_policy(low, allowed=not allowed) is allowed
    assert low.llama_model_default_params is wrapped
    assert low.llama_model_default_params().use_extra_bufts is allowed


def test_the_app_opens_llama_with_the_policy():
    """A real model opened through llama_class() decodes; on an AMX machine it does so without extra buffers
    (where it segfaulted before), in a child process so a crash fails this test instead of the whole run."""
    from tests.openai_server import smollm2_gguf

    code = ("from playground.backends.llama_loading import llama_class, extra_buffers_allowed\n"
            "import llama_cpp.llama_cpp as low\n"
            f"llm = llama_class()(model_path={str(smollm2_gguf())!r}, n_ctx=128, n_threads=1, verbose=False)\n"
            "assert low.llama_model_default_params().use_extra_bufts is extra_buffers_allowed()\n"
            "out = llm('The capital of France is', max_tokens=4, temperature=0)\n"
            "print('decoded', out['usage']['completion_tokens'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "decoded" in done.stdout
