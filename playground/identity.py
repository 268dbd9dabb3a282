"""Who is asking, as the server vouches for it: signed identity tokens and per-person, per-address rate limits.

A room of attendees shares one app, so whatever hangs on a person (their
fine-tuning runs, the one-run rule, rate limits) must hang on something a
script cannot make up. The server issues each browser an identity token on
its first visit, ``pg1.<id>.<issued>.<signature>``, signed with HMAC-SHA256
under a key only the server holds (``Settings.secret``, or a random key made
once and kept in the data dir); the browser keeps it in its local storage and
sends it with every call, and the server checks the signature and age each
time. A forged, altered or expired token is refused; a copied token is the
same person (it gets no more than they do).

New identities are rate-limited per network address, and in workshop mode so
are generations and run starts, per person and per address (an address may
carry a whole room behind one router, so its limits are a multiple of a
person's). :class:`Identities` is the one place the tabs ask; nothing here
imports gradio.

A person takes their identity to another browser with a short personal code
(:meth:`Identities.carry_code`, :meth:`Identities.use_carry_code`; the codes,
their entropy and their guessing limits are in :mod:`playground.identity_codes`):
the other browser gets a fresh token for the same owner id, never one for an
owner who did not ask.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from playground.config import Settings
from playground.errors import PlaygroundError
from playground.identity_codes import CODES_FILE, CarryCode, CarryCodes

TOKEN_VERSION = "pg1"
TOKEN_LIFETIME_S = 30 * 24 * 3600  # a browser keeps its identity for a month of workshops
KEY_FILE = "identity.key"
MAX_TOKEN_CHARS = 200
_TOKEN = re.compile(rf"^{TOKEN_VERSION}\.([0-9a-f]{{32}})\.([0-9]{{1,12}})\.([0-9a-f]{{64}})$")
# One network address may carry a whole room (one router, one public address): its limits are this many people's.
ADDRESS_SHARE = 20
WORKSHOP_IDENTITIES_PER_HOUR = 300  # per address
WORKSHOP_GENERATIONS_PER_MINUTE = 20  # per person
WORKSHOP_RUNS_PER_HOUR = 6  # per person
WORKSHOP_ACTIVE_RUNS_PER_ADDRESS = 8  # queued or running at once, per address
GET_TOKEN_HINT = ("Reload the page to get a new one; a script calls the /identity endpoint first and sends the "
                  "token it returns as the identity argument of every call.")


class IdentityError(PlaygroundError):
    """A token the server did not issue, or one that expired."""


class RateLimitError(PlaygroundError):
    """Too many requests of one kind from one person or one address."""


@dataclass(frozen=True)
class Identity:
    """A person as the server knows them: a random id (the owner of their runs) and when it was issued."""

    id: str
    issued_at: float


ANONYMOUS = Identity("", 0.0)  # no token yet: may generate outside workshop mode, owns no runs


def load_or_create_key(data_dir: Path) -> bytes:
    """The signing key kept in ``data_dir`` (made once, readable by the app's user only)."""
    path = Path(data_dir) / KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{KEY_FILE}.{os.getpid()}-{threading.get_ident()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
    finally:
        os.close(fd)
    try:
        os.link(partial, path)  # first writer wins when two processes start at once
    except FileExistsError:
        pass
    finally:
        partial.unlink(missing_ok=True)
    return path.read_bytes()


class IdentityIssuer:
    """Makes and checks identity tokens with one secret key."""

    def __init__(self, key: bytes, lifetime_s: float = TOKEN_LIFETIME_S,
                 clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("the signing key must have at least 16 bytes")
        self._key = key
        self.lifetime_s = lifetime_s
        self.clock = clock

    def _signature(self, person: str, issued: int) -> str:
        return hmac.new(self._key, f"{TOKEN_VERSION}.{person}.{issued}".encode(), hashlib.sha256).hexdigest()

    def derived_secret(self, purpose: str) -> str:
        """A value made from the key for another use (it reveals nothing about the key itself)."""
        return hmac.new(self._key, f"{TOKEN_VERSION}-{purpose}".encode(), hashlib.sha256).hexdigest()[:32]

    def issue(self) -> str:
        return self.issue_for(secrets.token_hex(16))

    def issue_for(self, person: str) -> str:
        """A fresh token for an existing person (their id as the server knows it, never one a client sent)."""
        if not re.fullmatch(r"[0-9a-f]{32}", person or ""):
            raise ValueError("a person's id is 32 hexadecimal digits")
        issued = int(self.clock())
        return f"{TOKEN_VERSION}.{person}.{issued}.{self._signature(person, issued)}"

    def verify(self, token: str) -> Identity:
        """The identity a token stands for; IdentityError for anything the server did not issue or that expired."""
        if not isinstance(token, str) or not token.strip():
            raise IdentityError(f"This request carries no identity token. {GET_TOKEN_HINT}")
        token = token.strip()
        match = _TOKEN.match(token) if len(token) <= MAX_TOKEN_CHARS else None
        if match is None:
            raise IdentityError(f"The identity token is not one this server issues. {GET_TOKEN_HINT}")
        person, issued, signature = match.group(1), int(match.group(2)), match.group(3)
        if not hmac.compare_digest(signature, self._signature(person, issued)):
            raise IdentityError(f"The identity token's signature does not match (it was changed, or made by "
                                f"another server). {GET_TOKEN_HINT}")
        now = self.clock()
        if issued > now + 300:
            raise IdentityError(f"The identity token is dated in the future. {GET_TOKEN_HINT}")
        if now - issued > self.lifetime_s:
            raise IdentityError(f"The identity token expired. {GET_TOKEN_HINT}")
        return Identity(person, float(issued))


class RateLimiter:
    """Sliding-window request counts per (kind, key), thread-safe, remembering at most ``max_keys`` keys."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 50_000) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._hits: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def hit(self, kind: str, key: str, limit: int, window_s: float, what: str) -> None:
        """Count one request; RateLimitError (saying when to retry) once ``limit`` were made within ``window_s``.

        ``limit`` 0 means no limit. A refused request does not count.
        """
        if limit <= 0:
            return
        now = self.clock()
        with self._lock:
            hits = self._hits.pop((kind, key), None) or deque()
            while hits and now - hits[0] >= window_s:
                hits.popleft()
            if len(hits) >= limit:
                self._hits[(kind, key)] = hits
                wait = max(1, math.ceil(window_s - (now - hits[0])))
                raise RateLimitError(f"Too many {what}: at most {limit} per {_window(window_s)}. Try again in "
                                     f"{wait} s.").keyed(f"error.rate_limit.{kind}.{_window(window_s)}",
                                                         limit=limit, wait=wait)
            hits.append(now)
            self._store(kind, key, hits)

    def retry_after(self, kind: str, key: str, limit: int, window_s: float) -> int:
        """Seconds until one more request of ``kind`` from ``key`` fits ``limit`` (0: now); counts nothing."""
        if limit <= 0:
            return 0
        now = self.clock()
        with self._lock:
            hits = self._hits.get((kind, key)) or ()
            recent = [hit for hit in hits if now - hit < window_s]
            if len(recent) < limit:
                return 0
            return max(1, math.ceil(window_s - (now - recent[-limit])))

    def record(self, kind: str, key: str, window_s: float) -> None:
        """Count one request without refusing it (a failure that :meth:`retry_after` bounds)."""
        now = self.clock()
        with self._lock:
            hits = self._hits.pop((kind, key), None) or deque()
            while hits and now - hits[0] >= window_s:
                hits.popleft()
            hits.append(now)
            self._store(kind, key, hits)

    def _store(self, kind: str, key: str, hits: deque[float]) -> None:
        self._hits[(kind, key)] = hits  # most recently used last
        while len(self._hits) > self.max_keys:
            self._hits.popitem(last=False)


def _window(seconds: float) -> str:
    return {60: "minute", 3600: "hour"}.get(int(seconds), f"{seconds:g} s")


@dataclass(frozen=True)
class RoomLimits:
    """The rate limits of one app; 0 means no limit."""

    identities_per_hour: int = 0  # new identities per address
    generations_per_minute: int = 0  # per person (an address: ADDRESS_SHARE times as many)
    runs_per_hour: int = 0  # fine-tuning run starts per person (an address: ADDRESS_SHARE times as many)
    active_runs_per_address: int = 0  # queued or running runs started from one address
    require_identity: bool = False  # generating needs a token (workshop mode); runs always do

    @classmethod
    def from_settings(cls, settings: Settings) -> "RoomLimits":
        workshop = settings.mode == "workshop"

        def pick(value: int, workshop_default: int) -> int:
            return value if value > 0 else (workshop_default if workshop else 0)

        return cls(
            identities_per_hour=pick(settings.identities_per_hour, WORKSHOP_IDENTITIES_PER_HOUR),
            generations_per_minute=pick(settings.generations_per_minute, WORKSHOP_GENERATIONS_PER_MINUTE),
            runs_per_hour=pick(settings.runs_per_hour, WORKSHOP_RUNS_PER_HOUR),
            active_runs_per_address=pick(settings.active_runs_per_address, WORKSHOP_ACTIVE_RUNS_PER_ADDRESS),
            require_identity=workshop,
        )


class Identities:
    """Issues and checks identities and applies the room's rate limits: the one place the tabs ask."""

    def __init__(self, issuer: IdentityIssuer, limits: RoomLimits, limiter: RateLimiter | None = None,
                 codes_path: Path | None = None) -> None:
        self.issuer = issuer
        self.limits = limits
        self.limiter = limiter or RateLimiter()
        # Personal codes that carry an identity to another browser (playground.identity_codes); their guessing
        # limits apply in every mode.
        self.codes = CarryCodes(codes_path, issuer.derived_secret("carry-codes").encode(), self.limiter,
                                ADDRESS_SHARE)
        self._runs_lock = threading.Lock()
        self._runs_by_address: dict[str, list[str]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> "Identities":
        key = settings.secret.encode() if settings.secret else load_or_create_key(settings.data_dir)
        return cls(IdentityIssuer(key), RoomLimits.from_settings(settings),
                   codes_path=Path(settings.data_dir) / CODES_FILE)

    # -- tokens -------------------------------------------------------------------------
    def welcome(self, token: str, address: str) -> str:
        """The browser's token if it is valid, else a new one (new identities are rate-limited per address)."""
        if token:
            try:
                self.issuer.verify(token)
                return token.strip()
            except IdentityError:
                pass
        self.limiter.hit("identity", address, self.limits.identities_per_hour, 3600, "new identities from your "
                         "network address")
        return self.issuer.issue()

    def person(self, token: str) -> Identity:
        """The identity behind ``token``; IdentityError if the server did not issue it."""
        return self.issuer.verify(token)

    def owner_of(self, token: str) -> str:
        """The owner id behind ``token`` for read-only listings, or "" (nobody: no runs) when it does not verify."""
        try:
            return self.issuer.verify(token).id
        except IdentityError:
            return ""

    # -- carrying an identity to another browser ----------------------------------------------
    def carry_code(self, token: str, address: str) -> CarryCode:
        """A short code for the person behind ``token`` that another browser can redeem (see use_carry_code)."""
        return self.codes.issue(self.person(token).id, address)

    def use_carry_code(self, code: str, token: str, address: str) -> str:
        """A new token for the owner of ``code`` (now used up), for the browser holding ``token``.

        The browser must hold a valid token of its own: wrong codes count against it and its address.
        """
        owner = self.codes.redeem(code, self.person(token).id, address)
        return self.issuer.issue_for(owner)

    def generating(self, token: str, address: str) -> Identity:
        """The identity of someone asking for a generation, after the generation rate limits.

        Outside workshop mode a request without a token generates anonymously; a token that is present
        must be valid in every mode.
        """
        if not (token or "").strip() and not self.limits.require_identity:
            identity = ANONYMOUS
        else:
            identity = self.person(token)
        per_person = self.limits.generations_per_minute
        self.limiter.hit("generation-address", address, per_person * ADDRESS_SHARE, 60,
                         "generations from your network address")
        if identity.id:
            self.limiter.hit("generation", identity.id, per_person, 60, "generations")
        return identity

    def starting_run(self, token: str, address: str, is_active: Callable[[str], bool]) -> "RunAdmission":
        """The identity of someone starting a fine-tuning run, after the run limits; use it as a context manager.

        ``is_active(run_id)`` says whether a run is still queued or running. Inside the ``with`` block the
        caller submits the run and hands its id to :meth:`RunAdmission.started`, so two starts from one
        address at the same moment cannot both pass the per-address rule.
        """
        return RunAdmission(self, self.person(token), address, is_active)

    def _admit_run(self, identity: Identity, address: str, is_active: Callable[[str], bool]) -> None:
        cap = self.limits.active_runs_per_address
        if cap:
            active = [run for run in self._runs_by_address.get(address, []) if is_active(run)]
            self._runs_by_address[address] = active
            if len(active) >= cap:
                raise RateLimitError(f"{len(active)} runs started from your network address are queued or running; "
                                     f"at most {cap} may be at once. Wait for one to finish."
                                     ).keyed("error.active_runs_per_address", active=len(active), limit=cap)
        per_person = self.limits.runs_per_hour
        self.limiter.hit("run-address", address, per_person * ADDRESS_SHARE, 3600,
                         "fine-tuning runs started from your network address")
        self.limiter.hit("run", identity.id, per_person, 3600, "fine-tuning runs started")

    def _record_run(self, address: str, run_id: str) -> None:
        self._runs_by_address.setdefault(address, []).append(run_id)


class RunAdmission:
    """The run limits held while one run is submitted (see :meth:`Identities.starting_run`)."""

    def __init__(self, identities: Identities, identity: Identity, address: str,
                 is_active: Callable[[str], bool]) -> None:
        self._identities = identities
        self.identity = identity
        self._address = address
        self._is_active = is_active

    def __enter__(self) -> "RunAdmission":
        self._identities._runs_lock.acquire()
        try:
            self._identities._admit_run(self.identity, self._address, self._is_active)
        except BaseException:
            self._identities._runs_lock.release()
            raise
        return self

    def started(self, run_id: str) -> None:
        self._identities._record_run(self._address, run_id)

    def __exit__(self, *exc_info) -> None:
        self._identities._runs_lock.release()


def client_address(peer: str | None, forwarded_for: str | None, trust_proxy: bool) -> str:
    """The address a request came from: the TCP peer, or behind a trusted proxy the address it saw.

    Behind one trusted proxy (Hugging Face Spaces) the last X-Forwarded-For entry is the one the proxy
    added; earlier entries are whatever the client wrote and are ignored.
    """
    if trust_proxy and forwarded_for:
        last = forwarded_for.split(",")[-1].strip()
        if last and len(last) <= 64:
            return last
    return (peer or "unknown")[:64]
