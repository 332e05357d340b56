"""The Redis plumbing both limit stores share: a client that gives up fast, and one place mapping its errors.

No retries: a retried script could consume a limit twice, and the hot path has one round trip to spend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.limits.policy import LimitsUnavailable, safe_location

DEFAULT_TIMEOUT = 0.25
"""Seconds for one Redis round trip, event-loop delay included. At 50 ms a busy gateway process timed out on a
healthy Redis and, with `on_redis_down: allow`, let requests past the limit; a hung Redis costs at most this."""


def describe(exc: BaseException) -> str:
    """The error's class and message (redis-py's messages hold host and port, never the password)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


class ScriptStore:
    """A Redis client and its Lua scripts; every call is bounded by `timeout` seconds, connection included."""

    def __init__(self, url: str, prefix: str, timeout: float, scripts: Sequence[str]) -> None:
        self.redis = aioredis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        self.prefix = prefix
        self.timeout = timeout
        self.where = safe_location(url)
        self.scripts = [self.redis.register_script(source) for source in scripts]

    async def start(self) -> None:
        """Load the scripts now, so the first request pays no NOSCRIPT round trip; LimitsUnavailable when down."""
        for script in self.scripts:
            await self.guard(self.redis.script_load(script.script))

    async def call(self, index: int, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run one script (EVALSHA, EVAL-ing it again after NOSCRIPT); LimitsUnavailable past the timeout."""
        return await self.guard(self.scripts[index](keys=list(keys), args=list(args)))

    async def guard(self, call: Any) -> Any:
        """Await a Redis call within the timeout; every failure of the store becomes LimitsUnavailable."""
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            raise LimitsUnavailable(self.where, describe(exc)) from exc

    async def aclose(self) -> None:
        await self.redis.aclose()
