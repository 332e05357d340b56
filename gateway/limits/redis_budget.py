"""Budgets shared by every gateway process through Redis: reserve, settle and release are one Lua call each.

Per scope and period there is a hash (`spent`, `reserved`, and one field per live reservation holding its
amount) and a sorted set of reservation ids scored by their deadline on the Redis clock. Every script first
sweeps the scope's expired reservations (subtracting them from `reserved`), so a reservation whose process
died mid-request stops counting at its deadline without any background job. Both keys expire an hour after
their period ends (a total budget's never do). Amounts are integer units of 1e-10, added with HINCRBY.
The period's name comes from this process's clock (UTC); deadlines use the server's, so skew cannot shorten them.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import ROUND_CEILING, Decimal

from gateway.limits.budget import (
    DEFAULT_HOLD,
    BudgetExceeded,
    BudgetScope,
    BudgetUsage,
    Hold,
    Reservation,
    check_amount,
    from_units,
    period_end,
    period_key,
    to_units,
)
from gateway.limits.store import DEFAULT_TIMEOUT, ScriptStore

GRACE = 3600.0
"""Seconds a period's keys outlive it, so a late settle still finds its reservation."""

# ARGV[1]: '' for the server clock, or (tests only) a time in microseconds.
COMMON = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local function sweep(hash, zset)
  local gone = redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, 256)
  for _, id in ipairs(gone) do
    local units = redis.call('HGET', hash, id)
    if units then
      redis.call('HINCRBY', hash, 'reserved', string.format('%d', -tonumber(units)))
      redis.call('HDEL', hash, id)
    end
    redis.call('ZREM', zset, id)
  end
end
local function keep(hash, zset, ttl)
  if ttl ~= '' then
    redis.call('PEXPIRE', hash, ttl)
    redis.call('PEXPIRE', zset, ttl)
  end
end
local function number(hash, name)
  return tonumber(redis.call('HGET', hash, name) or '0')
end
"""

# KEYS: hash and zset of each scope. ARGV[2]: hold µs, [3]: id, [4]: amount; per scope i: [3+2i] limit, [4+2i] ttl ms.
RESERVE = (
    COMMON
    + """
local amount = tonumber(ARGV[4])
for i = 1, #KEYS / 2 do
  local hash, zset = KEYS[2 * i - 1], KEYS[2 * i]
  sweep(hash, zset)
  local spent, reserved = number(hash, 'spent'), number(hash, 'reserved')
  if spent + reserved + amount > tonumber(ARGV[3 + 2 * i]) then return {0, i, spent, reserved} end
end
local deadline = string.format('%d', now + tonumber(ARGV[2]))
for i = 1, #KEYS / 2 do
  local hash, zset = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('HINCRBY', hash, 'reserved', ARGV[4])
  redis.call('HSET', hash, ARGV[3], ARGV[4])
  redis.call('ZADD', zset, deadline, ARGV[3])
  keep(hash, zset, ARGV[4 + 2 * i])
end
return {1}
"""
)

# KEYS: hash and zset of each scope held. ARGV[2]: id, [3]: actual cost; per scope i: [3+i] ttl ms.
SETTLE = (
    COMMON
    + """
local live = 0
for i = 1, #KEYS / 2 do
  local hash, zset = KEYS[2 * i - 1], KEYS[2 * i]
  sweep(hash, zset)
  local units = redis.call('HGET', hash, ARGV[2])
  if units then
    redis.call('HINCRBY', hash, 'reserved', string.format('%d', -tonumber(units)))
    redis.call('HDEL', hash, ARGV[2])
    redis.call('ZREM', zset, ARGV[2])
    live = live + 1
  end
  if ARGV[3] ~= '0' then redis.call('HINCRBY', hash, 'spent', ARGV[3]) end
  keep(hash, zset, ARGV[3 + i])
end
return live
"""
)

# KEYS: one scope's hash and zset. ARGV[2]: the spend to set, or '' to only read; [3]: ttl ms.
USAGE = (
    COMMON
    + """
sweep(KEYS[1], KEYS[2])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'spent', ARGV[2])
  keep(KEYS[1], KEYS[2], ARGV[3])
end
return {number(KEYS[1], 'spent'), number(KEYS[1], 'reserved')}
"""
)


class RedisBudgets:
    """Budgets in Redis; raises LimitsUnavailable past `timeout` seconds (the caller's FailPolicy decides).

    `clock` is for tests only: it replaces the server clock too, so tests can expire reservations without sleeping.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "switchyard",
        timeout: float = DEFAULT_TIMEOUT,
        hold: float = DEFAULT_HOLD,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.store = ScriptStore(url, prefix, timeout, [RESERVE, SETTLE, USAGE])
        self.hold = hold
        self.test_clock = clock
        self.clock = clock or time.time

    async def start(self) -> None:
        await self.store.start()

    async def aclose(self) -> None:
        await self.store.aclose()

    def script_now(self) -> str:
        return "" if self.test_clock is None else str(round(self.test_clock() * 1_000_000))

    def keys(self, name: str, period: str) -> list[str]:
        base = f"{self.store.prefix}:budget:{name}:{period}"
        return [base, base + ":holds"]

    def ttl(self, hold: Hold, now: float) -> str:
        """Milliseconds the period's keys are kept from now; '' to keep them for good."""
        return "" if hold.ends is None else str(max(1, math.ceil((hold.ends + GRACE - now) * 1000)))

    def holds(self, scopes: Sequence[BudgetScope], now: float) -> list[Hold]:
        return [Hold(s.name, period_key(s.period, now), period_end(s.period, now)) for s in scopes]

    async def reserve(self, scopes: Sequence[BudgetScope], amount: Decimal) -> Reservation:
        check_amount(amount)
        now, units, rid = self.clock(), to_units(amount, ROUND_CEILING), uuid.uuid4().hex
        holds = self.holds(scopes, now)
        if not holds:
            return Reservation(rid, from_units(units), ())
        keys = [key for hold in holds for key in self.keys(hold.name, hold.period)]
        per_scope = [x for s, h in zip(scopes, holds, strict=True) for x in (to_units(s.limit), self.ttl(h, now))]
        reply = await self.store.call(
            0, keys, [self.script_now(), round(self.hold * 1_000_000), rid, units, *per_scope]
        )
        if int(reply[0]) == 0:
            _, index, spent, reserved = (int(x) for x in reply)
            raise BudgetExceeded(scopes[index - 1], from_units(spent), from_units(reserved), amount)
        return Reservation(rid, from_units(units), tuple(holds))

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        check_amount(actual)
        if not reservation.holds:
            return
        now = self.clock()
        keys = [key for hold in reservation.holds for key in self.keys(hold.name, hold.period)]
        ttls = [self.ttl(hold, now) for hold in reservation.holds]
        await self.store.call(1, keys, [self.script_now(), reservation.id, to_units(actual), *ttls])

    async def release(self, reservation: Reservation) -> None:
        await self.settle(reservation, Decimal(0))

    async def reconcile(self, scope: BudgetScope, spent: Decimal) -> None:
        check_amount(spent)
        await self.current(scope, str(to_units(spent)))

    async def usage(self, scope: BudgetScope) -> BudgetUsage:
        return await self.current(scope, "")

    async def current(self, scope: BudgetScope, spent: str) -> BudgetUsage:
        """Sweep the scope's current period, set its spend unless `spent` is '', and read it."""
        now = self.clock()
        (hold,) = self.holds([scope], now)
        reply = await self.store.call(
            2, self.keys(hold.name, hold.period), [self.script_now(), spent, self.ttl(hold, now)]
        )
        return BudgetUsage(from_units(int(reply[0])), from_units(int(reply[1])))
