"""End to end with the official openai SDK: requests reach the configured upstream, rewritten only in `model`."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import FULL_KEY, PROVIDER_KEY, SCOPED_KEY, Gateway
from tests.fakes.openai_upstream import FakeOpenAI

USER = [{"role": "user", "content": "hello gateway"}]


def test_chat_is_routed_and_model_rewritten(gateway: Gateway, upstream: FakeOpenAI) -> None:
    reply = gateway.client().chat.completions.create(model="echo", messages=USER)
    assert reply.choices[0].message.content == "echo: hello gateway"
    assert reply.model == "echo-upstream"  # the upstream's answer passes through untouched
    [received] = upstream.recorder.requests
    assert received.path == "/v1/chat/completions"
    assert received.body["model"] == "echo-upstream"
    assert received.body["messages"] == USER


def test_provider_credentials_replace_the_clients(gateway: Gateway, upstream: FakeOpenAI) -> None:
    gateway.client().chat.completions.create(model="echo", messages=USER)
    [received] = upstream.recorder.requests
    assert received.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert received.headers["X-Tenant"] == "acme"  # the provider's configured extra header
    assert not any(FULL_KEY in value for value in received.headers.values())


def test_tools_and_unknown_parameters_pass_through(gateway: Gateway, upstream: FakeOpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    gateway.client().chat.completions.create(
        model="echo",
        messages=USER,
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        seed=7,
        logprobs=True,
        top_logprobs=2,
        temperature=0.3,
        extra_body={"top_k": 40, "vendor_extra": {"nested": [1, 2]}},
    )
    [received] = upstream.recorder.requests
    body = received.body
    assert body["tools"] == tools
    assert body["tool_choice"] == "auto"
    assert body["response_format"] == {"type": "json_object"}
    assert (body["seed"], body["logprobs"], body["top_logprobs"], body["temperature"]) == (7, True, 2, 0.3)
    assert body["top_k"] == 40
    assert body["vendor_extra"] == {"nested": [1, 2]}


def test_client_cannot_redirect_or_recredential_a_request(gateway: Gateway, upstream: FakeOpenAI) -> None:
    gateway.client().chat.completions.create(
        model="echo",
        messages=USER,
        extra_body={
            "api_base": "http://169.254.169.254/",
            "base_url": "http://evil.example/",
            "api_key": "sk-attacker-0000000000000",
            "custom_llm_provider": "openai",
        },
    )
    [received] = upstream.recorder.requests
    for field in ("api_base", "base_url", "api_key", "custom_llm_provider"):
        assert field not in received.body
    assert received.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"


def test_completions_and_embeddings(gateway: Gateway, upstream: FakeOpenAI) -> None:
    client = gateway.client()
    completion = client.completions.create(model="echo", prompt="say this")
    assert completion.choices[0].text == "echo: say this"
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="echo", prompt="a b", stream=True))
    assert streamed.strip() == "echo: a b"
    embedding = client.embeddings.create(model="embed", input=["one", "two"])
    assert [d.index for d in embedding.data] == [0, 1]
    assert embedding.data[1].embedding == [0.1, 0.2, 1.0]
    paths = [r.path for r in upstream.recorder.requests]
    assert paths == ["/v1/completions", "/v1/completions", "/v1/embeddings"]
    assert upstream.recorder.requests[2].body["model"] == "embed-upstream"


def test_alias_names_may_contain_a_slash(gateway: Gateway, upstream: FakeOpenAI) -> None:
    reply = gateway.client().chat.completions.create(model="team/model", messages=USER)
    assert reply.model == "slash-upstream"
    assert gateway.client().models.retrieve("team/model").id == "team/model"


def test_models_list_only_what_the_key_may_use(gateway: Gateway) -> None:
    full = {m.id for m in gateway.client().models.list()}
    assert {"echo", "weighted", "embed", "team/model"} <= full
    scoped = [m.id for m in gateway.client(SCOPED_KEY).models.list()]
    assert scoped == ["echo", "native"]
    assert gateway.client(SCOPED_KEY).models.retrieve("echo").id == "echo"
    with pytest.raises(openai.NotFoundError):
        gateway.client(SCOPED_KEY).models.retrieve("weighted")
    with pytest.raises(openai.NotFoundError):
        gateway.client().models.retrieve("no-such-model")


@pytest.mark.parametrize("header", ["x-api-key", "api-key"])
def test_alternative_key_headers_have_the_same_restrictions(gateway: Gateway, header: str) -> None:
    body = {"model": "echo", "messages": USER}
    ok = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers={header: SCOPED_KEY})
    assert ok.status_code == 200
    denied = httpx.post(
        gateway.url + "/v1/chat/completions", json={**body, "model": "other"}, headers={header: SCOPED_KEY}
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "model_not_allowed"


def test_key_in_query_string_is_not_accepted(gateway: Gateway) -> None:
    resp = httpx.post(
        gateway.url + "/v1/chat/completions", params={"key": FULL_KEY}, json={"model": "echo", "messages": USER}
    )
    assert resp.status_code == 401


def test_health_and_readiness(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200
    assert ready.headers["x-request-id"].startswith("req_")


def test_every_response_has_a_distinct_request_id(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url) as http:
        ids = {
            http.post("/v1/chat/completions", json={"model": "echo", "messages": USER}, headers=_auth()).headers[
                "x-request-id"
            ],
            http.get("/v1/models", headers=_auth()).headers["x-request-id"],
            http.get("/nowhere").headers["x-request-id"],
            http.post("/v1/chat/completions", content=b"{").headers["x-request-id"],
        }
    assert len(ids) == 4


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {FULL_KEY}"}
