"""Generation slots: at most N generations run at once in the app, first come, first served.

A slot is held only while a model generates. Everything before (rendering a
person's template, choosing demonstrations, loading a model) happens outside
it, so a slow template or a model load never keeps anyone else's answer
waiting. Requests that do not generate never touch the slots. An evaluation
takes a slot per example, so other people's chats get their turn between its
examples.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import deque
from typing import Callable, ContextManager, Iterator

# hold(cancel) -> a context manager giving True once the slot is held, or False when cancel was set while waiting.
SlotHolder = Callable[[threading.Event | None], ContextManager[bool]]
POLL_S = 0.2  # how often a waiting request looks at its cancel flag


class GenerationSlots:
    """A fair counting semaphore for generations, with the queue visible (``waiting``)."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("at least one generation slot is needed")
        self.slots = slots
        self._cond = threading.Condition()
        self._busy = 0
        self._line: deque[int] = deque()
        self._tickets = itertools.count()

    @property
    def busy(self) -> int:
        with self._cond:
            return self._busy

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._line)

    @contextlib.contextmanager
    def hold(self, cancel: threading.Event | None = None) -> Iterator[bool]:
        """Wait for a slot in arrival order and hold it for the ``with`` block.

        Gives True once held; gives False (holding nothing) when ``cancel`` is set while waiting, so the
        block can end without generating.
        """
        ticket = next(self._tickets)
        held = False
        with self._cond:
            self._line.append(ticket)
            while not (cancel is not None and cancel.is_set()):
                if self._line[0] == ticket and self._busy < self.slots:
                    held = True
                    self._busy += 1
                    break
                self._cond.wait(POLL_S)
            self._line.remove(ticket)
            self._cond.notify_all()
        if not held:
            yield False
            return
        try:
            yield True
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()


def no_slot(cancel: threading.Event | None = None) -> ContextManager[bool]:
    """The slot holder for callers that share nothing (the CLI, tests): always admitted at once."""
    return contextlib.nullcontext(True)


def slot_for(slot: SlotHolder, generation) -> SlotHolder:
    """The slot ``generation`` must hold: none when it joined an engine's shared decode loop (the loop admits
    and queues its requests itself, many at a time), else ``slot``."""
    return no_slot if getattr(generation, "batched", False) else slot
