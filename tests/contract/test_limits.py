"""One contract, both backends: rate limits and budgets behave the same in memory and in a real Redis.

Time is a FakeClock for both (the Redis stores pass it to their scripts in place of the server clock), so no
test sleeps; the cases about several processes use separate Redis clients on the server clock.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis

from gateway.limits import (
    ALLOW,
    BudgetExceeded,
    BudgetScope,
    BudgetStore,
    BudgetUsage,
    FailPolicy,
    LimitSpec,
    LimitsUnavailable,
    MemoryBudgets,
    MemoryRateLimiter,
    RateLimiter,
    RedisBudgets,
    RedisRateLimiter,
    rate_headers,
)
from gateway.limits.policy import safe_location
from tests.fakes.clock import FakeClock

NOON = datetime(2026, 11, 29, 12, tzinfo=UTC).timestamp()
TIMEOUT = 2.0  # generous for the functional cases (100 connections at once); the outage cases use the default
HOLD = 60.0


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"switchyard-limits-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


@pytest.fixture(params=["memory", "redis"])
async def rate(
    request: pytest.FixtureRequest, redis_url: str, prefix: str, clock: FakeClock
) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter(clock)
        return
    limiter = RedisRateLimiter(redis_url, prefix, timeout=TIMEOUT, clock=clock)
    await limiter.start()
    yield limiter
    await limiter.aclose()


@pytest.fixture(params=["memory", "redis"])
async def budgets(
    request: pytest.FixtureRequest, redis_url: str, prefix: str, clock: FakeClock
) -> AsyncIterator[BudgetStore]:
    if request.param == "memory":
        yield MemoryBudgets(clock, hold=HOLD)
        return
    store = RedisBudgets(redis_url, prefix, timeout=TIMEOUT, hold=HOLD, clock=clock)
    await store.start()
    yield store
    await store.aclose()


@pytest.fixture(params=["memory", "redis"])
async def processes(request: pytest.FixtureRequest, redis_url: str, prefix: str) -> AsyncIterator[str]:
    """'memory': one process's store; 'redis': the prefix two processes share, on the Redis server's clock."""
    yield "" if request.param == "memory" else prefix


# --- rate limits ------------------------------------------------------------------------------------------


async def test_rpm_admits_exactly_the_limit_then_again_as_it_refills(rate: RateLimiter, clock: FakeClock) -> None:
    spec = [LimitSpec("key:a", rpm=5)]
    seen = [await rate.check(spec, 0) for _ in range(5)]
    assert all(d.allowed for d in seen)
    assert [d.requests.remaining for d in seen if d.requests] == [4, 3, 2, 1, 0]
    sixth = await rate.check(spec, 0)
    assert not sixth.allowed and sixth.exceeded == "key:a rpm"
    assert sixth.retry_after == pytest.approx(12.0)
    clock.advance(11.9)
    assert not (await rate.check(spec, 0)).allowed
    clock.advance(0.1)
    assert (await rate.check(spec, 0)).allowed
    assert not (await rate.check(spec, 0)).allowed


async def test_no_double_burst_at_a_minute_boundary(rate: RateLimiter, clock: FakeClock) -> None:
    spec = [LimitSpec("key:edge", rpm=60)]
    assert all([(await rate.check(spec, 0)).allowed for _ in range(60)])
    clock.advance(1.0)  # a fixed window would now let 60 more through
    assert [(await rate.check(spec, 0)).allowed for _ in range(3)] == [True, False, False]
    clock.advance(60.0)
    assert sum([(await rate.check(spec, 0)).allowed for _ in range(61)]) == 60


async def test_tpm_admits_on_the_estimate_and_settles_the_difference(rate: RateLimiter, clock: FakeClock) -> None:
    spec = [LimitSpec("key:t", tpm=1000)]
    first = await rate.check(spec, 600)
    assert first.allowed and first.tokens is not None and first.tokens.remaining == 400
    denied = await rate.check(spec, 600)
    assert not denied.allowed and denied.exceeded == "key:t tpm"
    assert denied.retry_after == pytest.approx(12.0)  # 200 tokens at 1000 per minute
    await rate.settle(spec, estimated=600, actual=100)  # gives 500 back
    second = await rate.check(spec, 600)
    assert second.allowed and second.tokens is not None and second.tokens.remaining == 300
    await rate.settle(spec, estimated=600, actual=1200)  # the answer was longer: 600 more owed
    owing = await rate.check(spec, 1)
    assert not owing.allowed and owing.retry_after == pytest.approx(18.06)
    clock.advance(18.06)
    assert (await rate.check(spec, 1)).allowed


async def test_all_limits_of_a_request_or_none(rate: RateLimiter) -> None:
    key = LimitSpec("key:k", rpm=10, tpm=10_000)
    alias_a = LimitSpec("key:k/alias:a", rpm=2)
    for _ in range(2):
        assert (await rate.check([key, alias_a], 1000)).allowed
    refused = await rate.check([key, alias_a], 1000)
    assert not refused.allowed and refused.exceeded == "key:k/alias:a rpm"
    other = await rate.check([key, LimitSpec("key:k/alias:b", rpm=5)], 1000)
    assert other.allowed
    assert other.tokens is not None and other.tokens.remaining == 7000  # the refused request took no tokens
    assert other.requests is not None and other.requests.remaining == 4  # the tightest: alias b's 5 less 1


async def test_a_request_larger_than_the_tpm_is_refused_for_good(rate: RateLimiter) -> None:
    spec = [LimitSpec("key:big", rpm=10, tpm=1000)]
    huge = await rate.check(spec, 1001)
    assert not huge.allowed and huge.oversized
    assert b"retry-after" not in dict(rate_headers(huge))
    fits = await rate.check(spec, 1000)
    assert fits.allowed and fits.requests is not None and fits.requests.remaining == 9


async def test_no_limits_no_state(rate: RateLimiter) -> None:
    assert await rate.check([LimitSpec("key:free")], 10_000) == ALLOW
    await rate.settle([LimitSpec("key:free")], 10, 20)


async def test_headers_of_a_real_decision(rate: RateLimiter) -> None:
    decision = await rate.check([LimitSpec("key:h", rpm=600, tpm=60_000)], 1000)
    assert rate_headers(decision) == [
        (b"x-ratelimit-limit-requests", b"600"),
        (b"x-ratelimit-remaining-requests", b"599"),
        (b"x-ratelimit-reset-requests", b"100ms"),
        (b"x-ratelimit-limit-tokens", b"60000"),
        (b"x-ratelimit-remaining-tokens", b"59000"),
        (b"x-ratelimit-reset-tokens", b"1s"),
    ]


def rate_processes(redis_url: str, prefix: str) -> list[RateLimiter]:
    if not prefix:
        return [MemoryRateLimiter()] * 2
    return [RedisRateLimiter(redis_url, prefix, timeout=TIMEOUT) for _ in range(2)]


async def test_one_limit_across_processes_under_concurrency(redis_url: str, processes: str) -> None:
    first, second = rate_processes(redis_url, processes)
    spec = [LimitSpec("key:shared", rpm=20)]
    decisions = await asyncio.gather(*(p.check(spec, 0) for _ in range(25) for p in (first, second)))
    assert sum(d.allowed for d in decisions) == 20
    refused = [d for d in decisions if not d.allowed]
    assert all(0 < d.retry_after <= 3.0 for d in refused)  # one request refills every 3 s
    for limiter in (first, second):
        if isinstance(limiter, RedisRateLimiter):
            await limiter.aclose()


async def test_redis_script_reloads_after_noscript(redis_url: str, prefix: str) -> None:
    limiter = RedisRateLimiter(redis_url, prefix, timeout=TIMEOUT)
    limiter.store.scripts[0].sha = "0" * 40  # as if Redis had restarted and lost its scripts
    try:
        assert (await limiter.check([LimitSpec("key:n", rpm=1)], 0)).allowed
        assert not (await limiter.check([LimitSpec("key:n", rpm=1)], 0)).allowed
    finally:
        await limiter.aclose()


# --- budgets ----------------------------------------------------------------------------------------------

KEY = BudgetScope("key:app", Decimal("1.00"), "monthly")
TEAM = BudgetScope("team:ml", Decimal("10.00"), "daily")


async def test_reserve_settle_release(budgets: BudgetStore) -> None:
    held = await budgets.reserve([KEY], Decimal("0.30"))
    assert (await budgets.usage(KEY)).reserved == Decimal("0.3")
    await budgets.settle(held, Decimal("0.1234567891"))
    usage = await budgets.usage(KEY)
    assert (usage.spent, usage.reserved) == (Decimal("0.1234567891"), Decimal(0))
    await budgets.release(await budgets.reserve([KEY], Decimal("0.5")))
    assert await budgets.usage(KEY) == usage  # a release spends nothing
    more = await budgets.reserve([KEY], Decimal("0.2"))
    await budgets.settle(more, Decimal("0.35"))  # dearer than reserved: the real cost counts
    assert (await budgets.usage(KEY)).spent == Decimal("0.4734567891")


async def test_over_budget_reserves_nothing_on_any_scope(budgets: BudgetStore) -> None:
    await budgets.reconcile(KEY, Decimal("0.90"))
    with pytest.raises(BudgetExceeded) as caught:
        await budgets.reserve([TEAM, KEY], Decimal("0.11"))
    assert caught.value.scope == KEY and caught.value.spent == Decimal("0.9")
    assert (await budgets.usage(TEAM)).reserved == 0
    assert (await budgets.usage(KEY)).reserved == 0
    await budgets.reserve([TEAM, KEY], Decimal("0.10"))  # exactly the rest fits
    assert (await budgets.usage(TEAM)).reserved == Decimal("0.1")


async def test_amounts_stay_exact(budgets: BudgetStore) -> None:
    scope = BudgetScope("key:exact", Decimal("0.3"), "total")
    holds = [await budgets.reserve([scope], Decimal("0.1")) for _ in range(3)]  # 0.1 * 3 > 0.3 in floats
    with pytest.raises(BudgetExceeded):
        await budgets.reserve([scope], Decimal("0.0000000001"))
    for held in holds:
        await budgets.settle(held, Decimal("0.1"))
    assert await budgets.usage(scope) == BudgetUsage(Decimal("0.3"), Decimal(0))


async def test_reconcile_sets_the_spend_and_keeps_reservations(budgets: BudgetStore) -> None:
    await budgets.reserve([KEY], Decimal("0.25"))
    await budgets.reconcile(KEY, Decimal("0.5"))
    usage = await budgets.usage(KEY)
    assert (usage.spent, usage.reserved) == (Decimal("0.5"), Decimal("0.25"))
    with pytest.raises(BudgetExceeded):
        await budgets.reserve([KEY], Decimal("0.26"))


async def test_periods_roll_over_at_utc_midnight_and_month_end(budgets: BudgetStore, clock: FakeClock) -> None:
    daily = BudgetScope("key:day", Decimal("1"), "daily")
    monthly = BudgetScope("key:month", Decimal("1"), "monthly")
    total = BudgetScope("key:total", Decimal("1"), "total")
    clock.now = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC).timestamp()
    for scope in (daily, monthly, total):
        await budgets.settle(await budgets.reserve([scope], Decimal("1")), Decimal("1"))
        with pytest.raises(BudgetExceeded):
            await budgets.reserve([scope], Decimal("0.01"))
    clock.advance(2)  # 2026-12-01 00:00:01 UTC: a new day and a new month
    assert (await budgets.usage(daily)).spent == 0
    assert (await budgets.usage(monthly)).spent == 0
    await budgets.reserve([daily, monthly], Decimal("1"))
    with pytest.raises(BudgetExceeded):
        await budgets.reserve([total], Decimal("0.01"))


async def test_a_settle_after_the_period_ended_does_not_charge_the_new_one(
    budgets: BudgetStore, clock: FakeClock
) -> None:
    daily = BudgetScope("key:late", Decimal("1"), "daily")
    clock.now = datetime(2026, 11, 29, 23, 59, 50, tzinfo=UTC).timestamp()
    held = await budgets.reserve([daily], Decimal("0.5"))
    clock.advance(20)
    await budgets.settle(held, Decimal("0.5"))
    assert (await budgets.usage(daily)).spent == 0


async def test_abandoned_reservations_expire(budgets: BudgetStore, clock: FakeClock) -> None:
    lost = await budgets.reserve([KEY, TEAM], Decimal("1"))  # its process died: never settled
    with pytest.raises(BudgetExceeded):
        await budgets.reserve([KEY], Decimal("0.01"))
    clock.advance(HOLD - 1)
    with pytest.raises(BudgetExceeded):
        await budgets.reserve([KEY], Decimal("0.01"))
    clock.advance(1)
    fresh = await budgets.reserve([KEY], Decimal("0.6"))  # the reserve itself swept the dead one
    assert (await budgets.usage(TEAM)).reserved == 0
    await budgets.settle(lost, Decimal("0.2"))  # a late settle: its cost counts, the fresh hold stays
    usage = await budgets.usage(KEY)
    assert (usage.spent, usage.reserved) == (Decimal("0.2"), Decimal("0.6"))
    await budgets.release(fresh)
    assert (await budgets.usage(KEY)).reserved == 0


def budget_processes(redis_url: str, prefix: str) -> list[BudgetStore]:
    if not prefix:
        return [MemoryBudgets()] * 2
    return [RedisBudgets(redis_url, prefix, timeout=TIMEOUT) for _ in range(2)]


async def test_concurrent_reserves_fit_the_budget_exactly(redis_url: str, processes: str) -> None:
    first, second = budget_processes(redis_url, processes)
    scopes = [BudgetScope("key:busy", Decimal("1.00"), "daily"), BudgetScope("team:busy", Decimal("5"), "monthly")]

    async def attempt(store: BudgetStore) -> bool:
        try:
            await store.reserve(scopes, Decimal("0.10"))
        except BudgetExceeded:
            return False
        return True

    results = await asyncio.gather(*(attempt(s) for _ in range(50) for s in (first, second)))
    assert sum(results) == 10
    assert (await first.usage(scopes[1])).reserved == Decimal("1")
    for store in (first, second):
        if isinstance(store, RedisBudgets):
            await store.aclose()


async def test_redis_budget_keys_expire_after_their_period(redis_url: str, prefix: str, clock: FakeClock) -> None:
    clock.now = datetime(2026, 11, 29, 23, 0, tzinfo=UTC).timestamp()
    store = RedisBudgets(redis_url, prefix, timeout=TIMEOUT, clock=clock)
    daily, total = BudgetScope("key:d", Decimal(1), "daily"), BudgetScope("key:t", Decimal(1), "total")
    await store.reserve([daily, total], Decimal("0.5"))
    await store.aclose()
    client = redis.Redis.from_url(redis_url)
    try:
        day_ttl = client.pttl(f"{prefix}:budget:key:d:2026-11-29")
        assert 7_100_000 < day_ttl <= 7_200_000  # one hour to midnight, one hour of grace
        assert client.pttl(f"{prefix}:budget:key:d:2026-11-29:holds") == pytest.approx(day_ttl, abs=1000)
        assert client.pttl(f"{prefix}:budget:key:t:all") == -1
    finally:
        client.close()


# --- Redis down -------------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_redis_down_raises_quickly_and_the_policy_applies(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://:sekrit-password@127.0.0.1:{closed_port()}/0"
    limiter, store = RedisRateLimiter(url), RedisBudgets(url)
    spec = [LimitSpec("key:x", rpm=1)]
    started = time.monotonic()
    with pytest.raises(LimitsUnavailable):
        await limiter.check(spec, 10)
    with pytest.raises(LimitsUnavailable):
        await store.reserve([KEY], Decimal(1))
    assert time.monotonic() - started < 0.5
    caplog.set_level(logging.WARNING, "switchyard.limits")
    allow, deny = FailPolicy("allow"), FailPolicy("deny")
    for _ in range(3):
        assert await allow.run(limiter.check(spec, 10), ALLOW) is ALLOW
        assert await allow.run(store.reserve([KEY], Decimal(1)), None) is None
        await deny.quiet(limiter.settle([LimitSpec("key:x", tpm=5)], 10, 5))
        with pytest.raises(LimitsUnavailable):
            await deny.run(limiter.check(spec, 10), ALLOW)
    assert (allow.failures, deny.failures) == (6, 6)
    assert len(caplog.records) == 2  # once per streak, per policy
    assert "sekrit" not in caplog.text and "127.0.0.1" in caplog.text
    assert (await allow.run(MemoryRateLimiter().check(spec, 1), ALLOW)).allowed  # the store answers again
    assert "reachable again after 6" in caplog.records[-1].getMessage()
    await limiter.aclose()
    await store.aclose()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@cache:6379/0", "redis://cache:6379/0"),
        ("rediss://user:pw@10.0.0.5:6380/2?password=pw2", "rediss://10.0.0.5:6380/2"),
        ("redis://[::1]:6379", "redis://[::1]:6379"),
        ("unix://:pw@/run/redis.sock?db=1", "unix:///run/redis.sock"),
    ],
)
def test_the_store_is_named_without_credentials(url: str, shown: str) -> None:
    assert safe_location(url) == shown
    assert RedisRateLimiter(url).store.where == shown


async def test_a_redis_that_never_answers_times_out() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never answers
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{port}/0", timeout=0.05)
    started = time.monotonic()
    try:
        with pytest.raises(LimitsUnavailable, match="TimeoutError"):
            await limiter.check([LimitSpec("key:slow", rpm=1)], 0)
        assert time.monotonic() - started < 0.5
    finally:
        await limiter.aclose()
        server.close()
