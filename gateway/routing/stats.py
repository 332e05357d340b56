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
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    """(start time, estimated tokens) within the last minute, kept only for routes with a tpm capacity."""
    token_sum: int = 0


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

    def has_capacity(self, route: str, rpm: int | None, tpm: int | None = None, tokens: int = 0) -> bool:
        """Room for one more request of about `tokens` tokens in the last minute's window.

        A request larger than the whole tpm still goes to an idle route, rather than never.
        """
        if rpm is None and tpm is None:
            return True
        counters = self.routes.get(route)
        if counters is None:
            return True
        cutoff = self.clock() - 60.0
        starts = counters.starts
        while starts and starts[0] <= cutoff:
            starts.popleft()
        used = counters.tokens
        while used and used[0][0] <= cutoff:
            counters.token_sum -= used.popleft()[1]
        if rpm is not None and len(starts) >= rpm:
            return False
        return tpm is None or not used or counters.token_sum + tokens <= tpm

    def start(self, route: str, rpm: int | None, tpm: int | None = None, tokens: int = 0) -> None:
        counters = self._get(route)
        counters.inflight += 1
        if rpm is not None:
            counters.starts.append(self.clock())
        if tpm is not None:
            counters.tokens.append((self.clock(), tokens))
            counters.token_sum += tokens

    def first_byte(self, route: str, seconds: float) -> None:
        counters = self._get(route)
        previous = counters.ttfb
        counters.ttfb = seconds if previous is None else previous + EWMA_ALPHA * (seconds - previous)

    def end(self, route: str) -> None:
        counters = self.routes.get(route)
        if counters is not None and counters.inflight > 0:
            counters.inflight -= 1
