"""`/v1/responses`: the openai SDK's Responses API, translated to chat completions for any upstream."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import FULL_KEY, Gateway
from tests.fakes.openai_upstream import FakeOpenAI


def test_response_from_a_chat_upstream(gateway: Gateway, upstream: FakeOpenAI) -> None:
    response = gateway.client().responses.create(
        model="echo", instructions="Be brief.", input="hello responses", max_output_tokens=50
    )
    assert response.status == "completed"
    assert response.output_text == "echo: hello responses"
    assert response.usage is not None and response.usage.output_tokens == 3
    sent = upstream.recorder.requests[0].body
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello responses"},
    ]
    assert sent["max_tokens"] == 50


def test_streamed_response(gateway: Gateway, upstream: FakeOpenAI) -> None:
    with gateway.client().responses.stream(model="echo", input="stream it") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas).split() == ["echo:", "stream", "it"]
    assert final.output_text.split() == ["echo:", "stream", "it"]
    assert final.usage is not None and final.usage.total_tokens == 8


def test_function_tools_and_outputs_are_translated(gateway: Gateway, upstream: FakeOpenAI) -> None:
    gateway.client().responses.create(
        model="echo",
        tools=[{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}}],
        input=[
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
    )
    sent = upstream.recorder.requests[0].body
    assert sent["tools"][0]["function"]["name"] == "weather"
    assert sent["messages"][1]["tool_calls"][0]["id"] == "c1"
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}


def test_stateful_requests_are_refused_clearly(gateway: Gateway, upstream: FakeOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().responses.create(model="echo", input="x", previous_response_id="resp_123")
    assert caught.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        gateway.client().responses.create(model="no-such-alias", input="x")
    stored = httpx.get(gateway.url + "/v1/responses/resp_123", headers={"Authorization": f"Bearer {FULL_KEY}"})
    assert stored.status_code == 404  # nothing is stored, so nothing can be fetched
    assert upstream.recorder.requests == []
