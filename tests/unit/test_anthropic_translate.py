"""The anthropic adapter's pure translations: OpenAI request -> Messages request, Message -> chat.completion,
error body -> gateway error. Every translated request is checked against the SDK's request types."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from gateway.errors import InvalidRequest
from plugins.providers.anthropic.translate import (
    DEFAULT_MAX_TOKENS,
    from_anthropic,
    parse_error,
    to_anthropic,
)
from plugins.providers.base import merge_headers
from tests.fakes.anthropic_upstream import request_problem

USER = [{"role": "user", "content": "hello"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def translate(body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Translate, and insist the result is a request the real API would accept."""
    out = to_anthropic({"model": "alias", **body}, "claude-test", **kwargs)
    problem = request_problem(out)
    assert problem is None, problem
    return out


# --- requests -----------------------------------------------------------------------------------------------------


def test_plain_request_gets_model_and_default_max_tokens() -> None:
    out = translate({"messages": USER})
    assert out == {
        "model": "claude-test",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [({"max_tokens": 77}, 77), ({"max_completion_tokens": 55, "max_tokens": 77}, 55), ({}, DEFAULT_MAX_TOKENS)],
)
def test_max_tokens(fields: dict[str, Any], expected: int) -> None:
    assert translate({"messages": USER, **fields})["max_tokens"] == expected


def test_default_max_tokens_is_configurable() -> None:
    assert translate({"messages": USER}, default_max_tokens=123)["max_tokens"] == 123


def test_system_and_developer_messages_become_the_system_prompt() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            *USER,
        ]
    }
    out = translate(body)
    assert out["system"] == [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in French."}]
    assert [m["role"] for m in out["messages"]] == ["user"]


def test_consecutive_same_role_messages_are_merged() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": "four"},
            {"role": "user", "content": "five"},
        ]
    }
    out = translate(body)
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert [b["text"] for b in out["messages"][0]["content"]] == ["one", "two"]
    assert [b["text"] for b in out["messages"][1]["content"]] == ["three", "four"]


def test_empty_text_is_left_out() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}, *USER]}
    out = translate(body)
    assert [b["text"] for b in out["messages"][0]["content"]] == ["hi", "hello"]


def test_only_system_messages_is_a_clear_400() -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_anthropic({"messages": [{"role": "system", "content": "x"}]}, "m")
    assert caught.value.param == "messages"


def test_images_data_url_and_http_url() -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
    ]
    content = translate({"messages": [{"role": "user", "content": parts}]})["messages"][0]["content"]
    assert content[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert content[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


@pytest.mark.parametrize(
    "url",
    ["data:image/bmp;base64,AAAA", "data:image/png,notbase64", "ftp://example.com/x.png", "data:image/png;base64"],
)
def test_unusable_images_are_refused_naming_the_part(url: str) -> None:
    parts = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(InvalidRequest) as caught:
        to_anthropic({"messages": [{"role": "user", "content": parts}]}, "m")
    assert caught.value.param == "messages[0].content[1]"


def test_audio_parts_are_refused() -> None:
    parts = [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]
    with pytest.raises(InvalidRequest, match="input_audio"):
        to_anthropic({"messages": [{"role": "user", "content": parts}]}, "m")


def test_tools_and_tool_choice() -> None:
    out = translate({"messages": USER, "tools": [WEATHER], "tool_choice": "auto"})
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather of a city",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    assert out["tool_choice"] == {"type": "auto"}


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, True, None),
    ],
)
def test_tool_choice_mapping(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"messages": USER, "tools": [WEATHER], "tool_choice": choice}
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert translate(body).get("tool_choice") == expected


def test_tool_parameters_default_to_an_empty_object_schema() -> None:
    out = translate({"messages": USER, "tools": [{"type": "function", "function": {"name": "now"}}]})
    assert out["tools"] == [{"name": "now", "input_schema": {"type": "object"}}]


def test_tool_choice_without_tools_is_dropped() -> None:
    assert "tool_choice" not in translate({"messages": USER, "tool_choice": "auto"})


def test_assistant_tool_calls_and_tool_results_round_trip() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
    ]
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25C"}]},
            {"role": "user", "content": "Thanks, summarise."},
        ],
        "tools": [WEATHER],
    }
    out = translate(body)
    assistant, results = out["messages"][1], out["messages"][2]
    assert assistant["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
    ]
    assert results["role"] == "user"
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "25C"}]},
        {"type": "text", "text": "Thanks, summarise."},
    ]


def test_tool_results_are_moved_before_text_in_a_merged_user_turn() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    body = {
        "messages": [
            *USER,
            {"role": "assistant", "tool_calls": calls},
            {"role": "user", "content": "by the way"},
            {"role": "tool", "tool_call_id": "call_1", "content": "done"},
        ]
    }
    content = translate(body)["messages"][2]["content"]
    assert [b["type"] for b in content] == ["tool_result", "text"]


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_bad_tool_call_arguments_name_the_field(arguments: str) -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]
    with pytest.raises(InvalidRequest) as caught:
        to_anthropic({"messages": [*USER, {"role": "assistant", "tool_calls": calls}]}, "m")
    assert caught.value.param == "messages[1].tool_calls[0].function.arguments"


def test_sampling_stop_and_user() -> None:
    body = {"messages": USER, "temperature": 0.3, "top_p": 0.9, "top_k": 40, "stop": "END", "user": "user-42"}
    out = translate(body)
    assert (out["temperature"], out["top_p"], out["top_k"]) == (0.3, 0.9, 40)
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "user-42"}


@pytest.mark.parametrize(("given", "sent"), [(1.7, 1.0), (2, 1.0), (0, 0.0), (1, 1.0)])
def test_temperature_is_clamped_to_anthropics_range(given: float, sent: float) -> None:
    assert translate({"messages": USER, "temperature": given})["temperature"] == sent


def test_stop_list_drops_blank_sequences() -> None:
    assert translate({"messages": USER, "stop": ["###", " ", ""]})["stop_sequences"] == ["###"]
    assert "stop_sequences" not in translate({"messages": USER, "stop": []})


def test_openai_only_parameters_are_dropped() -> None:
    extras = {
        "seed": 7,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.5,
        "logit_bias": {"50256": -100},
        "store": True,
        "service_tier": "auto",
        "metadata": {"a": "b"},
        "stream_options": {"include_usage": True},
        "n": 1,
        "logprobs": False,
        "prediction": {"type": "content", "content": "x"},
    }
    out = translate({"messages": USER, **extras})
    assert set(out) == {"model", "max_tokens", "messages"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "logprobs"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tool_choice": "sometimes", "tools": [WEATHER]}, "tool_choice"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"reasoning_effort": "low", "max_tokens": 1000}, "max_tokens"),
    ],
)
def test_unsupported_parameters_are_a_clear_400(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_anthropic({"messages": USER, **fields}, "m")
    assert caught.value.status == 400
    assert caught.value.param == param


def test_unsupported_role_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_anthropic({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "m")
    assert caught.value.param == "messages[0].role"


@pytest.mark.parametrize(("effort", "budget"), [("low", 1024), ("medium", 4096), ("high", 16384)])
def test_reasoning_effort_sets_a_thinking_budget_below_max_tokens(effort: str, budget: int) -> None:
    out = translate({"messages": USER, "reasoning_effort": effort})
    assert out["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert out["max_tokens"] > budget


def test_reasoning_budget_is_cut_to_fit_an_explicit_max_tokens() -> None:
    out = translate({"messages": USER, "reasoning_effort": "high", "max_tokens": 3000})
    assert out["max_tokens"] == 3000
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2999}


def test_reasoning_effort_none_means_no_thinking() -> None:
    assert "thinking" not in translate({"messages": USER, "reasoning_effort": "none"})


def test_native_thinking_object_passes() -> None:
    thinking = {"type": "enabled", "budget_tokens": 2048}
    assert translate({"messages": USER, "thinking": thinking})["thinking"] == thinking


def test_json_schema_response_format_becomes_output_config() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    out = translate({"messages": USER, "response_format": fmt})
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_stream_flag_passes_and_the_input_is_not_mutated() -> None:
    body = {"model": "alias", "messages": [{"role": "system", "content": "s"}, *USER], "stream": True, "seed": 1}
    before = copy.deepcopy(body)
    out = to_anthropic(body, "claude-test")
    assert out["stream"] is True
    assert body == before


def test_header_overrides_ignore_case() -> None:
    merged = merge_headers({"anthropic-version": "2023-06-01", "x-api-key": "k"}, {"Anthropic-Version": "2023-01-01"})
    assert merged == {"x-api-key": "k", "Anthropic-Version": "2023-01-01"}


# --- responses ----------------------------------------------------------------------------------------------------

TEXT_MESSAGE = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 2095, "output_tokens": 503},
}
TOOL_MESSAGE = {
    **TEXT_MESSAGE,
    "content": [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Tokyo"}},
    ],
    "stop_reason": "tool_use",
}
THINKING_MESSAGE = {
    **TEXT_MESSAGE,
    "content": [
        {"type": "thinking", "thinking": "Let me add: 2 + 2 = 4.", "signature": "EqQBCgIYAhIM1gbcDa9"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
        {"type": "text", "text": "4"},
    ],
    "usage": {"input_tokens": 10, "output_tokens": 50, "output_tokens_details": {"thinking_tokens": 40}},
}


def completion(message: dict[str, Any]) -> dict[str, Any]:
    """Translate, insisting the fixture is a real Message and the result a real ChatCompletion."""
    Message.model_validate(message)
    out = from_anthropic(message, created=1_700_000_000)
    ChatCompletion.model_validate(out)
    return out


def test_text_message() -> None:
    out = completion(TEXT_MESSAGE)
    assert out["id"] == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert out["object"] == "chat.completion"
    assert out["created"] == 1_700_000_000
    assert out["model"] == "claude-sonnet-4-5"
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Hi! My name is Claude."}
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"] == {
        "prompt_tokens": 2095,
        "completion_tokens": 503,
        "total_tokens": 2598,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_parallel_tool_uses_become_tool_calls() -> None:
    message = completion(TOOL_MESSAGE)["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["content"] is None
    calls = message["message"]["tool_calls"]
    assert [c["id"] for c in calls] == ["toolu_01A", "toolu_01B"]
    assert [orjson.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert {c["type"] for c in calls} == {"function"}


def test_thinking_becomes_reasoning_content_and_redacted_thinking_is_dropped() -> None:
    out = completion(THINKING_MESSAGE)
    assert out["choices"][0]["message"]["reasoning_content"] == "Let me add: 2 + 2 = 4."
    assert out["choices"][0]["message"]["content"] == "4"
    assert out["usage"]["completion_tokens_details"] == {"reasoning_tokens": 40}


def test_cache_tokens_count_as_prompt_tokens() -> None:
    usage = {"input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 7}
    out = completion({**TEXT_MESSAGE, "usage": usage})["usage"]
    assert out["prompt_tokens"] == 125
    assert out["prompt_tokens_details"] == {"cached_tokens": 100}
    assert out["total_tokens"] == 132


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    assert completion({**TEXT_MESSAGE, "stop_reason": stop_reason})["choices"][0]["finish_reason"] == finish


# --- errors -------------------------------------------------------------------------------------------------------


def error_body(kind: str, message: str = "something went wrong") -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"})


@pytest.mark.parametrize(
    ("http", "kind", "upstream_status", "client_status", "retryable"),
    [
        (400, "invalid_request_error", 400, 400, False),
        (401, "authentication_error", 401, 502, False),
        (402, "billing_error", 402, 502, False),
        (403, "permission_error", 403, 502, False),
        (404, "not_found_error", 404, 502, False),
        (413, "request_too_large", 413, 413, False),
        (429, "rate_limit_error", 429, 429, True),
        (500, "api_error", 500, 502, True),
        (504, "timeout_error", 504, 504, True),
        (529, "overloaded_error", 503, 503, True),
    ],
)
def test_error_types_map_to_openai_statuses(
    http: int, kind: str, upstream_status: int, client_status: int, retryable: bool
) -> None:
    exc = parse_error(http, error_body(kind), None, ())
    assert exc.upstream_status == upstream_status
    assert exc.status == client_status
    assert exc.retryable is retryable
    assert "something went wrong" in exc.message


def test_error_keeps_message_type_and_code() -> None:
    exc = parse_error(400, error_body("invalid_request_error", "prompt is too long: 250000 tokens"), None, ())
    error = orjson.loads(exc.body())["error"]
    assert error == {
        "message": "prompt is too long: 250000 tokens",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_request_error",
    }


def test_overloaded_is_a_retryable_503_with_retry_after() -> None:
    exc = parse_error(529, error_body("overloaded_error", "Overloaded"), "7", ())
    assert (exc.status, exc.retry_after, exc.code) == (503, 7.0, "overloaded_error")


def test_auth_errors_redact_the_key_and_blame_the_gateway() -> None:
    key = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz"
    exc = parse_error(401, error_body("authentication_error", f"invalid x-api-key: {key}"), None, (key,))
    assert key not in exc.message
    assert "gateway's credentials" in exc.message
    assert exc.code == "upstream_auth_failed"


@pytest.mark.parametrize(("raw", "status", "expected"), [(b"<html>bad gateway</html>", 502, 502), (b"", 529, 503)])
def test_unparseable_error_bodies_use_the_http_status(raw: bytes, status: int, expected: int) -> None:
    exc = parse_error(status, raw, None, ())
    assert exc.upstream_status == expected
    assert str(status) in exc.message
