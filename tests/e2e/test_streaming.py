"""Streaming end to end: SSE relayed as it arrives, clean endings, in-band errors, disconnects, concurrency."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.conftest import FULL_KEY, Gateway
from tests.fakes.openai_upstream import FakeOpenAI

USER = [{"role": "user", "content": "stream me please"}]
AUTH = {"Authorization": f"Bearer {FULL_KEY}"}


def _events(gateway: Gateway, model: str) -> tuple[httpx.Response, list[str]]:
    body = {"model": model, "messages": USER, "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10) as resp:
        lines = [line for line in resp.iter_lines() if line]
    return resp, lines


def test_stream_with_the_sdk(gateway: Gateway, upstream: FakeOpenAI) -> None:
    chunks = list(gateway.client().chat.completions.create(model="echo", messages=USER, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == ["echo:", "stream", "me", "please"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert upstream.recorder.requests[0].body["stream"] is True


def test_stream_framing_and_done(gateway: Gateway, upstream: FakeOpenAI) -> None:
    resp, lines = _events(gateway, "echo")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert lines.count("data: [DONE]") == 1


def test_stream_usage_chunk_passes_when_asked(gateway: Gateway, upstream: FakeOpenAI) -> None:
    chunks = list(
        gateway.client().chat.completions.create(
            model="echo", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 8


def test_chunks_arrive_before_the_upstream_finishes(gateway: Gateway, upstream: FakeOpenAI) -> None:
    stream = gateway.client().chat.completions.create(model="stream-long", messages=USER, stream=True)
    seen = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen += 1
        if seen == 3:
            break
    # Three chunks of a 400-chunk, two-second upstream stream reached us: nothing was buffered.
    assert upstream.recorder.finished_streams == []
    stream.close()
    assert upstream.recorder.wait_disconnects(1, timeout=1.0)


def test_client_disconnect_cancels_the_upstream_stream(gateway: Gateway, upstream: FakeOpenAI) -> None:
    body = {"model": "stream-long", "messages": USER, "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, headers=AUTH) as resp:
        lines = resp.iter_lines()
        assert next(lines).startswith("data: ")
    # Leaving the block closed the connection: the upstream must see its client go within a second.
    assert upstream.recorder.wait_disconnects(1, timeout=1.0)
    assert upstream.recorder.disconnects == ["stream-long"]
    assert upstream.recorder.finished_streams == []


def test_client_disconnect_before_first_byte_cancels_the_upstream(gateway: Gateway, upstream: FakeOpenAI) -> None:
    body = {"model": "hang-long", "messages": USER}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=httpx.Timeout(5, read=0.3))
    assert upstream.recorder.wait_disconnects(1, timeout=1.0)
    assert upstream.recorder.disconnects == ["hang"]


def test_upstream_dropping_mid_stream_ends_with_an_error_event(gateway: Gateway, upstream: FakeOpenAI) -> None:
    resp, lines = _events(gateway, "drop")
    assert resp.status_code == 200
    assert lines[-1] == "data: [DONE]"
    error = lines[-2]
    assert error.startswith('data: {"error":')
    assert "upstream_stream_error" in error
    assert '"partial ' in "".join(lines)  # what arrived before the break was relayed
    with pytest.raises(openai.APIError, match="broke off"):
        list(gateway.client().chat.completions.create(model="drop", messages=USER, stream=True))


def test_in_band_upstream_error_is_surfaced(gateway: Gateway, upstream: FakeOpenAI) -> None:
    _resp, lines = _events(gateway, "error-in-stream")
    assert lines[-2].startswith('data: {"error"')
    assert lines[-1] == "data: [DONE]"
    with pytest.raises(openai.APIError, match="overloaded mid-stream"):
        list(gateway.client().chat.completions.create(model="error-in-stream", messages=USER, stream=True))


@pytest.mark.parametrize(("alias", "code"), [("stall", "upstream_timeout"), ("huge-event", "upstream_stream_error")])
def test_stalled_or_oversized_stream_ends_with_an_error_and_closes_upstream(
    gateway: Gateway, upstream: FakeOpenAI, alias: str, code: str
) -> None:
    _, lines = _events(gateway, alias)
    assert lines[-1] == "data: [DONE]"
    assert lines[-2].startswith('data: {"error"') and code in lines[-2]
    assert upstream.recorder.wait_disconnects(1, timeout=1.0)  # the upstream socket was closed


def test_clean_upstream_end_without_done_still_ends_properly(gateway: Gateway, upstream: FakeOpenAI) -> None:
    _, lines = _events(gateway, "no-done")
    assert lines[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in lines)


def test_stream_falls_back_before_the_first_byte(gateway: Gateway, upstream: FakeOpenAI) -> None:
    chunks = list(gateway.client().chat.completions.create(model="fail-500", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("echo:")
    assert [r.body["model"] for r in upstream.recorder.requests] == ["fail-500", "echo-upstream"]


def test_stream_error_before_first_byte_is_a_plain_error_response(gateway: Gateway, upstream: FakeOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        list(gateway.client().chat.completions.create(model="fail-429", messages=USER, stream=True))
    assert caught.value.response.headers["retry-after"] == "2"


async def test_fifty_concurrent_streams(gateway: Gateway, upstream: FakeOpenAI) -> None:
    client = gateway.async_client()

    async def one(i: int) -> str:
        stream = await client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": f"number {i}"}], stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    texts = await asyncio.gather(*(one(i) for i in range(50)))
    await client.close()
    assert [t.split() for t in texts] == [["echo:", "number", str(i)] for i in range(50)]
