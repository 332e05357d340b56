"""The Gemini stream translator: GenerateContentResponse events in, chat.completion.chunk dicts out."""

from __future__ import annotations

from typing import Any

import pytest
from google.genai import types

from gateway.errors import UpstreamStreamError
from plugins.providers.gemini.stream import StreamTranslator, stream_error


def _event(parts: list[dict[str, Any]], finish: str | None = None, index: int = 0, **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
    if finish:
        candidate["finishReason"] = finish
    event = {"candidates": [candidate], "responseId": "r1", "modelVersion": "gemini-2.5-flash", **extra}
    types.GenerateContentResponse.model_validate(event)
    return event


def _deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def test_text_stream_with_usage() -> None:
    translator = StreamTranslator("m", 7, include_usage=True)
    first = translator.feed(_event([{"text": "Hel"}], usageMetadata={"promptTokenCount": 4}))
    assert first[0]["id"] == "chatcmpl-r1" and first[0]["model"] == "gemini-2.5-flash" and first[0]["created"] == 7
    assert _deltas(first) == [{"role": "assistant", "content": ""}, {"content": "Hel"}]
    assert not translator.finished
    usage = {"promptTokenCount": 4, "candidatesTokenCount": 2, "thoughtsTokenCount": 3}
    last = translator.feed(_event([{"text": "lo"}], "STOP", usageMetadata=usage))
    assert _deltas(last) == [{"content": "lo"}, {}]
    assert last[-1]["choices"][0]["finish_reason"] == "stop"
    assert translator.finished
    (tail,) = translator.close()
    assert tail["choices"] == []
    assert tail["usage"]["completion_tokens"] == 5 and tail["usage"]["completion_tokens_details"] == {
        "reasoning_tokens": 3
    }


def test_no_usage_chunk_unless_asked() -> None:
    translator = StreamTranslator("m", 0)
    translator.feed(_event([{"text": "x"}], "STOP"))
    assert translator.close() == []


def test_thoughts_and_empty_text() -> None:
    translator = StreamTranslator("m", 0)
    chunks = translator.feed(_event([{"text": "think", "thought": True}, {"text": ""}, {"text": "say"}]))
    assert _deltas(chunks)[1:] == [{"reasoning_content": "think"}, {"content": "say"}]


def test_function_calls_get_indexes_and_ids() -> None:
    translator = StreamTranslator("m", 0)
    chunks = translator.feed(_event([{"functionCall": {"name": "f", "args": {"x": 1}}}]))
    chunks += translator.feed(_event([{"functionCall": {"name": "g", "args": {}}}], "STOP"))
    calls = [d["tool_calls"][0] for d in _deltas(chunks) if "tool_calls" in d]
    assert [(c["index"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        (0, "f", '{"x":1}'),
        (1, "g", "{}"),
    ]
    assert calls[0]["id"] != calls[1]["id"] and calls[0]["type"] == "function"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_several_candidates_finish_separately() -> None:
    translator = StreamTranslator("m", 0)
    translator.feed(_event([{"text": "a"}], "STOP", index=0))
    assert translator.finished  # only candidate 0 has been seen so far
    chunks = translator.feed(_event([{"text": "b"}], index=1))
    assert [c["choices"][0]["index"] for c in chunks] == [1, 1]
    assert not translator.finished
    translator.feed(_event([], "MAX_TOKENS", index=1))
    assert translator.finished


def test_safety_finish_carries_a_refusal() -> None:
    translator = StreamTranslator("m", 0)
    ratings = [{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "MEDIUM"}]
    event = {"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": ratings}]}
    last = translator.feed(event)[-1]["choices"][0]
    assert last["finish_reason"] == "content_filter"
    assert "HARM_CATEGORY_HATE_SPEECH: MEDIUM" in last["delta"]["refusal"]


def test_blocked_prompt_ends_the_stream() -> None:
    translator = StreamTranslator("m", 0)
    chunks = translator.feed({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}})
    assert chunks[0]["choices"][0]["finish_reason"] == "content_filter"
    assert "prompt" in chunks[0]["choices"][0]["delta"]["refusal"]
    assert translator.finished and translator.started


def test_cut_stream_raises_on_close() -> None:
    translator = StreamTranslator("m", 0)
    translator.feed(_event([{"text": "half"}]))
    with pytest.raises(UpstreamStreamError):
        translator.close()


def test_in_band_error_becomes_an_error_payload() -> None:
    translator = StreamTranslator("m", 0, secrets=("topsecret",))
    translator.feed(_event([{"text": "half"}]))
    event = {"error": {"code": 429, "message": "quota for topsecret", "status": "RESOURCE_EXHAUSTED"}}
    (payload,) = translator.feed(event)
    assert payload["error"]["code"] == "resource_exhausted" and "topsecret" not in payload["error"]["message"]
    assert translator.failed and translator.finished
    assert translator.close() == []


def test_stream_error_status() -> None:
    assert stream_error({"error": {"code": 503, "status": "UNAVAILABLE"}}).upstream_status == 503
    assert stream_error({"error": "boom"}).upstream_status == 500
