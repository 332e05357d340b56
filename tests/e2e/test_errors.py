"""Every error case end to end: OpenAI's error shape, the right status, no upstream call for bad input."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import FULL_KEY, PROVIDER_KEY, SCOPED_KEY, Gateway, start_gateway, stop_gateway
from tests.fakes.openai_upstream import FakeOpenAI

USER = [{"role": "user", "content": "hi"}]
AUTH = {"Authorization": f"Bearer {FULL_KEY}"}


def _post(gateway: Gateway, body: Any = None, *, content: bytes | None = None, **kwargs: Any) -> httpx.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    url = gateway.url + kwargs.pop("path", "/v1/chat/completions")
    if content is not None:
        return httpx.post(url, content=content, headers=headers, **kwargs)
    return httpx.post(url, json=body, headers=headers, **kwargs)


def assert_error(resp: httpx.Response, status: int, *, code: str | None = None, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in resp.text
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return dict(error)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b'{"model": "echo", "messages": [', "truncated JSON"),
        (b'{"model": "echo", "messages": [{"role": "user", "content": "\xff\xfe"}]}', "invalid UTF-8"),
        (b'{"model": "echo", "messages": [{"role": "user", "content": "\\ud800"}]}', "lone surrogate"),
        (b"[" * 5000 + b"]" * 5000, "nesting too deep"),
        (b'"just a string"', "not an object"),
        (b"", "empty body"),
    ],
)
def test_unparseable_bodies_are_400(gateway: Gateway, upstream: FakeOpenAI, content: bytes, what: str) -> None:
    assert_error(_post(gateway, content=content, headers={"content-type": "application/json"}), 400)
    assert upstream.recorder.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER}, "model"),
        ({"model": "echo"}, "messages"),
        ({"model": 42, "messages": USER}, "model"),
        ({"model": "echo", "messages": []}, "messages"),
        ({"model": "echo", "messages": "hi"}, "messages"),
        ({"model": "echo", "messages": [{"content": "no role"}]}, "messages"),
        ({"model": "echo", "messages": USER, "max_tokens": -1}, "max_tokens"),
        ({"model": "echo", "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"model": "echo", "messages": USER, "max_tokens": 1.5}, "max_tokens"),
        ({"model": "echo", "messages": USER, "max_tokens": "10"}, "max_tokens"),
        ({"model": "echo", "messages": USER, "max_tokens": True}, "max_tokens"),
        ({"model": "echo", "messages": USER, "n": 10000}, "n"),
        ({"model": "echo", "messages": USER, "temperature": 9}, "temperature"),
        ({"model": "echo", "messages": USER, "stream": "true"}, "stream"),
        ({"model": "echo", "messages": USER, "tools": {"not": "a list"}}, "tools"),
    ],
)
def test_schema_violations_name_the_field(gateway: Gateway, upstream: FakeOpenAI, body: dict, param: str) -> None:
    error = assert_error(_post(gateway, body), 400, param=param)
    assert f"'{param}'" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert upstream.recorder.requests == []


def test_sdk_sees_a_bad_request(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().chat.completions.create(model="echo", messages=[])
    assert caught.value.param == "messages"


def test_completions_and_embeddings_check_their_fields(gateway: Gateway, upstream: FakeOpenAI) -> None:
    assert_error(_post(gateway, {"model": "echo"}, path="/v1/completions"), 400, param="prompt")
    assert_error(_post(gateway, {"model": "embed"}, path="/v1/embeddings"), 400, param="input")
    assert_error(_post(gateway, {"model": "embed", "input": []}, path="/v1/embeddings"), 400, param="input")
    assert upstream.recorder.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer sk-wrong-1234567890"},
    ],
)
def test_missing_or_unknown_key_is_401(gateway: Gateway, upstream: FakeOpenAI, headers: dict[str, str]) -> None:
    resp = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "echo", "messages": USER}, headers=headers)
    assert_error(resp, 401)
    assert httpx.get(gateway.url + "/v1/models", headers=headers).status_code == 401
    assert upstream.recorder.requests == []


def test_sql_injection_as_key_is_a_plain_401(gateway: Gateway) -> None:
    resp = _post(gateway, {"model": "echo", "messages": USER}, headers={"Authorization": "Bearer ' OR 1=1; --"})
    assert_error(resp, 401, code="invalid_api_key")


def test_key_not_allowed_this_alias_is_403(gateway: Gateway, upstream: FakeOpenAI) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        gateway.client(SCOPED_KEY).chat.completions.create(model="other", messages=USER)
    assert upstream.recorder.requests == []


@pytest.mark.parametrize("model", ["gpt-unknown", "../echo", "echo#x", "echo?x=1", "echo%2F..", "echo\x00"])
def test_unknown_alias_is_404_model_not_found(gateway: Gateway, upstream: FakeOpenAI, model: str) -> None:
    assert_error(_post(gateway, {"model": model, "messages": USER}), 404, code="model_not_found", param="model")
    assert upstream.recorder.requests == []


def test_body_over_the_limit_is_413_before_reading(gateway: Gateway, upstream: FakeOpenAI) -> None:
    big = b'{"model": "echo", "messages": [{"role": "user", "content": "' + b"x" * 2_000_000 + b'"}]}'
    assert_error(_post(gateway, content=big, headers={"content-type": "application/json"}), 413)
    assert upstream.recorder.requests == []


def _chunks(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), 65536):
        yield data[i : i + 65536]


def test_chunked_body_over_the_limit_is_413(gateway: Gateway, upstream: FakeOpenAI) -> None:
    big = b'{"model": "echo", "messages": [{"role": "user", "content": "' + b"x" * 2_000_000 + b'"}]}'
    resp = _post(gateway, content=_chunks(big), headers={"content-type": "application/json"})
    assert "content-length" not in resp.request.headers
    assert_error(resp, 413)
    assert upstream.recorder.requests == []


def test_expect_continue_with_oversize_length_is_refused_unread(gateway: Gateway) -> None:
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + FULL_KEY.encode() + b"\r\nContent-Length: 50000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(gateway: Gateway, content_type: str) -> None:
    resp = _post(gateway, content=b'{"model": "echo", "messages": []}', headers={"content-type": content_type})
    assert_error(resp, 415)


def test_wrong_method_and_unknown_path(gateway: Gateway) -> None:
    assert_error(httpx.get(gateway.url + "/v1/chat/completions", headers=AUTH), 405)
    assert_error(httpx.get(gateway.url + "/v2/whatever", headers=AUTH), 404)
    assert_error(httpx.delete(gateway.url + "/v1/models", headers=AUTH), 405)


def test_upstream_429_passes_with_retry_after(gateway: Gateway) -> None:
    resp = _post(gateway, {"model": "fail-429", "messages": USER})
    error = assert_error(resp, 429)
    assert resp.headers["retry-after"] == "2"
    assert error["message"] == "fake failure 429"


def test_upstream_503_keeps_status_and_message(gateway: Gateway) -> None:
    assert assert_error(_post(gateway, {"model": "fail-503", "messages": USER}), 503)["message"] == "fake failure 503"


def test_upstream_400_is_returned_and_not_retried(gateway: Gateway, upstream: FakeOpenAI) -> None:
    assert_error(_post(gateway, {"model": "fail-400-only", "messages": USER}), 400)
    assert [r.body["model"] for r in upstream.recorder.requests] == ["fail-400"]  # max_retries 2, yet one try


def test_fallbacks_apply_to_any_upstream_failure(gateway: Gateway, upstream: FakeOpenAI) -> None:
    assert _post(gateway, {"model": "fail-400", "messages": USER}).json()["model"] == "echo-upstream"
    assert [r.body["model"] for r in upstream.recorder.requests] == ["fail-400", "echo-upstream"]


def test_unreachable_upstream_is_502_without_its_address(gateway: Gateway) -> None:
    resp = _post(gateway, {"model": "dead-only", "messages": USER})
    error = assert_error(resp, 502, code="upstream_unreachable")
    assert "127.0.0.1" not in resp.text and "http" not in error["message"]


def test_upstream_timeout_is_504(gateway: Gateway) -> None:
    assert_error(_post(gateway, {"model": "hang", "messages": USER}), 504, code="upstream_timeout")


def test_upstream_rejecting_the_provider_key_is_502_and_redacted(gateway: Gateway) -> None:
    resp = _post(gateway, {"model": "bad-key", "messages": USER})
    error = assert_error(resp, 502, code="upstream_auth_failed")
    assert "credentials" in error["message"]
    assert PROVIDER_KEY not in resp.text
    assert PROVIDER_KEY[:12] not in resp.text


def test_oversized_upstream_response_is_502(gateway: Gateway) -> None:
    assert_error(_post(gateway, {"model": "huge", "messages": USER}), 502, code="upstream_response_too_large")


def test_gateway_survives_all_of_the_above(gateway: Gateway) -> None:
    assert gateway.process.poll() is None
    assert gateway.client().chat.completions.create(model="echo", messages=USER).choices[0].message.content


def test_unresolvable_upstream_host_is_a_clear_502(tmp_path: Path) -> None:
    config = (
        "providers:\n  nxdomain: {type: openai, base_url: 'http://no-such-host.invalid/v1'}\n"
        "models:\n  m: {routes: [{provider: nxdomain, model: x}]}\n"
        "keys:\n  - {name: k, key: '${TEST_FULL_KEY}'}\n"
    )
    gw = start_gateway(config, tmp_path)
    try:
        resp = httpx.post(gw.url + "/v1/chat/completions", json={"model": "m", "messages": USER}, headers=AUTH)
    finally:
        stop_gateway(gw)
    error = assert_error(resp, 502, code="upstream_unreachable")
    assert error["message"] == "could not connect to upstream: its host name does not resolve"
