"""Identity tokens the server signs and checks, and the rate limits that hang on them (no gradio, no models)."""

from __future__ import annotations

import itertools
import os
import stat
import threading

import pytest

from playground.config import Settings
from playground.identity import (
    ADDRESS_SHARE,
    KEY_FILE,
    Identities,
    IdentityError,
    IdentityIssuer,
    RateLimiter,
    RateLimitError,
    RoomLimits,
    client_address,
    load_or_create_key,
)

from tests.helpers import Clock

KEY = b"k" * 32


# ---------------------------------------------------------------- tokens


def test_an_issued_token_verifies_and_names_a_new_person_each_time():
    issuer = IdentityIssuer(KEY)
    first, second = issuer.issue(), issuer.issue()
    assert first != second
    assert issuer.verify(first).id != issuer.verify(second).id
    assert issuer.verify(first) == issuer.verify(" " + first + "\n")  # copied with blank space: the same person
    assert len(issuer.verify(first).id) == 32


def _tampered(token: str) -> dict[str, str]:
    version, person, issued, signature = token.split(".")
    flip = lambda text: text[:-1] + ("0" if text[-1] != "0" else "1")  # noqa: E731
    return {
        "changed id": f"{version}.{flip(person)}.{issued}.{signature}",
        "changed date": f"{version}.{person}.{int(issued) - 1}.{signature}",
        "changed signature": f"{version}.{person}.{issued}.{flip(signature)}",
        "other key": IdentityIssuer(b"another key of 32 bytes........").issue(),
        "other version": f"pg2.{person}.{issued}.{signature}",
        "upper case": token.upper(),
        "extra part": token + ".00",
        "no signature": f"{version}.{person}.{issued}",
        "padded id": f"{version}.{person}0.{issued}.{signature}",
    }


@pytest.mark.parametrize("case", ["changed id", "changed date", "changed signature", "other key", "other version",
                                  "upper case", "extra part", "no signature", "padded id"])
def test_a_forged_or_altered_token_is_refused(case):
    issuer = IdentityIssuer(KEY)
    forged = _tampered(issuer.issue())[case]
    with pytest.raises(IdentityError) as info:
        issuer.verify(forged)
    message = str(info.value)
    assert "not one this server issues" in message or "signature does not match" in message
    assert "/identity" in message  # says how to get a good one


@pytest.mark.parametrize("token", ["", "   ", None, 123, "owner-key-from-a-script", "x" * 10_000,
                                   "pg1." + "a" * 32 + ".1." + "b" * 64 + "\x00"])
def test_no_token_or_garbage_is_refused_with_a_clear_message(token):
    with pytest.raises(IdentityError, match="identity token|carries no identity"):
        IdentityIssuer(KEY).verify(token)


def test_tokens_expire_and_cannot_be_dated_in_the_future():
    clock = Clock()
    issuer = IdentityIssuer(KEY, lifetime_s=3600, clock=clock)
    token = issuer.issue()
    clock.now += 3599
    assert issuer.verify(token)
    clock.now += 2
    with pytest.raises(IdentityError, match="expired"):
        issuer.verify(token)
    future = IdentityIssuer(KEY, clock=Clock(clock.now + 10_000)).issue()
    with pytest.raises(IdentityError, match="future"):
        issuer.verify(future)


def test_the_signing_key_is_made_once_and_readable_by_the_app_only(tmp_path):
    key = load_or_create_key(tmp_path)
    assert len(key) == 32 and load_or_create_key(tmp_path) == key
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600
    # Two app processes starting at once agree on one key.
    other = tmp_path / "other"
    keys = []
    threads = [threading.Thread(target=lambda: keys.append(load_or_create_key(other))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1


def test_a_token_survives_a_restart_and_the_secret_setting_replaces_the_key_file(tmp_path):
    settings = Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path)})
    token = Identities.from_settings(settings).issuer.issue()
    assert Identities.from_settings(settings).person(token)  # the same key file after a restart
    with_secret = Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path), "PLAYGROUND_SECRET": "s" * 40})
    with pytest.raises(IdentityError):
        Identities.from_settings(with_secret).person(token)
    # The key never travels to a training worker and is not printed.
    assert "PLAYGROUND_SECRET" not in with_secret.as_environment()
    assert ("secret", "(set)") in with_secret.describe()


# ---------------------------------------------------------------- the rate limiter


def test_the_rate_limiter_counts_a_sliding_window_and_says_when_to_retry():
    clock = Clock(0.0)
    limiter = RateLimiter(clock=clock)
    for _ in range(3):
        limiter.hit("generation", "alice", 3, 60, "generations")
    with pytest.raises(RateLimitError, match=r"at most 3 per minute\. Try again in 60 s"):
        limiter.hit("generation", "alice", 3, 60, "generations")
    limiter.hit("generation", "bob", 3, 60, "generations")  # another key has its own count
    limiter.hit("run", "alice", 3, 60, "runs")  # and another kind
    clock.now = 30
    with pytest.raises(RateLimitError, match="Try again in 30 s"):  # refusals do not count
        limiter.hit("generation", "alice", 3, 60, "generations")
    clock.now = 60
    limiter.hit("generation", "alice", 3, 60, "generations")
    limiter.hit("generation", "alice", 0, 60, "generations")  # 0: no limit


def test_the_rate_limiter_remembers_a_bounded_number_of_keys():
    limiter = RateLimiter(clock=Clock(0.0), max_keys=100)
    for i in range(10_000):
        limiter.hit("identity", f"10.0.{i // 256}.{i % 256}", 5, 3600, "identities")
    assert len(limiter._hits) == 100


# ---------------------------------------------------------------- the room's limits


def test_workshop_mode_has_limits_and_local_mode_none_unless_set(tmp_path):
    local = RoomLimits.from_settings(Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path)}))
    assert local == RoomLimits()
    workshop = RoomLimits.from_settings(Settings.load([], {"PLAYGROUND_MODE": "workshop"}))
    assert workshop.require_identity and workshop.generations_per_minute > 0 and workshop.runs_per_hour > 0
    assert workshop.identities_per_hour > 0 and workshop.active_runs_per_address > 0
    chosen = RoomLimits.from_settings(Settings.load([], {"PLAYGROUND_GENERATIONS_PER_MINUTE": "3"}))
    assert chosen.generations_per_minute == 3 and chosen.runs_per_hour == 0


def _room(**limits) -> Identities:
    return Identities(IdentityIssuer(KEY), RoomLimits(**limits), RateLimiter(clock=Clock(0.0)))


def test_welcome_keeps_a_valid_token_and_rate_limits_new_ones_per_address():
    room = _room(identities_per_hour=3)
    token = room.welcome("", "10.0.0.1")
    assert room.welcome(token, "10.0.0.1") == token  # a reload keeps the identity, and costs nothing
    assert room.welcome(token, "10.0.0.1") == token
    room.welcome("forged", "10.0.0.1")  # a bad token gets a new identity...
    room.welcome("", "10.0.0.1")
    with pytest.raises(RateLimitError, match="new identities from your network address"):
        room.welcome("", "10.0.0.1")  # ...but one address gets only so many
    assert room.welcome("", "10.0.0.2")  # other addresses are not affected


def test_generating_needs_a_valid_token_in_workshop_mode_only():
    local, workshop = _room(), _room(require_identity=True)
    assert local.generating("", "a").id == ""  # anonymous
    with pytest.raises(IdentityError, match="carries no identity token"):
        workshop.generating("", "a")
    for room in (local, workshop):  # a token that is there must be good in every mode
        with pytest.raises(IdentityError):
            room.generating("made-up", "a")
        assert room.generating(room.issuer.issue(), "a").id


def test_a_replayed_token_is_the_same_person_with_the_same_allowance():
    room = _room(generations_per_minute=2)
    token = room.issuer.issue()
    room.generating(token, "10.0.0.1")
    room.generating(token, "10.0.0.2")  # the same token from elsewhere
    with pytest.raises(RateLimitError, match="Too many generations"):
        room.generating(token, "10.0.0.3")
    room.generating(room.issuer.issue(), "10.0.0.3")  # another person is not affected


def test_fresh_identities_from_one_address_share_the_address_limit():
    room = _room(generations_per_minute=2)
    for _ in range(2 * ADDRESS_SHARE):
        room.generating(room.issuer.issue(), "10.0.0.9")
    with pytest.raises(RateLimitError, match="generations from your network address"):
        room.generating(room.issuer.issue(), "10.0.0.9")


def test_run_starts_are_limited_per_person_and_active_runs_per_address():
    room = _room(runs_per_hour=2, active_runs_per_address=3)
    active: set[str] = set()
    counter = itertools.count()

    def start(token: str, address: str) -> str:
        with room.starting_run(token, address, is_active=lambda run: run in active) as admission:
            run_id = f"run-{next(counter)}"
            active.add(run_id)
            admission.started(run_id)
            return run_id

    alice = room.issuer.issue()
    start(alice, "10.0.0.1")
    start(alice, "10.0.0.1")
    with pytest.raises(RateLimitError, match="Too many fine-tuning runs started"):
        start(alice, "10.0.0.1")
    start(room.issuer.issue(), "10.0.0.1")
    with pytest.raises(RateLimitError, match="3 runs started from your network address are queued or running"):
        start(room.issuer.issue(), "10.0.0.1")
    finished = next(iter(active))
    active.discard(finished)  # one finishes: room for another
    start(room.issuer.issue(), "10.0.0.1")
    with pytest.raises(IdentityError):
        start("forged", "10.0.0.2")


def test_two_starts_from_one_address_at_once_cannot_both_pass_the_address_rule():
    room = _room(active_runs_per_address=1)
    active: set[str] = set()
    started, refused = [], []
    barrier = threading.Barrier(8)

    def start(index: int) -> None:
        token = room.issuer.issue()
        barrier.wait()
        try:
            with room.starting_run(token, "10.0.0.1", is_active=lambda run: run in active) as admission:
                active.add(f"run-{index}")
                admission.started(f"run-{index}")
                started.append(index)
        except RateLimitError:
            refused.append(index)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(started) == 1 and len(refused) == 7


@pytest.mark.parametrize("peer, forwarded, trust, expected", [
    ("10.1.1.1", None, False, "10.1.1.1"),
    ("10.1.1.1", "1.2.3.4", False, "10.1.1.1"),  # a header a client can write is ignored unless a proxy is trusted
    ("10.1.1.1", "1.2.3.4", True, "1.2.3.4"),
    ("10.1.1.1", "6.6.6.6, 1.2.3.4", True, "1.2.3.4"),  # the client's own entries come first: the proxy's is last
    ("10.1.1.1", " , ", True, "10.1.1.1"),
    ("10.1.1.1", "x" * 500, True, "10.1.1.1"),
    (None, None, False, "unknown"),
])
def test_the_client_address_comes_from_the_peer_or_a_trusted_proxy(peer, forwarded, trust, expected):
    assert client_address(peer, forwarded, trust) == expected


def test_listings_see_nobody_behind_a_token_that_does_not_verify():
    room = _room()
    token = room.issuer.issue()
    assert room.owner_of(token) == room.person(token).id
    for bad in ("", "forged", token[:-1] + ("0" if token[-1] != "0" else "1")):
        assert room.owner_of(bad) == ""
