"""Upstream connections are resolved, checked and pinned: the config file's hosts are trusted, any other host that
resolves inside the network is refused at connect time (DNS rebinding cannot bypass the check made on save)."""

from __future__ import annotations

import pytest

from gateway.admin.security.ssrf import PinnedResolver
from gateway.config.loader import parse_config
from gateway.errors import UpstreamConnectError
from gateway.runtime import connect_policy
from gateway.upstream.aiohttp_client import AiohttpUpstream
from gateway.upstream.client import Timeouts

CONFIG = """
provider_urls: {allow_hosts: [models.example.com]}
providers:
  local: {type: openai, base_url: "http://localhost:11434/v1"}
  public: {type: deepseek}
"""


def test_file_hosts_are_trusted_and_nothing_else() -> None:
    policy = connect_policy(parse_config(CONFIG, ["openai", "deepseek"]))
    assert "localhost" in policy.allow_hosts and "models.example.com" in policy.allow_hosts
    assert policy.allow_private is False


async def test_a_name_that_resolves_inside_is_refused_at_connect_time() -> None:
    policy = connect_policy(parse_config("providers: {}\n", ["openai"]))
    client = AiohttpUpstream(resolver=PinnedResolver(policy))
    try:
        with pytest.raises(UpstreamConnectError, match="refused by provider_urls"):
            await client.send("GET", "http://localhost:9/v1/models", {}, None, Timeouts(2, 2, 2, 2))
    finally:
        await client.aclose()
