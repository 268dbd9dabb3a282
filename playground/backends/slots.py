"""Generation slots: at most N generations run at once in the app, first come, first served.

A slot is held only while a model generates. Everything before (rendering a
person's template, choosing demonstrations, loading a model) happens outside
it, so a slow template or a model load never keeps anyone else's answer
waiting. Requests that do not generate never touch the slots. An evaluation
takes a slot per example, so other people's chats get their turn between its
examples.

A caller that wants to show the wait (a chat streaming "3 requests ahead of
you") takes a place in the line with :func:`line_for` and iterates its
:meth:`Place.positions`, yielding between them; ``hold`` is the same line
waited for in one go.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from typing import Callable, ContextManager, Iterator, Protocol

# hold(cancel) -> a context manager giving True once the slot is held, or False when cancel was set while waiting.
SlotHolder = Callable[[threading.Event | None], ContextManager[bool]]
POLL_S = 0.2  # how often a waiting request looks at its cancel flag
# A place at the head of the line whose owner has not looked at it for this long (its generator was dropped
# without being closed) is skipped, so one lost request cannot stop the line.
STALE_S = 30.0


class Place(Protocol):
    """One request's place in a slot's line (see :func:`line_for`)."""

    @property
    def held(self) -> bool:
        """True once the slot is held (at once for holders that share nothing)."""

    def positions(self) -> Iterator[int]:
        """While waiting: how many requests are ahead (the running ones and those before it in line), each time
        that changes; ends once the slot is held or the cancel flag is set (``held`` says which)."""


class GenerationSlots:
    """A fair counting semaphore for generations, with the queue visible (``waiting``).

    The slots are a :data:`SlotHolder` themselves (calling them is ``hold``) and also give a place in line
    to wait in step by step (``line``).
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("at least one generation slot is needed")
        self.slots = slots
        self._cond = threading.Condition()
        self._busy = 0
        self._line: deque[int] = deque()
        self._seen: dict[int, float] = {}  # ticket -> when its owner last looked (monotonic seconds)
        self._tickets = itertools.count()

    @property
    def busy(self) -> int:
        with self._cond:
            return self._busy

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._line)

    def __call__(self, cancel: threading.Event | None = None) -> ContextManager[bool]:
        return self.hold(cancel)

    @contextlib.contextmanager
    def hold(self, cancel: threading.Event | None = None) -> Iterator[bool]:
        """Wait for a slot in arrival order and hold it for the ``with`` block.

        Gives True once held; gives False (holding nothing) when ``cancel`` is set while waiting, so the
        block can end without generating.
        """
        with self.line(cancel) as place:
            for _ in place.positions():
                pass
            yield place.held

    @contextlib.contextmanager
    def line(self, cancel: threading.Event | None = None) -> Iterator["_SlotPlace"]:
        """A place at the end of the line for the ``with`` block (joining never waits); the slot, once
        :meth:`_SlotPlace.positions` has reached it, is given back when the block ends, and a place still
        waiting leaves the line then."""
        place = _SlotPlace(self, next(self._tickets), cancel)
        with self._cond:
            self._line.append(place.ticket)
            self._seen[place.ticket] = time.monotonic()
        try:
            yield place
        finally:
            with self._cond:
                if place.held:
                    self._busy -= 1
                else:
                    self._leave(place.ticket)
                self._cond.notify_all()

    # --- under self._cond ---------------------------------------------------------------------------
    def _leave(self, ticket: int) -> None:
        if ticket in self._line:
            self._line.remove(ticket)
        self._seen.pop(ticket, None)

    def _try_admit(self, ticket: int) -> bool:
        now = time.monotonic()
        self._seen[ticket] = now
        if ticket not in self._line:  # skipped as stale while its owner was away: back at the end
            self._line.append(ticket)
        while self._line[0] != ticket and now - self._seen.get(self._line[0], now) > STALE_S:
            self._leave(self._line[0])
        if self._line[0] == ticket and self._busy < self.slots:
            self._leave(ticket)
            self._busy += 1
            return True
        return False

    def _ahead(self, ticket: int) -> int:
        return self._busy + self._line.index(ticket)


class _SlotPlace:
    """A place in :class:`GenerationSlots`' line."""

    def __init__(self, slots: GenerationSlots, ticket: int, cancel: threading.Event | None) -> None:
        self._slots = slots
        self.ticket = ticket
        self._cancel = cancel
        self.held = False

    def positions(self) -> Iterator[int]:
        slots, shown = self._slots, None
        while not self.held:
            with slots._cond:
                if self._cancel is not None and self._cancel.is_set():
                    slots._leave(self.ticket)  # at once: a stopped request keeps nobody waiting
                    slots._cond.notify_all()
                    return
                if slots._try_admit(self.ticket):
                    self.held = True
                    slots._cond.notify_all()
                    return
                ahead = slots._ahead(self.ticket)
                if ahead == shown:
                    slots._cond.wait(POLL_S)
                    continue
            shown = ahead
            yield ahead


@contextlib.contextmanager
def _held_at_once(slot: SlotHolder, cancel: threading.Event | None) -> Iterator[Place]:
    with slot(cancel) as admitted:
        yield _Decided(admitted)


class _Decided:
    """The place of a holder that cannot show its line: decided when it was taken."""

    def __init__(self, held: bool) -> None:
        self.held = held

    def positions(self) -> Iterator[int]:
        return iter(())


def line_for(slot: SlotHolder, cancel: threading.Event | None = None) -> ContextManager[Place]:
    """A place in ``slot``'s line for the ``with`` block: a holder that shows its line (``GenerationSlots``,
    through its ``line`` method) is waited for step by step through :meth:`Place.positions`; any other holder
    (``no_slot``, a test's) is waited for when the block starts."""
    line = getattr(slot, "line", None)
    return line(cancel) if line is not None else _held_at_once(slot, cancel)


def no_slot(cancel: threading.Event | None = None) -> ContextManager[bool]:
    """The slot holder for callers that share nothing (the CLI, tests): always admitted at once."""
    return contextlib.nullcontext(True)


def slot_for(slot: SlotHolder, generation) -> SlotHolder:
    """The slot ``generation`` must hold: none when it joined an engine's shared decode loop (the loop admits
    and queues its requests itself, many at a time), else ``slot``."""
    return no_slot if getattr(generation, "batched", False) else slot


def requests_decoded_together(engine) -> int:
    """How many requests ``engine`` decodes at once in one batch (a llama.cpp engine's shared loop holds
    ``streams``); 1 for an engine that answers one request after the other."""
    return max(1, int(getattr(engine, "streams", 1) or 1))
