"""The immutable runtime view of a config: what the hot path reads, built once at start-up."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate
from types import MappingProxyType

from gateway.config.model import GatewayConfig, PricingConfig, ServerConfig
from plugins.providers.base import ProviderAdapter


def hash_key(key: str) -> str:
    """Client keys are held only as sha256 hex digests."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    model: str
    weight: float
    adapter: ProviderAdapter

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class Alias:
    name: str
    routes: tuple[Route, ...]
    cumulative_weights: tuple[float, ...]
    fallbacks: tuple[str, ...]
    pricing: PricingConfig | None


@dataclass(frozen=True, slots=True)
class ClientKey:
    name: str
    models: frozenset[str] | None
    """Aliases the key may call; None means all."""

    def allows(self, alias: str) -> bool:
        return self.models is None or alias in self.models


@dataclass(frozen=True, slots=True)
class Snapshot:
    server: ServerConfig
    aliases: Mapping[str, Alias]
    keys: Mapping[str, ClientKey]
    """sha256 hex of the key -> key."""
    adapters: Mapping[str, ProviderAdapter]

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for adapter in self.adapters.values() for s in adapter.secrets())


def build_snapshot(cfg: GatewayConfig, adapters: Mapping[str, ProviderAdapter]) -> Snapshot:
    aliases = {}
    for name, model in cfg.models.items():
        routes = tuple(Route(r.provider, r.model, r.weight, adapters[r.provider]) for r in model.routes)
        aliases[name] = Alias(
            name=name,
            routes=routes,
            cumulative_weights=tuple(accumulate(r.weight for r in routes)),
            fallbacks=tuple(model.fallbacks),
            pricing=model.pricing,
        )
    keys = {hash_key(k.key): ClientKey(k.name, frozenset(k.models) if k.models is not None else None) for k in cfg.keys}
    return Snapshot(
        server=cfg.server,
        aliases=MappingProxyType(aliases),
        keys=MappingProxyType(keys),
        adapters=MappingProxyType(dict(adapters)),
    )
