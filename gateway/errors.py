"""One exception tree for the whole gateway; each error knows its status and renders OpenAI's error body.

Messages are written for the client: they never carry a stack trace, an upstream URL or a secret.
"""

from __future__ import annotations

import re

import orjson

_SECRET_LIKE = re.compile(r"\b(sk|pk|ak)-[A-Za-z0-9*_\-]{12,}|(?i:bearer)\s+\S{8,}")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove known secrets and anything shaped like an API key from a message meant for clients or logs."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRET_LIKE.sub("[redacted]", text)


class GatewayError(Exception):
    """Base of every error a client can see."""

    status = 500
    type = "server_error"
    code: str | None = None
    retryable = False

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> list[tuple[bytes, bytes]]:
        return []

    def body(self) -> bytes:
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )


class ClientError(GatewayError):
    status = 400
    type = "invalid_request_error"


class InvalidRequest(ClientError):
    code = "invalid_request"


class AuthenticationFailed(ClientError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ClientError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class UnsupportedMediaType(ClientError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(ClientError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(max(1, round(self.retry_after))).encode())]


class Unavailable(GatewayError):
    """A part the request needs is down or not ready (503); `code` says which, the message what to do."""

    status = 503
    type = "server_error"
    code = "service_unavailable"


class ServerError(GatewayError):
    """A fault of the gateway itself."""


class UpstreamError(GatewayError):
    """A failure talking to an upstream provider; `provider` is filled in by the router."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True

    def __init__(self, message: str, *, code: str | None = None, provider: str | None = None) -> None:
        super().__init__(message, code=code)
        self.provider = provider


class UpstreamConnectError(UpstreamError):
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamStreamError(UpstreamError):
    """The upstream broke off or sent garbage in the middle of a response."""

    code = "upstream_stream_error"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status; the client gets its message and a mapped status."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        type_: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.upstream_status = upstream_status
        self.status = _client_status(upstream_status)
        self.retryable = upstream_status == 429 or upstream_status >= 500
        self.type = type_ or ("rate_limit_error" if upstream_status == 429 else self.type)
        self.param = param
        self.retry_after = retry_after

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.status == 429:
            return [(b"retry-after", str(max(1, round(self.retry_after or 1))).encode())]
        return []


def _client_status(upstream_status: int) -> int:
    """The status a client sees for an upstream status: its request's faults pass, the gateway's become 502."""
    if upstream_status in (400, 409, 413, 422, 429, 503, 504):
        return upstream_status
    return 502
