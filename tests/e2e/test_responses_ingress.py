"""`/v1/responses`: the openai SDK's Responses API, translated to chat completions for any upstream."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import FULL_KEY, PROVIDER_KEY, SCOPED_KEY, Gateway
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


# --- upstreams that serve the Responses API themselves: passed through, stored responses reachable ---------------
def test_native_upstream_gets_the_request_as_sent(gateway: Gateway, upstream: FakeOpenAI) -> None:
    response = gateway.client().responses.create(
        model="native", instructions="Be brief.", input="hello native", max_output_tokens=50
    )
    assert response.id.startswith("resp_fake")
    assert response.output_text == "echo: hello native"
    assert response.usage is not None and response.usage.output_tokens == 3
    sent = upstream.recorder.requests[0]
    assert sent.path == "/v1/responses"
    assert sent.body == {
        "model": "resp-upstream",
        "instructions": "Be brief.",
        "input": "hello native",
        "max_output_tokens": 50,
    }
    assert sent.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"


def test_native_stream_keeps_the_upstream_events(gateway: Gateway, upstream: FakeOpenAI) -> None:
    with gateway.client().responses.stream(model="native", input="stream natively") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 3
    assert final.output_text.strip() == "echo: stream natively"
    raw = httpx.post(
        gateway.url + "/v1/responses",
        headers={"Authorization": f"Bearer {FULL_KEY}"},
        json={"model": "native", "input": "raw", "stream": True},
    )
    assert raw.text.startswith("event: response.created\ndata: {")
    assert "[DONE]" not in raw.text


def test_stored_response_can_be_continued_fetched_and_deleted(gateway: Gateway, upstream: FakeOpenAI) -> None:
    client = gateway.client()
    first = client.responses.create(model="native", input="first turn")
    second = client.responses.create(model="native", input="second turn", previous_response_id=first.id)
    assert second.output_text == f"echo: second turn (after {first.id})"
    assert client.responses.retrieve(first.id).output_text == "echo: first turn"
    items = client.responses.input_items.list(second.id, order="asc", limit=10)
    assert [item.content[0].text for item in items.data] == ["second turn"]
    assert upstream.recorder.requests[-1].path == f"/v1/responses/{second.id}/input_items?limit=10&order=asc"
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_streamed_response_is_stored_too(gateway: Gateway, upstream: FakeOpenAI) -> None:
    with gateway.client().responses.stream(model="native", input="kept") as stream:
        final = stream.get_final_response()
    assert gateway.client().responses.retrieve(final.id).output_text == "echo: kept"


def test_another_keys_response_is_not_found(gateway: Gateway, upstream: FakeOpenAI) -> None:
    mine = gateway.client().responses.create(model="native", input="private")
    theirs = gateway.client(SCOPED_KEY)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.delete(mine.id)
    with pytest.raises(openai.BadRequestError) as caught:
        theirs.responses.create(model="native", input="x", previous_response_id=mine.id)
    assert caught.value.param == "previous_response_id"
    requests_after_create = [r for r in upstream.recorder.requests if r.path != "/v1/responses"]
    assert requests_after_create == []  # nothing about another key's response reached the upstream


def test_ids_the_gateway_never_made_are_not_forwarded(gateway: Gateway, upstream: FakeOpenAI) -> None:
    headers = {"Authorization": f"Bearer {FULL_KEY}"}
    for rid in ("resp_unknown", "..%2F..%2Fmodels", "resp_x%3Fa%3Db"):
        got = httpx.get(f"{gateway.url}/v1/responses/{rid}", headers=headers)
        assert got.status_code == 404
        assert got.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        gateway.client().responses.create(model="native", input="x", previous_response_id="resp_unknown")
    assert upstream.recorder.requests == []
    assert httpx.get(f"{gateway.url}/v1/responses/resp_unknown").status_code == 401


def test_an_alias_with_a_chat_only_fallback_is_translated(gateway: Gateway, upstream: FakeOpenAI) -> None:
    response = gateway.client().responses.create(model="native-then-chat", input="mixed")
    assert response.output_text == "echo: mixed"
    assert upstream.recorder.requests[0].path == "/v1/chat/completions"
