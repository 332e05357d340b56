"""Usage from canonical answers and stream chunks, absurd reports flagged, and estimates when usage is missing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.metering import usage as usage_mod
from gateway.metering.tokens import TokenCounter
from gateway.metering.usage import (
    MAX_TOKENS,
    StreamTally,
    Usage,
    estimate_usage,
    is_usage_only_chunk,
    may_carry_usage,
    parse_usage,
    usage_for_body,
    usage_from_body,
    usage_from_chunk,
)

CHAT_BODY = orjson.dumps(
    {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1730000000,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi there!"}, "finish_reason": "stop"},
        ],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 340,
            "total_tokens": 1540,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0},
        },
        "system_fingerprint": "fp_1",
    }
)
EMBEDDINGS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
)
REQUEST = {"model": "chat-default", "messages": [{"role": "user", "content": "hello world"}], "stream": True}
REQUEST_PROMPT_TOKENS = 3 + 1 + 2 + 3  # framing + "user" + "hello world" + reply priming


def chunk(delta: dict[str, Any] | None = None, *, usage: Any = None, choices: list[Any] | None = None) -> bytes:
    """A chat.completion.chunk payload as OpenAI sends it (compact JSON, `usage: null` when asked for usage)."""
    body: dict[str, Any] = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    body["choices"] = choices if choices is not None else [{"index": 0, "delta": delta or {}, "finish_reason": None}]
    body["usage"] = usage
    return orjson.dumps(body)


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def test_usage_from_a_chat_body() -> None:
    assert usage_from_body(CHAT_BODY) == Usage(1200, 1024, 340, 128)
    assert usage_from_body(CHAT_BODY) is not None


def test_usage_from_an_embeddings_body() -> None:
    used = usage_from_body(EMBEDDINGS_BODY)
    assert used == Usage(prompt_tokens=8)
    assert used is not None
    assert used.total_tokens == 8


@pytest.mark.parametrize("body", [b"", b"not json", b"[1,2]", b'{"choices":[]}', b'{"usage":null}', b'{"usage":{}}'])
def test_bodies_without_usage(body: bytes) -> None:
    assert usage_from_body(body) is None


def test_anthropic_translated_cache_usage() -> None:
    # Anthropic {input_tokens: 20, cache_read_input_tokens: 1000, cache_creation_input_tokens: 300, output_tokens: 50}
    # as the anthropic adapter puts it into OpenAI's shape
    raw = {
        "prompt_tokens": 1320,
        "completion_tokens": 50,
        "total_tokens": 1370,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }
    assert parse_usage(raw) == Usage(prompt_tokens=1320, cached_tokens=1000, completion_tokens=50)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (  # DeepSeek passes its own cache fields through an OpenAI-compatible adapter
            {
                "prompt_tokens": 100,
                "completion_tokens": 5,
                "prompt_cache_hit_tokens": 64,
                "prompt_cache_miss_tokens": 36,
            },
            Usage(100, 64, 5, 0),
        ),
        ({"prompt_tokens": 100, "completion_tokens": 5, "cached_tokens": 40}, Usage(100, 40, 5, 0)),  # Moonshot
        (  # Responses-style names
            {
                "input_tokens": 30,
                "output_tokens": 9,
                "input_tokens_details": {"cached_tokens": 10},
                "output_tokens_details": {"reasoning_tokens": 4},
            },
            Usage(30, 10, 9, 4),
        ),
        ({"prompt_tokens": 10, "completion_tokens": 3.0}, Usage(10, 0, 3, 0)),  # an integral float is fine
        ({"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None}, Usage(10, 0, 2, 0)),
        (
            {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 50}},
            Usage(10, 10, 2),
        ),
    ],
)
def test_vendor_usage_shapes(raw: dict[str, Any], expected: Usage) -> None:
    assert parse_usage(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        {"prompt_tokens": -1, "completion_tokens": 5},
        {"prompt_tokens": 10, "completion_tokens": 2.5},
        {"prompt_tokens": "10", "completion_tokens": 5},
        {"prompt_tokens": MAX_TOKENS + 1, "completion_tokens": 5},
        {"prompt_tokens": True, "completion_tokens": 5},
        {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": -4}},
        {"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 1e12}},
    ],
)
def test_absurd_usage_is_flagged_not_billed(raw: dict[str, Any]) -> None:
    used = parse_usage(raw)
    assert used == Usage(flagged=True)
    assert used is not None
    assert not used.billable


def test_usage_null_chunks_are_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(data: bytes) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(usage_mod, "_loads", boom)
    assert usage_from_chunk(chunk({"content": "hi"})) is None
    assert usage_from_chunk(b'{"choices":[{"delta":{"content":"x"}}],"usage": null}') is None
    assert usage_from_chunk(b'{"choices":[{"delta":{"content":"x"}}]}') is None
    assert not is_usage_only_chunk(chunk({"content": "hi"}))


def test_the_final_usage_only_chunk() -> None:
    final = chunk(choices=[], usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11})
    assert usage_from_chunk(final) == Usage(9, 0, 2, 0)
    assert is_usage_only_chunk(final)


def test_usage_on_a_content_chunk_is_read_but_not_stripped() -> None:
    last = chunk({"content": "!"}, usage={"prompt_tokens": 9, "completion_tokens": 3})
    assert usage_from_chunk(last) == Usage(9, 0, 3, 0)
    assert not is_usage_only_chunk(last)


@pytest.mark.parametrize(
    "payload",
    [
        chunk({"content": 'the "usage" field: null'}),
        chunk({"content": "usage"}),
        b"[DONE]",
        b'{"usage": 5}',
        b'{"choices":[],"usage":"none"}',
    ],
)
def test_usage_lookalikes(payload: bytes) -> None:
    assert usage_from_chunk(payload) is None
    assert not is_usage_only_chunk(payload)


@given(st.binary(max_size=200))
def test_chunk_parsing_never_raises(payload: bytes) -> None:
    used = usage_from_chunk(payload)
    assert used is None or isinstance(used, Usage)
    assert isinstance(is_usage_only_chunk(payload), bool)
    assert isinstance(may_carry_usage(payload), bool)


@given(
    st.dictionaries(
        st.sampled_from(["prompt_tokens", "completion_tokens", "cached_tokens", "input_tokens", "output_tokens"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3)),
    )
)
def test_parsed_usage_is_never_negative_or_inconsistent(raw: dict[str, Any]) -> None:
    used = parse_usage(raw)
    if used is not None:
        assert 0 <= used.cached_tokens <= used.prompt_tokens <= MAX_TOKENS
        assert 0 <= used.reasoning_tokens <= used.completion_tokens <= MAX_TOKENS


def stream(with_usage: bool) -> list[bytes]:
    """A realistic reasoning stream with a tool call, ending with the usage-only chunk when asked."""
    null = None
    payloads = [
        chunk({"role": "assistant", "content": ""}, usage=null),
        chunk({"reasoning_content": "hello"}, usage=null),
        chunk({"reasoning_content": " world"}, usage=null),
        chunk({"content": "hello"}, usage=null),
        chunk({"content": " world"}, usage=null),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
    ]
    if with_usage:
        usage = {
            "prompt_tokens": 9,
            "completion_tokens": 7,
            "total_tokens": 16,
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
        payloads.append(chunk(choices=[], usage=usage))
    return [*payloads, b"[DONE]"]


def test_tally_keeps_the_upstream_usage(counter: TokenCounter) -> None:
    tally = StreamTally()
    for payload in stream(with_usage=True):
        tally.feed(payload)
    assert tally.usage == Usage(9, 0, 7, 2)
    assert tally.result(counter, "gpt-4o", REQUEST) == Usage(9, 0, 7, 2)


def test_tally_estimates_when_usage_never_came(counter: TokenCounter) -> None:
    tally = StreamTally()
    for payload in stream(with_usage=False):
        tally.feed(payload)
    assert tally.usage is None
    used = tally.result(counter, "gpt-4o", REQUEST)
    answer = counter.count_text("gpt-4o", "hello worldf{}")
    assert used == Usage(REQUEST_PROMPT_TOKENS, 0, answer + 2, 2, estimated=True)
    assert used.billable


def test_tally_estimates_what_was_sent_before_the_client_left(counter: TokenCounter) -> None:
    tally = StreamTally()
    for payload in stream(with_usage=True)[:4]:
        tally.feed(payload)
    assert tally.result(counter, "gpt-4o", REQUEST) == Usage(REQUEST_PROMPT_TOKENS, 0, 2 + 1, 2, estimated=True)


def test_tally_flags_absurd_usage_and_estimates(counter: TokenCounter) -> None:
    tally = StreamTally()
    tally.feed(chunk({"content": "hello world"}))
    tally.feed(chunk(choices=[], usage={"prompt_tokens": -7, "completion_tokens": 2}))
    used = tally.result(counter, "gpt-4o", REQUEST)
    assert used == Usage(REQUEST_PROMPT_TOKENS, 0, 2, 0, estimated=True, flagged=True)


def test_tally_keeps_the_last_report(counter: TokenCounter) -> None:
    tally = StreamTally()
    tally.feed(chunk({"content": "a"}, usage={"prompt_tokens": 9, "completion_tokens": 1}))
    tally.feed(chunk({"content": "b"}, usage={"prompt_tokens": 9, "completion_tokens": 2}))
    tally.feed(chunk({"content": "c"}, usage=None))
    tally.feed(b'{"usage": "not an object"}')
    assert tally.result(counter, "gpt-4o", REQUEST) == Usage(9, 0, 2, 0)


def test_tally_ignores_garbage() -> None:
    tally = StreamTally()
    for payload in (b"", b"[DONE]", b"{", b"[1]", b'{"choices": "x"}', b'{"choices": [1, {"delta": 5}]}'):
        tally.feed(payload)
    assert tally.usage is None


def test_tally_bounds_the_text_it_keeps(monkeypatch: pytest.MonkeyPatch, counter: TokenCounter) -> None:
    first = chunk({"content": "hello world"})
    monkeypatch.setattr(usage_mod, "MAX_TEXT_CHARS", len(first))  # payload bytes kept: the first one only
    tally = StreamTally()
    tally.feed(first)
    tally.feed(chunk({"content": "x" * 30}))  # over the bound: counted at 3 characters a token
    used = tally.result(counter, "gpt-4o", REQUEST)
    assert used.completion_tokens == 2 + 10


def test_legacy_completion_stream_text(counter: TokenCounter) -> None:
    tally = StreamTally()
    tally.feed(b'{"object":"text_completion","choices":[{"index":0,"text":"hello world","finish_reason":null}]}')
    used = tally.result(counter, "gpt-3.5-turbo-instruct", {"prompt": "hello"})
    assert used == Usage(1, 0, 2, 0, estimated=True)


def test_body_usage_is_the_upstreams_when_sane(counter: TokenCounter) -> None:
    assert usage_for_body(counter, "gpt-4o", REQUEST, CHAT_BODY) == Usage(1200, 1024, 340, 128)


def test_body_usage_is_estimated_when_missing_or_absurd(counter: TokenCounter) -> None:
    body: dict[str, Any] = {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hello world", "reasoning_content": "hmm"}}
        ],
    }
    hmm = counter.count_text("gpt-4o", "hmm")
    expected = Usage(REQUEST_PROMPT_TOKENS, 0, 2 + hmm, hmm, estimated=True)
    assert usage_for_body(counter, "gpt-4o", REQUEST, orjson.dumps(body)) == expected
    body["usage"] = {"prompt_tokens": 20_000_000, "completion_tokens": 2}
    flagged = usage_for_body(counter, "gpt-4o", REQUEST, orjson.dumps(body))
    assert flagged == Usage(REQUEST_PROMPT_TOKENS, 0, 2 + hmm, hmm, estimated=True, flagged=True)


def test_embeddings_estimate(counter: TokenCounter) -> None:
    request = {"model": "emb", "input": ["hello world", "hello"]}
    used = usage_for_body(counter, "text-embedding-3-small", request, b'{"object":"list","data":[]}')
    assert used == Usage(3, 0, 0, 0, estimated=True)


def test_estimate_usage_counts_reasoning_inside_completion(counter: TokenCounter) -> None:
    used = estimate_usage(counter, "deepseek-reasoner", REQUEST, "hello world", "hello world")
    assert used == Usage(REQUEST_PROMPT_TOKENS, 0, 4, 2, estimated=True)
    assert used.total_tokens == REQUEST_PROMPT_TOKENS + 4


def test_tally_finds_usage_inside_a_choice_and_a_responses_event(counter: TokenCounter) -> None:
    kimi = StreamTally()
    kimi.feed(
        b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":8,"completion_tokens":2}}]}'
    )
    assert kimi.result(counter, "moonshot-v1-8k", REQUEST) == Usage(8, 0, 2, 0)
    responses = StreamTally()
    responses.feed(b'{"type":"response.completed","response":{"usage":{"input_tokens":4,"output_tokens":6}}}')
    assert responses.result(counter, "gpt-4o", REQUEST) == Usage(4, 0, 6, 0)
