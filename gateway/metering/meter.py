"""Prices and ledger rows: what a request used, what it cost, and the rows the writer puts in the ledger.

The price of an attempt is its alias's `pricing` when set, else the upstream model's from the config's `prices`
or the shipped table (None: unknown, cost 0). Cost is computed once, here, when the row is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from gateway.config.model import GatewayConfig, PricingConfig
from gateway.config.snapshot import ClientKey, Route
from gateway.metering.pricing import Price, PriceTable, cost
from gateway.metering.usage import Usage

ZERO = Decimal(0)


def price_of(pricing: PricingConfig) -> Price:
    return Price.of(
        str(pricing.input),
        str(pricing.output),
        None if pricing.cached_input is None else str(pricing.cached_input),
        None if pricing.reasoning is None else str(pricing.reasoning),
        pricing.currency,
    )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt that reached an upstream (or the cache), as the ledger records it."""

    number: int
    route: Route | None
    usage: Usage
    status: str
    http_status: int | None


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What is known of the request as a whole when its rows are written."""

    request_id: str
    ts: datetime
    key: ClientKey
    alias: str
    stream: bool
    latency_ms: float
    ttfb_ms: float | None
    cache_hit: bool = False
    request_log: Any = None
    rag: Any = None


class Pricer:
    """Prices per alias and per upstream model, resolved once from the config and the shipped table."""

    def __init__(self, config: GatewayConfig) -> None:
        overrides = {model: price_of(p) for model, p in config.prices.items()}
        self.table = PriceTable(overrides)
        self.alias_prices: Mapping[str, Price] = MappingProxyType(
            {name: price_of(m.pricing) for name, m in config.models.items() if m.pricing is not None}
        )
        self._by_model: dict[str, Price | None] = {}
        """Lookups already made (upstream model names come from the config, so this stays small)."""
        worst = {name: self._dearest(name, [r.model for r in m.routes]) for name, m in config.models.items()}
        self.worst: Mapping[str, Price | None] = MappingProxyType(worst)

    def _dearest(self, alias: str, models: list[str]) -> Price | None:
        own = self.alias_prices.get(alias)
        if own is not None:
            return own
        found = [p for p in (self.table.lookup(m) for m in models) if p is not None]
        return max(found, key=lambda p: p.input + max(p.output, p.reasoning or ZERO), default=None)

    def price(self, alias: str, upstream_model: str) -> Price | None:
        own = self.alias_prices.get(alias)
        if own is not None:
            return own
        try:
            return self._by_model[upstream_model]
        except KeyError:
            found = self._by_model[upstream_model] = self.table.lookup(upstream_model)
            return found

    def worst_case(self, alias: str, prompt_tokens: int, completion_tokens: int) -> tuple[Decimal, str]:
        """The most the request can cost (before routing), and its currency; zero when no price is known."""
        price = self.worst.get(alias)
        if price is None:
            return ZERO, "USD"
        dearer_reasoning = (price.reasoning or ZERO) > price.output
        reasoning = completion_tokens if dearer_reasoning else 0
        return cost(price, prompt_tokens, 0, completion_tokens, reasoning), price.currency

    def charge(self, alias: str, attempt: Attempt) -> tuple[Decimal, str]:
        if attempt.route is None:
            return ZERO, "USD"
        price = self.price(alias, attempt.route.model)
        if price is None:
            return ZERO, "USD"
        u = attempt.usage
        return cost(price, u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.reasoning_tokens), price.currency


def ledger_row(facts: RequestFacts, attempt: Attempt, amount: Decimal, currency: str) -> dict[str, Any]:
    """One usage_ledger row (the columns of gateway.store.schema)."""
    route, usage = attempt.route, attempt.usage
    return {
        "request_id": facts.request_id,
        "attempt": attempt.number,
        "ts": facts.ts,
        "key_name": facts.key.name,
        "user_name": facts.key.user,
        "team": facts.key.team,
        "alias": facts.alias,
        "provider": route.provider if route else None,
        "upstream_model": route.model if route else None,
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "completion_tokens": usage.completion_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "estimated": usage.estimated,
        "cost": amount,
        "currency": currency,
        "status": attempt.status,
        "http_status": attempt.http_status,
        "latency_ms": facts.latency_ms,
        "ttfb_ms": facts.ttfb_ms,
        "stream": facts.stream,
        "cache_hit": facts.cache_hit,
        "request_log": facts.request_log,
        "rag": facts.rag,
    }
