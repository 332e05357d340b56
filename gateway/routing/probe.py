"""Route health checks: a tiny request straight through each route's adapter, timed.

Used by `switchyard test-routes` and by the optional background checker that brings cooled-down
routes back without spending a user's request on them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gateway.config.snapshot import Alias, Route, Snapshot
from gateway.errors import GatewayError
from gateway.routing.health import Health, HealthStore
from plugins.providers.base import CALLS, CallContext

PROBES: Mapping[str, tuple[str, dict[str, Any]]] = MappingProxyType(
    {
        "chat": ("chat", {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}),
        "completion": ("completions", {"prompt": "ping", "max_tokens": 1}),
        "embedding": ("embeddings", {"input": "ping"}),
    }
)
"""Alias mode -> (operation, the smallest useful request)."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    alias: str
    route: str
    ok: bool
    latency_ms: float
    error: str | None = None


async def probe(alias: Alias, route: Route) -> ProbeResult:
    op, body = PROBES[alias.mode]
    started = time.perf_counter()
    try:
        await CALLS[op](route.adapter, dict(body), CallContext("probe", route.model, route.timeouts))
    except GatewayError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return ProbeResult(alias.name, route.label, False, elapsed, f"{exc.status} {exc.code}: {exc.message}")
    return ProbeResult(alias.name, route.label, True, (time.perf_counter() - started) * 1000)


async def probe_all(snapshot: Snapshot, aliases: Iterable[str] | None = None) -> list[ProbeResult]:
    names = list(aliases) if aliases is not None else list(snapshot.aliases)
    jobs = [probe(snapshot.aliases[n], route) for n in names for route in snapshot.aliases[n].routes]
    return list(await asyncio.gather(*jobs))


class BackgroundChecker:
    """Every `interval` seconds, probe the routes whose cooldown has run out, and restore those that answer."""

    def __init__(self, snapshot: Snapshot, health: HealthStore, interval: float) -> None:
        self.snapshot = snapshot
        self.health = health
        self.interval = interval
        self.log = logging.getLogger("switchyard.health")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check_once()

    async def check_once(self) -> None:
        seen: set[str] = set()
        for alias in self.snapshot.aliases.values():
            for route in alias.routes:
                if route.label in seen or self.health.health(route.label) is not Health.HALF_OPEN:
                    continue
                if not self.health.available(route.label):
                    continue  # a request is probing it already
                seen.add(route.label)
                self.health.begin(route.label)
                result = await probe(alias, route)
                if result.ok:
                    await self.health.success(route.label)
                    self.log.info("route %s is back after a health check", route.label)
                else:
                    await self.health.failure(route.label, alias.cooldown, hard=True)
