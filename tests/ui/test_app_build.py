"""Building the app reads no model file: start-up stays fast, and the first page load does the reading."""

from __future__ import annotations

from playground.services import Services
from tests.helpers import SMOLLM2, fake_hardware, offline_settings


def test_building_the_app_reads_no_gguf_file(tmp_path, monkeypatch, catalog):
    import gguf

    from playground.ui.app import build_app

    reads = []
    real_reader = gguf.GGUFReader

    def counting_reader(*args, **kwargs):  # callers may catch a failure, so count instead of failing
        reads.append(args[0] if args else kwargs.get("path"))
        return real_reader(*args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", counting_reader)
    services = Services.create(offline_settings(tmp_path), fake_hardware(), catalog)
    try:
        build_app(services)
        assert reads == []
        services.engines.gguf_facts(SMOLLM2)  # the counter does see a read
        assert len(reads) == 1
    finally:
        services.close()
