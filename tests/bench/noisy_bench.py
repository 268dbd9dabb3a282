"""``python -m tests.bench.noisy_bench [bench options]``: the bench's command line with its suites stubbed and
chattering like the real libraries (see :mod:`tests.bench.stubs`), for the output hygiene test."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.bench.stubs import stubbed_suites, write_model_config


def main(argv: list[str]) -> int:
    folder = write_model_config(Path(tempfile.mkdtemp(prefix="noisy-bench-model-")))
    for module, name, stand_in in stubbed_suites(folder, noisy=True):
        setattr(module, name, stand_in)
    from playground.__main__ import main as playground_main

    return playground_main(["bench", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
