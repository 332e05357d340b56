"""Admin password hashing with real bcrypt (cost 4 for speed): round trips, long passwords, bad input, policy."""

from __future__ import annotations

import string

import bcrypt
import pytest

from gateway.admin.security import passwords
from gateway.admin.security.passwords import (
    MAX_PASSWORD_BYTES,
    check_password_policy,
    dummy_verify,
    generate_password,
    hash_password,
    needs_rehash,
    verify_password,
)

FAST = 4
CANARY = "canary-Pa55word-7d1e"


def fast_hash(password: str) -> str:
    return hash_password(password, rounds=FAST)


def test_round_trip_and_stored_format() -> None:
    stored = fast_hash(CANARY)
    assert stored.startswith("sy1:$2b$04$")
    assert len(stored) == len("sy1:") + 60
    assert CANARY not in stored
    assert verify_password(CANARY, stored)
    assert not verify_password(CANARY + "x", stored)
    assert not verify_password(CANARY.upper(), stored)


def test_each_hash_has_its_own_salt() -> None:
    first, second = fast_hash(CANARY), fast_hash(CANARY)
    assert first != second
    assert verify_password(CANARY, first)
    assert verify_password(CANARY, second)


def test_default_cost_is_12() -> None:
    stored = hash_password(CANARY)
    assert stored.startswith("sy1:$2b$12$")
    assert verify_password(CANARY, stored)


def test_long_passwords_sharing_72_bytes_do_not_verify_against_each_other() -> None:
    prefix = "p" * 72
    one, two = prefix + "a" * 28, prefix + "b" * 28
    assert len(one.encode()) == len(two.encode()) == 100
    stored = fast_hash(one)
    assert verify_password(one, stored)
    assert not verify_password(two, stored)
    assert not verify_password(prefix, stored)


def test_passwords_differing_after_a_nul_byte_are_different() -> None:
    stored = fast_hash("before-nul\x00after-one")
    assert verify_password("before-nul\x00after-one", stored)
    assert not verify_password("before-nul\x00after-two", stored)
    assert not verify_password("before-nul", stored)


def test_the_pre_hash_is_what_bcrypt_sees() -> None:
    """A raw bcrypt of the password itself is not our scheme, and must not be accepted even with our prefix."""
    raw = bcrypt.hashpw(CANARY.encode(), bcrypt.gensalt(FAST)).decode()
    assert not verify_password(CANARY, raw)
    assert not verify_password(CANARY, "sy1:" + raw)


def test_size_limit_counts_utf8_bytes() -> None:
    assert verify_password("x" * MAX_PASSWORD_BYTES, fast_hash("x" * MAX_PASSWORD_BYTES))
    with pytest.raises(ValueError, match="at most 1024 bytes"):
        fast_hash("x" * (MAX_PASSWORD_BYTES + 1))
    with pytest.raises(ValueError, match="at most 1024 bytes"):
        fast_hash("é" * 513)  # 513 characters, 1026 bytes


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", passwords.EMPTY),
        ("x" * 5000 + CANARY, passwords.TOO_LONG),
        (CANARY + "\ud800", passwords.NOT_TEXT),
    ],
)
def test_bad_passwords_raise_a_showable_value_error(password: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        fast_hash(password)
    assert str(info.value) == message
    assert CANARY not in str(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize("rounds", [3, 32, -1, True])
def test_cost_outside_bcrypt_range_is_refused(rounds: int) -> None:
    with pytest.raises(ValueError, match="rounds"):
        hash_password(CANARY, rounds=rounds)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "sy1:",
        "sy1:$2b$04$short",
        "sy2:$2b$04$" + "a" * 53,
        "sy1:$2b$04$" + "a" * 52 + "é",
        "sy1:$2x$04$" + "a" * 53,
        "sy1:$2b$99$" + "a" * 53,
        "sy1:$2b$04$" + "!" * 53,
        "sy1:$2b$ab$" + "a" * 53,
        "plaintext-password",
        None,
        b"sy1:$2b$04$",
        12345,
    ],
)
def test_malformed_stored_hash_is_false_never_an_error(stored: object) -> None:
    assert verify_password(CANARY, stored) is False  # type: ignore[arg-type]
    assert needs_rehash(stored) is True  # type: ignore[arg-type]


@pytest.mark.parametrize("password", ["", "x" * 5000, "bad\ud800", None, b"bytes"])
def test_bad_candidate_password_is_false_never_an_error(password: object) -> None:
    stored = fast_hash(CANARY)
    assert verify_password(password, stored) is False  # type: ignore[arg-type]


def test_needs_rehash_when_the_cost_changes() -> None:
    stored = fast_hash(CANARY)
    assert not needs_rehash(stored, rounds=FAST)
    assert needs_rehash(stored, rounds=5)
    assert needs_rehash(stored)  # the default cost is 12
    assert not needs_rehash(hash_password(CANARY, rounds=5), rounds=5)


def test_dummy_verify_does_bcrypt_work_at_the_given_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    salts: list[bytes] = []
    real = bcrypt.hashpw

    def recording(password: bytes, salt: bytes) -> bytes:
        salts.append(salt)
        return real(password, salt)

    monkeypatch.setattr(bcrypt, "hashpw", recording)
    assert dummy_verify(CANARY, rounds=FAST) is False
    assert dummy_verify("", rounds=5) is False
    assert dummy_verify("x" * 5000 + "\ud800", rounds=FAST) is False
    assert [salt[:7] for salt in salts] == [b"$2b$04$", b"$2b$05$", b"$2b$04$"]


def test_generated_passwords_are_long_random_and_acceptable() -> None:
    generated = {generate_password() for _ in range(200)}
    assert len(generated) == 200
    allowed = set(string.ascii_letters + string.digits + "-_")
    for password in generated:
        assert len(password) >= 24
        assert set(password) <= allowed
        assert check_password_policy(password) is None
    one = next(iter(generated))
    assert verify_password(one, fast_hash(one))


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("", passwords.EMPTY),
        ("short-pass1", passwords.TOO_SHORT),  # 11 characters
        (" " * 20, passwords.BLANK),
        ("x" * (MAX_PASSWORD_BYTES + 1), passwords.TOO_LONG),
        ("twelve-chars\ud800", passwords.NOT_TEXT),
        ("twelve-chars", None),
        ("éééééééééééé", None),  # 12 characters (24 bytes): counted in characters
        ("ééééééééééé", passwords.TOO_SHORT),
    ],
)
def test_password_policy(password: str, problem: str | None) -> None:
    assert check_password_policy(password) == problem


def test_policy_messages_never_echo_the_password() -> None:
    for candidate in ("", CANARY[:5], " " * 13, CANARY * 100, CANARY + "\udfff"):
        problem = check_password_policy(candidate)
        assert problem is not None
        assert CANARY[:5] not in problem
