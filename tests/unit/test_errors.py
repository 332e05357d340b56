"""The error tree and upstream error parsing: status mapping, retryability, auth wording, redaction, Retry-After."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamStatusError,
    UpstreamTimeout,
    redact,
)
from plugins.providers.openai.errors import parse_error, parse_retry_after

PROVIDER_KEY = "sk-live-abcdefghijklmnop1234"


def openai_error(message: str, type_: str | None = None, param: str | None = None, code: Any = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def parsed_body(exc: GatewayError) -> dict[str, Any]:
    body = orjson.loads(exc.body())
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


@pytest.mark.parametrize(
    ("upstream", "client"),
    [
        (400, 400),
        (401, 502),
        (403, 502),
        (404, 502),
        (409, 409),
        (413, 413),
        (422, 422),
        (429, 429),
        (500, 502),
        (502, 502),
        (503, 503),
        (504, 504),
    ],
)
def test_status_mapping_and_retryable(upstream: int, client: int) -> None:
    exc = parse_error(upstream, openai_error("boom"), None, ())
    assert isinstance(exc, UpstreamStatusError)
    assert exc.upstream_status == upstream
    assert exc.status == client
    assert exc.retryable is (upstream == 429 or upstream >= 500)


def test_upstream_fields_kept() -> None:
    raw = openai_error("max_tokens is too large", "invalid_request_error", "max_tokens", "context_length_exceeded")
    exc = parse_error(400, raw, None, ())
    assert parsed_body(exc) == {
        "message": "max_tokens is too large",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "context_length_exceeded",
    }


def test_numeric_code_becomes_string() -> None:
    exc = parse_error(429, openai_error("slow down", code=1302), None, ())
    assert exc.code == "1302"
    assert exc.type == "rate_limit_error"


def test_missing_type_defaults() -> None:
    assert parse_error(500, openai_error("oops"), None, ()).type == "upstream_error"
    assert parse_error(429, openai_error("slow"), None, ()).type == "rate_limit_error"


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_auth_failure_is_not_a_client_auth_failure(status: int) -> None:
    raw = openai_error("Incorrect API key provided", "invalid_request_error", None, "invalid_api_key")
    exc = parse_error(status, raw, None, ())
    err = parsed_body(exc)
    assert exc.status == 502
    assert err["code"] == "upstream_auth_failed"
    assert err["type"] != "authentication_error"
    assert err["type"] != "invalid_request_error"
    assert "gateway's credentials" in err["message"]
    assert not isinstance(exc, AuthenticationFailed)
    assert exc.retryable is False


@pytest.mark.parametrize("status", [400, 401, 403, 429, 500])
def test_provider_key_never_leaks_when_passed_as_secret(status: int) -> None:
    raw = openai_error(f"Incorrect API key provided: {PROVIDER_KEY}. Find yours at ...", code="invalid_api_key")
    body = parse_error(status, raw, None, (PROVIDER_KEY,)).body()
    assert PROVIDER_KEY.encode() not in body
    assert b"abcdefghijklmnop" not in body


@pytest.mark.parametrize(
    "key",
    [PROVIDER_KEY, "sk-proj-AbCdEf0123456789xyz", "sk-ant-api03-abcdefghijklmnop", "sk-abcd************wxyz"],
)
def test_key_shaped_strings_redacted_without_being_passed(key: str) -> None:
    exc = parse_error(401, openai_error(f"Incorrect API key provided: {key}"), None, ())
    assert key not in exc.message
    assert key.encode() not in exc.body()
    assert "[redacted]" in exc.message


def test_key_echoed_in_code_is_redacted() -> None:
    exc = parse_error(400, openai_error("bad", code=f"bad_key_{PROVIDER_KEY}"), None, (PROVIDER_KEY,))
    assert PROVIDER_KEY.encode() not in exc.body()


def test_key_echoed_in_param_or_type_is_redacted() -> None:
    """A key echoed in any error field is redacted, not just in the message."""
    secret = "provider-secret-value-42"
    raw = openai_error("bad", type_=f"t {secret}", param=f"p {secret}")
    body = parse_error(400, raw, None, (secret,)).body()
    assert secret.encode() not in body


def test_long_message_truncated() -> None:
    exc = parse_error(400, openai_error("x" * 10_000), None, ())
    assert len(exc.message) == 2000


@pytest.mark.parametrize("raw", [b"", b"<html>502 Bad Gateway</html>", b"\xff\xfe", b"[1, 2]", b'"text"', b"{}"])
def test_unusable_body_gives_generic_message(raw: bytes) -> None:
    exc = parse_error(502, raw, None, ())
    assert exc.message == "upstream returned HTTP 502"
    assert exc.param is None
    assert exc.code == "upstream_error"


def test_error_as_string_shape() -> None:
    exc = parse_error(400, b'{"error": "model not loaded"}', None, ())
    assert exc.message == "model not loaded"


def test_flat_message_shape() -> None:
    exc = parse_error(400, b'{"message": "prompt too long", "code": "too_long", "type": "bad"}', None, ())
    assert (exc.message, exc.code, exc.type) == ("prompt too long", "too_long", "bad")


def test_nested_non_scalar_fields_ignored() -> None:
    exc = parse_error(400, b'{"error": {"message": {"nested": 1}, "code": [1]}}', None, ())
    assert exc.message == "upstream returned HTTP 400"
    assert exc.code == "upstream_error"


@pytest.mark.parametrize(("value", "header"), [("2", b"2"), ("2.6", b"3"), ("0", b"1"), ("0.2", b"1"), ("30", b"30")])
def test_retry_after_on_429(value: str, header: bytes) -> None:
    exc = parse_error(429, openai_error("slow down"), value, ())
    assert exc.headers() == [(b"retry-after", header)]


@pytest.mark.parametrize(
    "value", [None, "", "soon", "-3", "nan", "inf", "1e9", "Wed, 21 Oct 2015 07:28:00 GMT", "86400"]
)
def test_bad_retry_after_ignored(value: str | None) -> None:
    assert parse_retry_after(value) is None
    exc = parse_error(429, openai_error("slow down"), value, ())
    assert exc.retry_after is None
    assert exc.headers() == [(b"retry-after", b"1")]


def test_retry_after_parsed() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5


@pytest.mark.parametrize("status", [400, 500, 503])
def test_no_retry_after_header_unless_429(status: int) -> None:
    assert parse_error(status, openai_error("x"), "5", ()).headers() == []


@pytest.mark.parametrize(("retry_after", "header"), [(1.0, b"1"), (2.6, b"3"), (0.0, b"1"), (60, b"60")])
def test_rate_limited_headers(retry_after: float, header: bytes) -> None:
    exc = RateLimited("too many requests", retry_after=retry_after)
    assert exc.headers() == [(b"retry-after", header)]
    assert exc.status == 429
    assert parsed_body(exc)["type"] == "rate_limit_error"
    assert parsed_body(exc)["code"] == "rate_limit_exceeded"


def test_error_classes() -> None:
    assert (InvalidRequest("x").status, InvalidRequest("x").code, InvalidRequest("x").retryable) == (
        400,
        "invalid_request",
        False,
    )
    assert InvalidRequest("x", code="custom", param="p").code == "custom"
    assert InvalidRequest("x").headers() == []
    assert (AuthenticationFailed("x").status, parsed_body(AuthenticationFailed("x"))["type"]) == (
        401,
        "authentication_error",
    )
    timeout = UpstreamTimeout("slow", provider="p")
    assert (timeout.status, timeout.code, timeout.retryable, timeout.provider) == (504, "upstream_timeout", True, "p")


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("bearer   XYZ.token-value_0123", "XYZ.token-value_0123"),
        ("header was BEARER sk-xyzxyzxyzxyz99", "sk-xyzxyzxyzxyz99"),
        ("key pk-1234567890abcdef used", "pk-1234567890abcdef"),
    ],
)
def test_redact_patterns(text: str, leak: str) -> None:
    out = redact(text)
    assert leak not in out
    assert "[redacted]" in out


def test_redact_known_secret_and_keeps_plain_text() -> None:
    assert redact("the value is hunter2!", ("hunter2",)) == "the value is ***!"
    assert redact("plain message with Bearer tok", ()) == "plain message with Bearer tok"  # short token kept
    assert redact("ask-me-anything is fine") == "ask-me-anything is fine"
    assert redact("x", ("",)) == "x"
