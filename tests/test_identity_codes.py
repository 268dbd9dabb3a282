"""Personal codes that carry an identity (and its runs) to another browser: no gradio, no models."""

from __future__ import annotations

import json
import math
import threading

import pytest

from playground.config import Settings
from playground.identity import (
    ADDRESS_SHARE,
    Identities,
    IdentityError,
    IdentityIssuer,
    RateLimiter,
    RateLimitError,
    RoomLimits,
)
from playground.identity_codes import (
    ALPHABET,
    CODES_FILE,
    CODES_PER_PERSON_PER_HOUR,
    ENTROPY_BITS,
    FAILURE_WINDOW_S,
    FAILURES_PER_PERSON,
    CarryCodes,
    CodeError,
    CodeGuessLimit,
    new_code,
    normalize,
)

from tests.helpers import Clock

KEY = b"k" * 32


def _room(tmp_path, clock: Clock | None = None) -> Identities:
    clock = clock or Clock()
    room = Identities(IdentityIssuer(KEY, clock=clock), RoomLimits(), RateLimiter(clock=clock),
                      codes_path=tmp_path / CODES_FILE)
    room.codes.clock = clock
    return room


def test_a_code_is_short_readable_and_has_50_bits():
    code = new_code()
    assert len(code) == 12 and code[4] == code[9] == "-"
    assert all(symbol in ALPHABET for symbol in code.replace("-", ""))
    assert len(set(ALPHABET)) == 32 and not set("ILOU") & set(ALPHABET)
    assert ENTROPY_BITS == 50 == int(math.log2(len(ALPHABET)) * 10)
    assert len({new_code() for _ in range(2000)}) == 2000


def test_typing_is_forgiving_about_case_spaces_dashes_and_look_alike_letters():
    assert normalize("k7qm-3xrd-p9") == normalize(" K7QM 3XRD P9 ") == normalize("K7QM3XRDP9") == "K7QM3XRDP9"
    assert normalize("o1il-0000-00") == "0111000000"
    for bad in ["", "K7QM-3XRD", "K7QM-3XRD-P9X", "K7QM-3XRD-PU", "K7QM-3XRD-P!", "x" * 10_000, None, 12]:
        assert normalize(bad) is None


def test_another_browser_redeems_a_code_and_holds_the_same_person(tmp_path):
    room = _room(tmp_path)
    first, second = room.issuer.issue(), room.issuer.issue()
    carry = room.carry_code(first, "10.0.0.1")
    token = room.use_carry_code(carry.code.lower().replace("-", " "), second, "10.0.0.2")
    assert room.person(token).id == room.person(first).id != room.person(second).id
    assert carry.expires_at - room.codes.clock() == 15 * 60 and carry.minutes_left(room.codes.clock()) == 15


def test_a_code_is_single_use(tmp_path):
    room = _room(tmp_path)
    first = room.issuer.issue()
    code = room.carry_code(first, "a").code
    room.use_carry_code(code, room.issuer.issue(), "b")
    with pytest.raises(CodeError, match="mistyped, expired .* or already used") as info:
        room.use_carry_code(code, room.issuer.issue(), "c")
    assert info.value.reason == "invalid"


def test_a_code_expires_after_15_minutes(tmp_path):
    clock = Clock()
    room = _room(tmp_path, clock)
    code = room.carry_code(room.issuer.issue(), "a").code
    clock.now += 15 * 60 + 1
    with pytest.raises(CodeError, match="codes last 15 minutes"):
        room.use_carry_code(code, room.issuer.issue(), "b")
    assert room.codes.live_count() == 0  # and it is gone from the file


def test_a_new_code_revokes_the_last_one_and_revoke_forgets_it(tmp_path):
    room = _room(tmp_path)
    first = room.issuer.issue()
    old, new = room.carry_code(first, "a").code, room.carry_code(first, "a").code
    with pytest.raises(CodeError):
        room.use_carry_code(old, room.issuer.issue(), "b")
    assert room.codes.live_count() == 1
    assert room.codes.revoke(room.person(first).id) and room.codes.live_count() == 0
    with pytest.raises(CodeError):
        room.use_carry_code(new, room.issuer.issue(), "b")


@pytest.mark.parametrize("code", ["", "   ", None])
def test_an_empty_entry_says_what_to_do_and_costs_nothing(tmp_path, code):
    room = _room(tmp_path)
    token = room.issuer.issue()
    for _ in range(FAILURES_PER_PERSON + 3):
        with pytest.raises(CodeError, match="Paste the code") as info:
            room.use_carry_code(code, token, "a")
        assert info.value.reason == "empty"


def test_wrong_codes_are_bounded_per_person_and_per_address(tmp_path):
    clock = Clock()
    room = _room(tmp_path, clock)
    good = room.carry_code(room.issuer.issue(), "elsewhere").code
    guesser = room.issuer.issue()
    for attempt in range(FAILURES_PER_PERSON):
        with pytest.raises(CodeError, match="cannot be used"):
            room.use_carry_code(new_code() if attempt % 2 else "not a code", guesser, "10.0.0.9")
    # Now even the right code is not looked at for this person.
    with pytest.raises(CodeGuessLimit, match="Too many wrong codes") as info:
        room.use_carry_code(good, guesser, "10.0.0.9")
    assert 0 < info.value.retry_s <= FAILURE_WINDOW_S and info.value.reason == "too_many"
    # Another person at the same address still may, and the code was not used up by the refusal.
    assert room.use_carry_code(good, room.issuer.issue(), "10.0.0.9")
    clock.now += FAILURE_WINDOW_S
    with pytest.raises(CodeError, match="cannot be used"):  # the window slid: a wrong code is wrong again
        room.use_carry_code(new_code(), guesser, "10.0.0.9")
    # New identities from one address do not buy more guesses: the address has 20 people's share.
    address_limit = FAILURES_PER_PERSON * ADDRESS_SHARE
    fresh = [room.issuer.issue() for _ in range(address_limit // FAILURES_PER_PERSON + 1)]
    refusals = []
    for token in fresh:
        for _ in range(FAILURES_PER_PERSON):
            with pytest.raises(CodeError) as info:
                room.use_carry_code(new_code(), token, "10.0.0.66")
            refusals.append(info.value.reason)
    assert refusals.count("invalid") == address_limit
    assert set(refusals[address_limit:]) == {"too_many"}


def test_redeeming_needs_a_valid_token_and_a_code_only_ever_names_its_asker(tmp_path):
    room = _room(tmp_path)
    alice = room.issuer.issue()
    code = room.carry_code(alice, "a").code
    for bad in ["", "made-up", alice[:-1] + ("0" if alice[-1] != "0" else "1")]:
        with pytest.raises(IdentityError):
            room.use_carry_code(code, bad, "b")
        with pytest.raises(IdentityError):
            room.carry_code(bad, "b")  # nobody gets a code for an identity they do not hold
    mallory = room.issuer.issue()
    token = room.use_carry_code(code, mallory, "b")
    assert room.person(token).id == room.person(alice).id
    # The stored file names owners only through codes they asked for, keeps no code in clear, and its
    # entries cannot be turned into a token: a digest is not a code.
    stored = json.loads((tmp_path / CODES_FILE).read_text())
    bob = room.issuer.issue()
    bob_code = room.carry_code(bob, "c").code
    stored = json.loads((tmp_path / CODES_FILE).read_text())
    assert [entry["owner"] for entry in stored["codes"].values()] == [room.person(bob).id]
    assert bob_code.replace("-", "") not in (tmp_path / CODES_FILE).read_text()
    digest = next(iter(stored["codes"]))
    with pytest.raises(CodeError):
        room.use_carry_code(digest, mallory, "b")
    with pytest.raises(ValueError):
        room.issuer.issue_for("not-an-id")


def test_codes_survive_a_restart_and_a_damaged_file_means_no_codes(tmp_path):
    settings = Settings.load([], {"PLAYGROUND_DATA_DIR": str(tmp_path)})
    room = Identities.from_settings(settings)
    alice = room.issuer.issue()
    code = room.carry_code(alice, "a").code
    again = Identities.from_settings(settings)
    assert again.person(again.use_carry_code(code, again.issuer.issue(), "b")).id == room.person(alice).id
    code = room.carry_code(alice, "a").code
    (tmp_path / CODES_FILE).write_text("{not json")
    with pytest.raises(CodeError, match="cannot be used"):
        room.use_carry_code(code, room.issuer.issue(), "b")
    assert room.carry_code(alice, "a")  # and a new code is written over the damage
    assert json.loads((tmp_path / CODES_FILE).read_text())["version"] == 1
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]  # written atomically


def test_the_store_keeps_a_bounded_number_of_codes(tmp_path):
    clock = Clock()
    codes = CarryCodes(tmp_path / CODES_FILE, KEY, RateLimiter(clock=clock), ADDRESS_SHARE, clock=clock,
                       max_codes=50)
    for i in range(50):
        codes.issue(f"{i:032x}", f"10.0.{i}.1")
    with pytest.raises(CodeError, match="Too many personal codes") as info:
        codes.issue("f" * 32, "10.0.99.1")
    assert info.value.reason == "full"
    assert codes.live_count() == 50
    assert (tmp_path / CODES_FILE).stat().st_size < 50 * 200
    codes.issue(f"{7:032x}", "10.0.7.1")  # a person replacing their own code always fits
    clock.now += 15 * 60 + 1
    codes.issue("f" * 32, "10.0.99.1")  # expired codes make room
    assert codes.live_count() == 1


def test_asking_for_codes_is_rate_limited_per_person(tmp_path):
    room = _room(tmp_path)
    token = room.issuer.issue()
    for _ in range(CODES_PER_PERSON_PER_HOUR):
        room.carry_code(token, "a")
    with pytest.raises(RateLimitError, match="Too many personal codes: at most 20 per hour"):
        room.carry_code(token, "a")
    assert room.carry_code(room.issuer.issue(), "a")  # another person is not affected


def test_two_browsers_redeeming_one_code_at_once_get_it_once(tmp_path):
    room = _room(tmp_path)
    code = room.carry_code(room.issuer.issue(), "a").code
    outcomes = []

    def redeem():
        try:
            outcomes.append(room.use_carry_code(code, room.issuer.issue(), "b"))
        except CodeError:
            outcomes.append(None)

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(outcome is not None for outcome in outcomes) == 1


def test_the_rate_limiter_can_bound_failures_without_counting_attempts():
    clock = Clock(0.0)
    limiter = RateLimiter(clock=clock)
    assert limiter.retry_after("failure", "alice", 2, 60) == 0
    limiter.record("failure", "alice", 60)
    clock.now = 10
    limiter.record("failure", "alice", 60)
    assert limiter.retry_after("failure", "alice", 2, 60) == 50  # the older failure leaves the window at 60
    assert limiter.retry_after("failure", "alice", 3, 60) == 0 and limiter.retry_after("failure", "bob", 2, 60) == 0
    assert limiter.retry_after("failure", "alice", 0, 60) == 0  # 0: no limit
    clock.now = 60
    assert limiter.retry_after("failure", "alice", 2, 60) == 0
