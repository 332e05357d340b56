"""`/v1/messages`: apps on the official anthropic SDK reach any alias (here, a fake OpenAI upstream)."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.conftest import FULL_KEY, SCOPED_KEY, Gateway
from tests.fakes.openai_upstream import FakeOpenAI


def client(gateway: Gateway, key: str = FULL_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)


def test_message_through_an_openai_upstream(gateway: Gateway, upstream: FakeOpenAI) -> None:
    message = client(gateway).messages.create(
        model="echo",
        max_tokens=64,
        system="Be brief.",
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
        ],
        stop_sequences=["END"],
        extra_body={"temperature": 0.2},
    )
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 3)
    sent = upstream.recorder.requests[0].body
    assert sent["model"] == "echo-upstream"
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert (sent["max_tokens"], sent["temperature"], sent["stop"]) == (64, 0.2, ["END"])


def test_streamed_message(gateway: Gateway, upstream: FakeOpenAI) -> None:
    with client(gateway).messages.stream(
        model="echo", max_tokens=64, messages=[{"role": "user", "content": "stream this"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.split() == ["echo:", "stream", "this"]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3  # the gateway asked upstream for usage on the client's behalf
    assert upstream.recorder.requests[0].body["stream_options"] == {"include_usage": True}


def test_tools_are_translated_for_the_upstream(gateway: Gateway, upstream: FakeOpenAI) -> None:
    client(gateway).messages.create(
        model="echo",
        max_tokens=64,
        tools=[{"name": "weather", "description": "Weather", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "any"},
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "weather", "input": {"c": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
        ],
    )
    sent = upstream.recorder.requests[0].body
    assert sent["tools"][0]["function"]["name"] == "weather"
    assert sent["tool_choice"] == "required"
    assert sent["messages"][1]["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"c":1}'}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": "sunny"}


def test_reasoning_comes_back_as_a_thinking_block(gateway: Gateway, upstream: FakeOpenAI) -> None:
    message = client(gateway).messages.create(
        model="think-split", max_tokens=64, messages=[{"role": "user", "content": "think"}]
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[1].text == "The answer is 42 <not a tag>."


def test_errors_have_anthropics_shape(gateway: Gateway, upstream: FakeOpenAI) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client(gateway).messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.PermissionDeniedError):
        client(gateway, SCOPED_KEY).messages.create(
            model="other", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.AuthenticationError):
        client(gateway, "sk-wrong-key-000000000").messages.create(
            model="echo", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    raw = httpx.post(
        gateway.url + "/v1/messages", json={"model": "echo", "messages": []}, headers={"x-api-key": FULL_KEY}
    )
    assert raw.status_code == 400
    assert raw.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "missing required parameter: 'max_tokens'"},
    }
    assert upstream.recorder.requests == []


def test_upstream_failure_mid_stream_is_an_error_event(gateway: Gateway, upstream: FakeOpenAI) -> None:
    with (
        pytest.raises(anthropic.APIError),
        client(gateway).messages.stream(
            model="drop", max_tokens=64, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        "".join(stream.text_stream)
    body = {"model": "drop", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with httpx.stream("POST", gateway.url + "/v1/messages", json=body, headers={"x-api-key": FULL_KEY}) as resp:
        text = resp.read().decode()
    assert text.startswith("event: message_start")
    assert text.rstrip().endswith('"message":"upstream connection broke off in the middle of the response"}}')
    assert "event: error" in text and "message_stop" not in text
