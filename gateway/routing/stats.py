"""Per-route counters the strategies read: requests in flight, EWMA of time to first byte, requests per minute.

In-process and cheap: a few dict operations per attempt, no locks (one event loop).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

EWMA_ALPHA = 0.3


@dataclass(slots=True)
class RouteCounters:
    inflight: int = 0
    ttfb: float | None = None
    """EWMA of seconds to first byte; None until the first success."""
    starts: deque[float] = field(default_factory=deque)
    """Start times within the last minute, kept only for routes with an rpm capacity."""


class RouteStats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.routes: dict[str, RouteCounters] = {}

    def _get(self, route: str) -> RouteCounters:
        counters = self.routes.get(route)
        if counters is None:
            counters = self.routes[route] = RouteCounters()
        return counters

    def inflight(self, route: str) -> int:
        counters = self.routes.get(route)
        return counters.inflight if counters else 0

    def ttfb(self, route: str) -> float:
        """The route's smoothed time to first byte; 0 for a route never measured (so it gets tried)."""
        counters = self.routes.get(route)
        return counters.ttfb if counters and counters.ttfb is not None else 0.0

    def has_capacity(self, route: str, rpm: int | None) -> bool:
        if rpm is None:
            return True
        counters = self.routes.get(route)
        if counters is None:
            return True
        starts = counters.starts
        cutoff = self.clock() - 60.0
        while starts and starts[0] <= cutoff:
            starts.popleft()
        return len(starts) < rpm

    def start(self, route: str, rpm: int | None) -> None:
        counters = self._get(route)
        counters.inflight += 1
        if rpm is not None:
            counters.starts.append(self.clock())

    def first_byte(self, route: str, seconds: float) -> None:
        counters = self._get(route)
        previous = counters.ttfb
        counters.ttfb = seconds if previous is None else previous + EWMA_ALPHA * (seconds - previous)

    def end(self, route: str) -> None:
        counters = self.routes.get(route)
        if counters is not None and counters.inflight > 0:
            counters.inflight -= 1
