"""The README's presets table end to end: every preset type serves chat, streams and the Responses API through the
`openai` adapter, with the provider key and the config's own headers; only `vllm` passes `/v1/responses` through.

The presets' default base URLs are vendor hosts, so here each config names the fake as its own `base_url` (the
README's "a config's own base_url and headers win"); the defaults themselves are checked in
tests/unit/test_matrix_providers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import FULL_KEY, PROVIDER_KEY, Gateway, start_gateway, stop_gateway
from tests.fakes.matrix_openai import ANSWER, REASONING, MatrixOpenAI

PRESETS = ("deepseek", "qwen", "zhipu", "qianfan", "moonshot", "doubao", "vllm", "ollama")
KEEP = "max_retries: 0, cooldown: {failures: 1000000}"
USER = [{"role": "user", "content": "hello preset"}]


def gateway_config(port: int) -> str:
    base = f"http://127.0.0.1:{port}/v1"
    providers = "\n".join(
        f'  {name}: {{type: {name}, base_url: "{base}", api_key: "${{TEST_PROVIDER_KEY}}", '
        f"headers: {{X-Preset: {name}}}}}"
        for name in PRESETS
    )
    models = "\n".join(
        f"  {name}-chat: {{routes: [{{provider: {name}, model: {name}-model}}], {KEEP}}}\n"
        f"  {name}-reason: {{routes: [{{provider: {name}, model: reason}}], {KEEP}}}"
        for name in PRESETS
    )
    return f"""
providers:
{providers}
models:
{models}
keys:
  - {{name: full-key, key: "${{TEST_FULL_KEY}}"}}
"""


@pytest.fixture(scope="module")
def preset_server() -> Iterator[MatrixOpenAI]:
    fake = MatrixOpenAI()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gw(preset_server: MatrixOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(gateway_config(preset_server.port), Path(tmp_path_factory.mktemp("matrix-presets")))
    yield gateway
    stop_gateway(gateway)


@pytest.fixture
def fake(preset_server: MatrixOpenAI) -> MatrixOpenAI:
    preset_server.recorder.clear()
    return preset_server


@pytest.mark.parametrize("preset", PRESETS)
def test_chat_and_stream_reach_the_vendor_with_its_key_and_headers(
    gw: Gateway, fake: MatrixOpenAI, preset: str
) -> None:
    client = gw.client()
    reply = client.chat.completions.create(model=f"{preset}-chat", messages=USER)
    assert reply.choices[0].message.content == "echo: hello preset"
    streamed = client.chat.completions.create(model=f"{preset}-chat", messages=USER, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).split() == [
        "echo:",
        "hello",
        "preset",
    ]
    for sent in fake.requests():
        assert sent.path == "/v1/chat/completions"
        assert sent.body["model"] == f"{preset}-model"
        assert sent.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
        assert sent.headers["X-Preset"] == preset
        assert FULL_KEY not in " ".join(sent.headers.values())


@pytest.mark.parametrize("preset", PRESETS)
def test_reasoning_content_passes_through(gw: Gateway, fake: MatrixOpenAI, preset: str) -> None:
    message = gw.client().chat.completions.create(model=f"{preset}-reason", messages=USER).choices[0].message
    assert (message.content, getattr(message, "reasoning_content", None)) == (ANSWER, REASONING)


@pytest.mark.parametrize("preset", PRESETS)
def test_responses_pass_through_only_where_the_vendor_serves_them(gw: Gateway, fake: MatrixOpenAI, preset: str) -> None:
    response = gw.client().responses.create(model=f"{preset}-chat", input="hello responses")
    assert response.output_text == "echo: hello responses"
    [sent] = fake.requests()
    assert sent.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    if preset == "vllm":  # the README: "served: /v1/responses passes through"
        assert response.id.startswith("resp_fake")  # the upstream's own id: nothing was translated
        assert sent.path == "/v1/responses"
        assert sent.body == {"model": "vllm-model", "input": "hello responses"}
    else:
        assert sent.path == "/v1/chat/completions"
        assert sent.body["messages"] == [{"role": "user", "content": "hello responses"}]


def test_stored_vllm_response_can_be_fetched(gw: Gateway, fake: MatrixOpenAI) -> None:
    client = gw.client()
    first = client.responses.create(model="vllm-chat", input="keep me")
    assert client.responses.retrieve(first.id).output_text == "echo: keep me"
    assert fake.requests()[-1].path == f"/v1/responses/{first.id}"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="deepseek-chat", input="x", previous_response_id=first.id)
    assert caught.value.param == "previous_response_id"  # a translated alias keeps no state
