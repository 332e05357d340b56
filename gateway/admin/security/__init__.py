"""Identity primitives for the admin API: password hashing, access/refresh tokens and login throttling.

Pure and synchronous; nothing here touches the network or a database (only `load_secret` touches a file).
"""

from gateway.admin.security.passwords import (
    DEFAULT_ROUNDS,
    MAX_PASSWORD_BYTES,
    MIN_PASSWORD_CHARS,
    check_password_policy,
    dummy_verify,
    generate_password,
    hash_password,
    needs_rehash,
    verify_password,
)
from gateway.admin.security.throttle import LoginThrottle
from gateway.admin.security.tokens import (
    REFRESH_PREFIX,
    Claims,
    InvalidToken,
    TokenIssuer,
    hash_refresh_token,
    load_secret,
    new_refresh_token,
)

__all__ = [
    "DEFAULT_ROUNDS",
    "MAX_PASSWORD_BYTES",
    "MIN_PASSWORD_CHARS",
    "REFRESH_PREFIX",
    "Claims",
    "InvalidToken",
    "LoginThrottle",
    "TokenIssuer",
    "check_password_policy",
    "dummy_verify",
    "generate_password",
    "hash_password",
    "hash_refresh_token",
    "load_secret",
    "needs_rehash",
    "new_refresh_token",
    "verify_password",
]
