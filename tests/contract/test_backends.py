"""One contract, every backend: the response cache and the route-health store behave the same in memory
and in Redis (a real Redis, with a prefix of its own)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis

from gateway.cache import MemoryCache, RedisCache
from gateway.config.model import CooldownConfig
from gateway.routing.health import Health, MemoryHealth
from gateway.routing.redis_health import RedisHealth
from tests.fakes.clock import FakeClock


@pytest.fixture
def prefix(redis_url: str) -> AsyncIterator[str]:
    name = f"switchyard-contract-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)
    client.close()


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest, redis_url: str, prefix: str) -> AsyncIterator[MemoryCache | RedisCache]:
    if request.param == "memory":
        yield MemoryCache(1024 * 1024)
        return
    backend = RedisCache(redis_url, prefix)
    yield backend
    await backend.aclose()


@pytest.fixture(params=["memory", "redis"])
async def health(
    request: pytest.FixtureRequest, redis_url: str, prefix: str
) -> AsyncIterator[tuple[MemoryHealth | RedisHealth, FakeClock]]:
    clock = FakeClock(1_000_000.0)
    if request.param == "memory":
        yield MemoryHealth(clock), clock
        return
    store = RedisHealth(redis_url, prefix, clock)
    await store.start()
    yield store, clock
    await store.stop()


async def test_cache_round_trip_and_miss(cache: MemoryCache | RedisCache) -> None:
    assert await cache.get("absent") is None
    await cache.set("k", b'{"answer": 42}', 60)
    assert await cache.get("k") == b'{"answer": 42}'
    await cache.set("k", b"newer", 60)
    assert await cache.get("k") == b"newer"


COOL = CooldownConfig(failures=2, window=60, duration=30)


async def test_failures_trip_then_half_open_then_restore(health: tuple[MemoryHealth | RedisHealth, FakeClock]) -> None:
    store, clock = health
    route = "p/m"
    await store.failure(route, COOL, hard=False)
    assert store.health(route) is Health.HEALTHY
    await store.failure(route, COOL, hard=False)
    assert store.health(route) is Health.COOLING
    assert not store.available(route)
    assert store.cooling_for(route) == pytest.approx(30)
    clock.now += 31
    assert store.health(route) is Health.HALF_OPEN
    assert store.available(route)
    store.begin(route)
    assert not store.available(route)  # one probe at a time
    await store.success(route)
    assert store.health(route) is Health.HEALTHY and store.available(route)


async def test_hard_failure_and_failed_probe_cool_at_once(health: tuple[MemoryHealth | RedisHealth, FakeClock]) -> None:
    store, clock = health
    await store.failure("q/m", COOL, hard=True)
    assert store.health("q/m") is Health.COOLING
    clock.now += 31
    store.begin("q/m")
    await store.failure("q/m", COOL, hard=False)  # the probe failed: one failure is enough
    assert store.health("q/m") is Health.COOLING
    assert store.snapshot() == {"q/m": Health.COOLING}


async def test_redis_state_survives_a_new_process(redis_url: str, prefix: str) -> None:
    clock = FakeClock(1_000_000.0)
    first = RedisHealth(redis_url, prefix, clock)
    await first.start()
    await first.failure("r/m", COOL, hard=True)
    later = RedisHealth(redis_url, prefix, clock)
    await later.start()  # loads the shared cooldowns at start-up
    try:
        assert later.health("r/m") is Health.COOLING
    finally:
        await first.stop()
        await later.stop()
