"""The README's provider matrix, rows `openai` and `azure_openai`: every cell marked supported, end to end.

One gateway serves both adapters in front of the matrix fake (tests/fakes/matrix_openai.py), which answers
under `/v1/...` like OpenAI and under `/openai/deployments/{deployment}/...?api-version=...` like Azure.
Each test runs once per adapter and checks what reached the upstream as well as what the SDK got back.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.conftest import FULL_KEY, PROVIDER_KEY, Gateway, start_gateway, stop_gateway
from tests.fakes.matrix_openai import ANSWER, REASONING, MatrixOpenAI
from tests.fakes.openai_upstream import THINKING

KEEP = "max_retries: 0, cooldown: {failures: 1000000}"
VENDORS = ("oai", "azure")
DEPLOYMENT = {"echo": "echo-dep", "tool": "tool", "reason": "reason", "think": "think-dep"}
USER = [{"role": "user", "content": "hello matrix"}]
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
    root = f"http://127.0.0.1:{port}"
    return f"""
providers:
  oai: {{type: openai, base_url: "{root}/v1", api_key: "${{TEST_PROVIDER_KEY}}"}}
  azure: {{type: azure_openai, base_url: "{root}", api_key: "${{TEST_PROVIDER_KEY}}"}}
models:
  oai-echo: {{routes: [{{provider: oai, model: echo-up}}], {KEEP}}}
  oai-tool: {{routes: [{{provider: oai, model: tool}}], {KEEP}}}
  oai-reason: {{routes: [{{provider: oai, model: reason}}], {KEEP}}}
  oai-think: {{reasoning: split, routes: [{{provider: oai, model: think-dep}}], {KEEP}}}
  oai-field-split: {{reasoning: split, routes: [{{provider: oai, model: reason-field}}], {KEEP}}}
  oai-field-keep: {{routes: [{{provider: oai, model: reason-field}}], {KEEP}}}
  oai-field-drop: {{reasoning: drop, routes: [{{provider: oai, model: reason-field}}], {KEEP}}}
  azure-echo: {{routes: [{{provider: azure, model: echo-dep}}], {KEEP}}}
  azure-tool: {{routes: [{{provider: azure, model: tool}}], {KEEP}}}
  azure-reason: {{routes: [{{provider: azure, model: reason}}], {KEEP}}}
  azure-think: {{reasoning: split, routes: [{{provider: azure, model: think-dep}}], {KEEP}}}
keys:
  - {{name: full-key, key: "${{TEST_FULL_KEY}}"}}
"""


@pytest.fixture(scope="module")
def matrix_server() -> Iterator[MatrixOpenAI]:
    fake = MatrixOpenAI()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gw(matrix_server: MatrixOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(gateway_config(matrix_server.port), Path(tmp_path_factory.mktemp("matrix-openai")))
    yield gateway
    stop_gateway(gateway)


@pytest.fixture
def fake(matrix_server: MatrixOpenAI) -> Iterator[MatrixOpenAI]:
    """The fake, cleared; afterwards, no request it received may have been one Azure would refuse."""
    matrix_server.recorder.clear()
    matrix_server.invalid.clear()
    yield matrix_server
    assert matrix_server.invalid == []


@pytest.fixture
def client(gw: Gateway) -> openai.OpenAI:
    return gw.client()


def upstream_path(vendor: str, model: str, endpoint: str = "chat/completions") -> str:
    """Where the adapter must send the request: OpenAI's path, or Azure's deployment URL with the default version."""
    if vendor == "oai":
        return f"/v1/{endpoint}"
    return f"/openai/deployments/{DEPLOYMENT[model]}/{endpoint}?api-version=2024-10-21"


def assert_credentials(vendor: str, headers: dict[str, str]) -> None:
    lowered = {name.lower(): value for name, value in headers.items()}
    if vendor == "oai":
        assert lowered["authorization"] == f"Bearer {PROVIDER_KEY}"
        assert "api-key" not in lowered
    else:
        assert lowered["api-key"] == PROVIDER_KEY
        assert "authorization" not in lowered
    assert FULL_KEY not in " ".join(lowered.values())


def collect(stream: Any) -> tuple[list[Any], str, str, dict[int, dict[str, Any]]]:
    """Chunks, content, reasoning and tool calls (index -> id, name, arguments, pieces) of a streamed answer."""
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


def finish_reasons(chunks: list[Any]) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


# --- chat and stream ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_chat(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str) -> None:
    reply = client.chat.completions.create(model=f"{vendor}-echo", messages=USER, temperature=0.2)
    assert reply.choices[0].message.content == "echo: hello matrix"
    assert reply.usage is not None and reply.usage.total_tokens == 8
    [sent] = fake.requests()
    assert sent.path == upstream_path(vendor, "echo")
    assert sent.body == {"model": "echo-up" if vendor == "oai" else "echo-dep", "messages": USER, "temperature": 0.2}
    assert_credentials(vendor, sent.headers)


@pytest.mark.parametrize("vendor", VENDORS)
def test_stream(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str) -> None:
    stream = client.chat.completions.create(
        model=f"{vendor}-echo", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks, content, _, _ = collect(stream)
    assert content.split() == ["echo:", "hello", "matrix"]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 3
    assert finish_reasons(chunks) == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8
    [sent] = fake.requests()
    assert sent.path == upstream_path(vendor, "echo")
    assert sent.body["stream"] is True
    assert sent.headers["Accept"] == "text/event-stream"
    assert_credentials(vendor, sent.headers)


# --- tools --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_tool_calls_and_their_results(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str) -> None:
    question = [{"role": "user", "content": "Weather in Paris and Tokyo?"}]
    first = client.chat.completions.create(model=f"{vendor}-tool", messages=question, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [orjson.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert fake.last().body["tools"] == [WEATHER]

    history = [
        *question,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "18C"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "25C"},
    ]
    second = client.chat.completions.create(model=f"{vendor}-tool", messages=history, tools=[WEATHER])
    assert second.choices[0].message.content == "results: 18C | 25C"
    sent = fake.last()
    assert sent.path == upstream_path(vendor, "tool")
    assert sent.body["messages"][1]["tool_calls"][1]["id"] == calls[1].id
    assert [m.get("tool_call_id") for m in sent.body["messages"][2:]] == [calls[0].id, calls[1].id]


@pytest.mark.parametrize("vendor", VENDORS)
def test_tool_choice_and_parallel_switch_pass_through(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    reply = client.chat.completions.create(
        model=f"{vendor}-tool", messages=USER, tools=[WEATHER], tool_choice=named, parallel_tool_calls=False
    )
    assert len(reply.choices[0].message.tool_calls or []) == 1
    body = fake.last().body
    assert (body["tool_choice"], body["parallel_tool_calls"]) == (named, False)


@pytest.mark.parametrize("vendor", VENDORS)
def test_streamed_tool_call_arguments(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str) -> None:
    stream = client.chat.completions.create(model=f"{vendor}-tool", messages=USER, tools=[WEATHER], stream=True)
    chunks, content, _, calls = collect(stream)
    assert content == ""
    assert sorted(calls) == [0, 1]
    assert [calls[i]["id"] for i in (0, 1)] == ["call_paris", "call_tokyo"]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_weather"]
    assert [orjson.loads(calls[i]["arguments"]) for i in (0, 1)] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert all(calls[i]["pieces"] > 2 for i in (0, 1))  # the arguments came in several deltas, and were relayed so
    assert finish_reasons(chunks) == ["tool_calls"]
    assert fake.last().path == upstream_path(vendor, "tool")


# --- vision -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_images_reach_the_upstream_untouched(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str) -> None:
    parts = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}},
    ]
    messages = [{"role": "user", "content": parts}]
    reply = client.chat.completions.create(model=f"{vendor}-echo", messages=messages)
    assert reply.choices[0].message.content == "echo: describe"
    sent = fake.last()
    assert sent.path == upstream_path(vendor, "echo")
    assert sent.body["messages"] == messages


# --- reasoning ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("vendor", VENDORS)
def test_reasoning_content_passes_through(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str, stream: bool) -> None:
    if stream:
        chunks, content, reasoning, _ = collect(
            client.chat.completions.create(
                model=f"{vendor}-reason", messages=USER, reasoning_effort="high", stream=True
            )
        )
        assert len([c for c in chunks if c.choices and getattr(c.choices[0].delta, "reasoning_content", None)]) > 1
    else:
        reply = client.chat.completions.create(model=f"{vendor}-reason", messages=USER, reasoning_effort="high")
        message = reply.choices[0].message
        content, reasoning = message.content or "", getattr(message, "reasoning_content", None)
    assert (content, reasoning) == (ANSWER, REASONING)
    sent = fake.last()
    assert sent.path == upstream_path(vendor, "reason")
    assert sent.body["reasoning_effort"] == "high"  # passed through untouched, as every other field


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("vendor", VENDORS)
def test_think_tags_split_per_alias(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str, stream: bool) -> None:
    if stream:
        _, content, reasoning, _ = collect(
            client.chat.completions.create(model=f"{vendor}-think", messages=USER, stream=True)
        )
    else:
        message = client.chat.completions.create(model=f"{vendor}-think", messages=USER).choices[0].message
        content, reasoning = message.content or "", getattr(message, "reasoning_content", None)
    assert THINKING.startswith("<think>")
    assert (content, reasoning) == ("The answer is 42 <not a tag>.", "\nThe user wants a number.\n")
    assert fake.last().path == upstream_path(vendor, "think")


@pytest.mark.parametrize("stream", [False, True])
def test_vendor_reasoning_field_is_renamed_under_split(client: openai.OpenAI, fake: MatrixOpenAI, stream: bool) -> None:
    if stream:
        _, content, reasoning, _ = collect(
            client.chat.completions.create(model="oai-field-split", messages=USER, stream=True)
        )
    else:
        message = client.chat.completions.create(model="oai-field-split", messages=USER).choices[0].message
        content, reasoning = message.content or "", getattr(message, "reasoning_content", None)
        assert getattr(message, "reasoning", None) is None
    assert (content, reasoning) == (ANSWER, REASONING)


def test_vendor_reasoning_field_is_untouched_under_keep(client: openai.OpenAI, fake: MatrixOpenAI) -> None:
    message = client.chat.completions.create(model="oai-field-keep", messages=USER).choices[0].message
    assert getattr(message, "reasoning", None) == REASONING
    assert getattr(message, "reasoning_content", None) is None


@pytest.mark.parametrize("stream", [False, True])
def test_vendor_reasoning_field_is_removed_under_drop(client: openai.OpenAI, fake: MatrixOpenAI, stream: bool) -> None:
    if stream:
        chunks = list(client.chat.completions.create(model="oai-field-drop", messages=USER, stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        assert "".join(d.content or "" for d in deltas) == ANSWER
        leftovers = [getattr(d, name, None) for d in deltas for name in ("reasoning", "reasoning_content")]
    else:
        message = client.chat.completions.create(model="oai-field-drop", messages=USER).choices[0].message
        assert message.content == ANSWER
        leftovers = [getattr(message, name, None) for name in ("reasoning", "reasoning_content")]
    assert not any(leftovers)


# --- completions and embeddings -----------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_completions(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str) -> None:
    completion = client.completions.create(model=f"{vendor}-echo", prompt="say this", max_tokens=5)
    assert completion.choices[0].text == "echo: say this"
    assert completion.usage is not None and completion.usage.total_tokens == 4
    streamed = client.completions.create(model=f"{vendor}-echo", prompt="a b", stream=True)
    assert "".join(c.choices[0].text for c in streamed).strip() == "echo: a b"
    plain, chunked = fake.requests()
    assert plain.path == chunked.path == upstream_path(vendor, "echo", "completions")
    assert (plain.body["prompt"], plain.body["max_tokens"], chunked.body["stream"]) == ("say this", 5, True)
    assert_credentials(vendor, plain.headers)


@pytest.mark.parametrize("vendor", VENDORS)
def test_embeddings(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str) -> None:
    reply = client.embeddings.create(model=f"{vendor}-echo", input=["one", "two"], encoding_format="float")
    assert [d.index for d in reply.data] == [0, 1]
    assert reply.data[1].embedding == [0.1, 0.2, 1.0]
    [sent] = fake.requests()
    assert sent.path == upstream_path(vendor, "echo", "embeddings")
    assert sent.body["input"] == ["one", "two"]
    assert_credentials(vendor, sent.headers)


# --- the Responses API: translated to chat completions (a base_url without responses_api, and Azure) -------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_responses_are_translated(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str) -> None:
    response = client.responses.create(model=f"{vendor}-echo", instructions="Be brief.", input="hello responses")
    assert response.status == "completed"
    assert response.output_text == "echo: hello responses"
    assert response.usage is not None and (response.usage.input_tokens, response.usage.output_tokens) == (5, 3)
    [sent] = fake.requests()
    assert sent.path == upstream_path(vendor, "echo")
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello responses"},
    ]


@pytest.mark.parametrize("vendor", VENDORS)
def test_streamed_responses_are_translated(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str) -> None:
    with client.responses.stream(model=f"{vendor}-echo", input="stream it") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas).split() == ["echo:", "stream", "it"]
    assert final.output_text.split() == ["echo:", "stream", "it"]
    assert fake.last().path == upstream_path(vendor, "echo")


@pytest.mark.parametrize("vendor", VENDORS)
def test_responses_function_calls_and_reasoning(client: openai.OpenAI, fake: MatrixOpenAI, vendor: str) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}
    calling = client.responses.create(model=f"{vendor}-tool", input="Weather?", tools=[tool])
    calls = [item for item in calling.output if item.type == "function_call"]
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Tokyo"}),
    ]
    assert fake.last().body["tools"][0]["function"]["name"] == "get_weather"
    reasoned = client.responses.create(model=f"{vendor}-reason", input="2 + 2?", reasoning={"effort": "low"})
    assert [item.type for item in reasoned.output] == ["reasoning", "message"]
    assert reasoned.output[0].content is not None and reasoned.output[0].content[0].text == REASONING
    assert reasoned.output_text == ANSWER
    assert fake.last().body["reasoning_effort"] == "low"
