"""Weighted routing and fallbacks end to end, through the openai SDK."""

from __future__ import annotations

from collections import Counter

import openai
import pytest

from tests.conftest import Gateway
from tests.fakes.openai_upstream import FakeOpenAI

USER = [{"role": "user", "content": "route me"}]


def test_weighted_routes_share_the_load(gateway: Gateway, upstream: FakeOpenAI) -> None:
    client = gateway.client()
    n = 600
    answered = Counter(client.chat.completions.create(model="weighted", messages=USER).model for _ in range(n))
    assert set(answered) == {"w-heavy", "w-light"}
    share = answered["w-heavy"] / n
    # Weights 3:1 -> p = 0.75; the standard deviation over 600 draws is 0.018, so this band is about 5 sigma.
    assert 0.66 < share < 0.84, answered


@pytest.mark.parametrize(
    ("alias", "tried"),
    [
        ("fail-500", ["fail-500", "echo-upstream"]),  # upstream 5xx
        ("dead", ["echo-upstream"]),  # connection refused: the dead upstream never saw a request
        ("timeout-fb", ["hang", "echo-upstream"]),  # first-byte timeout
        ("reset", ["reset", "other-upstream"]),  # connection closed without an answer
    ],
)
def test_fallback_on_upstream_failure(gateway: Gateway, upstream: FakeOpenAI, alias: str, tried: list[str]) -> None:
    reply = gateway.client().chat.completions.create(model=alias, messages=USER)
    assert reply.model == tried[-1]
    assert [r.body["model"] for r in upstream.recorder.requests] == tried


def test_fallback_chain_never_loops(gateway: Gateway, upstream: FakeOpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        gateway.client().chat.completions.create(model="loop-a", messages=USER)
    assert caught.value.status_code == 502
    assert [r.body["model"] for r in upstream.recorder.requests] == ["fail-502", "fail-500"]


def test_access_log_records_the_attempts(gateway: Gateway, upstream: FakeOpenAI) -> None:
    response = gateway.client().chat.completions.with_raw_response.create(model="fail-500", messages=USER)
    request_id = response.headers["x-request-id"]
    lines = gateway.access_lines(request_id)
    access = [line for line in lines if "path" in line]
    attempts = [line for line in lines if "attempt" in line]
    assert len(access) == 1
    assert access[0]["attempts"] == 2
    assert access[0]["route"] == "fake/echo-upstream"
    assert access[0]["status"] == 200
    assert attempts == [
        {
            "request_id": request_id,
            "attempt": 1,
            "route": "fake/fail-500",
            "error": "fake_code",
            "status": 500,
            "message": "fake failure 500",
        }
    ]
