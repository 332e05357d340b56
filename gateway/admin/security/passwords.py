"""Admin password hashing: bcrypt over an HMAC-SHA256 pre-hash, so no password is ever silently truncated.

Stored form: ``sy1:<bcrypt hash>``. Scheme ``sy1`` = bcrypt(base64(HMAC-SHA256(key=_PREHASH_KEY, utf-8 password))).
The pre-hash is 44 ASCII bytes (under bcrypt's 72-byte limit, no NUL bytes), so every byte of a long password
counts; the fixed HMAC key separates our pre-hash from plain SHA-256 lists leaked elsewhere ("hash shucking").
A later scheme gets a new prefix (``sy2:``), and `needs_rehash` reports old ones so login can upgrade them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import bcrypt

SCHEME = "sy1"
DEFAULT_ROUNDS = 12
MIN_ROUNDS = 4
MAX_ROUNDS = 31
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_BYTES = 1024
GENERATED_PASSWORD_BYTES = 24  # 24 random bytes -> 32 url-safe characters

_PREFIX = SCHEME + ":"
_PREHASH_KEY = b"switchyard/admin-password/sy1"
_BCRYPT_LEN = 60  # "$2b$" + 2-digit cost + "$" + 22-char salt + 31-char digest
_BCRYPT_IDENTS = ("$2a$", "$2b$", "$2y$")
_DUMMY_SALT_BODY = b"." * 22  # a valid (all-zero) bcrypt salt for the unknown-user dummy check

EMPTY = "password must not be empty"
TOO_LONG = f"password must be at most {MAX_PASSWORD_BYTES} bytes"
NOT_TEXT = "password must be valid Unicode text"
TOO_SHORT = f"password must be at least {MIN_PASSWORD_CHARS} characters"
BLANK = "password must not be only whitespace"


def _password_problem(password: str) -> str | None:
    """The hard-limit problem with a password (empty, too long, not encodable), or None."""
    if not isinstance(password, str) or not password:
        return EMPTY
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        return NOT_TEXT
    return TOO_LONG if size > MAX_PASSWORD_BYTES else None


def _prehash(password: str) -> bytes:
    """base64(HMAC-SHA256(password)): 44 bytes, the input bcrypt actually sees."""
    digest = hmac.new(_PREHASH_KEY, password.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest)


def _check_rounds(rounds: int) -> None:
    """Refuse a bcrypt cost outside what bcrypt accepts."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not MIN_ROUNDS <= rounds <= MAX_ROUNDS:
        raise ValueError(f"bcrypt rounds must be an integer from {MIN_ROUNDS} to {MAX_ROUNDS}")


def _bcrypt_part(hashed: str) -> bytes | None:
    """The bcrypt hash inside a stored ``sy1:`` string, or None when the string is not one of ours."""
    if not isinstance(hashed, str) or not hashed.startswith(_PREFIX):
        return None
    inner = hashed[len(_PREFIX) :]
    if len(inner) != _BCRYPT_LEN or not inner.isascii() or not inner.startswith(_BCRYPT_IDENTS):
        return None
    return inner.encode("ascii")


def _rounds_of(inner: bytes) -> int | None:
    """The cost factor written in a bcrypt hash ("$2b$12$..." -> 12), or None when unreadable."""
    cost = inner[4:6]
    return int(cost) if cost.isdigit() and inner[6:7] == b"$" else None


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """Hash a password for storage (``sy1:`` + bcrypt); ValueError with a showable message on a bad password."""
    problem = _password_problem(password)
    if problem is not None:
        raise ValueError(problem)
    _check_rounds(rounds)
    inner = bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds))
    return _PREFIX + inner.decode("ascii")


def verify_password(password: str, hashed: str) -> bool:
    """True when `password` matches the stored hash; constant-time, and False (never an error) on bad input."""
    inner = _bcrypt_part(hashed)
    if inner is None or _password_problem(password) is not None:
        return False
    try:
        return bcrypt.checkpw(_prehash(password), inner)
    except (ValueError, TypeError):
        return False


def dummy_verify(password: str, rounds: int = DEFAULT_ROUNDS) -> bool:
    """Spend the same time as a real check, then return False: login uses it for unknown users (no user oracle)."""
    _check_rounds(rounds)
    candidate = password if _password_problem(password) is None else "-"
    bcrypt.hashpw(_prehash(candidate), b"$2b$%02d$%s" % (rounds, _DUMMY_SALT_BODY))
    return False


def needs_rehash(hashed: str, rounds: int = DEFAULT_ROUNDS) -> bool:
    """True when a stored hash should be replaced at next login: another scheme, another cost, or unreadable."""
    inner = _bcrypt_part(hashed)
    return inner is None or _rounds_of(inner) != rounds


def generate_password() -> str:
    """A random 32-character url-safe password (192 bits), for the owner account created at first start."""
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


def check_password_policy(password: str) -> str | None:
    """The reason a new password is refused (showable to the user), or None when it is acceptable."""
    problem = _password_problem(password)
    if problem is not None:
        return problem
    if not password.strip():
        return BLANK
    if len(password) < MIN_PASSWORD_CHARS:
        return TOO_SHORT
    return None
