"""Keeping the bench's stdout to its own table or JSON while libraries chatter.

The suites run torch, transformers, datasets, peft and llama.cpp, which print progress bars, warnings
and, from C, lines straight onto file descriptor 1 (where ``contextlib.redirect_stdout`` does not
reach); the start-up suite's child process inherits that descriptor too. While the suites run,
:func:`suites_write_to_the_log` points descriptor 1 and ``sys.stdout`` at stderr, which is the bench's
log (its ``[bench]`` lines and any library warning), and turns the libraries' progress bars off, so
``--json`` prints one JSON object and nothing else, and the table has no bar or warning inside it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

# Read when these libraries are imported (tqdm's TQDM_* defaults, huggingface_hub's switch, datasets' own).
PROGRESS_BARS_OFF = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                     "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _imported_progress_bars_off() -> Iterator[None]:
    """Progress bars off in the libraries this process has already imported (the others read the environment),
    and back on afterwards where they were on."""
    restore = []
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import utils as hub

        if not hub.are_progress_bars_disabled():
            hub.disable_progress_bars()
            restore.append(hub.enable_progress_bars)
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        if transformers_logging.is_progress_bar_enabled():
            transformers_logging.disable_progress_bar()
            restore.append(transformers_logging.enable_progress_bar)
    if "datasets" in sys.modules:
        import datasets

        if datasets.is_progress_bar_enabled():
            datasets.disable_progress_bars()
            restore.append(datasets.enable_progress_bars)
    try:
        yield
    finally:
        for enable in restore:
            enable()


def _flush_c_stdio() -> None:
    """Empty the C library's stdout buffer (what a C library printf-ed and has not written yet) into the log."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to ask (not a POSIX system)
        pass


@contextlib.contextmanager
def _descriptor_1_to_stderr() -> Iterator[None]:
    """File descriptor 1 is a copy of 2 inside the block (C libraries, child processes), then the real stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout descriptor at all: nothing can leak into it
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()  # what a library wrote through an old handle on stdout still goes to the log
        _flush_c_stdio()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def suites_write_to_the_log() -> Iterator[None]:
    """Inside the block everything written to stdout goes to stderr (the bench's log) and progress bars are off;
    after it, stdout is free for the table or the JSON."""
    with _environment(PROGRESS_BARS_OFF), _imported_progress_bars_off(), _descriptor_1_to_stderr(), \
            contextlib.redirect_stdout(sys.stderr):
        yield
