"""OpenAI-compatible upstream error bodies -> UpstreamStatusError (a pure function, tested on fixtures)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import UpstreamStatusError, redact


def _field(error: dict[str, Any], name: str) -> str | None:
    value = error.get(name)
    return str(value) if value is not None and not isinstance(value, dict | list) else None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header; HTTP dates are not used by LLM vendors and count as absent."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None


def parse_error(status: int, raw: bytes, retry_after: str | None, secrets: tuple[str, ...]) -> UpstreamStatusError:
    """Keep the upstream's own message, type, param and code when it sent them; redact anything secret."""
    error: dict[str, Any] = {}
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            error = inner
        elif isinstance(inner, str):
            error = {"message": inner}
    message = _field(error, "message") or f"upstream returned HTTP {status}"
    code, type_ = _field(error, "code"), _field(error, "type")
    if status in (401, 403):  # the gateway's credentials, not the client's: don't let it look like a bad client key
        message = f"the upstream rejected the gateway's credentials: {message}"
        code, type_ = "upstream_auth_failed", None
    param = _field(error, "param")
    return UpstreamStatusError(
        redact(message, secrets)[:2000],
        upstream_status=status,
        type_=redact(type_, secrets)[:200] if type_ else None,
        param=redact(param, secrets)[:200] if param else None,
        code=redact(code, secrets)[:200] if code else None,
        retry_after=parse_retry_after(retry_after),
    )
