"""The immutable runtime view of a config: what the hot path reads, built once at start-up."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from gateway.config.model import (
    AliasTimeoutConfig,
    BudgetConfig,
    CacheConfig,
    CooldownConfig,
    GatewayConfig,
    KeySpec,
    ModelConfig,
    PricingConfig,
    RetrievalConfig,
    ServerConfig,
    StickyConfig,
    Strategy,
    TimeoutConfig,
)
from gateway.limits.budget import BudgetScope
from gateway.limits.rate import LimitSpec
from gateway.upstream.client import Timeouts
from plugins.providers.base import ProviderAdapter

DEFAULT_TIMEOUTS = Timeouts(connect=5.0, first_byte=60.0, idle=60.0, total=600.0)
DEFAULT_COOLDOWN = CooldownConfig()
DEFAULT_RETRIEVAL = RetrievalConfig()


def hash_key(key: str) -> str:
    """Client keys are held only as sha256 hex digests."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    model: str
    weight: float
    adapter: ProviderAdapter
    priority: int = 0
    rpm: int | None = None
    tpm: int | None = None
    price: float = 0.0
    """Input plus output price per 1M tokens, for the `cost` strategy."""
    timeouts: Timeouts = DEFAULT_TIMEOUTS
    label: str = ""
    """`provider/model`: the channel's identity for health, stats and logs (shared across aliases)."""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", f"{self.provider}/{self.model}")


@dataclass(frozen=True, slots=True)
class Alias:
    name: str
    routes: tuple[Route, ...]
    fallbacks: tuple[str, ...] = ()
    pricing: PricingConfig | None = None
    strategy: Strategy = "weighted"
    mode: str = "chat"
    max_retries: int = 2
    retry_on: frozenset[int] = frozenset((408, 429, 500, 502, 503, 504))
    context_window_fallbacks: tuple[str, ...] = ()
    content_policy_fallbacks: tuple[str, ...] = ()
    cooldown: CooldownConfig = DEFAULT_COOLDOWN
    deadline: float = 600.0
    """Seconds for all attempts of a request together."""
    sticky: StickyConfig | None = None
    cache: CacheConfig | None = None
    reasoning: str = "keep"
    log_requests: bool = False
    knowledge_bases: tuple[str, ...] = ()
    retrieval: RetrievalConfig = DEFAULT_RETRIEVAL


@dataclass(frozen=True, slots=True)
class ClientKey:
    name: str
    models: frozenset[str] | None
    """Aliases the key may call; None means all."""
    cache: CacheConfig | None = None
    user: str | None = None
    team: str | None = None
    limits: tuple[LimitSpec, ...] = ()
    """The key's own rpm/tpm (empty: none)."""
    model_limits: Mapping[str, LimitSpec] = field(default_factory=dict)
    """Alias -> the key's limits on that alias."""
    budgets: tuple[BudgetScope, ...] = ()
    """The key's budget and its team's."""

    def allows(self, alias: str) -> bool:
        return self.models is None or alias in self.models

    def specs(self, alias: str) -> tuple[LimitSpec, ...]:
        """Every rate limit a request of this key to `alias` falls under."""
        own = self.model_limits.get(alias)
        return self.limits if own is None else (*self.limits, own)


@dataclass(frozen=True, slots=True)
class Snapshot:
    server: ServerConfig
    aliases: Mapping[str, Alias]
    keys: Mapping[str, ClientKey]
    """sha256 hex of the key -> key."""
    adapters: Mapping[str, ProviderAdapter]

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for adapter in self.adapters.values() for s in adapter.secrets())


def route_timeouts(provider: TimeoutConfig, alias: AliasTimeoutConfig | None) -> Timeouts:
    """The provider's timeouts with the alias's overrides applied."""
    over = alias or AliasTimeoutConfig()
    first_byte = over.first_byte or provider.first_byte
    return Timeouts(
        connect=over.connect or provider.connect,
        first_byte=first_byte,
        idle=over.idle or provider.idle or first_byte,
        total=over.total or provider.total,
    )


def _price(pricing: PricingConfig | None) -> float:
    return pricing.input + pricing.output if pricing else 0.0


def build_alias(name: str, model: ModelConfig, cfg: GatewayConfig, adapters: Mapping[str, ProviderAdapter]) -> Alias:
    routes = tuple(
        Route(
            provider=r.provider,
            model=r.model,
            weight=r.weight,
            adapter=adapters[r.provider],
            priority=r.priority,
            rpm=r.rpm,
            tpm=r.tpm,
            price=_price(r.pricing or model.pricing),
            timeouts=route_timeouts(cfg.providers[r.provider].timeout, model.timeout),
        )
        for r in model.routes
    )
    deadline = model.timeout.total if model.timeout and model.timeout.total else max(r.timeouts.total for r in routes)
    return Alias(
        name=name,
        routes=routes,
        fallbacks=tuple(model.fallbacks),
        pricing=model.pricing,
        strategy=model.strategy,
        mode=model.mode,
        max_retries=model.max_retries,
        retry_on=frozenset(model.retry_on),
        context_window_fallbacks=tuple(model.context_window_fallbacks),
        content_policy_fallbacks=tuple(model.content_policy_fallbacks),
        cooldown=model.cooldown,
        deadline=deadline,
        sticky=model.sticky,
        cache=model.cache,
        reasoning=model.reasoning,
        log_requests=model.log_requests,
        knowledge_bases=tuple(model.knowledge_bases),
        retrieval=model.retrieval,
    )


def _budget(name: str, budget: BudgetConfig | None) -> tuple[BudgetScope, ...]:
    if budget is None:
        return ()
    return (BudgetScope(name, Decimal(str(budget.amount)), budget.period, budget.currency),)


def build_key(k: KeySpec, cfg: GatewayConfig) -> ClientKey:
    team = cfg.teams.get(k.team) if k.team else None
    own = LimitSpec(f"key:{k.name}", k.rpm, k.tpm)
    per_model = {
        alias: LimitSpec(f"key:{k.name}/model:{alias}", limit.rpm, limit.tpm)
        for alias, limit in k.per_model.items()
        if limit.rpm or limit.tpm
    }
    return ClientKey(
        name=k.name,
        models=frozenset(k.models) if k.models is not None else None,
        cache=k.cache,
        user=k.user,
        team=k.team,
        limits=(own,) if k.rpm or k.tpm else (),
        model_limits=MappingProxyType(per_model),
        budgets=_budget(f"key:{k.name}", k.budget) + _budget(f"team:{k.team}", team.budget if team else None),
    )


def build_snapshot(
    cfg: GatewayConfig, adapters: Mapping[str, ProviderAdapter], managed_keys: Mapping[str, ClientKey] | None = None
) -> Snapshot:
    """The runtime view of a config; `managed_keys` (sha256 hex -> key) are the keys kept in the database."""
    aliases = {name: build_alias(name, model, cfg, adapters) for name, model in cfg.models.items()}
    keys = {**(managed_keys or {}), **{hash_key(k.key): build_key(k, cfg) for k in cfg.keys}}
    return Snapshot(
        server=cfg.server,
        aliases=MappingProxyType(aliases),
        keys=MappingProxyType(keys),
        adapters=MappingProxyType(dict(adapters)),
    )
