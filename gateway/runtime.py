"""The state of one gateway process: config snapshot, pooled upstream client, adapters.

Created by the app factory; started and stopped by the app's lifespan. Handlers read `snapshot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.admin.security.ssrf import PinnedResolver, UrlPolicy
from gateway.api.stored import MemoryResponseIndex, RedisResponseIndex
from gateway.cache import MemoryCache, RedisCache
from gateway.config.model import GatewayConfig
from gateway.config.snapshot import ClientKey, Snapshot, build_snapshot
from gateway.errors import Unavailable
from gateway.metering.service import MeteringService
from gateway.metrics import Metrics
from gateway.rag.internal import InternalCalls
from gateway.rag.service import KnowledgeService
from gateway.routing.health import MemoryHealth
from gateway.routing.probe import BackgroundChecker
from gateway.routing.redis_health import RedisHealth
from gateway.routing.router import Router
from gateway.routing.stats import RouteStats
from gateway.store.errors import DatabaseError
from gateway.upstream.aiohttp_client import AiohttpUpstream
from gateway.upstream.client import UpstreamClient
from plugins.providers.base import AdapterSettings
from plugins.providers.registry import create_adapter
from trainer.scheduler import Scheduler
from trainer.service import TrainerService
from trainer.store import TrainerStore


def connect_policy(file_config: GatewayConfig) -> UrlPolicy:
    """`provider_urls`, with the hosts the config file names trusted (an operator wrote them)."""
    rules = file_config.provider_urls
    trusted = {urlsplit(p.base_url).hostname or "" for p in file_config.providers.values() if p.base_url}
    return UrlPolicy(
        allow_private=rules.allow_private,
        allow_hosts=frozenset(rules.allow_hosts) | frozenset(h for h in trusted if h),
        deny_hosts=frozenset(rules.deny_hosts),
    )


class Runtime:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._snapshot: Snapshot | None = None
        self._client: UpstreamClient | None = None
        self.health: MemoryHealth | RedisHealth = (
            RedisHealth(config.redis_url, config.redis_prefix) if config.redis_url else MemoryHealth()
        )
        self.stats = RouteStats()
        self.router = Router(self.health, self.stats)
        self.metrics = Metrics(self.health, self.stats)
        self.cache: MemoryCache | RedisCache = (
            RedisCache(config.redis_url, config.redis_prefix)
            if config.redis_url
            else MemoryCache(config.cache.max_bytes)
        )
        self.responses: MemoryResponseIndex | RedisResponseIndex = (
            RedisResponseIndex(config.redis_url, config.redis_prefix) if config.redis_url else MemoryResponseIndex()
        )
        self.metering = MeteringService(config, self.metrics)
        self.resolver = PinnedResolver(connect_policy(config))
        self.knowledge = KnowledgeService(self.engine, InternalCalls(self, self.router), config.rag)
        self.trainer = TrainerService(TrainerStore(Path(config.data_dir) / "trainer"), config.trainer)
        self.scheduler = Scheduler(self.trainer)
        self._scheduling: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None

    def engine(self) -> AsyncEngine | None:
        """The database's pool, when there is a database and it has started."""
        database = self.metering.database
        if database is None:
            return None
        try:
            return database.engine
        except DatabaseError:
            return None

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            raise Unavailable("the gateway is starting", code="not_ready")
        return self._snapshot

    @property
    def ready(self) -> bool:
        return self._snapshot is not None and self._client is not None and self._client.ready

    def route_labels(self) -> list[str]:
        return [r.label for alias in self.snapshot.aliases.values() for r in alias.routes]

    async def start(self) -> None:
        if isinstance(self.health, RedisHealth):
            await self.health.start()
        await self.metering.start()
        self._client = AiohttpUpstream(resolver=self.resolver)
        self.apply(self.config)
        checks = self.config.health_checks
        if checks is not None:
            self._checker = asyncio.create_task(BackgroundChecker(self.snapshot, self.health, checks.interval).run())
        self.knowledge.start()
        self._scheduling = asyncio.create_task(self.scheduler.serve())
        gc.collect()
        gc.freeze()  # start-up objects live forever: keep them out of every later collection

    def apply(
        self,
        config: GatewayConfig,
        managed_keys: Mapping[str, ClientKey] | None = None,
        file_config: GatewayConfig | None = None,
    ) -> None:
        """Serve `config` from the next request on (start-up, a database change, a reloaded file). Only
        providers, models, keys, teams and prices change live; server, Redis and database settings need a restart.
        The hosts of the file's providers are trusted; every other upstream host must pass `provider_urls` at
        connect time (resolved, checked and pinned, so DNS rebinding cannot reach inside)."""
        assert self._client is not None
        self.resolver.policy = connect_policy(file_config or config)
        limit = self.config.server.max_response_bytes
        settings = AdapterSettings(max_response_bytes=limit, max_event_bytes=min(limit, 8 * 1024 * 1024))
        adapters = {name: create_adapter(name, p, self._client, settings) for name, p in config.providers.items()}
        self._snapshot = build_snapshot(config, adapters, managed_keys)
        self.metering.reprice(config)

    async def stop(self) -> None:
        for task in (self._checker, self._scheduling):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.knowledge.stop()
        await self.metering.stop()
        if self._client is not None:
            await self._client.aclose()
        if isinstance(self.health, RedisHealth):
            await self.health.stop()
        if isinstance(self.cache, RedisCache):
            await self.cache.aclose()
        if isinstance(self.responses, RedisResponseIndex):
            await self.responses.aclose()
