"""One structured log line per request, and no secret anywhere in the gateway's output."""

from __future__ import annotations

import contextlib

import httpx
import openai
import pytest

from tests.conftest import FULL_KEY, PROVIDER_KEY, SCOPED_KEY, Gateway
from tests.fakes.openai_upstream import FakeOpenAI

USER = [{"role": "user", "content": "log me"}]
WRONG_KEY = "sk-canary-wrong-client-key-5555555555"


def test_one_structured_line_per_request(gateway: Gateway, upstream: FakeOpenAI) -> None:
    response = gateway.client().chat.completions.with_raw_response.create(model="echo", messages=USER, stream=False)
    request_id = response.headers["x-request-id"]
    [line] = [entry for entry in gateway.access_lines(request_id) if "path" in entry]
    assert line["method"] == "POST"
    assert line["path"] == "/v1/chat/completions"
    assert line["status"] == 200
    assert line["key"] == "full-key"
    assert line["alias"] == "echo"
    assert line["route"] == "fake/echo-upstream"
    assert line["attempts"] == 1
    assert line["stream"] is False
    assert line["latency_ms"] >= line["ttfb_ms"] > 0


def test_stream_lines_have_time_to_first_byte(gateway: Gateway, upstream: FakeOpenAI) -> None:
    response = gateway.client().chat.completions.with_raw_response.create(model="echo", messages=USER, stream=True)
    list(response.parse())
    [line] = [e for e in gateway.access_lines(response.headers["x-request-id"]) if "path" in e]
    assert line["stream"] is True
    assert line["ttfb_ms"] is not None
    assert line["status"] == 200


def test_secrets_never_reach_the_log(gateway: Gateway, upstream: FakeOpenAI) -> None:
    client = gateway.client()
    # Provoke every path that might be tempted to log a key: upstream echoing the provider key,
    # unknown client keys on every header channel, a forbidden alias, upstream failures, a bad body.
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="bad-key-logs", messages=USER)
    for header in ("Authorization", "x-api-key", "api-key"):
        value = f"Bearer {WRONG_KEY}" if header == "Authorization" else WRONG_KEY
        httpx.post(
            gateway.url + "/v1/chat/completions", json={"model": "echo", "messages": USER}, headers={header: value}
        )
    with pytest.raises(openai.PermissionDeniedError):
        gateway.client(SCOPED_KEY).chat.completions.create(model="other", messages=USER)
    for model in ("fail-500", "dead-only", "drop"):
        with contextlib.suppress(openai.APIError):
            list(client.chat.completions.create(model=model, messages=USER, stream=True))
    last = httpx.post(
        gateway.url + "/v1/chat/completions", content=b"{bad", headers={"Authorization": f"Bearer {FULL_KEY}"}
    )
    gateway.access_lines(last.headers["x-request-id"])  # every request above has been logged by now
    log = gateway.log_text()
    assert "full-key" in log and "scoped-key" in log  # key *names* are logged, so the log is the right one
    for secret in (PROVIDER_KEY, FULL_KEY, SCOPED_KEY, WRONG_KEY):
        assert secret not in log
        assert secret[-16:] not in log
