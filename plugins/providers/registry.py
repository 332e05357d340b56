"""Adapter classes by provider `type`: the one place that maps names to vendors (no if/elif elsewhere)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gateway.config.model import ProviderConfig
from gateway.upstream.client import UpstreamClient
from plugins.providers.base import AdapterSettings, ProviderAdapter
from plugins.providers.openai.adapter import OpenAIAdapter

ADAPTERS: Mapping[str, type[ProviderAdapter]] = MappingProxyType({"openai": OpenAIAdapter})


def provider_types() -> list[str]:
    return sorted(ADAPTERS)


def create_adapter(
    name: str, config: ProviderConfig, client: UpstreamClient, settings: AdapterSettings
) -> ProviderAdapter:
    return ADAPTERS[config.type](name, config, client, settings)
