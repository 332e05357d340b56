"""What a request gets while the Redis behind rate limits and budgets is down: `on_redis_down: allow | deny`.

The Redis stores raise LimitsUnavailable instead of waiting; FailPolicy turns that into the configured
answer, counts it for /metrics, and logs once per failure streak (the store's address without credentials).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Literal, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
OnDown = Literal["allow", "deny"]


def safe_location(url: str) -> str:
    """The URL's scheme, host, port and path: no user name, password or query (which may hold a password)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class LimitsUnavailable(Exception):
    """The limits store did not answer in time (or at all); nothing can be said about the request's limits."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"limits store {where} unavailable: {reason}")
        self.where = where
        self.reason = reason


class FailPolicy:
    """Applies `on_redis_down` to calls into a limits store; `failures` counts them, for a metric."""

    def __init__(self, on_down: OnDown = "allow", log: logging.Logger | None = None) -> None:
        self.allow = on_down == "allow"
        self.failures = 0
        self.streak = 0
        self.log = log or logging.getLogger("switchyard.limits")

    async def run(self, call: Awaitable[T], fallback: T) -> T:
        """The call's result; while the store is down, `fallback` when allowing, else LimitsUnavailable (a 503)."""
        try:
            result = await call
        except LimitsUnavailable as exc:
            self.down(exc)
            if self.allow:
                return fallback
            raise
        self.up()
        return result

    async def quiet(self, call: Awaitable[None]) -> None:
        """A call after the answer (settle, release): a failure is counted and logged, never raised."""
        try:
            await call
        except LimitsUnavailable as exc:
            self.down(exc)
        else:
            self.up()

    def down(self, exc: LimitsUnavailable) -> None:
        """Count one failure; log only the first of a streak."""
        self.failures += 1
        self.streak += 1
        if self.streak == 1:
            verdict = "allowing" if self.allow else "denying"
            self.log.warning("%s (%s requests until it answers again)", exc, verdict)

    def up(self) -> None:
        """The store answered: end a failure streak, saying how long it was."""
        if self.streak:
            self.log.warning("limits store reachable again after %d failed calls", self.streak)
            self.streak = 0
