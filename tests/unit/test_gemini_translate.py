"""Pure Gemini translations: OpenAI chat/embeddings requests out, Gemini answers and errors back."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest
from google.genai import types

from gateway.errors import InvalidRequest, UpstreamError
from plugins.providers.gemini.adapter import model_url
from plugins.providers.gemini.embeddings import from_batch_embeds, to_batch_embeds
from plugins.providers.gemini.translate import (
    SIGNATURE_SEP,
    from_gemini,
    generation_config,
    openai_usage,
    parse_error,
    to_gemini,
)

USER = {"role": "user", "content": "hi"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def _request(**body: Any) -> dict[str, Any]:
    return to_gemini({"messages": [USER], **body})


def test_roles_system_and_merging() -> None:
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
        USER,
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "ok"},
    ]
    out = to_gemini({"messages": messages})
    assert out["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]},
        {"role": "model", "parts": [{"text": "ok"}]},
    ]


def test_only_system_messages_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="at least one"):
        to_gemini({"messages": [{"role": "system", "content": "x"}]})


def test_tool_round_trip_names_and_wraps_results() -> None:
    signed = {**CALL, "id": "call_1" + SIGNATURE_SEP + "c2ln"}
    messages = [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [signed]},
        {"role": "tool", "tool_call_id": signed["id"], "content": "sunny"},
        {"role": "tool", "tool_call_id": signed["id"], "content": '{"temp": 18}'},
        {"role": "tool", "tool_call_id": signed["id"], "content": "[1, 2]"},
    ]
    contents = to_gemini({"messages": messages})["contents"]
    assert contents[1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}
    ]
    responses = [p["functionResponse"] for p in contents[2]["parts"]]
    assert [r["name"] for r in responses] == ["get_weather"] * 3
    assert [r["response"] for r in responses] == [{"result": "sunny"}, {"temp": 18}, {"result": [1, 2]}]


def test_tool_message_without_a_matching_call_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_gemini({"messages": [USER, {"role": "tool", "tool_call_id": "nope", "content": "x"}]})
    assert caught.value.param == "messages[1].tool_call_id"


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
    ],
)
def test_tool_choice(choice: Any, config: dict[str, Any]) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    out = _request(tools=[tool], tool_choice=choice)
    assert out["tools"] == [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "object"}}]}]
    assert out["toolConfig"] == {"functionCallingConfig": config}


def test_images_and_files() -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.JPG#frag"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
    ]
    sent = to_gemini({"messages": [{"role": "user", "content": parts}]})["contents"][0]["parts"]
    assert sent == [
        {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/a.JPG#frag"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
    ]


@pytest.mark.parametrize("url", ["https://x.test/image", "ftp://x.test/a.png", "data:image/png,notbase64"])
def test_bad_image_urls_are_a_400(url: str) -> None:
    parts = [{"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(InvalidRequest) as caught:
        to_gemini({"messages": [{"role": "user", "content": parts}]})
    assert caught.value.param == "messages[0].content[0]"


def test_generation_config_mapping() -> None:
    body = {"max_completion_tokens": 50, "max_tokens": 9, "stop": "END", "top_k": 5, "n": 1}
    body |= {"response_format": {"type": "json_object"}, "reasoning_effort": "high", "frequency_penalty": 0.5}
    assert generation_config(body) == {
        "topK": 5,
        "frequencyPenalty": 0.5,
        "maxOutputTokens": 50,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "thinkingConfig": {"thinkingBudget": 24576, "includeThoughts": True},
    }
    types.GenerationConfig.model_validate(generation_config(body))


@pytest.mark.parametrize(("effort", "budget"), [("none", 0), ("low", 1024), ("medium", 8192)])
def test_reasoning_effort_budgets(effort: str, budget: int) -> None:
    thinking = generation_config({"reasoning_effort": effort})["thinkingConfig"]
    assert thinking == {"thinkingBudget": budget, "includeThoughts": budget > 0}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "grammar"}}, "response_format"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
def test_unsupported_parameters_are_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _request(**body)
    assert caught.value.param == param


# --- answers ------------------------------------------------------------------------------------------------------


def _answer(parts: list[dict[str, Any]], finish: str = "STOP", **extra: Any) -> dict[str, Any]:
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
    response = {"candidates": [candidate], "modelVersion": "gemini-2.5-flash", "responseId": "abc", **extra}
    types.GenerateContentResponse.model_validate(response)
    return response


def test_answer_text_thoughts_and_usage() -> None:
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 4, "thoughtsTokenCount": 6, "cachedContentTokenCount": 3}
    out = from_gemini(
        _answer([{"text": "hmm", "thought": True}, {"text": "yes"}], usageMetadata=usage), model="m", created=1
    )
    assert out["id"] == "chatcmpl-abc" and out["model"] == "gemini-2.5-flash"
    message = out["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("yes", "hmm")
    assert out["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 10,
        "total_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 6},
    }


def test_answer_function_calls() -> None:
    parts = [
        {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "c2ln"},
        {"functionCall": {"name": "g"}},
    ]
    choice = from_gemini(_answer(parts), model="m", created=1)["choices"][0]
    calls = choice["message"]["tool_calls"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert [c["function"] for c in calls] == [{"name": "f", "arguments": '{"a":1}'}, {"name": "g", "arguments": "{}"}]
    assert calls[0]["id"].startswith("call_") and calls[0]["id"].endswith(SIGNATURE_SEP + "c2ln")
    assert calls[0]["id"] != calls[1]["id"] and "index" not in calls[0]


@pytest.mark.parametrize(
    ("finish", "expected"), [("MAX_TOKENS", "length"), ("RECITATION", "content_filter"), ("OTHER", "stop")]
)
def test_finish_reasons(finish: str, expected: str) -> None:
    assert (
        from_gemini(_answer([{"text": "x"}], finish), model="m", created=1)["choices"][0]["finish_reason"] == expected
    )


def test_safety_block_names_the_category() -> None:
    ratings = [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}]
    response = {"candidates": [{"finishReason": "SAFETY", "safetyRatings": ratings}]}
    choice = from_gemini(response, model="m", created=1)["choices"][0]
    assert choice["finish_reason"] == "content_filter" and choice["message"]["content"] is None
    assert "SAFETY" in choice["message"]["refusal"] and "HARM_CATEGORY_HARASSMENT: HIGH" in choice["message"]["refusal"]


def test_prompt_block_and_empty_answers() -> None:
    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
    choice = from_gemini(blocked, model="m", created=1)["choices"][0]
    assert choice["finish_reason"] == "content_filter" and "PROHIBITED_CONTENT" in choice["message"]["refusal"]
    with pytest.raises(UpstreamError):
        from_gemini({"candidates": []}, model="m", created=1)


def test_usage_defaults_to_zero() -> None:
    assert openai_usage({})["total_tokens"] == 0


# --- errors -------------------------------------------------------------------------------------------------------

SECRET = "AIzaSyD-secret-key-0123456789abcdefghij"


def _error(code: int, status: str, message: str, details: list[Any] | None = None) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "status": status, "details": details or []}})


@pytest.mark.parametrize(
    ("code", "status", "client", "retryable", "kind"),
    [
        (400, "INVALID_ARGUMENT", 400, False, "invalid_request_error"),
        (404, "NOT_FOUND", 502, False, "invalid_request_error"),
        (429, "RESOURCE_EXHAUSTED", 429, True, "rate_limit_error"),
        (500, "INTERNAL", 502, True, "server_error"),
        (503, "UNAVAILABLE", 503, True, "server_error"),
    ],
)
def test_error_statuses(code: int, status: str, client: int, retryable: bool, kind: str) -> None:
    exc = parse_error(code, _error(code, status, "went wrong"), None, ())
    assert (exc.upstream_status, exc.status, exc.retryable, exc.type) == (code, client, retryable, kind)
    assert exc.code == status.lower() and exc.message == "went wrong"


def test_retry_delay_from_retry_info() -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"}
    exc = parse_error(429, _error(429, "RESOURCE_EXHAUSTED", "quota", [retry]), None, ())
    assert exc.retry_after == 13.0
    assert parse_error(429, b"[]", "4", ()).retry_after == 4.0


def test_invalid_key_is_the_gateways_fault_and_redacted() -> None:
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
    exc = parse_error(400, _error(400, "INVALID_ARGUMENT", f"API key {SECRET} not valid", [info]), None, ())
    assert exc.status == 502 and exc.code == "upstream_auth_failed"
    assert SECRET not in exc.message and "credentials" in exc.message
    forbidden = parse_error(403, _error(403, "PERMISSION_DENIED", "key my-own-secret denied"), None, ("my-own-secret",))
    assert forbidden.status == 502 and "my-own-secret" not in forbidden.message


def test_error_bodies_that_are_lists_or_garbage() -> None:
    listed = parse_error(500, b"[" + _error(500, "INTERNAL", "inner") + b"]", None, ())
    assert listed.message == "inner"
    assert parse_error(502, b"<html>", None, ()).message == "upstream returned HTTP 502"


# --- URLs and embeddings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini-2.5-flash", "/v1beta/models/gemini-2.5-flash:generateContent"),
        ("models/gemini-2.5-pro", "/v1beta/models/gemini-2.5-pro:generateContent"),
        ("a/../b?key=1#x", "/v1beta/models/a%2F..%2Fb%3Fkey%3D1%23x:generateContent"),
    ],
)
def test_model_url_keeps_the_name_in_one_segment(model: str, path: str) -> None:
    assert model_url("https://h.test", model, "generateContent") == "https://h.test" + path


def test_embeddings_request_batches_and_dimensions() -> None:
    batches = to_batch_embeds({"input": [f"t{i}" for i in range(150)], "dimensions": 8}, "text-embedding-004")
    assert [len(b["requests"]) for b in batches] == [100, 50]
    assert batches[1]["requests"][0] == {
        "model": "models/text-embedding-004",
        "content": {"parts": [{"text": "t100"}]},
        "outputDimensionality": 8,
    }


@pytest.mark.parametrize("inputs", [[[1, 2, 3]], [""], ["ok", 5]])
def test_embeddings_refuse_token_arrays_and_empty_text(inputs: list[Any]) -> None:
    with pytest.raises(InvalidRequest):
        to_batch_embeds({"input": inputs}, "m")


def test_embeddings_answer_float_and_base64() -> None:
    answers = [{"embeddings": [{"values": [0.5, 1.0]}]}, {"embeddings": [{"values": [2.0, 0.25]}]}]
    floats = from_batch_embeds(answers, {"input": ["a", "b"]}, "m")
    assert [d["embedding"] for d in floats["data"]] == [[0.5, 1.0], [2.0, 0.25]]
    assert [d["index"] for d in floats["data"]] == [0, 1]
    packed = from_batch_embeds(answers[:1], {"input": "a", "encoding_format": "base64"}, "m")["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(packed)) == (0.5, 1.0)
    with pytest.raises(UpstreamError):
        from_batch_embeds(answers, {"input": "a"}, "m")
