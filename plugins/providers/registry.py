"""Adapter classes by provider `type`: the one place that maps names to vendors (no if/elif elsewhere)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gateway.config.model import ProviderConfig
from gateway.upstream.client import UpstreamClient
from plugins.providers.anthropic.adapter import AnthropicAdapter
from plugins.providers.base import AdapterSettings, ProviderAdapter
from plugins.providers.gemini.adapter import GeminiAdapter
from plugins.providers.openai.adapter import OpenAIAdapter
from plugins.providers.openai.azure import AzureOpenAIAdapter
from plugins.providers.presets import PRESETS, Rewrite

NEEDS_BASE_URL = frozenset({"azure_openai"})
"""Types whose base URL is the customer's own resource: no default exists."""

ADAPTERS: Mapping[str, type[ProviderAdapter]] = MappingProxyType(
    {
        "openai": OpenAIAdapter,
        "anthropic": AnthropicAdapter,
        "azure_openai": AzureOpenAIAdapter,
        "gemini": GeminiAdapter,
    }
)


def provider_types() -> list[str]:
    """Every `type` a provider config may name: adapters and vendor presets."""
    return sorted([*ADAPTERS, *PRESETS])


def resolve(config: ProviderConfig) -> tuple[type[ProviderAdapter], ProviderConfig, Rewrite | None]:
    """The adapter class for a provider config, with a preset's defaults and request rewrite filled in."""
    preset = PRESETS.get(config.type)
    if preset is None:
        return ADAPTERS[config.type], config, None
    responses_api = preset.responses_api if config.responses_api is None else config.responses_api
    update = {
        "base_url": config.base_url or preset.base_url,
        "headers": {**preset.headers, **config.headers},
        "responses_api": responses_api,
    }
    filled = config.model_copy(update=update)
    return ADAPTERS[preset.adapter], filled, preset.rewrite


def create_adapter(
    name: str, config: ProviderConfig, client: UpstreamClient, settings: AdapterSettings
) -> ProviderAdapter:
    adapter, filled, rewrite = resolve(config)
    instance = adapter(name, filled, client, settings)
    instance.rewrite = rewrite
    return instance
