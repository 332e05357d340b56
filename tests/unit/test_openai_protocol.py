"""OpenAI request bodies: parse_body's 400s and validate()'s per-endpoint checks, pass-through and stripping."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.protocol.openai import (
    CHAT,
    COMPLETIONS,
    DEFAULT_COMPLETION_ESTIMATE,
    EMBEDDINGS,
    FORBIDDEN_FIELDS,
    Operation,
    estimate_tokens,
    parse_body,
    validate,
)


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def refused(body: dict[str, Any], op: Operation = CHAT) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        validate(body, op)
    return info.value


def error_of(exc: InvalidRequest) -> dict[str, Any]:
    parsed = orjson.loads(exc.body())
    assert set(parsed) == {"error"}
    assert set(parsed["error"]) == {"message", "type", "param", "code"}
    assert parsed["error"]["type"] == "invalid_request_error"
    assert exc.status == 400
    return dict(parsed["error"])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"{'model': 'x'}",
        b'{"model": "x",}',
        b"\xff",
        b'{"model": "\xff\xfe"}',
        b'{"model": "\\ud800"}',
        b'{"model": "\\udc00x"}',
        b"NaN",
        b"[" * 2000 + b"]" * 2000,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
    ],
)
def test_parse_body_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(raw)
    err = error_of(info.value)
    assert err["code"] == "invalid_json"
    assert "not valid JSON" in err["message"]


@pytest.mark.parametrize("raw", [b"[]", b"[1, 2]", b'"text"', b"42", b"null", b"true"])
def test_parse_body_non_object(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(raw)
    err = error_of(info.value)
    assert err["code"] == "invalid_json"
    assert "JSON object" in err["message"]


def test_parse_body_object_and_duplicate_keys_last_wins() -> None:
    assert parse_body(b'{"model": "a", "model": "b", "n": 1}') == {"model": "b", "n": 1}
    assert parse_body('{"content": "\u4f60\u597d \U0001f600"}'.encode()) == {"content": "\u4f60\u597d \U0001f600"}
    assert parse_body(b'{"s": "\\ud83d\\ude00"}') == {"s": "\U0001f600"}  # a valid surrogate pair


def test_valid_bodies_pass_unchanged() -> None:
    for body, op in [
        (chat(max_tokens=5, temperature=0.5, n=2, stream=True, stop=["x"], tools=[{"type": "function"}]), CHAT),
        ({"model": "m", "prompt": "once upon", "max_tokens": 1, "logprobs": 3}, COMPLETIONS),
        ({"model": "m", "prompt": ["a", "b"]}, COMPLETIONS),
        ({"model": "m", "input": "text", "dimensions": 8}, EMBEDDINGS),
        ({"model": "m", "input": [[1, 2, 3]]}, EMBEDDINGS),
    ]:
        before = copy.deepcopy(body)
        validate(body, op)
        assert body == before


@pytest.mark.parametrize(
    ("op", "body", "field"),
    [
        (CHAT, {"messages": [{"role": "user"}]}, "model"),
        (CHAT, {"model": None, "messages": [{"role": "user"}]}, "model"),
        (CHAT, {"model": "m"}, "messages"),
        (CHAT, {"model": "m", "messages": None}, "messages"),
        (COMPLETIONS, {"model": "m"}, "prompt"),
        (COMPLETIONS, {"prompt": "x"}, "model"),
        (EMBEDDINGS, {"model": "m"}, "input"),
        (EMBEDDINGS, {"input": "x"}, "model"),
        (CHAT, {}, "model"),
    ],
)
def test_missing_required(op: Operation, body: dict[str, Any], field: str) -> None:
    err = error_of(refused(body, op))
    assert err["param"] == field
    assert err["code"] == "missing_required_parameter"
    assert field in err["message"]


@pytest.mark.parametrize("model", [1, 1.5, True, "", [], {"name": "m"}])
def test_model_must_be_a_non_empty_string(model: Any) -> None:
    err = error_of(refused(chat(model=model)))
    assert err["param"] == "model"
    assert err["code"] == "invalid_value"


@pytest.mark.parametrize(
    "value",
    [[], "hello", {"role": "user"}, [{"content": "no role"}], [{"role": 1}], ["user"], [{"role": "user"}, None]],
)
def test_bad_messages(value: Any) -> None:
    err = error_of(refused(chat(messages=value)))
    assert err["param"] == "messages"
    assert err["code"] == "invalid_value"


def test_too_many_messages() -> None:
    err = error_of(refused(chat(messages=[{"role": "user", "content": "x"}] * 10_001)))
    assert err["param"] == "messages"
    assert "10000" in err["message"]
    validate(chat(messages=[{"role": "user", "content": "x"}] * 10_000), CHAT)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", -1),
        ("max_tokens", 0),
        ("max_tokens", 1.5),
        ("max_tokens", 10.0),
        ("max_tokens", "10"),
        ("max_tokens", True),
        ("max_completion_tokens", 0),
        ("temperature", 3),
        ("temperature", -0.1),
        ("temperature", "0.5"),
        ("temperature", False),
        ("top_p", 1.5),
        ("n", 0),
        ("n", 10_000),
        ("n", True),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3),
        ("stream", "true"),
        ("stream", 1),
        ("stream_options", "yes"),
        ("stop", 5),
        ("stop", ["a"] * 17),
        ("stop", ["a", 1]),
        ("tools", {"type": "function"}),
        ("tools", "none"),
        ("tools", [1]),
        ("tools", [{}] * 513),
        ("logprobs", 1),
        ("top_logprobs", 21),
        ("seed", 1.5),
        ("user", 7),
        ("response_format", "json"),
        ("parallel_tool_calls", "yes"),
    ],
)
def test_chat_field_checks(field: str, value: Any) -> None:
    err = error_of(refused(chat(**{field: value})))
    assert err["param"] == field
    assert err["code"] == "invalid_value"
    assert err["message"].startswith(f"'{field}' must ")


@pytest.mark.parametrize(
    ("op", "body", "field"),
    [
        (COMPLETIONS, {"prompt": []}, "prompt"),
        (COMPLETIONS, {"prompt": 5}, "prompt"),
        (COMPLETIONS, {"prompt": "x", "logprobs": True}, "logprobs"),
        (COMPLETIONS, {"prompt": "x", "logprobs": 6}, "logprobs"),
        (COMPLETIONS, {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        (EMBEDDINGS, {"input": ""}, "input"),
        (EMBEDDINGS, {"input": []}, "input"),
        (EMBEDDINGS, {"input": ["x"] * 2049}, "input"),
        (EMBEDDINGS, {"input": 3}, "input"),
        (EMBEDDINGS, {"input": "x", "dimensions": 0}, "dimensions"),
        (EMBEDDINGS, {"input": "x", "encoding_format": 1}, "encoding_format"),
    ],
)
def test_other_endpoint_checks(op: Operation, body: dict[str, Any], field: str) -> None:
    err = error_of(refused({"model": "m", **body}, op))
    assert err["param"] == field


def test_boundary_values_accepted() -> None:
    validate(chat(max_tokens=1, n=1, temperature=0, top_p=1, top_logprobs=20, presence_penalty=-2), CHAT)
    validate(chat(n=128, temperature=2.0, stop=["a"] * 16, tools=[{}] * 512, frequency_penalty=2), CHAT)
    validate({"model": "m", "input": ["x"] * 2048}, EMBEDDINGS)


def test_unknown_and_unchecked_fields_kept_untouched() -> None:
    extra = {
        "top_k": 40,
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "seed": 42,
        "logprobs": True,
        "reasoning_effort": "high",
        "vendor_extension": [1, {"a": None}],
    }
    body = chat(**copy.deepcopy(extra))
    validate(body, CHAT)
    for name, value in extra.items():
        assert body[name] == value


def test_tool_choice_is_not_checked_against_chat_tools() -> None:
    validate(chat(tool_choice="auto"), CHAT)
    validate(chat(tool_choice="anything"), CHAT)


@pytest.mark.parametrize("op", [CHAT, COMPLETIONS, EMBEDDINGS])
def test_forbidden_fields_stripped(op: Operation) -> None:
    base = {"model": "m", "messages": [{"role": "user"}], "prompt": "p", "input": "i"}
    body = {**base, **dict.fromkeys(FORBIDDEN_FIELDS, "http://evil.example"), "temperature": 1}
    validate(body, op)
    assert body == {**base, "temperature": 1}
    for name in ("api_base", "base_url", "api_key", "custom_llm_provider"):
        assert name not in body


@pytest.mark.parametrize(
    "field",
    [
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "stream",
        "stream_options",
        "stop",
        "tools",
        "user",
        "seed",
        "logprobs",
    ],
)
def test_null_optional_fields_accepted(field: str) -> None:
    body = chat(**{field: None})
    validate(body, CHAT)
    assert field in body
    assert body[field] is None


def test_null_optional_fields_other_endpoints() -> None:
    validate({"model": "m", "prompt": "p", "max_tokens": None, "logprobs": None}, COMPLETIONS)
    validate({"model": "m", "input": "i", "dimensions": None, "encoding_format": None}, EMBEDDINGS)


def test_error_body_shape() -> None:
    exc = refused(chat(max_tokens=-1))
    body = orjson.loads(exc.body())
    assert body == {
        "error": {
            "message": "'max_tokens' must be an integer >= 1",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "invalid_value",
        }
    }


def test_token_estimate_uses_body_size_completion_limit_and_n() -> None:
    assert estimate_tokens(400, {"max_tokens": 50}) == 150
    assert estimate_tokens(400, {"max_completion_tokens": 20, "max_tokens": 50, "n": 3}) == 160
    assert estimate_tokens(0, {}) == DEFAULT_COMPLETION_ESTIMATE
