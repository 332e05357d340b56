"""Admin access and refresh tokens with real PyJWT: issued tokens verify, every forged or stale token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import stat
import string
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.admin.security import tokens
from gateway.admin.security.tokens import (
    EXPIRED,
    INVALID,
    NOT_YET_VALID,
    SECRET_ENV,
    Claims,
    InvalidToken,
    TokenIssuer,
    hash_refresh_token,
    load_secret,
    new_refresh_token,
)

SECRET = b"test-secret-" + b"0123456789abcdef" * 4
OTHER_SECRET = b"other-secret-" + b"0123456789abcdef" * 4
NOW = 1_800_000_000
TTL = 900


class Clock:
    """A settable clock, so expiry is tested without sleeping."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_token(header: dict[str, Any], payload: Any, sign: Callable[[bytes], bytes] | None = None) -> str:
    """A JWT assembled by hand: any header, any payload, any signature (none when `sign` is None)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = sign(signing_input.encode()) if sign is not None else b""
    return f"{signing_input}.{b64url(signature)}"


def hs256(key: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(key, data, hashlib.sha256).digest()


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "user-1",
        "role": "admin",
        "iss": "switchyard",
        "aud": "switchyard-admin",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + TTL,
        "jti": "jti-1",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def signed(payload: Any, header: dict[str, Any] | None = None, key: bytes = SECRET) -> str:
    return raw_token(header or {"alg": "HS256", "typ": "JWT"}, payload, hs256(key))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(clock: Clock) -> TokenIssuer:
    return TokenIssuer(SECRET, access_ttl=TTL, clock=clock)


def refused(issuer: TokenIssuer, token: Any, message: str = INVALID) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        issuer.verify_access(token)
    error = info.value
    assert str(error) == message == error.message
    assert error.__cause__ is None
    if isinstance(token, str) and token:
        assert token not in str(error)
        assert token not in repr(error)
    return error


# --- issuing and verifying -----------------------------------------------------------------------------------


def test_issued_token_verifies_with_all_claims(issuer: TokenIssuer) -> None:
    token, expires_in = issuer.issue_access("user-1", "admin", {"sv": 3, "name": "Ada"})
    assert expires_in == TTL
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    payload = jwt.decode(token, options={"verify_signature": False})
    assert set(payload) == {"sub", "role", "iss", "aud", "iat", "nbf", "exp", "jti", "sv", "name"}
    assert payload["iat"] == payload["nbf"] == NOW
    assert payload["exp"] == NOW + TTL
    assert (payload["iss"], payload["aud"]) == ("switchyard", "switchyard-admin")
    claims = issuer.verify_access(token)
    assert claims == Claims(
        subject="user-1", role="admin", jti=payload["jti"], expires_at=NOW + TTL, extra=claims.extra
    )
    assert dict(claims.extra) == {"sv": 3, "name": "Ada"}


def test_claims_are_immutable(issuer: TokenIssuer) -> None:
    claims = issuer.verify_access(issuer.issue_access("user-1", "admin", {"sv": 1})[0])
    with pytest.raises(AttributeError):
        claims.role = "owner"  # type: ignore[misc]
    with pytest.raises(TypeError):
        claims.extra["sv"] = 2  # type: ignore[index]


def test_every_token_has_its_own_jti(issuer: TokenIssuer) -> None:
    jtis = {issuer.verify_access(issuer.issue_access("user-1", "admin")[0]).jti for _ in range(200)}
    assert len(jtis) == 200


def test_workers_sharing_a_secret_agree_and_others_do_not(clock: Clock) -> None:
    token, _ = TokenIssuer(SECRET, clock=clock).issue_access("user-1", "viewer")
    assert TokenIssuer(SECRET, clock=clock).verify_access(token).role == "viewer"
    refused(TokenIssuer(OTHER_SECRET, clock=clock), token)


def test_payload_readable_without_the_key_holds_no_secret(issuer: TokenIssuer) -> None:
    token, _ = issuer.issue_access("user-1", "admin")
    decoded = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    assert SECRET not in decoded
    assert SECRET not in token.encode()


@pytest.mark.parametrize("name", ["sub", "role", "iss", "aud", "iat", "nbf", "exp", "jti"])
def test_extra_claims_cannot_override_registered_ones(issuer: TokenIssuer, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        issuer.issue_access("user-1", "viewer", {name: "owner"})


@pytest.mark.parametrize(("subject", "role"), [("", "admin"), ("user-1", "")])
def test_empty_subject_or_role_is_refused(issuer: TokenIssuer, subject: str, role: str) -> None:
    with pytest.raises(ValueError):
        issuer.issue_access(subject, role)


@pytest.mark.parametrize("secret", [b"", b"x" * 31, "x" * 64])
def test_short_or_non_bytes_secret_is_refused(secret: Any) -> None:
    with pytest.raises(ValueError) as info:
        TokenIssuer(secret)
    assert "xxxx" not in str(info.value)


@pytest.mark.parametrize("kwargs", [{"access_ttl": 0}, {"access_ttl": -5}, {"leeway": -1}, {"issuer": ""}])
def test_bad_issuer_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TokenIssuer(SECRET, **kwargs)


def test_repr_does_not_show_the_secret(issuer: TokenIssuer) -> None:
    assert SECRET.decode() not in repr(issuer)


# --- time ----------------------------------------------------------------------------------------------------


def test_expiry_follows_the_injected_clock(clock: Clock) -> None:
    issuer = TokenIssuer(SECRET, access_ttl=TTL, clock=clock, leeway=0)
    token, _ = issuer.issue_access("user-1", "admin")
    clock.now = NOW + TTL - 1
    assert issuer.verify_access(token).subject == "user-1"
    clock.now = NOW + TTL
    refused(issuer, token, EXPIRED)
    clock.now = NOW + 10 * TTL
    refused(issuer, token, EXPIRED)


def test_leeway_tolerates_small_clock_skew_only(clock: Clock) -> None:
    issuer = TokenIssuer(SECRET, access_ttl=TTL, clock=clock, leeway=5)
    token, _ = issuer.issue_access("user-1", "admin")
    clock.now = NOW + TTL + 4
    assert issuer.verify_access(token)
    clock.now = NOW + TTL + 5
    refused(issuer, token, EXPIRED)
    clock.now = NOW - 5  # a worker whose clock is 5 s behind the issuer's
    assert issuer.verify_access(token)
    clock.now = NOW - 6
    refused(issuer, token, NOT_YET_VALID)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_token_from_the_future_is_not_yet_valid(issuer: TokenIssuer, claim: str) -> None:
    refused(issuer, signed(good_claims(**{claim: NOW + 60})), NOT_YET_VALID)


# --- forged and malformed tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(issuer: TokenIssuer, alg: str) -> None:
    refused(issuer, raw_token({"alg": alg, "typ": "JWT"}, good_claims()))
    refused(issuer, raw_token({"alg": alg}, good_claims(), hs256(SECRET)))


def test_hs256_signed_with_another_key_is_refused(issuer: TokenIssuer) -> None:
    refused(issuer, signed(good_claims(), key=OTHER_SECRET))
    refused(issuer, TokenIssuer(OTHER_SECRET, clock=issuer._clock).issue_access("user-1", "owner")[0])


@pytest.mark.parametrize(("alg", "digest"), [("HS384", hashlib.sha384), ("HS512", hashlib.sha512)])
def test_other_hmac_algorithms_are_refused_even_with_the_right_key(issuer: TokenIssuer, alg: str, digest: Any) -> None:
    refused(
        issuer, raw_token({"alg": alg, "typ": "JWT"}, good_claims(), lambda d: hmac.new(SECRET, d, digest).digest())
    )
    refused(issuer, jwt.encode(good_claims(), SECRET, algorithm=alg))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_rs256_token_is_refused(issuer: TokenIssuer, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    refused(issuer, jwt.encode(good_claims(), pem, algorithm="RS256"))
    attacker_headers = {"kid": "../../etc/passwd", "jku": "http://169.254.169.254/keys", "x5u": "http://evil/x"}
    refused(issuer, jwt.encode(good_claims(), pem, algorithm="RS256", headers=attacker_headers))


def test_algorithm_confusion_is_refused(issuer: TokenIssuer, rsa_key: rsa.RSAPrivateKey) -> None:
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # HS256 keyed with a public key (the classic confusion), and an RS256 header over an HMAC of our secret.
    refused(issuer, signed(good_claims(), key=public_pem))
    refused(issuer, raw_token({"alg": "RS256", "typ": "JWT"}, good_claims(), hs256(SECRET)))
    refused(
        issuer, raw_token({"alg": "HS256", "jku": "http://evil/keys", "kid": "x"}, good_claims(), hs256(OTHER_SECRET))
    )


def test_a_hand_signed_token_with_good_claims_is_accepted(issuer: TokenIssuer) -> None:
    """The control for the forgeries above: the same construction with our key and HS256 verifies."""
    assert issuer.verify_access(signed(good_claims())).subject == "user-1"


def test_tampered_payload_or_signature_is_refused(issuer: TokenIssuer) -> None:
    token, _ = issuer.issue_access("user-1", "viewer")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "owner"
    refused(issuer, f"{header}.{b64url(json.dumps(claims).encode())}.{signature}")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    refused(issuer, f"{header}.{payload}.{flipped}")
    refused(issuer, f"{header}.{payload}.")
    refused(issuer, f"{header}.{payload}")
    refused(issuer, f"{token}.{signature}")


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "evil"},
        {"iss": "switchyar"},
        {"iss": "switchyard-x"},
        {"iss": ["switchyard"]},
        {"aud": "switchyard-api"},
        {"aud": ["switchyard-admin", "other"]},
        {"aud": "switchyard-admin-x"},
    ],
)
def test_wrong_issuer_or_audience_is_refused(issuer: TokenIssuer, changes: dict[str, Any]) -> None:
    refused(issuer, signed(good_claims(**changes)))


def test_token_for_another_audience_or_issuer_is_refused(clock: Clock, issuer: TokenIssuer) -> None:
    for other in (
        TokenIssuer(SECRET, audience="switchyard-api", clock=clock),
        TokenIssuer(SECRET, issuer="x", clock=clock),
    ):
        refused(issuer, other.issue_access("user-1", "admin")[0])


@pytest.mark.parametrize("missing", ["sub", "role", "iss", "aud", "iat", "nbf", "exp", "jti"])
def test_every_registered_claim_is_required(issuer: TokenIssuer, missing: str) -> None:
    claims = good_claims()
    del claims[missing]
    refused(issuer, signed(claims))


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": str(NOW + TTL)},
        {"exp": float(NOW + TTL)},
        {"exp": True},
        {"nbf": "0"},
        {"iat": [NOW]},
        {"exp": 10**400},
        {"exp": NOW + TTL + 1},  # a longer life than this issuer ever grants
        {"sub": 42},
        {"sub": ""},
        {"role": ""},
        {"role": ["owner"]},
        {"jti": 7},
    ],
)
def test_claims_of_the_wrong_type_are_refused(issuer: TokenIssuer, changes: dict[str, Any]) -> None:
    refused(issuer, signed(good_claims(**changes)))


@pytest.mark.parametrize(
    "payload",
    [["sub", "user-1"], "just a string", 42, None],
)
def test_payload_that_is_not_an_object_is_refused(issuer: TokenIssuer, payload: Any) -> None:
    refused(issuer, signed(payload))


def test_unknown_critical_header_is_refused(issuer: TokenIssuer) -> None:
    refused(issuer, signed(good_claims(), header={"alg": "HS256", "crit": ["exp-ext"], "exp-ext": 1}))
    refused(issuer, signed(good_claims(), header={"alg": "HS256", "b64": False, "crit": ["b64"]}))


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "a.b.c",
        "...",
        "eyJhbGciOiJIUzI1NiJ9.!!!.???",
        "Bearer x.y.z",
        "tök.en.ü",
        "\ud800.\udfff.x",
        "x" * 5000,
        None,
        b"bytes.are.no",
        12345,
    ],
)
def test_garbage_is_refused_without_other_errors(issuer: TokenIssuer, garbage: Any) -> None:
    refused(issuer, garbage)


def test_deeply_nested_payload_is_refused(issuer: TokenIssuer) -> None:
    nested = "[" * 3000 + "]" * 3000
    header = b64url(b'{"alg":"HS256"}')
    signing_input = f"{header}.{b64url(nested.encode())}"
    refused(issuer, f"{signing_input}.{b64url(hs256(SECRET)(signing_input.encode()))}")


def test_token_over_8_kb_is_refused_even_when_validly_signed(issuer: TokenIssuer) -> None:
    small, _ = issuer.issue_access("user-1", "admin", {"pad": "x" * 5000})
    assert len(small) < 8192
    assert issuer.verify_access(small).subject == "user-1"
    big, _ = issuer.issue_access("user-1", "admin", {"pad": "x" * 7000})
    assert len(big) > 8192
    refused(issuer, big)
    refused(issuer, "a" * 1_000_000)


# --- refresh tokens ------------------------------------------------------------------------------------------


def test_refresh_tokens_are_prefixed_random_and_stored_as_sha256() -> None:
    pairs = [new_refresh_token() for _ in range(1000)]
    assert len({token for token, _ in pairs}) == len({digest for _, digest in pairs}) == 1000
    allowed = set(string.ascii_letters + string.digits + "-_")
    for token, digest in pairs:
        assert token.startswith("syr_")
        assert len(token) >= 4 + 43  # 32 random bytes, url-safe base64
        assert set(token[4:]) <= allowed
        assert digest == hashlib.sha256(token.encode()).hexdigest() == hash_refresh_token(token)
        assert token not in digest


def test_refresh_token_hash_is_stable_and_total() -> None:
    assert hash_refresh_token("syr_abc") == hash_refresh_token("syr_abc")
    assert hash_refresh_token("syr_abc") != hash_refresh_token("syr_abd")
    assert len(hash_refresh_token("\ud800 not text")) == 64


# --- the signing secret --------------------------------------------------------------------------------------


def test_secret_from_the_environment(tmp_path: Path) -> None:
    value = "e" * 40
    assert load_secret({SECRET_ENV: value}, tmp_path) == value.encode()
    assert not (tmp_path / "jwt.secret").exists()


@pytest.mark.parametrize("value", ["", "short-canary-secret", "é" * 15])
def test_short_secret_in_the_environment_is_refused_without_echoing_it(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError) as info:
        load_secret({SECRET_ENV: value}, tmp_path)
    assert "32 bytes" in str(info.value)
    assert not value or value not in str(info.value)
    assert not (tmp_path / "jwt.secret").exists()


def test_secret_file_is_created_once_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    old_umask = os.umask(0)  # even a permissive umask must not widen the file's mode
    try:
        first = load_secret({}, data_dir)
    finally:
        os.umask(old_umask)
    path = data_dir / "jwt.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 86  # 64 random bytes, url-safe base64
    assert path.read_bytes().strip() == first
    assert load_secret({}, data_dir) == first
    assert load_secret({"OTHER": "x"}, data_dir) == first
    assert sorted(p.name for p in data_dir.iterdir()) == ["jwt.secret"]
    assert TokenIssuer(first).verify_access(TokenIssuer(load_secret({}, data_dir)).issue_access("u", "admin")[0])


def test_two_data_dirs_get_different_secrets(tmp_path: Path) -> None:
    assert load_secret({}, tmp_path / "a") != load_secret({}, tmp_path / "b")


def test_secret_file_written_by_hand_is_read_stripped(tmp_path: Path) -> None:
    path = tmp_path / "jwt.secret"
    path.write_bytes(b"h" * 40 + b"\n")
    path.chmod(0o600)
    assert load_secret({}, tmp_path) == b"h" * 40


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_secret_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "jwt.secret"
    path.write_bytes(b"s" * 64)
    path.chmod(mode)
    with pytest.raises(ValueError, match="0600"):
        load_secret({}, tmp_path)


def test_short_secret_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwt.secret"
    path.write_bytes(b"tiny\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="fewer than 32 bytes") as info:
        load_secret({}, tmp_path)
    assert "tiny" not in str(info.value)


def test_symlinked_secret_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"s" * 64)
    target.chmod(0o600)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "jwt.secret").symlink_to(target)
    with pytest.raises(ValueError):
        load_secret({}, data_dir)
    (data_dir / "jwt.secret").unlink()
    (data_dir / "jwt.secret").symlink_to(tmp_path / "missing")
    with pytest.raises(ValueError):
        load_secret({}, data_dir)


def test_the_second_publisher_keeps_the_first_secret(tmp_path: Path) -> None:
    """The exact interleaving of a race: the loser finds the name taken and must read the winner's secret."""
    path = tmp_path / "jwt.secret"
    assert tokens._publish(path, b"w" * 64) is True
    assert tokens._publish(path, b"l" * 64) is False
    assert path.read_bytes().strip() == b"w" * 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jwt.secret"]


def test_threads_racing_to_create_the_secret_agree(tmp_path: Path) -> None:
    racers = 16
    barrier = threading.Barrier(racers)
    results: list[bytes] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        secret = load_secret({}, tmp_path)
        with lock:
            results.append(secret)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == racers
    assert len(set(results)) == 1
    assert (tmp_path / "jwt.secret").read_bytes().strip() == results[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jwt.secret"]


def _process_racer(data_dir: str, barrier: Any, queue: Any) -> None:
    barrier.wait()
    queue.put(load_secret({}, Path(data_dir)).decode())


def test_processes_racing_to_create_the_secret_agree(tmp_path: Path) -> None:
    racers = 4
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(racers)
    queue = context.Queue()
    processes = [context.Process(target=_process_racer, args=(str(tmp_path), barrier, queue)) for _ in range(racers)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=60) for _ in range(racers)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert len(set(results)) == 1
    assert (tmp_path / "jwt.secret").read_bytes().strip() == results[0].encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jwt.secret"]
