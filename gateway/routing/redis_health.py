"""Route cooldowns shared by every gateway process through Redis.

Reads stay local (a MemoryHealth mirror), so the hot path never waits on Redis: a success costs nothing,
a failure one pipelined round trip. Trips and restores are published to every process and also kept in a
hash that each process re-reads every few seconds, so a missed message heals itself. When Redis is down
the store degrades to this process's own counts and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.config.model import CooldownConfig
from gateway.routing.health import Health, MemoryHealth

REFRESH_SECONDS = 2.0


class RedisHealth:
    def __init__(self, url: str, prefix: str = "switchyard", clock: Callable[[], float] = time.time) -> None:
        self.local = MemoryHealth(clock)
        self.clock = clock
        self.redis = aioredis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.cooldowns = f"{prefix}:cooldowns"
        self.channel = f"{prefix}:health"
        self.prefix = prefix
        self.log = logging.getLogger("switchyard.health")
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and load the shared state; raises when Redis is configured but unreachable."""
        await self.redis.ping()
        await self.refresh()
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.channel)
        self._tasks = [asyncio.create_task(self._listen(pubsub)), asyncio.create_task(self._refresh_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.redis.aclose()

    # --- reads: local only --------------------------------------------------------------------------------
    def health(self, route: str) -> Health:
        return self.local.health(route)

    def available(self, route: str) -> bool:
        return self.local.available(route)

    def cooling_for(self, route: str) -> float:
        return self.local.cooling_for(route)

    def begin(self, route: str) -> None:
        self.local.begin(route)

    def release(self, route: str) -> None:
        self.local.release(route)

    def tracked(self, route: str) -> bool:
        return route in self.local.states

    def snapshot(self) -> dict[str, Health]:
        return self.local.snapshot()

    # --- writes -------------------------------------------------------------------------------------------
    async def success(self, route: str) -> None:
        if route not in self.local.states or not self.local.restore(route):
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hdel(self.cooldowns, route)
                pipe.publish(self.channel, orjson.dumps({"route": route, "until": 0}))
                await pipe.execute()
        except RedisError as exc:
            self.log.warning("could not share the recovery of route %s: %s", route, exc.__class__.__name__)

    async def failure(self, route: str, cfg: CooldownConfig, *, hard: bool) -> None:
        counted = not hard and self.local.health(route) is not Health.HALF_OPEN
        if counted and await self._count(route, cfg) < cfg.failures:
            return
        until = self.clock() + cfg.duration
        self.local.trip(route, until)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(self.cooldowns, route, str(until))
                pipe.delete(f"{self.prefix}:failures:{route}")
                pipe.publish(self.channel, orjson.dumps({"route": route, "until": until}))
                await pipe.execute()
        except RedisError as exc:
            self.log.warning("could not share the cooldown of route %s: %s", route, exc.__class__.__name__)

    async def _count(self, route: str, cfg: CooldownConfig) -> int:
        key = f"{self.prefix}:failures:{route}"
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, int(cfg.window * 1000), nx=True)
                count, _ = await pipe.execute()
            return int(count)
        except RedisError as exc:
            self.log.warning("Redis unavailable, counting failures of %s in-process: %s", route, type(exc).__name__)
            return self.local.count_failure(route, cfg.window)

    # --- background sync ----------------------------------------------------------------------------------
    def apply(self, route: str, until: float) -> None:
        """A trip (until in the future or past: cooling or half-open) or a restore (until 0) seen elsewhere."""
        if until:
            state = self.local.states.get(route)
            if state is None or state.cool_until != until:
                self.local.trip(route, until)
        else:
            self.local.restore(route)

    async def refresh(self) -> None:
        shared = await self.redis.hgetall(self.cooldowns)
        routes = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in shared.items()}
        for route, until in routes.items():
            self.apply(route, until)
        for route in [r for r, s in self.local.states.items() if s.cool_until and r not in routes]:
            self.local.restore(route)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except RedisError as exc:
                self.log.warning("could not refresh shared route health: %s", exc.__class__.__name__)

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        while True:
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=REFRESH_SECONDS)
            except RedisError:
                await asyncio.sleep(REFRESH_SECONDS)
                continue
            if message and message.get("type") == "message":
                event = orjson.loads(message["data"])
                self.apply(str(event["route"]), float(event["until"]))
