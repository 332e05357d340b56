"""Admin session tokens: short-lived HS256 JWT access tokens and opaque, hashed-at-rest refresh tokens.

Access tokens are verified with the algorithm pinned to HS256 and every claim required; time claims are
checked against an injectable clock. A JWT payload is readable by anyone holding it, so claims never carry
secrets. Refresh tokens are random strings the server keeps only as SHA-256 digests.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt

ALGORITHM = "HS256"
MAX_TOKEN_BYTES = 8192
MIN_SECRET_BYTES = 32
GENERATED_SECRET_BYTES = 64
SECRET_ENV = "SWITCHYARD_JWT_SECRET"  # noqa: S105 - a variable name, not a secret
SECRET_FILE = "jwt.secret"  # noqa: S105 - a file name, not a secret
REFRESH_PREFIX = "syr_"
REFRESH_TOKEN_BYTES = 32
REGISTERED_CLAIMS = ("sub", "role", "iss", "aud", "iat", "nbf", "exp", "jti")
_TIME_CLAIMS = ("iat", "nbf", "exp")
_MAX_SECRET_FILE_BYTES = 4096

INVALID = "invalid token"
EXPIRED = "token expired"
NOT_YET_VALID = "token not yet valid"


class InvalidToken(Exception):
    """An access token was refused; the message is one of a few fixed strings, never the token itself."""

    def __init__(self, message: str = INVALID) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified access token says: who, with which role, which token (jti), until when, and extras."""

    subject: str
    role: str
    jti: str
    expires_at: int
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)


def _is_int(value: object) -> bool:
    """An integer JSON number (bool is an int subclass in Python, and is refused)."""
    return isinstance(value, int) and not isinstance(value, bool)


class TokenIssuer:
    """Issues and verifies access tokens with one shared secret; several workers using the same secret agree."""

    def __init__(
        self,
        secret: bytes,
        issuer: str = "switchyard",
        audience: str = "switchyard-admin",
        access_ttl: int = 900,
        clock: Callable[[], float] = time.time,
        *,
        leeway: int = 5,
    ) -> None:
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
        if not issuer or not audience:
            raise ValueError("issuer and audience must not be empty")
        if not _is_int(access_ttl) or access_ttl <= 0 or not _is_int(leeway) or leeway < 0:
            raise ValueError("access_ttl must be a positive integer and leeway a non-negative integer")
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._ttl = access_ttl
        self._clock = clock
        self._leeway = leeway

    def __repr__(self) -> str:
        return f"TokenIssuer(issuer={self._issuer!r}, audience={self._audience!r}, access_ttl={self._ttl})"

    def issue_access(self, subject: str, role: str, extra: Mapping[str, Any] | None = None) -> tuple[str, int]:
        """A signed access token for `subject` and its lifetime in seconds; `extra` claims must not be secrets."""
        if not subject or not role:
            raise ValueError("subject and role must not be empty")
        extra = dict(extra or {})
        clash = sorted(set(extra) & set(REGISTERED_CLAIMS))
        if clash:
            raise ValueError(f"extra claims may not override registered claims: {', '.join(clash)}")
        now = int(self._clock())
        claims = {
            **extra,
            "sub": subject,
            "role": role,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), self._ttl

    def verify_access(self, token: str) -> Claims:
        """The claims of a valid access token; InvalidToken for anything else (forged, expired, malformed, huge)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise InvalidToken(INVALID)
        payload = self._decode(token)
        self._check_times(payload)
        return _claims_from(payload)

    def _decode(self, token: str) -> dict[str, Any]:
        """Signature, algorithm, issuer, audience and claim presence, by PyJWT; times are left to `_check_times`."""
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": list(REGISTERED_CLAIMS),
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "strict_aud": True,
                },
            )
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise InvalidToken(INVALID) from None
        if not isinstance(payload, dict):
            raise InvalidToken(INVALID)
        return payload

    def _check_times(self, payload: Mapping[str, Any]) -> None:
        """iat/nbf/exp must be integers, now must lie in [nbf, exp) give or take the leeway, and exp - iat <= TTL."""
        if not all(_is_int(payload[name]) for name in _TIME_CLAIMS):
            raise InvalidToken(INVALID)
        now = self._clock()
        if payload["exp"] <= now - self._leeway:
            raise InvalidToken(EXPIRED)
        if payload["nbf"] > now + self._leeway or payload["iat"] > now + self._leeway:
            raise InvalidToken(NOT_YET_VALID)
        if payload["exp"] - payload["iat"] > self._ttl:
            raise InvalidToken(INVALID)  # lives longer than we issue: not one of ours (or an old, longer TTL)


def _claims_from(payload: Mapping[str, Any]) -> Claims:
    """Build Claims from a verified payload; the identity claims must be non-empty strings."""
    subject, role, jti = payload["sub"], payload["role"], payload["jti"]
    if not all(isinstance(v, str) and v for v in (subject, role, jti)):
        raise InvalidToken(INVALID)
    extra = {k: v for k, v in payload.items() if k not in REGISTERED_CLAIMS}
    return Claims(subject=subject, role=role, jti=jti, expires_at=payload["exp"], extra=MappingProxyType(extra))


def hash_refresh_token(token: str) -> str:
    """The SHA-256 hex digest under which a refresh token is stored and looked up (never the token itself)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_refresh_token() -> tuple[str, str]:
    """A fresh refresh token for the client (``syr_`` + 256 random bits) and the digest to store for it."""
    token = REFRESH_PREFIX + secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    return token, hash_refresh_token(token)


def load_secret(env: Mapping[str, str], data_dir: Path) -> bytes:
    """The JWT signing secret: $SWITCHYARD_JWT_SECRET, else ``data_dir/jwt.secret``, created once (mode 0600)."""
    if SECRET_ENV in env:
        secret = env[SECRET_ENV].encode("utf-8")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"{SECRET_ENV} must be at least {MIN_SECRET_BYTES} bytes")
        return secret
    path = Path(data_dir) / SECRET_FILE
    if path.exists() or path.is_symlink():
        return _read_secret_file(path)
    return _create_secret_file(path)


def _read_secret_file(path: Path) -> bytes:
    """Read the secret file, refusing a symlink, a file others may read, or one too short to be a secret."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ValueError(f"cannot open the token secret file {path} ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode) or mode & 0o077:
            raise ValueError(f"the token secret file {path} must be a regular file with mode 0600")
        secret = handle.read(_MAX_SECRET_FILE_BYTES).strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the token secret file {path} holds fewer than {MIN_SECRET_BYTES} bytes")
    return secret


def _create_secret_file(path: Path) -> bytes:
    """Create the secret file atomically; when another process got there first, use the secret it wrote."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(GENERATED_SECRET_BYTES).encode("ascii")
    return secret if _publish(path, secret) else _read_secret_file(path)


def _publish(path: Path, secret: bytes) -> bool:
    """Write `secret` to a private temp file, then hard-link it to `path`; False when `path` already existed.

    The link appears complete or not at all, and fails if the name exists, so of racing processes the first
    wins and every other one reads what the first wrote; a reader never sees a half-written file.
    """
    fd, tmp = _private_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _private_temp(path: Path) -> tuple[int, str]:
    """A new temp file (mode 0600, whatever the umask) next to `path`, so it can be linked into place."""
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the new directory entry durable (best effort: some filesystems refuse to fsync a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
