"""The Responses API ingress: Responses requests -> chat requests, chat answers and chunks -> Responses objects and
events. Every answer is checked against the openai SDK's Response types, and streams are fed to the SDK's own
stream machinery."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseCreateParams, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.errors import InvalidRequest, RateLimited, UpstreamError
from gateway.protocol.openai import CHAT, validate
from gateway.protocol.responses import StreamEncoder, to_openai, to_response

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
REQUESTS: TypeAdapter[Any] = TypeAdapter(ResponseCreateParams)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
PNG = "data:image/png;base64," + (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def translate(body: dict[str, Any]) -> dict[str, Any]:
    """Translate a request the real API would accept; insist the result passes the gateway's chat checks."""
    body = {"model": "fast", **body}
    REQUESTS.validate_python(body)
    out = to_openai(body)
    validate(out, CHAT)
    return out


def completion(message: dict[str, Any], finish: str = "stop", **usage: Any) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion",
            "created": 1741569952,
            "model": "gpt-4.1-2025-04-14",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": 19,
                "completion_tokens": 10,
                "total_tokens": 29,
                "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0},
                **usage,
            },
        }
    )


def answer(payload: bytes, request: dict[str, Any] | None = None) -> Response:
    return Response.model_validate(orjson.loads(to_response(payload, request or {"model": "fast", "input": "hi"})))


# --- requests -----------------------------------------------------------------------------------------------------


def test_string_input_instructions_and_sampling() -> None:
    out = translate(
        {"input": "hello", "instructions": "Be terse.", "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9}
    )
    assert out == {
        "model": "fast",
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello"}],
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
    }


def test_a_whole_conversation_of_items() -> None:
    items = [
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Weather here and in Oslo?"},
                {"type": "input_image", "image_url": PNG, "detail": "low"},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "4C"}]},
    ]
    messages = translate({"input": items})["messages"]
    call = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}, "id": "call_a"}
    assert messages == [
        {"role": "developer", "content": "Answer in French."},
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather here and in Oslo?"},
                {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": call["function"]},
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "4C"},
    ]


def test_function_call_without_a_preceding_assistant_message_opens_one() -> None:
    items = [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
    ]
    assert translate({"input": items})["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_image", "file_id": "file-abc"},
        {"type": "input_file", "file_id": "file-abc"},
        {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
    ],
)
def test_unsupported_parts_are_refused_with_param(part: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_openai({"model": "m", "input": [{"role": "user", "content": [part]}]})
    assert caught.value.param == "input"


def test_images_outside_user_messages_are_refused() -> None:
    content = [{"type": "input_image", "image_url": PNG}]
    with pytest.raises(InvalidRequest, match="text only"):
        to_openai({"model": "m", "input": [{"role": "system", "content": content}]})


@pytest.mark.parametrize("item", [{"type": "item_reference", "id": "msg_1"}, {"role": "tool", "content": "x"}, "hi"])
def test_unsupported_items_are_refused(item: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_openai({"model": "m", "input": [item]})
    assert caught.value.param == "input"


def test_function_tools_and_tool_choice() -> None:
    out = translate({"input": "hi", "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False})
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": WEATHER["parameters"],
                "strict": True,
            },
        }
    ]
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    assert translate({"input": "hi", "tools": [WEATHER], "tool_choice": choice})["tool_choice"] == expected


def test_non_function_tools_are_refused_by_name() -> None:
    with pytest.raises(InvalidRequest, match="web_search") as caught:
        to_openai({"model": "m", "input": "hi", "tools": [WEATHER, {"type": "web_search"}]})
    assert caught.value.param == "tools"


def test_non_function_tool_choice_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_openai({"model": "m", "input": "hi", "tool_choice": {"type": "file_search"}})
    assert caught.value.param == "tool_choice"


def test_text_format_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}
    out = translate({"input": "hi", "text": {"format": fmt, "verbosity": "low"}})
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    assert out["verbosity"] == "low"
    assert translate({"input": "hi", "text": {"format": {"type": "json_object"}}})["response_format"] == {
        "type": "json_object"
    }
    assert "response_format" not in translate({"input": "hi", "text": {"format": {"type": "text"}}})


def test_reasoning_user_and_stream() -> None:
    out = translate(
        {"input": "hi", "reasoning": {"effort": "high", "summary": "auto"}, "safety_identifier": "u-1", "stream": True}
    )
    assert out["reasoning_effort"] == "high"
    assert out["user"] == "u-1"
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert translate({"input": "hi", "user": "u-2"})["user"] == "u-2"


def test_store_is_accepted_and_ignored() -> None:
    assert "store" not in translate({"input": "hi", "store": True})


@pytest.mark.parametrize(
    ("name", "value"),
    [("previous_response_id", "resp_123"), ("conversation", "conv_1"), ("background", True), ("prompt", {"id": "p"})],
)
def test_stateful_features_are_refused(name: str, value: Any) -> None:
    with pytest.raises(InvalidRequest, match="send the whole input") as caught:
        to_openai({"model": "m", "input": "hi", name: value})
    assert caught.value.param == name


@pytest.mark.parametrize("missing", ["model", "input"])
def test_missing_required_parameters(missing: str) -> None:
    body = {"model": "m", "input": "hi"}
    del body[missing]
    with pytest.raises(InvalidRequest) as caught:
        to_openai(body)
    assert (caught.value.param, caught.value.code) == (missing, "missing_required_parameter")


# --- answers ------------------------------------------------------------------------------------------------------


def test_text_answer() -> None:
    request = {"model": "fast", "input": "hi", "tools": [WEATHER], "temperature": 0.5, "instructions": "Be terse."}
    response = answer(completion({"content": "Hello there!"}), request)
    assert response.id == "resp_B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    assert (response.object, response.status, response.model) == ("response", "completed", "gpt-4.1-2025-04-14")
    assert response.output_text == "Hello there!"
    assert response.output[0].type == "message" and response.output[0].id.startswith("msg_")
    assert response.temperature == 0.5 and response.instructions == "Be terse."
    assert response.tools[0].type == "function" and response.tools[0].name == "get_weather"
    assert response.usage is not None
    assert response.usage.model_dump() == {
        "input_tokens": 19,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0, "cache_write_tokens_details": None},
        "output_tokens": 10,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 29,
    }


def test_tool_call_answer() -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
    ]
    response = answer(completion({"content": None, "tool_calls": calls}, "tool_calls"))
    assert response.status == "completed"
    assert [(o.type, getattr(o, "call_id", None)) for o in response.output] == [
        ("function_call", "call_a"),
        ("function_call", "call_b"),
    ]
    assert response.output[1].type == "function_call" and response.output[1].arguments == '{"city":"Oslo"}'
    assert response.output[0].id != response.output[1].id
    assert response.output_text == ""


def test_reasoning_comes_first() -> None:
    response = answer(completion({"content": "42", "reasoning_content": "6 times 7"}))
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == "6 times 7" and reasoning.summary == []
    assert response.output_text == "42"


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_truncated_answers_are_incomplete(finish: str, reason: str) -> None:
    response = answer(completion({"content": "Once upon"}, finish))
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == reason


def test_refusal_answer() -> None:
    response = answer(completion({"content": None, "refusal": "I can't help with that."}))
    message = response.output[0]
    assert message.type == "message" and message.content[0].type == "refusal"


def sdk_client(handler: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url="http://gw/v1", http_client=httpx.Client(transport=handler))


def test_the_sdk_reads_the_answer() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        to_openai(body)
        return httpx.Response(200, content=to_response(completion({"content": "Bonjour"}), body))

    response = sdk_client(httpx.MockTransport(handle)).responses.create(model="fast", input="hi")
    assert response.output_text == "Bonjour"


# --- streams ------------------------------------------------------------------------------------------------------
def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return orjson.dumps(
        {
            "id": "chatcmpl-stream1",
            "object": "chat.completion.chunk",
            "created": 1741569952,
            "model": "gpt-4.1-2025-04-14",
            "choices": choices,
            **extra,
        }
    )


USAGE = chunk(
    None,
    usage={
        "prompt_tokens": 30,
        "completion_tokens": 12,
        "total_tokens": 42,
        "completion_tokens_details": {"reasoning_tokens": 5},
    },
)
TEXT = [
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"content": "Hello"}),
    chunk({"content": " world"}),
    chunk({}, "stop"),
    USAGE,
]


def tool_delta(index: int, arguments: str, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if name:
        call = {"index": index, "id": f"call_{name}{index}", "type": "function", "function": {"name": name, **call}}
        call["function"]["arguments"] = arguments
    return {"tool_calls": [call]}


TOOLS = [
    chunk({"role": "assistant", "content": None}),
    chunk(tool_delta(0, "", "get_weather")),
    chunk(tool_delta(0, '{"city":')),
    chunk(tool_delta(0, '"Paris"}')),
    chunk(tool_delta(1, "", "get_weather")),
    chunk(tool_delta(1, '{"city":')),
    chunk(tool_delta(1, '"Oslo"}')),
    chunk({}, "tool_calls"),
    USAGE,
]
REASONING = [
    chunk({"role": "assistant", "content": "", "reasoning_content": "Six"}),
    chunk({"reasoning_content": " times seven."}),
    chunk({"content": "42"}),
    chunk({}, "stop"),
    USAGE,
]


def encode(chunks: list[bytes], request: dict[str, Any] | None = None) -> bytes:
    encoder = StreamEncoder(request or {"model": "fast", "input": "hi"})
    return b"".join(encoder.chunk(c) for c in chunks) + encoder.end()


def parse(stream: bytes) -> Iterator[dict[str, Any]]:
    """Each event, checked: its `event:` names its type and the SDK's event union accepts it."""
    for block in stream.split(b"\n\n"):
        if not block:
            continue
        name, data = block.split(b"\n")
        event = orjson.loads(data.removeprefix(b"data: "))
        assert name == b"event: " + event["type"].encode()
        EVENTS.validate_python(event)
        yield event


def events(chunks: list[bytes]) -> list[dict[str, Any]]:
    out = list(parse(encode(chunks)))
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def test_text_stream_events() -> None:
    out = events(TEXT)
    assert [e["type"] for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "".join(e["delta"] for e in out if e["type"] == "response.output_text.delta") == "Hello world"
    final = Response.model_validate(out[-1]["response"])
    assert final.output_text == "Hello world" and final.status == "completed"
    assert final.usage is not None and final.usage.total_tokens == 42
    assert final.usage.output_tokens_details.reasoning_tokens == 5
    assert final.id == out[0]["response"]["id"] == "resp_stream1"


def test_parallel_tool_call_stream() -> None:
    out = events(TOOLS)
    added = [e["item"] for e in out if e["type"] == "response.output_item.added"]
    assert [(i["type"], i["call_id"], i["name"]) for i in added] == [
        ("function_call", "call_get_weather0", "get_weather"),
        ("function_call", "call_get_weather1", "get_weather"),
    ]
    done = [e for e in out if e["type"] == "response.function_call_arguments.done"]
    assert [(e["output_index"], e["arguments"]) for e in done] == [(0, '{"city":"Paris"}'), (1, '{"city":"Oslo"}')]
    final = Response.model_validate(out[-1]["response"])
    assert [o.type for o in final.output] == ["function_call", "function_call"]


def test_interleaved_tool_call_arguments_land_on_their_own_item() -> None:
    chunks = [
        chunk(tool_delta(0, '{"a":', "f")),
        chunk(tool_delta(1, '{"b":', "g")),
        chunk(tool_delta(0, "1}")),
        chunk(tool_delta(1, "2}")),
        chunk({}, "tool_calls"),
    ]
    final = Response.model_validate(events(chunks)[-1]["response"])
    assert [getattr(o, "arguments", None) for o in final.output] == ['{"a":1}', '{"b":2}']


def test_reasoning_stream() -> None:
    out = events(REASONING)
    kinds = [e["type"] for e in out]
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    deltas = [e["delta"] for e in out if e["type"] == "response.reasoning_text.delta"]
    assert "".join(deltas) == "Six times seven."
    final = Response.model_validate(out[-1]["response"])
    assert [o.type for o in final.output] == ["reasoning", "message"]
    assert final.output_text == "42"


def test_truncated_stream_ends_incomplete() -> None:
    out = events([chunk({"content": "Once upon"}), chunk({}, "length"), USAGE])
    assert out[-1]["type"] == "response.incomplete"
    final = Response.model_validate(out[-1]["response"])
    assert final.incomplete_details is not None and final.incomplete_details.reason == "max_output_tokens"


def test_empty_stream_still_completes() -> None:
    out = list(parse(StreamEncoder().end()))
    assert [e["type"] for e in out] == ["response.created", "response.in_progress", "response.completed"]


@pytest.mark.parametrize(
    ("exc", "code"),
    [(UpstreamError("upstream failed"), "server_error"), (RateLimited("slow down"), "rate_limit_exceeded")],
)
def test_stream_error_then_failed(exc: Any, code: str) -> None:
    encoder = StreamEncoder({"model": "fast", "input": "hi"})
    stream = encoder.chunk(TEXT[1]) + encoder.error(exc)
    out = list(parse(stream))
    assert [e["type"] for e in out[-2:]] == ["error", "response.failed"]
    assert out[-2]["message"] == exc.message
    failed = Response.model_validate(out[-1]["response"])
    assert failed.status == "failed" and failed.error is not None and failed.error.code == code


def test_error_before_any_chunk_still_starts_the_response() -> None:
    out = list(parse(StreamEncoder().error(UpstreamError("no route"))))
    assert [e["type"] for e in out] == ["response.created", "response.in_progress", "error", "response.failed"]


def stream_client(chunks: list[bytes]) -> openai.OpenAI:
    def handle(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        assert to_openai(body)["stream"] is True
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, content=encode(chunks, body))

    return sdk_client(httpx.MockTransport(handle))


def test_the_sdk_stream_helper_accumulates_text_and_reasoning() -> None:
    with stream_client(REASONING).responses.stream(model="fast", input="hi") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert texts == ["42"]
    assert final.output_text == "42"
    assert [o.type for o in final.output] == ["reasoning", "message"]


def test_the_sdk_stream_helper_accumulates_parallel_tool_calls() -> None:
    client = stream_client(TOOLS)
    with client.responses.stream(model="fast", input="hi", tools=[WEATHER]) as stream:
        snapshots = [e.snapshot for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert snapshots[-1] == '{"city":"Oslo"}'
    calls = [o for o in final.output if o.type == "function_call"]
    assert [(c.call_id, c.arguments) for c in calls] == [
        ("call_get_weather0", '{"city":"Paris"}'),
        ("call_get_weather1", '{"city":"Oslo"}'),
    ]


def test_the_sdk_raw_stream_reads_every_event() -> None:
    client = stream_client(TEXT)
    kinds = [e.type for e in client.responses.create(model="fast", input="hi", stream=True)]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
