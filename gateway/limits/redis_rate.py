"""Rate limits shared by every gateway process through Redis: one Lua script call per request.

The script reads the TAT of every limit the request falls under (key rpm, key tpm, key+alias rpm, ...), on
the Redis server's clock (`TIME`, so processes with skewed clocks agree), and writes them all only when every
one admits the request: all or nothing, atomically, whatever the number of processes. A limit's key expires
once its allowance has refilled, so idle keys cost no memory. Keys of one request must share a node (no
Redis Cluster slots spanning them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.limits.rate import ALLOW, MICROS, PERIOD_US, Decision, LimitSpec, cells, decide, shift
from gateway.limits.store import DEFAULT_TIMEOUT, ScriptStore

# ARGV[1] is '' in production (server clock); tests pass a time in microseconds to move time without sleeping.
NOW = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local function store(key, tat)
  if tat > now then
    redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  else
    redis.call('DEL', key)
  end
end
"""

# KEYS: one per limit. ARGV[2]: the period in µs; ARGV[2 + i]: how far the request moves limit i's TAT.
# Returns {allowed, now, TAT of each limit before the request}.
CHECK = (
    NOW
    + """
local period = tonumber(ARGV[2])
local before, after, allowed = {}, {}, 1
for i, key in ipairs(KEYS) do
  before[i] = tonumber(redis.call('GET', key) or '0')
  after[i] = math.max(before[i], now) + tonumber(ARGV[2 + i])
  if after[i] - period > now then allowed = 0 end
end
if allowed == 1 then
  for i, key in ipairs(KEYS) do store(key, after[i]) end
end
local out = {allowed, now}
for i = 1, #before do out[2 + i] = before[i] end
return out
"""
)

# KEYS: tpm limits; ARGV[1 + i]: the correction of limit i's TAT in µs (negative gives allowance back).
SETTLE = (
    NOW
    + """
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or '0')
  store(key, math.max(tat, now) + tonumber(ARGV[1 + i]))
end
return 1
"""
)


class RedisRateLimiter:
    """GCRA limits in Redis; raises LimitsUnavailable past `timeout` seconds (the caller's FailPolicy decides).

    `clock` is for tests only: its time goes to the script instead of the server's, so tests move time freely.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "switchyard",
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.store = ScriptStore(url, prefix, timeout, [CHECK, SETTLE])
        self.test_clock = clock

    async def start(self) -> None:
        await self.store.start()

    async def aclose(self) -> None:
        await self.store.aclose()

    def key(self, name: str) -> str:
        return f"{self.store.prefix}:rate:{name}"

    def clock(self) -> str:
        return "" if self.test_clock is None else str(round(self.test_clock() * MICROS))

    async def check(self, specs: Sequence[LimitSpec], tokens: int) -> Decision:
        todo = cells(specs, tokens)
        if not todo:
            return ALLOW
        keys = [self.key(cell.key) for cell in todo]
        reply = await self.store.call(0, keys, [self.clock(), PERIOD_US, *(cell.step for cell in todo)])
        allowed, now, *before = (int(x) for x in reply)
        return decide(todo, before, now, allowed=bool(allowed))

    async def settle(self, specs: Sequence[LimitSpec], estimated: int, actual: int) -> None:
        moves = [(self.key(f"{s.name}:tpm"), shift(s.tpm, actual - estimated)) for s in specs if s.tpm is not None]
        if actual == estimated or not moves:
            return
        await self.store.call(1, [key for key, _ in moves], [self.clock(), *(move for _, move in moves)])
