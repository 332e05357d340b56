"""The anthropic stream translator on recorded-style event streams (shaped like Anthropic's documented examples)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletionChunk

from gateway.protocol.sse import SSEDecoder
from plugins.providers.anthropic.stream import StreamTranslator, stream_error

TEXT_STREAM = b"""event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", \
"role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, \
"usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, \
"usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"""

TOOL_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant",\
"model":"claude-opus-4-6","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],\
"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, checking."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use",\
"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \\"San Fran"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"cisco\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use",\
"id":"toolu_01BBB","name":"get_time","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"tz\\":\\"PST\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""

THINKING_STREAM = b"""event: message_start
data: {"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant", "content": [], \
"model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 40, \
"cache_read_input_tokens": 300, "cache_creation_input_tokens": 60, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", \
"signature": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": \
"GCD of 1071 and 462"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": " is 21."}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbc"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: content_block_start
data: {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "The GCD is **21**."}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 1}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, \
"usage": {"output_tokens": 120}}

event: message_stop
data: {"type": "message_stop"}

"""


def run(raw: bytes, *, include_usage: bool = False, split: int = 37) -> tuple[list[dict[str, Any]], StreamTranslator]:
    """Decode the SSE bytes (fed in odd-sized pieces) and translate every event."""
    decoder = SSEDecoder()
    events: list[bytes] = []
    for i in range(0, len(raw), split):
        events.extend(decoder.feed(raw[i : i + split]))
    events.extend(decoder.close())
    translator = StreamTranslator("requested-model", 1_700_000_000, include_usage)
    chunks = [chunk for data in events for chunk in translator.feed(orjson.loads(data))]
    for chunk in chunks:
        if "error" not in chunk:
            ChatCompletionChunk.model_validate(chunk)
    return chunks, translator


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c.get("choices")]


def test_text_stream() -> None:
    chunks, translator = run(TEXT_STREAM)
    assert deltas(chunks)[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas(chunks)) == "Hello!"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert {c["id"] for c in chunks} == {"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}
    assert {c["model"] for c in chunks} == {"claude-opus-4-6"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert translator.finished and not translator.failed


def test_no_usage_chunk_unless_asked() -> None:
    chunks, _ = run(TEXT_STREAM)
    assert all("usage" not in c for c in chunks)


def test_usage_chunk_when_asked() -> None:
    chunks, _ = run(TEXT_STREAM, include_usage=True)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 25,
        "completion_tokens": 15,
        "total_tokens": 40,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_tool_use_stream_becomes_tool_call_deltas() -> None:
    chunks, _ = run(TOOL_STREAM)
    tool_deltas = [d["tool_calls"][0] for d in deltas(chunks) if "tool_calls" in d]
    first, second = tool_deltas[0], tool_deltas[4]
    assert first == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert second["index"] == 1 and second["id"] == "toolu_01BBB" and second["function"]["name"] == "get_time"
    arguments: dict[int, str] = {}
    for delta in tool_deltas:
        arguments[delta["index"]] = arguments.get(delta["index"], "") + delta["function"]["arguments"]
    assert orjson.loads(arguments[0]) == {"location": "San Francisco"}
    assert orjson.loads(arguments[1]) == {"tz": "PST"}
    assert all("id" not in d for d in tool_deltas if d["function"].get("arguments"))  # later deltas carry only args
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert "".join(d.get("content") or "" for d in deltas(chunks)) == "Okay, checking."


def test_empty_partial_json_sends_nothing() -> None:
    translator = StreamTranslator("m", 0)
    translator.feed(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f"}}
    )
    assert (
        translator.feed(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}}
        )
        == []
    )


def test_thinking_stream_becomes_reasoning_content_with_cached_usage() -> None:
    chunks, _ = run(THINKING_STREAM, include_usage=True)
    assert "".join(d.get("reasoning_content", "") for d in deltas(chunks)) == "GCD of 1071 and 462 is 21."
    assert "".join(d.get("content") or "" for d in deltas(chunks)) == "The GCD is **21**."
    assert not any("signature" in str(d) for d in deltas(chunks))
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] == 400
    assert usage["prompt_tokens_details"] == {"cached_tokens": 300}
    assert usage["completion_tokens"] == 120


def test_cumulative_usage_in_message_delta_replaces_the_start_values() -> None:
    translator = StreamTranslator("m", 0, include_usage=True)
    translator.feed(
        {"type": "message_start", "message": {"id": "x", "usage": {"input_tokens": 10, "output_tokens": 1}}}
    )
    translator.feed(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens"},
            "usage": {"input_tokens": 12, "output_tokens": 30},
        }
    )
    usage = translator.feed({"type": "message_stop"})[0]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (12, 30)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reason_in_message_delta(stop_reason: str, finish: str) -> None:
    translator = StreamTranslator("m", 0)
    chunk = translator.feed(
        {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 1}}
    )
    assert chunk[0]["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize(
    "event", [{"type": "ping"}, {"type": "content_block_stop", "index": 0}, {"type": "new_event_kind"}]
)
def test_events_without_content_send_nothing(event: dict[str, Any]) -> None:
    translator = StreamTranslator("m", 0)
    assert translator.feed(event) == []
    assert not translator.finished


def test_in_band_error_becomes_an_error_payload() -> None:
    translator = StreamTranslator("m", 0, secrets=("sk-ant-secret-value-123456",))
    translator.feed({"type": "message_start", "message": {"id": "x", "usage": {"input_tokens": 1, "output_tokens": 1}}})
    event = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded sk-ant-secret-value-123456"}}
    (payload,) = translator.feed(event)
    assert list(payload) == ["error"]  # the relay recognises in-band errors by this leading key
    assert orjson.dumps(payload).startswith(b'{"error"')
    assert payload["error"]["message"] == "Overloaded ***"
    assert payload["error"]["code"] == "overloaded_error"
    assert translator.finished and translator.failed


def test_stream_error_helper_maps_the_type() -> None:
    exc = stream_error({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert (exc.status, exc.retryable) == (503, True)
    assert stream_error({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}).status == 429
