"""Client key authentication: the same lookup for every header channel, against sha256 digests in memory."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config.snapshot import ClientKey, hash_key
from gateway.errors import AuthenticationFailed
from gateway.protocol.headers import RequestHeaders

MISSING = "missing API key: send it as 'Authorization: Bearer <key>' (or in an 'x-api-key' / 'api-key' header)"


def presented_key(headers: RequestHeaders) -> str | None:
    """The key the client sent: `Authorization: Bearer` first, then `x-api-key`, then `api-key`."""
    if headers.authorization is not None:
        scheme, _, token = headers.authorization.decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("the Authorization header must be 'Bearer <key>'")
        return token.strip()
    raw = headers.x_api_key if headers.x_api_key is not None else headers.api_key
    return raw.decode("latin-1").strip() if raw is not None else None


def authenticate(keys: Mapping[str, ClientKey], headers: RequestHeaders) -> ClientKey:
    key = presented_key(headers)
    if not key:
        raise AuthenticationFailed(MISSING, code="missing_api_key")
    found = keys.get(hash_key(key))
    if found is None:
        raise AuthenticationFailed("invalid API key")
    return found
