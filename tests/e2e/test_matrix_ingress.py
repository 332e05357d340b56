"""The README's "Ingress formats": `/v1/messages` (Anthropic SDK: text, images, tools, thinking, streaming, errors)
and `/v1/responses` reach every alias, whatever its vendor.

One gateway in front of the three fakes: `openai` and `azure_openai` on the matrix fake, `anthropic` on the fake
Anthropic API, `gemini` on the fake Gemini API (both of which refuse any request the real API would refuse; a
teardown check fails the test that made one). Each test runs once per vendor.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import FULL_KEY, Gateway, start_gateway, stop_gateway
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.matrix_openai import ANSWER, REASONING, MatrixOpenAI
from tests.fakes.openai_upstream import FakeOpenAI

KEEP = "max_retries: 0, cooldown: {failures: 1000000}"
VENDORS = ("oai", "azure", "claude", "gem")
# Upstream model of each vendor's alias, by role: the fakes choose their behaviour by it.
UPSTREAM = {
    "oai": {"echo": "echo-up", "tool": "tool", "think": "reason"},
    "azure": {"echo": "echo-dep", "tool": "tool", "think": "reason"},
    "claude": {"echo": "echo", "tool": "tool", "think": "think"},
    "gem": {"echo": "echo", "tool": "tool", "think": "think"},
}
# (input, output) tokens each fake reports for an echo.
USAGE = {"oai": (5, 3), "azure": (5, 3), "claude": (12, 6), "gem": (8, 5)}
RESULTS = {
    "oai": "results: 18C | 25C",
    "azure": "results: 18C | 25C",
    "claude": "results: 18C | 25C",
    "gem": 'results: {"result":"18C"} | {"result":"25C"}',
}
SPLIT_REASONING = "\nThe user wants a number.\n"  # the core fake's <think> answer, split
SPLIT_ANSWER = "The answer is 42 <not a tag>."
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()
DATA_URL = f"data:image/png;base64,{PNG}"
HTTP_URL = "https://example.com/cat.webp"
ANTHROPIC_ERROR_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def gateway_config(openai_port: int, claude_port: int, gemini_port: int) -> str:
    aliases = "\n".join(
        f"  {vendor}-{role}: {{routes: [{{provider: {vendor}, model: {model}}}], {KEEP}}}"
        for vendor, roles in UPSTREAM.items()
        for role, model in roles.items()
    )
    drops = "\n".join(
        f"  {vendor}-think-drop: {{reasoning: drop, routes: [{{provider: {vendor}, model: {roles['think']}}}], {KEEP}}}"
        for vendor, roles in UPSTREAM.items()
    )
    return f"""
providers:
  oai: {{type: openai, base_url: "http://127.0.0.1:{openai_port}/v1", api_key: "${{TEST_PROVIDER_KEY}}"}}
  azure: {{type: azure_openai, base_url: "http://127.0.0.1:{openai_port}", api_key: "${{TEST_PROVIDER_KEY}}"}}
  claude: {{type: anthropic, base_url: "http://127.0.0.1:{claude_port}", api_key: "${{TEST_PROVIDER_KEY}}"}}
  gem: {{type: gemini, base_url: "http://127.0.0.1:{gemini_port}", api_key: "${{TEST_PROVIDER_KEY}}"}}
models:
{aliases}
{drops}
  claude-rate-limited: {{routes: [{{provider: claude, model: error-rate_limit_error}}], {KEEP}}}
  claude-stream-error: {{routes: [{{provider: claude, model: stream-error}}], {KEEP}}}
  gem-overloaded: {{routes: [{{provider: gem, model: error-503}}], {KEEP}}}
  gem-invalid: {{routes: [{{provider: gem, model: error-400}}], {KEEP}}}
keys:
  - {{name: full-key, key: "${{TEST_FULL_KEY}}"}}
"""


@dataclass
class Fakes:
    openai: MatrixOpenAI
    claude: FakeAnthropic
    gemini: FakeGemini

    def all(self) -> tuple[MatrixOpenAI, FakeAnthropic, FakeGemini]:
        return self.openai, self.claude, self.gemini

    def last_body(self, vendor: str) -> Any:
        fake = {"claude": self.claude, "gem": self.gemini}.get(vendor, self.openai)
        return fake.last().body


@pytest.fixture(scope="module")
def servers() -> Iterator[Fakes]:
    fakes = Fakes(MatrixOpenAI(), FakeAnthropic(), FakeGemini())
    for fake in fakes.all():
        fake.start()
    yield fakes
    for fake in fakes.all():
        fake.stop()


@pytest.fixture(scope="module")
def gw(servers: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = gateway_config(servers.openai.port, servers.claude.port, servers.gemini.port)
    gateway = start_gateway(config, Path(tmp_path_factory.mktemp("matrix-ingress")))
    yield gateway
    stop_gateway(gateway)


@pytest.fixture
def fakes(servers: Fakes) -> Iterator[Fakes]:
    """The fakes, cleared; afterwards, none may have received a request its real API would refuse."""
    for fake in servers.all():
        fake.recorder.clear()
        fake.invalid.clear()
    yield servers
    for fake in servers.all():
        assert fake.invalid == []


@pytest.fixture
def claude_sdk(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=FULL_KEY, max_retries=0)


@pytest.fixture
def openai_sdk(gw: Gateway) -> openai.OpenAI:
    return gw.client()


def assert_images_arrived(vendor: str, body: dict[str, Any]) -> None:
    """The data URL and the http URL reached the vendor in its own image form, after the text."""
    if vendor in ("oai", "azure"):
        parts = body["messages"][-1]["content"]
        assert parts[1:] == [
            {"type": "image_url", "image_url": {"url": DATA_URL}},
            {"type": "image_url", "image_url": {"url": HTTP_URL}},
        ]
    elif vendor == "claude":
        blocks = body["messages"][-1]["content"]
        assert [b["source"] for b in blocks[1:]] == [
            {"type": "base64", "media_type": "image/png", "data": PNG},
            {"type": "url", "url": HTTP_URL},
        ]
    else:
        assert body["contents"][-1]["parts"][1:] == [
            {"inlineData": {"mimeType": "image/png", "data": PNG}},
            {"fileData": {"mimeType": "image/webp", "fileUri": HTTP_URL}},
        ]


# --- /v1/messages: the Anthropic SDK in front of every vendor ---------------------------------------------------

ASK = [{"role": "user", "content": "hello ingress"}]
WEATHER_TOOL = {"name": "get_weather", "description": "Current weather of a city", "input_schema": SCHEMA}
WEATHER_ASK = [{"role": "user", "content": "Weather in Paris and Tokyo?"}]


@pytest.mark.parametrize("vendor", VENDORS)
def test_messages_text(claude_sdk: anthropic.Anthropic, fakes: Fakes, vendor: str) -> None:
    message = claude_sdk.messages.create(model=f"{vendor}-echo", max_tokens=64, system="Be brief.", messages=ASK)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "echo: hello ingress"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == USAGE[vendor]


@pytest.mark.parametrize("vendor", VENDORS)
def test_messages_streaming(claude_sdk: anthropic.Anthropic, fakes: Fakes, vendor: str) -> None:
    with claude_sdk.messages.stream(model=f"{vendor}-echo", max_tokens=64, messages=ASK) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1  # relayed as it came, not as one block
    assert "".join(pieces).split() == ["echo:", "hello", "ingress"]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == USAGE[vendor][1]


@pytest.mark.parametrize("vendor", VENDORS)
def test_messages_images(claude_sdk: anthropic.Anthropic, fakes: Fakes, vendor: str) -> None:
    content: list[Any] = [
        {"type": "text", "text": "describe"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": HTTP_URL}},
    ]
    message = claude_sdk.messages.create(
        model=f"{vendor}-echo", max_tokens=64, messages=[{"role": "user", "content": content}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "echo: describe"
    assert_images_arrived(vendor, fakes.last_body(vendor))


@pytest.mark.parametrize("vendor", VENDORS)
def test_messages_tool_use_and_results(claude_sdk: anthropic.Anthropic, fakes: Fakes, vendor: str) -> None:
    first = claude_sdk.messages.create(
        model=f"{vendor}-tool", max_tokens=256, tools=[WEATHER_TOOL], messages=WEATHER_ASK
    )
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"})]
    assert uses[0].id != uses[1].id
    history: list[Any] = [
        *WEATHER_ASK,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": uses[0].id, "content": "18C"},
                {"type": "tool_result", "tool_use_id": uses[1].id, "content": "25C"},
            ],
        },
    ]
    second = claude_sdk.messages.create(model=f"{vendor}-tool", max_tokens=256, tools=[WEATHER_TOOL], messages=history)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and second.content[0].text == RESULTS[vendor]


@pytest.mark.parametrize("vendor", VENDORS)
def test_messages_streamed_tool_use(claude_sdk: anthropic.Anthropic, fakes: Fakes, vendor: str) -> None:
    with claude_sdk.messages.stream(
        model=f"{vendor}-tool", max_tokens=256, tools=[WEATHER_TOOL], messages=WEATHER_ASK
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds  # the arguments arrived as partial JSON deltas
    uses = [block for block in final.content if block.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"})]
    assert all(u.id for u in uses) and uses[0].id != uses[1].id
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("vendor", ["oai", "azure", "claude"])
def test_messages_thinking_blocks(claude_sdk: anthropic.Anthropic, fakes: Fakes, vendor: str, stream: bool) -> None:
    request: dict[str, Any] = {"model": f"{vendor}-think", "max_tokens": 64, "messages": ASK}
    if stream:
        with claude_sdk.messages.stream(**request) as events:
            message = events.get_final_message()
    else:
        message = claude_sdk.messages.create(**request)
    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking.endswith(REASONING)
    assert text.type == "text" and text.text == ANSWER


@pytest.mark.parametrize("vendor", ["claude", "gem"])
def test_messages_thinking_request_reaches_the_vendor(
    claude_sdk: anthropic.Anthropic, fakes: Fakes, vendor: str
) -> None:
    message = claude_sdk.messages.create(
        model=f"{vendor}-think",
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=ASK,
    )
    sent = fakes.last_body(vendor)
    if vendor == "claude":  # a 2048-token budget is `medium` effort, capped below the request's max_tokens
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4095}
    else:
        assert sent["generationConfig"]["thinkingConfig"]["includeThoughts"] is True
    assert [block.type for block in message.content] == ["thinking", "text"]


def test_messages_vendor_errors_have_anthropics_shape(claude_sdk: anthropic.Anthropic, fakes: Fakes) -> None:
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude_sdk.messages.create(model="claude-rate-limited", max_tokens=8, messages=ASK)
    assert limited.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "fake rate_limit_error"},
    }
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        claude_sdk.messages.create(model="gem-overloaded", max_tokens=8, messages=ASK)
    assert overloaded.value.status_code == 503
    assert isinstance(overloaded.value.body, dict) and overloaded.value.body["type"] == "error"
    assert overloaded.value.body["error"]["type"] == "overloaded_error"
    assert "overloaded" in overloaded.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as invalid:
        claude_sdk.messages.create(model="gem-invalid", max_tokens=8, messages=ASK)
    assert isinstance(invalid.value.body, dict) and invalid.value.body["error"]["type"] == "invalid_request_error"


def test_messages_vendor_error_mid_stream_is_an_error_event(
    gw: Gateway, claude_sdk: anthropic.Anthropic, fakes: Fakes
) -> None:
    with (
        pytest.raises(anthropic.APIStatusError, match="Overloaded"),
        claude_sdk.messages.stream(model="claude-stream-error", max_tokens=64, messages=ASK) as stream,
    ):
        "".join(stream.text_stream)
    body = {"model": "claude-stream-error", "max_tokens": 64, "stream": True, "messages": ASK}
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, headers={"x-api-key": FULL_KEY}) as resp:
        text = resp.read().decode()
    assert text.startswith("event: message_start")
    data = [orjson.loads(line.removeprefix("data: ")) for line in text.splitlines() if line.startswith("data: ")]
    deltas = [d["delta"]["text"] for d in data if d["type"] == "content_block_delta"]
    assert "".join(deltas) == "partial answer before trouble"  # what came before the error was relayed
    assert [d["type"] for d in data][-1] == "error" and "message_stop" not in [d["type"] for d in data]
    assert data[-1]["error"]["message"] == "Overloaded"
    assert data[-1]["error"]["type"] in ANTHROPIC_ERROR_TYPES


# --- /v1/responses: the OpenAI Responses API in front of every vendor (translated) -------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_responses_text(openai_sdk: openai.OpenAI, fakes: Fakes, vendor: str) -> None:
    response = openai_sdk.responses.create(model=f"{vendor}-echo", instructions="Be brief.", input="hello responses")
    assert response.status == "completed"
    assert response.output_text == "echo: hello responses"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == USAGE[vendor]


@pytest.mark.parametrize("vendor", VENDORS)
def test_responses_streaming(openai_sdk: openai.OpenAI, fakes: Fakes, vendor: str) -> None:
    with openai_sdk.responses.stream(model=f"{vendor}-echo", input="stream it") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") > 1
    assert final.output_text.split() == ["echo:", "stream", "it"]
    assert final.usage is not None and final.usage.output_tokens == USAGE[vendor][1]


@pytest.mark.parametrize("vendor", VENDORS)
def test_responses_function_calls_and_outputs(openai_sdk: openai.OpenAI, fakes: Fakes, vendor: str) -> None:
    tool = {"type": "function", "name": "get_weather", "description": "Weather", "parameters": SCHEMA}
    first = openai_sdk.responses.create(model=f"{vendor}-tool", input="Weather in Paris and Tokyo?", tools=[tool])
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Tokyo"}),
    ]
    history: list[Any] = [
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        *({"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in calls),
        *(
            {"type": "function_call_output", "call_id": c.call_id, "output": out}
            for c, out in zip(calls, ["18C", "25C"], strict=True)
        ),
    ]
    second = openai_sdk.responses.create(model=f"{vendor}-tool", input=history, tools=[tool])
    assert second.output_text == RESULTS[vendor]


@pytest.mark.parametrize("vendor", VENDORS)
def test_responses_streamed_function_calls(openai_sdk: openai.OpenAI, fakes: Fakes, vendor: str) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": SCHEMA}
    with openai_sdk.responses.stream(model=f"{vendor}-tool", input="Weather?", tools=[tool]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    calls = [item for item in final.output if item.type == "function_call"]
    assert [orjson.loads(c.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}]


# Reasoning effort -> each vendor's own switch, and its reasoning back as a reasoning item.
EFFORT_SENT = {
    "oai": lambda body: body["reasoning_effort"] == "medium",
    "azure": lambda body: body["reasoning_effort"] == "medium",
    "claude": lambda body: body["thinking"] == {"type": "enabled", "budget_tokens": 4096},
    "gem": lambda body: body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 8192, "includeThoughts": True},
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("vendor", VENDORS)
def test_responses_reasoning(openai_sdk: openai.OpenAI, fakes: Fakes, vendor: str, stream: bool) -> None:
    request: dict[str, Any] = {"model": f"{vendor}-think", "input": "2 + 2?", "reasoning": {"effort": "medium"}}
    if stream:
        with openai_sdk.responses.stream(**request) as events:
            deltas = [e.delta for e in events if e.type == "response.reasoning_text.delta"]
            response = events.get_final_response()
        assert "".join(deltas).endswith(REASONING)
    else:
        response = openai_sdk.responses.create(**request)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text.endswith(REASONING)
    assert response.output_text == ANSWER
    assert EFFORT_SENT[vendor](fakes.last_body(vendor))


@pytest.mark.parametrize("vendor", VENDORS)
def test_responses_images(openai_sdk: openai.OpenAI, fakes: Fakes, vendor: str) -> None:
    content = [
        {"type": "input_text", "text": "describe"},
        {"type": "input_image", "image_url": DATA_URL, "detail": "auto"},
        {"type": "input_image", "image_url": HTTP_URL, "detail": "auto"},
    ]
    response = openai_sdk.responses.create(model=f"{vendor}-echo", input=[{"role": "user", "content": content}])
    assert response.output_text == "echo: describe"
    body = fakes.last_body(vendor)
    if vendor in ("oai", "azure"):  # the detail travels with the URL to OpenAI-style upstreams
        parts = body["messages"][-1]["content"]
        assert [p["image_url"] for p in parts[1:]] == [
            {"url": DATA_URL, "detail": "auto"},
            {"url": HTTP_URL, "detail": "auto"},
        ]
    else:
        assert_images_arrived(vendor, body)


# --- cells marked "no": the ingress reaches the alias, which refuses clearly -------------------------------------


@pytest.mark.parametrize(
    ("path", "alias", "body"),
    [
        ("/v1/completions", "claude-echo", {"prompt": "x"}),
        ("/v1/embeddings", "claude-echo", {"input": "x"}),
        ("/v1/completions", "gem-echo", {"prompt": "x"}),
    ],
)
def test_unsupported_operations_are_a_clear_400(gw: Gateway, fakes: Fakes, path: str, alias: str, body: dict) -> None:
    resp = httpx.post(gw.url + path, json={"model": alias, **body}, headers={"Authorization": f"Bearer {FULL_KEY}"})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["code"] == "unsupported_operation" and "does not support" in error["message"]
    assert all(fake.recorder.requests == [] for fake in fakes.all())


@pytest.mark.parametrize("alias", ["claude-echo", "gem-echo"])
def test_logprobs_are_refused_with_a_400(openai_sdk: openai.OpenAI, fakes: Fakes, alias: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_sdk.chat.completions.create(model=alias, messages=ASK, logprobs=True, top_logprobs=2)
    assert caught.value.param == "logprobs"
    assert all(fake.recorder.requests == [] for fake in fakes.all())


# --- `reasoning: split` reaches both ingresses, streams included (the core gateway's think-split alias) ----------


@pytest.mark.parametrize("stream", [False, True])
def test_split_think_tags_become_thinking_blocks(gateway: Gateway, upstream: FakeOpenAI, stream: bool) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=FULL_KEY, max_retries=0)
    request: dict[str, Any] = {"model": "think-split", "max_tokens": 64, "messages": ASK}
    if stream:
        with client.messages.stream(**request) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**request)
    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == SPLIT_REASONING
    assert text.type == "text" and text.text == SPLIT_ANSWER


@pytest.mark.parametrize("stream", [False, True])
def test_split_think_tags_become_a_reasoning_item(gateway: Gateway, upstream: FakeOpenAI, stream: bool) -> None:
    client = gateway.client()
    if stream:
        with client.responses.stream(model="think-split", input="think") as events:
            response = events.get_final_response()
    else:
        response = client.responses.create(model="think-split", input="think")
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == SPLIT_REASONING
    assert response.output_text == SPLIT_ANSWER


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("vendor", VENDORS)
def test_reasoning_drop_removes_every_vendors_reasoning(
    openai_sdk: openai.OpenAI, fakes: Fakes, vendor: str, stream: bool
) -> None:
    request: dict[str, Any] = {"model": f"{vendor}-think-drop", "messages": ASK, "reasoning_effort": "medium"}
    if stream:
        chunks = list(openai_sdk.chat.completions.create(**request, stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        content = "".join(d.content or "" for d in deltas)
        reasoning = [getattr(d, "reasoning_content", None) for d in deltas]
    else:
        message = openai_sdk.chat.completions.create(**request).choices[0].message
        content, reasoning = message.content or "", [getattr(message, "reasoning_content", None)]
    assert content == ANSWER
    assert not any(reasoning)
    assert EFFORT_SENT[vendor](fakes.last_body(vendor))  # the vendor did reason: the gateway removed it
