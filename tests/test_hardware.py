"""Hardware detection on this machine."""

from __future__ import annotations

from playground.hardware import detect, physical_cores
from tests.helpers import fake_hardware


def test_detect_reports_sane_facts(hardware):
    assert 1 <= hardware.cpu_threads <= hardware.logical_cpus
    assert hardware.cpu_threads <= physical_cores()
    assert hardware.total_ram_gb > 0
    assert 0 <= hardware.free_ram_gb <= hardware.total_ram_gb
    if not hardware.cuda:
        assert hardware.cuda_name == "" and hardware.bf16 is False
    assert ("CUDA" in hardware.summary) if hardware.cuda else ("no CUDA" in hardware.summary)


def test_threads_setting_wins():
    assert detect(threads_setting=3).cpu_threads == 3


def test_summary_of_a_gpu_machine():
    summary = fake_hardware(cuda=True).summary
    assert "Fake GPU" in summary and "bf16=yes" in summary
