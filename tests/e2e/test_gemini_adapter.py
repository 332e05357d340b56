"""The gemini adapter end to end: the real gateway in front of a fake Gemini API, driven by the openai SDK.

The fake validates every request against the google-genai SDK's types; a teardown check fails any test that
made the gateway send a request the real API would refuse.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import FULL_KEY, PROVIDER_KEY, Gateway, start_gateway, stop_gateway
from tests.fakes.gemini_upstream import ERRORS, SIGNATURE, FakeGemini

KEEP = "max_retries: 0, cooldown: {failures: 1000000}"
FAKE_MODELS = (
    "echo",
    "tool",
    "think",
    "cache",
    "max-tokens",
    "safety",
    "blocked",
    "bad-key",
    "stream-error",
    "stream-cut",
    "text-embedding-004",
    *(f"error-{status}" for status in ERRORS),
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
    aliases = "\n".join(f"  g-{m}: {{routes: [{{provider: g, model: {m}}}], {KEEP}}}" for m in FAKE_MODELS)
    return f"""
providers:
  g: {{type: gemini, base_url: "{url}", api_key: "${{TEST_PROVIDER_KEY}}"}}
models:
{aliases}
  g-odd: {{routes: [{{provider: g, model: "echo?key=x/../y"}}], {KEEP}}}
  g-early: {{routes: [{{provider: g, model: error-503}}], fallbacks: [g-echo], {KEEP}}}
keys:
  - {{name: full-key, key: "${{TEST_FULL_KEY}}"}}
"""


@pytest.fixture(scope="module")
def gemini_server() -> Iterator[FakeGemini]:
    fake = FakeGemini()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gw(gemini_server: FakeGemini, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(gateway_config(gemini_server.port), Path(tmp_path_factory.mktemp("gemini")))
    yield gateway
    stop_gateway(gateway)


@pytest.fixture
def gemini(gemini_server: FakeGemini) -> Iterator[FakeGemini]:
    """The fake, cleared; afterwards, no request it received may have been one the real API refuses."""
    gemini_server.recorder.clear()
    gemini_server.invalid.clear()
    yield gemini_server
    assert gemini_server.invalid == []


@pytest.fixture
def client(gw: Gateway) -> openai.OpenAI:
    return gw.client()


def collect(stream: Any) -> tuple[list[Any], str, str, list[Any]]:
    """Chunks, content, reasoning and tool call deltas of a streamed answer."""
    chunks = list(stream)
    content, reasoning, calls = "", "", []
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning_content", None) or ""
        calls.extend(delta.tool_calls or ())
    return chunks, content, reasoning, calls


# --- plain chat ---------------------------------------------------------------------------------------------------


def test_plain_chat(client: openai.OpenAI, gemini: FakeGemini) -> None:
    reply = client.chat.completions.create(model="g-echo", messages=USER)
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "echo-001"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (8, 5)
    sent, headers = gemini.last(), gemini.last_headers()
    assert sent.path == "/v1beta/models/echo:generateContent"
    assert headers["x-goog-api-key"] == PROVIDER_KEY
    assert "authorization" not in headers
    assert sent.body == {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}


def test_model_name_is_quoted_into_one_path_segment(client: openai.OpenAI, gemini: FakeGemini) -> None:
    reply = client.chat.completions.create(model="g-odd", messages=USER)
    assert reply.model == "echo?key=x/../y-001"  # the fake got the whole name back as one segment
    assert gemini.last().path == "/v1beta/models/echo%3Fkey=x%2F..%2Fy:generateContent"  # yarl leaves = as is


def test_system_and_merged_turns(client: openai.OpenAI, gemini: FakeGemini) -> None:
    messages = [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "reply one"},
        {"role": "assistant", "content": "reply two"},
        {"role": "user", "content": "third"},
    ]
    reply = client.chat.completions.create(model="g-echo", messages=messages)
    assert reply.choices[0].message.content == "echo: third"
    body = gemini.last().body
    assert body["systemInstruction"] == {"parts": [{"text": "You are a pirate."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][1]["parts"] == [{"text": "reply one"}, {"text": "reply two"}]


def test_generation_config(client: openai.OpenAI, gemini: FakeGemini) -> None:
    reply = client.chat.completions.create(
        model="g-echo",
        messages=USER,
        temperature=1.5,
        top_p=0.8,
        max_tokens=300,
        stop=["###"],
        n=2,
        seed=42,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    )
    assert [c.message.content for c in reply.choices] == ["echo: hello there", "echo: hello there #1"]
    config = gemini.last().body["generationConfig"]
    assert config == {
        "temperature": 1.5,
        "topP": 0.8,
        "seed": 42,
        "maxOutputTokens": 300,
        "stopSequences": ["###"],
        "candidateCount": 2,
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }


# --- tools and images ---------------------------------------------------------------------------------------------


def test_tool_calls_and_their_results(client: openai.OpenAI, gemini: FakeGemini) -> None:
    question = [{"role": "user", "content": "Weather in Paris and Tokyo?"}]
    first = client.chat.completions.create(model="g-tool", messages=question, tools=[WEATHER], tool_choice="required")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [orjson.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert calls[0].id != calls[1].id
    body = gemini.last().body
    assert body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["required"] == ["city"]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    history = [
        *question,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp": 18}'},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "25C and humid"},
    ]
    second = client.chat.completions.create(model="g-tool", messages=history, tools=[WEATHER])
    assert second.choices[0].message.content == 'results: {"temp":18} | {"result":"25C and humid"}'
    contents = gemini.last().body["contents"]
    assert contents[1]["parts"][0]["thoughtSignature"] == SIGNATURE  # carried back inside the tool call id
    assert [p["functionResponse"]["name"] for p in contents[2]["parts"]] == ["get_weather", "get_weather"]


def test_named_tool_choice(client: openai.OpenAI, gemini: FakeGemini) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    client.chat.completions.create(model="g-tool", messages=USER, tools=[WEATHER], tool_choice=named)
    calling = gemini.last().body["toolConfig"]["functionCallingConfig"]
    assert calling == {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}


def test_images(client: openai.OpenAI, gemini: FakeGemini) -> None:
    parts = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?size=2"}},
    ]
    reply = client.chat.completions.create(model="g-echo", messages=[{"role": "user", "content": parts}])
    assert reply.choices[0].message.content == "echo: describe"
    sent = gemini.last().body["contents"][0]["parts"]
    assert sent[1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    assert sent[2] == {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=2"}}


def test_image_url_of_unknown_type_is_a_400(client: openai.OpenAI, gemini: FakeGemini) -> None:
    parts = [{"type": "image_url", "image_url": {"url": "https://example.com/picture"}}]
    with pytest.raises(openai.BadRequestError, match="cannot tell the type"):
        client.chat.completions.create(model="g-echo", messages=[{"role": "user", "content": parts}])
    assert gemini.recorder.requests == []


# --- streaming ----------------------------------------------------------------------------------------------------


def test_streaming_text_with_usage(client: openai.OpenAI, gemini: FakeGemini) -> None:
    stream = client.chat.completions.create(
        model="g-echo",
        messages=[{"role": "user", "content": "stream me a fairly long sentence please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks, content, _, _ = collect(stream)
    assert content == "echo: stream me a fairly long sentence please"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (8, 5)
    assert gemini.last().path == "/v1beta/models/echo:streamGenerateContent?alt=sse"
    assert gemini.last_headers()["accept"] == "text/event-stream"


def test_streaming_without_include_usage_has_no_usage_chunk(client: openai.OpenAI, gemini: FakeGemini) -> None:
    chunks, _, _, _ = collect(client.chat.completions.create(model="g-echo", messages=USER, stream=True))
    assert chunks and all(c.usage is None for c in chunks)


def test_streaming_tool_calls(client: openai.OpenAI, gemini: FakeGemini) -> None:
    stream = client.chat.completions.create(model="g-tool", messages=USER, tools=[WEATHER], stream=True)
    chunks, _, _, calls = collect(stream)
    assert [c.index for c in calls] == [0, 1]
    assert [orjson.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert all(c.id and c.function.name == "get_weather" for c in calls)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


# --- reasoning, usage, finish reasons -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_thoughts_become_reasoning_content(client: openai.OpenAI, gemini: FakeGemini, stream: bool) -> None:
    if stream:
        chunks, content, reasoning, _ = collect(
            client.chat.completions.create(
                model="g-think",
                messages=USER,
                reasoning_effort="medium",
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        usage = chunks[-1].usage
    else:
        reply = client.chat.completions.create(model="g-think", messages=USER, reasoning_effort="medium")
        content, reasoning, usage = reply.choices[0].message.content or "", "", reply.usage
        reasoning = getattr(reply.choices[0].message, "reasoning_content", None) or ""
    assert reasoning == "Budget 8192. 2 plus 2 is 4."
    assert content == "The answer is 4."
    assert usage is not None and usage.completion_tokens == 25
    assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 20
    thinking = gemini.last().body["generationConfig"]["thinkingConfig"]
    assert thinking == {"thinkingBudget": 8192, "includeThoughts": True}


def test_cached_tokens(client: openai.OpenAI, gemini: FakeGemini) -> None:
    usage = client.chat.completions.create(model="g-cache", messages=USER).usage
    assert usage is not None and usage.prompt_tokens == 120
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 100


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("alias", "finish", "refusal"),
    [
        ("g-max-tokens", "length", None),
        ("g-safety", "content_filter", "DANGEROUS"),
        ("g-blocked", "content_filter", "prompt"),
    ],
)
def test_finish_reasons(
    client: openai.OpenAI, gemini: FakeGemini, alias: str, finish: str, refusal: str | None, stream: bool
) -> None:
    if stream:
        chunks = list(client.chat.completions.create(model=alias, messages=USER, stream=True))
        reason = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        text = "".join(getattr(c.choices[0].delta, "refusal", None) or "" for c in chunks if c.choices)
    else:
        choice = client.chat.completions.create(model=alias, messages=USER).choices[0]
        reason, text = choice.finish_reason, choice.message.refusal or ""
    assert reason == finish
    if refusal is not None:
        assert "SAFETY" in text and refusal in text


# --- embeddings ---------------------------------------------------------------------------------------------------


def test_embeddings_float_and_dimensions(client: openai.OpenAI, gemini: FakeGemini) -> None:
    reply = client.embeddings.create(
        model="g-text-embedding-004", input=["hi", "there!"], dimensions=3, encoding_format="float"
    )
    assert [d.embedding for d in reply.data] == [[2.0, 0.5, 0.0], [6.0, 0.5, 1.0]]
    sent = gemini.last()
    assert sent.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert sent.body["requests"][0] == {
        "model": "models/text-embedding-004",
        "content": {"parts": [{"text": "hi"}]},
        "outputDimensionality": 3,
    }


def test_embeddings_base64_by_default(gw: Gateway, gemini: FakeGemini) -> None:
    body = {"model": "g-text-embedding-004", "input": "abc", "encoding_format": "base64"}
    resp = httpx.post(gw.url + "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {FULL_KEY}"})
    assert resp.status_code == 200
    raw = base64.b64decode(resp.json()["data"][0]["embedding"])
    assert struct.unpack("<4f", raw) == (3.0, 0.5, 0.0, 0.25)
    sdk = gw.client().embeddings.create(model="g-text-embedding-004", input="abc")  # the SDK asks for base64
    assert sdk.data[0].embedding == [3.0, 0.5, 0.0, 0.25]


# --- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "status", "text"),
    [
        (400, 400, "invalid argument"),
        (403, 502, "gateway's credentials"),
        (404, 502, "gemini-nonexistent"),
        (429, 429, "exceeded your current quota"),
        (500, 502, "internal error"),
        (503, 503, "overloaded"),
    ],
)
def test_errors_map_to_openai_statuses(
    client: openai.OpenAI, gemini: FakeGemini, upstream: int, status: int, text: str
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=f"g-error-{upstream}", messages=USER)
    assert caught.value.status_code == status
    error = caught.value.body
    assert isinstance(error, dict) and text in error["message"]
    if status == 429:
        assert error["code"] == "resource_exhausted" and error["type"] == "rate_limit_error"
        assert caught.value.response.headers["retry-after"] == "7"


def test_bad_key_is_a_gateway_fault_and_redacted(client: openai.OpenAI, gemini: FakeGemini) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="g-bad-key", messages=USER)
    assert caught.value.status_code == 502
    assert PROVIDER_KEY not in caught.value.response.text
    assert "API key not valid" in caught.value.response.text
    assert gemini.last_headers()["x-goog-api-key"] == PROVIDER_KEY


def test_retryable_error_falls_back(client: openai.OpenAI, gemini: FakeGemini) -> None:
    reply = client.chat.completions.create(model="g-early", messages=USER)
    assert reply.choices[0].message.content == "echo: hello there"
    assert [r.path.split(":")[0] for r in gemini.recorder.requests] == [
        "/v1beta/models/error-503",
        "/v1beta/models/echo",
    ]


def _raw_stream(gw: Gateway, model: str) -> list[str]:
    body = {"model": model, "messages": USER, "stream": True}
    headers = {"Authorization": f"Bearer {FULL_KEY}"}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=10) as resp:
        assert resp.status_code == 200
        return [line for line in resp.iter_lines() if line]


def _text(lines: list[str]) -> str:
    chunks = [orjson.loads(line.removeprefix("data: ")) for line in lines if line.startswith('data: {"id"')]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@pytest.mark.parametrize(
    ("alias", "code"), [("g-stream-error", "unavailable"), ("g-stream-cut", "upstream_stream_error")]
)
def test_broken_streams_end_with_an_in_band_error(gw: Gateway, gemini: FakeGemini, alias: str, code: str) -> None:
    lines = _raw_stream(gw, alias)
    assert _text(lines) == "partial answer before trouble"
    assert lines[-2].startswith('data: {"error"') and code in lines[-2]
    assert lines[-1] == "data: [DONE]"
