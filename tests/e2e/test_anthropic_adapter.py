"""The anthropic adapter end to end: the real gateway in front of a fake Anthropic API, driven by the openai SDK.

The fake validates every request against the anthropic SDK's types and the API's turn rules; a teardown
check fails any test that made the gateway send a request the real API would refuse.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import FULL_KEY, PROVIDER_KEY, Gateway, start_gateway, stop_gateway
from tests.fakes.anthropic_upstream import ERROR_STATUS, FakeAnthropic

KEEP = "max_retries: 0, cooldown: {failures: 1000000}"
FAKE_MODELS = (
    "echo",
    "tool",
    "think",
    "cache",
    "stop-seq",
    "max-tokens",
    "refusal",
    "bad-key",
    "stream-error",
    "stream-cut",
    *(f"error-{kind}" for kind in ERROR_STATUS),
)
USER = [{"role": "user", "content": "hello there"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()


def gateway_config(port: int) -> str:
    url = f"http://127.0.0.1:{port}"
    aliases = "\n".join(f"  c-{m}: {{routes: [{{provider: claude, model: {m}}}], {KEEP}}}" for m in FAKE_MODELS)
    return f"""
providers:
  claude: {{type: anthropic, base_url: "{url}", api_key: "${{TEST_PROVIDER_KEY}}"}}
  claude-old:
    type: anthropic
    base_url: "{url}"
    api_key: "${{TEST_PROVIDER_KEY}}"
    headers: {{Anthropic-Version: "2023-01-01", anthropic-beta: "token-efficient-tools-2025-02-19"}}
models:
{aliases}
  c-old: {{routes: [{{provider: claude-old, model: echo}}], {KEEP}}}
  c-early: {{routes: [{{provider: claude, model: stream-error-early}}], fallbacks: [c-echo], {KEEP}}}
keys:
  - {{name: full-key, key: "${{TEST_FULL_KEY}}"}}
"""


@pytest.fixture(scope="module")
def claude_server() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gw(claude_server: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(gateway_config(claude_server.port), Path(tmp_path_factory.mktemp("anthropic")))
    yield gateway
    stop_gateway(gateway)


@pytest.fixture
def claude(claude_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    """The fake, cleared; afterwards, no request it received may have been one the real API refuses."""
    claude_server.recorder.clear()
    claude_server.invalid.clear()
    yield claude_server
    assert claude_server.invalid == []


@pytest.fixture
def client(gw: Gateway) -> openai.OpenAI:
    return gw.client()


def collect(stream: Any) -> tuple[list[Any], str, str, dict[int, dict[str, Any]]]:
    """Chunks, content, reasoning and tool calls (index -> id, name, arguments) of a streamed answer."""
    chunks = list(stream)
    content, reasoning = "", ""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning_content", None) or ""
        for call in delta.tool_calls or ():
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": "", "pieces": 0})
            entry["id"] += call.id or ""
            entry["name"] += (call.function.name if call.function else None) or ""
            entry["arguments"] += (call.function.arguments if call.function else None) or ""
            entry["pieces"] += 1
    return chunks, content, reasoning, calls


# --- plain chat ---------------------------------------------------------------------------------------------------


def test_plain_chat(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    reply = client.chat.completions.create(model="c-echo", messages=USER)
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.id == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 6)
    sent, headers = claude.last(), claude.last_headers()
    assert sent.path == "/v1/messages"
    assert headers["x-api-key"] == PROVIDER_KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert sent.body["model"] == "echo"
    assert sent.body["max_tokens"] == 4096


def test_system_prompt_goes_to_system(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    messages = [{"role": "system", "content": "You are a pirate."}, *USER]
    client.chat.completions.create(model="c-echo", messages=messages)
    body = claude.last().body
    assert body["system"] == [{"type": "text", "text": "You are a pirate."}]
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_multi_turn_with_same_role_messages_merged(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "reply one"},
        {"role": "assistant", "content": "reply two"},
        {"role": "user", "content": "third"},
    ]
    reply = client.chat.completions.create(model="c-echo", messages=messages)
    assert reply.choices[0].message.content == "echo: third"
    body = claude.last().body
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert [b["text"] for b in body["messages"][0]["content"]] == ["first", "second"]


def test_sampling_parameters(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    client.chat.completions.create(
        model="c-echo",
        messages=USER,
        temperature=1.6,
        top_p=0.8,
        max_tokens=300,
        stop=["###"],
        user="user-7",
        seed=42,
        frequency_penalty=0.3,
        extra_body={"top_k": 20},
    )
    body = claude.last().body
    assert (body["temperature"], body["top_p"], body["top_k"], body["max_tokens"]) == (1.0, 0.8, 20, 300)
    assert body["stop_sequences"] == ["###"]
    assert body["metadata"] == {"user_id": "user-7"}
    assert "seed" not in body and "frequency_penalty" not in body


def test_n_above_one_is_refused_before_any_upstream_call(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="c-echo", messages=USER, n=2)
    assert caught.value.body["param"] == "n"
    assert claude.recorder.requests == []


def test_config_headers_override_the_defaults(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    client.chat.completions.create(model="c-old", messages=USER)
    headers = claude.last_headers()
    assert headers["anthropic-version"] == "2023-01-01"
    assert headers["anthropic-beta"] == "token-efficient-tools-2025-02-19"


# --- tools and images ---------------------------------------------------------------------------------------------


def test_parallel_tool_calls_and_their_results(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    question = [{"role": "user", "content": "Weather in Paris and Tokyo?"}]
    first = client.chat.completions.create(model="c-tool", messages=question, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check the weather."
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [orjson.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert claude.last().body["tools"][0]["input_schema"]["required"] == ["city"]

    history = [
        *question,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "18C and sunny"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "25C and humid"},
    ]
    second = client.chat.completions.create(model="c-tool", messages=history, tools=[WEATHER])
    assert second.choices[0].message.content == "results: 18C and sunny | 25C and humid"
    results = claude.last().body["messages"][-1]
    assert results["role"] == "user"
    assert [b["tool_use_id"] for b in results["content"]] == [calls[0].id, calls[1].id]


def test_parallel_tool_calls_off(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    reply = client.chat.completions.create(
        model="c-tool",
        messages=USER,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    assert len(reply.choices[0].message.tool_calls or []) == 1
    assert claude.last().body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_image_data_url_and_http_url(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    parts = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}},
    ]
    reply = client.chat.completions.create(model="c-echo", messages=[{"role": "user", "content": parts}])
    assert reply.choices[0].message.content == "echo: describe"
    content = claude.last().body["messages"][0]["content"]
    assert content[1]["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}
    assert content[2]["source"] == {"type": "url", "url": "https://example.com/cat.webp"}


# --- streaming ----------------------------------------------------------------------------------------------------


def test_streaming_text_with_usage(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    stream = client.chat.completions.create(
        model="c-echo",
        messages=[{"role": "user", "content": "stream me a fairly long sentence please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks, content, _, _ = collect(stream)
    assert content == "echo: stream me a fairly long sentence please"
    assert chunks[0].choices[0].delta.role == "assistant"
    text_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(text_chunks) > 3  # relayed piece by piece, not as one block
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 6)
    assert claude.last().body["stream"] is True
    assert claude.last_headers()["accept"] == "text/event-stream"


def test_streaming_without_include_usage_has_no_usage_chunk(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    chunks, _, _, _ = collect(client.chat.completions.create(model="c-echo", messages=USER, stream=True))
    assert all(c.usage is None for c in chunks)


def test_streaming_tool_call_argument_deltas(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    stream = client.chat.completions.create(model="c-tool", messages=USER, tools=[WEATHER], stream=True)
    chunks, content, _, calls = collect(stream)
    assert content == "Let me check the weather."
    assert sorted(calls) == [0, 1]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_weather"]
    assert [orjson.loads(calls[i]["arguments"]) for i in (0, 1)] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert all(calls[i]["pieces"] > 2 for i in (0, 1))  # the arguments arrived in several deltas
    assert calls[0]["id"] != calls[1]["id"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


# --- reasoning, usage, stop reasons -------------------------------------------------------------------------------


def test_thinking_becomes_reasoning_content(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    reply = client.chat.completions.create(model="c-think", messages=USER, reasoning_effort="medium")
    message = reply.choices[0].message
    assert message.content == "The answer is 4."
    assert getattr(message, "reasoning_content", None) == "Budget 4096. 2 plus 2 is 4."
    body = claude.last().body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert body["max_tokens"] > 4096


def test_streamed_thinking_becomes_reasoning_content(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    stream = client.chat.completions.create(model="c-think", messages=USER, reasoning_effort="low", stream=True)
    _, content, reasoning, _ = collect(stream)
    assert reasoning == "Budget 1024. 2 plus 2 is 4."
    assert content == "The answer is 4."


@pytest.mark.parametrize("stream", [False, True])
def test_usage_with_cache_tokens(client: openai.OpenAI, claude: FakeAnthropic, stream: bool) -> None:
    if stream:
        chunks, _, _, _ = collect(
            client.chat.completions.create(
                model="c-cache",
                messages=USER,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        usage = chunks[-1].usage
    else:
        usage = client.chat.completions.create(model="c-cache", messages=USER).usage
    assert usage is not None
    assert usage.prompt_tokens == 125  # 5 fresh + 100 read from cache + 20 written to it
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 100
    assert usage.total_tokens == 131


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("alias", "finish"), [("c-stop-seq", "stop"), ("c-max-tokens", "length"), ("c-refusal", "content_filter")]
)
def test_stop_reasons(client: openai.OpenAI, claude: FakeAnthropic, alias: str, finish: str, stream: bool) -> None:
    if stream:
        chunks, _, _, _ = collect(client.chat.completions.create(model=alias, messages=USER, stop="END", stream=True))
        reason = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        reason = client.chat.completions.create(model=alias, messages=USER, stop="END").choices[0].finish_reason
    assert reason == finish


# --- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "text"),
    [
        ("invalid_request_error", 400, "prompt is too long"),
        ("authentication_error", 502, "gateway's credentials"),
        ("permission_error", 502, "gateway's credentials"),
        ("not_found_error", 502, "claude-nonexistent"),
        ("request_too_large", 413, "fake request_too_large"),
        ("rate_limit_error", 429, "fake rate_limit_error"),
        ("api_error", 502, "fake api_error"),
        ("overloaded_error", 503, "Overloaded"),
    ],
)
def test_errors_map_to_openai_statuses(
    client: openai.OpenAI, claude: FakeAnthropic, kind: str, status: int, text: str
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=f"c-error-{kind}", messages=USER)
    assert caught.value.status_code == status
    error = caught.value.body
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}
    assert text in error["message"]
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "7"


def test_upstream_key_never_reaches_the_client(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="c-bad-key", messages=USER)
    assert caught.value.status_code == 502
    assert PROVIDER_KEY not in caught.value.response.text
    assert claude.last_headers()["x-api-key"] == PROVIDER_KEY  # it was sent, and echoed back upstream


def _text(lines: list[str]) -> str:
    """The content of the chunk lines of a raw stream."""
    chunks = [orjson.loads(line.removeprefix("data: ")) for line in lines if line.startswith('data: {"id"')]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def _raw_stream(gw: Gateway, model: str) -> list[str]:
    body = {"model": model, "messages": USER, "stream": True}
    headers = {"Authorization": f"Bearer {FULL_KEY}"}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=10) as resp:
        assert resp.status_code == 200
        return [line for line in resp.iter_lines() if line]


def test_in_band_stream_error_is_surfaced(gw: Gateway, client: openai.OpenAI, claude: FakeAnthropic) -> None:
    lines = _raw_stream(gw, "c-stream-error")
    assert _text(lines) == "partial answer before trouble"  # what came before the error was relayed
    assert lines[-2].startswith('data: {"error"') and "overloaded_error" in lines[-2]
    assert lines[-1] == "data: [DONE]"
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(client.chat.completions.create(model="c-stream-error", messages=USER, stream=True))


def test_stream_cut_before_message_stop_ends_with_an_error(gw: Gateway, claude: FakeAnthropic) -> None:
    lines = _raw_stream(gw, "c-stream-cut")
    assert _text(lines) == "cut short"
    assert lines[-2].startswith('data: {"error"') and "upstream_stream_error" in lines[-2]
    assert lines[-1] == "data: [DONE]"


def test_error_event_before_the_message_falls_back(client: openai.OpenAI, claude: FakeAnthropic) -> None:
    _, content, _, _ = collect(client.chat.completions.create(model="c-early", messages=USER, stream=True))
    assert content == "echo: hello there"
    assert [b["model"] for b in claude.bodies()] == ["stream-error-early", "echo"]
