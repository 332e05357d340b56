"""Route health: a circuit breaker per channel (`provider/model`), in-process or shared through Redis.

healthy --(N failures in a window, or one auth/quota error)--> cooling --(duration passes)--> half-open
half-open: one probe request at a time per process; success -> healthy, failure -> cooling again.
The hot path only reads local state; the Redis store mirrors shared state into it in the background.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from gateway.config.model import CooldownConfig


class Health(Enum):
    HEALTHY = "healthy"
    COOLING = "cooling"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class RouteState:
    failures: deque[float] = field(default_factory=deque)
    cool_until: float = 0.0
    probing: bool = False


class HealthStore(Protocol):
    def health(self, route: str) -> Health: ...

    def available(self, route: str) -> bool:
        """Whether the router may pick the route now: healthy, or half-open without a probe in flight."""
        ...

    def cooling_for(self, route: str) -> float:
        """Seconds until a cooling route may be probed; 0 when it is not cooling."""
        ...

    def begin(self, route: str) -> None:
        """The router sends a request to the route now (a half-open route's probe)."""
        ...

    def release(self, route: str) -> None:
        """The request ended without a verdict on the route (its own fault, or cancelled): free the probe."""
        ...

    def tracked(self, route: str) -> bool:
        """Whether the route has any state a success would change (so healthy routes skip the call)."""
        ...

    async def success(self, route: str) -> None: ...

    async def failure(self, route: str, cfg: CooldownConfig, *, hard: bool) -> None: ...

    def snapshot(self) -> dict[str, Health]:
        """Every route with a non-default state, for /metrics."""
        ...


class MemoryHealth:
    """Health of this process's routes; also the local mirror the Redis store keeps up to date."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.states: dict[str, RouteState] = {}

    def health(self, route: str) -> Health:
        state = self.states.get(route)
        if state is None or not state.cool_until:
            return Health.HEALTHY
        if self.clock() < state.cool_until:
            return Health.COOLING
        return Health.HALF_OPEN

    def available(self, route: str) -> bool:
        """Whether the router may pick the route now: healthy, or half-open without a probe in flight."""
        state = self.states.get(route)
        if state is None or not state.cool_until:
            return True
        return self.clock() >= state.cool_until and not state.probing

    def cooling_for(self, route: str) -> float:
        state = self.states.get(route)
        return max(0.0, state.cool_until - self.clock()) if state else 0.0

    def begin(self, route: str) -> None:
        state = self.states.get(route)
        if state is not None and state.cool_until:
            state.probing = True

    def tracked(self, route: str) -> bool:
        return route in self.states

    def release(self, route: str) -> None:
        state = self.states.get(route)
        if state is not None:
            state.probing = False

    def restore(self, route: str) -> bool:
        """Back to healthy; True when it was not healthy before."""
        state = self.states.pop(route, None)
        return state is not None and bool(state.cool_until)

    def trip(self, route: str, until: float) -> None:
        state = self.states.setdefault(route, RouteState())
        state.cool_until = until
        state.probing = False
        state.failures.clear()

    def count_failure(self, route: str, window: float) -> int:
        """Record one failure; how many fell within the window."""
        now = self.clock()
        failures = self.states.setdefault(route, RouteState()).failures
        failures.append(now)
        while failures and failures[0] < now - window:
            failures.popleft()
        return len(failures)

    async def success(self, route: str) -> None:
        self.restore(route)

    async def failure(self, route: str, cfg: CooldownConfig, *, hard: bool) -> None:
        half_open = self.health(route) is Health.HALF_OPEN
        if hard or half_open or self.count_failure(route, cfg.window) >= cfg.failures:
            self.trip(route, self.clock() + cfg.duration)

    def snapshot(self) -> dict[str, Health]:
        return {route: self.health(route) for route in self.states}
