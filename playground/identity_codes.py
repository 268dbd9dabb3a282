"""Carry codes: a short personal code that moves a person's identity (and so their runs) to another browser.

A person's runs hang on the identity token their browser keeps (:mod:`playground.identity`). To use them on
another browser (the projector's laptop, a phone), the first browser asks the server for a code such as
``K7QM-3XRD-P9`` and the person types or pastes it into the other one, which then holds a token for the same
owner id.

Why this is safe in a room of strangers:

- **Unguessable.** A code is 10 symbols drawn with :mod:`secrets` from Crockford's base-32 alphabet (digits and
  capitals without I, L, O and U), 5 bits each: 50 bits, about 10^15 codes. At most ``max_codes`` (2,000) are
  alive at once, and failed attempts are bounded per person (5 per 15 minutes) and per network address (20
  people's share: 100 per 15 minutes), so one address trying for a whole day (9,600 attempts) hits a live code
  with a probability below 2 x 10^-8.
- **Short-lived and single-use.** A code expires after 15 minutes and is deleted when used; asking for a new one
  replaces (revokes) the person's previous code, so each person has at most one live code.
- **Never a forgery tool.** A code is made only for the verified token that asks for it and maps only to that
  token's owner id; redeeming needs a valid token of one's own (the guessing limits hang on it).
- **Stored with care.** The server keeps only a keyed hash of each live code (reading the data dir shows no
  usable code), in one small JSON file in the data dir, written atomically, at most ``max_codes`` entries.

Typing is forgiving: case does not matter, spaces and dashes are ignored, and O, I and L read as 0, 1 and 1 (the
symbols people confuse aloud). Nothing here imports gradio.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from playground.atomic import atomic_write_json
from playground.errors import PlaygroundError

CODES_FILE = "identity-codes.json"
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base 32: no I, L, O, U
CODE_LENGTH = 10  # 50 bits
GROUPS = (4, 4, 2)  # shown as K7QM-3XRD-P9
CODE_LIFETIME_S = 15 * 60
MAX_CODES = 2_000  # live codes kept at once (one per person): the file stays under ~300 kB
MAX_INPUT_CHARS = 64  # what a person may paste; longer is refused before any work
FAILURES_PER_PERSON = 5  # failed redemptions per person per FAILURE_WINDOW_S
FAILURE_WINDOW_S = 15 * 60
CODES_PER_PERSON_PER_HOUR = 20  # "Show my code" clicks
_READS_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})
_SEPARATORS = re.compile(r"[\s\-_.·]+")
ENTROPY_BITS = CODE_LENGTH * 5


class CodeError(PlaygroundError):
    """A code that cannot be used (``reason``: "empty", "invalid" or "full"); the text says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CodeGuessLimit(CodeError):
    """Too many wrong codes from one person or one address; ``retry_s`` says when to try again."""

    def __init__(self, retry_s: int) -> None:
        super().__init__("too_many", f"Too many wrong codes: at most {FAILURES_PER_PERSON} per "
                                     f"{FAILURE_WINDOW_S // 60} minutes. Try again in {retry_s} s.")
        self.retry_s = retry_s


INVALID = ("This code cannot be used: it is mistyped, expired (codes last {minutes} minutes) or already used. "
           "On the other browser, click Show my code for a new one.")


@dataclass(frozen=True)
class CarryCode:
    """A code as it is shown: ``code`` grouped with dashes, ``expires_at`` (seconds since the epoch)."""

    code: str
    expires_at: float
    lifetime_s: float

    def minutes_left(self, now: float) -> int:
        return max(0, int((self.expires_at - now + 59) // 60))


def new_code() -> str:
    """A fresh random code, grouped for reading aloud."""
    symbols = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    parts, start = [], 0
    for size in GROUPS:
        parts.append(symbols[start:start + size])
        start += size
    return "-".join(parts)


def normalize(text: str) -> str | None:
    """The code's symbols (upper case, no separators, O/I/L read as 0/1/1), or None if it cannot be a code."""
    if not isinstance(text, str) or len(text) > MAX_INPUT_CHARS:
        return None
    symbols = _SEPARATORS.sub("", text).upper().translate(_READS_AS)
    if len(symbols) != CODE_LENGTH or any(symbol not in ALPHABET for symbol in symbols):
        return None
    return symbols


class CarryCodes:
    """Live codes, each mapping to one owner id, kept (as keyed hashes) in ``path`` (None: in memory only).

    ``limiter`` is the app's :class:`~playground.identity.RateLimiter`: it bounds code requests and failed
    redemptions per person and per address (``address_share`` people's share).
    """

    def __init__(self, path: Path | None, secret: bytes, limiter, address_share: int,
                 clock: Callable[[], float] = time.time, lifetime_s: float = CODE_LIFETIME_S,
                 max_codes: int = MAX_CODES) -> None:
        self.path = Path(path) if path is not None else None
        self._secret = secret
        self.limiter = limiter
        self.address_share = address_share
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.max_codes = max_codes
        self._lock = threading.RLock()
        self._memory: dict[str, dict] = {}

    # -- storage ----------------------------------------------------------------------
    def _digest(self, symbols: str) -> str:
        return hmac.new(self._secret, symbols.encode(), hashlib.sha256).hexdigest()

    @contextlib.contextmanager
    def _codes(self) -> Iterator[dict[str, dict]]:
        """The live codes {digest: {"owner", "expires"}} for the block (expired ones dropped), saved after it."""
        with self._lock, self._file_lock():
            codes = self._read()
            now = self.clock()
            live = {digest: entry for digest, entry in codes.items() if entry["expires"] > now}
            yield live
            if live != codes:  # a code added, used, replaced or expired
                self._write(live)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Between processes of one deployment sharing the data dir (where the system has file locks)."""
        if self.path is None:
            yield
            return
        try:
            import fcntl
        except ImportError:  # Windows: one process per data dir
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self) -> dict[str, dict]:
        if self.path is None:
            return dict(self._memory)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            codes = data["codes"]
            return {str(digest): {"owner": str(entry["owner"]), "expires": float(entry["expires"])}
                    for digest, entry in list(codes.items())[: self.max_codes]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # no file yet, or a damaged one: no live codes (people ask for new ones)

    def _write(self, codes: dict[str, dict]) -> None:
        if self.path is None:
            self._memory = dict(codes)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {"version": 1, "codes": codes}, "the personal codes")

    # -- what the app asks -----------------------------------------------------------------
    def issue(self, owner: str, address: str) -> CarryCode:
        """A new code for ``owner`` (a verified identity's id), replacing the one they had."""
        if not owner:
            raise CodeError("invalid", "Only a person with an identity token has runs to carry.")
        self.limiter.hit("carry-code", owner, CODES_PER_PERSON_PER_HOUR, 3600, "personal codes")
        self.limiter.hit("carry-code-address", address, CODES_PER_PERSON_PER_HOUR * self.address_share, 3600,
                         "personal codes from your network address")
        with self._codes() as codes:
            for digest in [d for d, entry in codes.items() if entry["owner"] == owner]:
                del codes[digest]  # one live code per person: a new one revokes the last
            if len(codes) >= self.max_codes:
                raise CodeError("full", "Too many personal codes are waiting to be used right now. Try again in "
                                        "a few minutes.")
            code = new_code()
            expires = self.clock() + self.lifetime_s
            codes[self._digest(normalize(code))] = {"owner": owner, "expires": expires}
        return CarryCode(code, expires, self.lifetime_s)

    def revoke(self, owner: str) -> bool:
        """Forget ``owner``'s live code; whether there was one."""
        with self._codes() as codes:
            mine = [d for d, entry in codes.items() if entry["owner"] == owner]
            for digest in mine:
                del codes[digest]
        return bool(mine)

    def redeem(self, text: str, requester: str, address: str) -> str:
        """The owner id of a live code, which is used up; CodeError if it is wrong, expired or used.

        ``requester`` is the verified id of the person pasting it: failures count against them and their address
        (an empty entry counts nothing), and once either reaches its limit no code is even looked at.
        """
        if not isinstance(text, str) or not text.strip():
            raise CodeError("empty", "Paste the code shown on your other browser first.")
        failure_kinds = (("carry-failure", requester, FAILURES_PER_PERSON),
                         ("carry-failure-address", address, FAILURES_PER_PERSON * self.address_share))
        with self._lock:  # the checks, the look-up and the count of a failure happen as one
            for kind, key, limit in failure_kinds:
                retry = self.limiter.retry_after(kind, key, limit, FAILURE_WINDOW_S)
                if retry:
                    raise CodeGuessLimit(retry)
            symbols = normalize(text)
            entry = None
            if symbols is not None:
                with self._codes() as codes:
                    entry = codes.pop(self._digest(symbols), None)  # used up: single use
            if entry is None:
                for kind, key, _limit in failure_kinds:
                    self.limiter.record(kind, key, FAILURE_WINDOW_S)
                raise CodeError("invalid", INVALID.format(minutes=int(self.lifetime_s // 60)))
            return entry["owner"]

    def live_count(self) -> int:
        with self._codes() as codes:
            return len(codes)

