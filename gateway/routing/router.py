"""Which route serves a request, and what happens when it fails.

Per attempt: the highest-priority tier with an available route (healthy, or half-open without a probe in
flight, and under its rpm capacity), then the alias's strategy inside that tier. Retries go to a route
not yet tried when one exists, else back off (exponentially, with jitter, honouring Retry-After). Every
attempt fits in the request's one deadline. When an alias gives up, its fallbacks for the failure's cause
are tried (context window, content policy, else any failure), breadth-first, each alias at most once.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gateway.config.snapshot import Alias, Route, Snapshot
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.routing.health import HealthStore
from gateway.routing.policy import (
    is_content_policy,
    is_context_window,
    is_hard_failure,
    is_retryable,
    is_route_failure,
)
from gateway.routing.stats import RouteStats
from gateway.upstream.client import Timeouts

T = TypeVar("T")
BACKOFF_BASE = 0.25
BACKOFF_CAP = 8.0


class NoHealthyRoute(GatewayError):
    """Every route of the alias is cooling down: fail fast instead of hammering a broken upstream."""

    status = 503
    type = "upstream_error"
    code = "no_healthy_route"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(max(1, round(self.retry_after))).encode())]


@dataclass(slots=True)
class Outcome(Generic[T]):
    result: T
    route: Route


@dataclass(slots=True)
class Trace:
    """What the router did for one request, for logs and response headers."""

    affinity: str | None = None
    """The sticky-session key of the request, if its alias is sticky."""
    tokens: int = 0
    """The request's estimated tokens (prompt and completion), for routes with a tpm capacity."""
    attempts: int = 0
    route: Route | None = None
    errors: list[tuple[Route, UpstreamError]] = field(default_factory=list)
    """Each failed attempt, in order."""


Attempt = Callable[[Route, Timeouts], Awaitable[T]]
OnFailure = Callable[[Route, UpstreamError, int], None]


def weighted_choice(routes: Sequence[Route], rng: random.Random) -> Route:
    if len(routes) == 1:
        return routes[0]
    point = rng.random() * sum(r.weight for r in routes)
    for route in routes:
        point -= route.weight
        if point < 0:
            return route
    return routes[-1]


def rendezvous_score(key: str, route: Route) -> float:
    """Weighted highest-random-weight score of a route for a key (larger wins)."""
    digest = hashlib.blake2b(f"{key}\x00{route.label}".encode(), digest_size=8).digest()
    uniform = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
    return -route.weight / math.log(uniform)


class Router:
    def __init__(
        self,
        health: HealthStore,
        stats: RouteStats | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.health = health
        self.stats = stats or RouteStats()
        self.rng = rng or random.Random()
        self.clock = clock
        self.sleep = sleep

    # --- selection ----------------------------------------------------------------------------------------
    def pick(
        self,
        alias: Alias,
        exclude: frozenset[str] | set[str] = frozenset(),
        affinity: str | None = None,
        tokens: int = 0,
    ) -> Route | None:
        """The route for the next attempt, or None when none is available.

        With an `affinity` (a sticky session's key) the tier's route is chosen by weighted rendezvous
        hashing: the same key lands on the same route while it is available, in every gateway process.
        """
        routes = alias.routes
        if len(routes) == 1 and not exclude:  # the common case, without building lists
            only = routes[0]
            healthy = self.health.available(only.label) and self.stats.has_capacity(
                only.label, only.rpm, only.tpm, tokens
            )
            return only if healthy else None
        available = [
            r
            for r in alias.routes
            if r.label not in exclude
            and self.health.available(r.label)
            and self.stats.has_capacity(r.label, r.rpm, r.tpm, tokens)
        ]
        if not available:
            return None
        top = max(r.priority for r in available)
        tier = [r for r in available if r.priority == top]
        if len(tier) == 1:
            return tier[0]
        if affinity is not None:
            return max(tier, key=lambda r: rendezvous_score(affinity, r))
        return weighted_choice(self._best(alias, tier), self.rng)

    def _best(self, alias: Alias, tier: list[Route]) -> list[Route]:
        """The tier's routes that the alias's strategy ranks first (ties are broken by weight)."""
        if alias.strategy == "weighted":
            return tier
        scores = [self._score(alias.strategy, r) for r in tier]
        best = min(scores)
        return [r for r, score in zip(tier, scores, strict=True) if score <= best]

    def _score(self, strategy: str, route: Route) -> float:
        """Lower is better."""
        if strategy == "least_inflight":
            return float(self.stats.inflight(route.label))
        if strategy == "lowest_latency":
            return self.stats.ttfb(route.label)
        return route.price

    # --- execution ----------------------------------------------------------------------------------------
    async def run(self, snapshot: Snapshot, alias: Alias, attempt: Attempt[T], trace: Trace) -> Outcome[T]:
        """Serve with the alias, then its fallbacks; raises the last upstream error when all fail."""
        deadline = self.clock() + alias.deadline
        queue, seen = [alias], {alias.name}
        error: GatewayError | None = None
        while queue:
            current = queue.pop(0)
            try:
                return await self._serve(current, attempt, trace, deadline)
            except UpstreamError as exc:
                error = exc
                for name in self._fallbacks(current, exc):
                    if name not in seen:
                        seen.add(name)
                        queue.append(snapshot.aliases[name])
            except NoHealthyRoute as exc:
                error = error or exc
                for name in current.fallbacks:
                    if name not in seen:
                        seen.add(name)
                        queue.append(snapshot.aliases[name])
            if self.clock() >= deadline:
                break
        raise error or UpstreamTimeout("no route could be tried")

    @staticmethod
    def _fallbacks(alias: Alias, exc: UpstreamError) -> tuple[str, ...]:
        if alias.context_window_fallbacks and is_context_window(exc):
            return alias.context_window_fallbacks
        if alias.content_policy_fallbacks and is_content_policy(exc):
            return alias.content_policy_fallbacks
        return alias.fallbacks

    async def _serve(self, alias: Alias, attempt: Attempt[T], trace: Trace, deadline: float) -> Outcome[T]:
        tried: set[str] = set()
        last: UpstreamError | None = None
        for retry in range(alias.max_retries + 1):
            route = self.pick(alias, tried, trace.affinity, trace.tokens) or (
                self.pick(alias, affinity=trace.affinity, tokens=trace.tokens) if tried else None
            )
            if route is None:
                if last is not None:
                    raise last
                waits = [w for w in (self.health.cooling_for(r.label) for r in alias.routes) if w > 0]
                raise NoHealthyRoute(
                    f"no route of '{alias.name}' is available: cooling down after failures, or at capacity",
                    min(waits, default=1.0),
                )
            if last is not None and route.label in tried:
                await self._backoff(retry, last, deadline)
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise last or UpstreamTimeout("the request's deadline passed before an upstream answered")
            try:
                return Outcome(await self._attempt(alias, route, attempt, trace, remaining), route)
            except UpstreamError as exc:
                last = exc
                tried.add(route.label)
                if not is_retryable(exc, alias.retry_on):
                    break
        raise last or UpstreamTimeout("no route could be tried")

    async def _attempt(self, alias: Alias, route: Route, attempt: Attempt[T], trace: Trace, remaining: float) -> T:
        trace.attempts += 1
        trace.route = route
        label = route.label
        self.health.begin(label)
        self.stats.start(label, route.rpm, route.tpm, trace.tokens)
        started = self.clock()
        try:
            result = await attempt(route, route.timeouts.within(remaining))
        except UpstreamError as exc:
            self.stats.end(label)
            exc.provider = route.provider
            trace.errors.append((route, exc))
            hard = is_hard_failure(exc, alias.cooldown.keywords)
            if hard or is_route_failure(exc):
                await self.health.failure(label, alias.cooldown, hard=hard)
            else:
                self.health.release(label)  # the request's fault: a half-open route's probe slot frees
            raise
        except BaseException:
            self.stats.end(label)
            self.health.release(label)
            raise
        self.stats.first_byte(label, self.clock() - started)
        if self.health.tracked(label):
            await self.health.success(label)
        return result

    async def _backoff(self, retry: int, last: UpstreamError, deadline: float) -> None:
        """Exponential backoff with full jitter, at least the upstream's Retry-After, within the deadline."""
        delay = self.rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (retry - 1)))
        retry_after = getattr(last, "retry_after", None)
        if retry_after:
            delay = max(delay, retry_after)
        if self.clock() + delay >= deadline:
            raise last
        await self.sleep(delay)

    def release(self, route: Route) -> None:
        """The answer from this route was fully delivered (or abandoned)."""
        self.stats.end(route.label)
