"""Azure OpenAI: deployment in the URL, api-version in the query, the key in `api-key`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PROVIDER_KEY, start_gateway, stop_gateway
from tests.fakes.openai_upstream import FakeOpenAI


def test_azure_deployment_url_and_key_header(fake_upstream: FakeOpenAI, tmp_path: Path) -> None:
    config = f"""
providers:
  azure: {{type: azure_openai, base_url: "http://127.0.0.1:{fake_upstream.port}", api_key: "${{TEST_PROVIDER_KEY}}",
          api_version: "2024-10-21"}}
models:
  gpt4o: {{routes: [{{provider: azure, model: my-gpt4o-deployment}}]}}
keys:
  - {{name: k, key: "${{TEST_FULL_KEY}}"}}
"""
    gw = start_gateway(config, tmp_path)
    fake_upstream.recorder.clear()
    try:
        reply = gw.client().chat.completions.create(model="gpt4o", messages=[{"role": "user", "content": "hi"}])
    finally:
        stop_gateway(gw)
    assert reply.choices[0].message.content == "echo: hi"
    [received] = fake_upstream.recorder.requests
    assert received.path == "/openai/deployments/my-gpt4o-deployment/chat/completions?api-version=2024-10-21"
    assert received.headers["api-key"] == PROVIDER_KEY
    assert "Authorization" not in received.headers


def test_azure_needs_its_resource_url(tmp_path: Path) -> None:
    config = "providers:\n  azure: {type: azure_openai, api_key: k}\n"
    with pytest.raises(RuntimeError, match=r"providers\.azure\.base_url: required"):
        start_gateway(config, tmp_path)
