"""Rate limits per API key and per key+alias: requests and tokens per minute, in-process or in Redis.

Algorithm: GCRA (generic cell rate algorithm: a token bucket stored as one timestamp). Each limit keeps a
theoretical arrival time (TAT); a request costing n units (1 request, or its estimated tokens) moves it by
n * 60 s / limit and is admitted while the new TAT is at most 60 s ahead of now. Chosen over a sliding-window
log because capacity refills continuously: there is no window edge where 2x the limit gets through at once,
a burst is never more than the limit itself; the state is one integer per limit however busy the key (a log
keeps an entry per request); retry-after and reset are exact; and correcting tokens after the answer
(settle) is one addition. It is exact across processes because the Redis backend reads and writes every
TAT of a request in one Lua script, on the Redis clock. Times are integer microseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

MICROS = 1_000_000
PERIOD_US = 60 * MICROS


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One set of limits a request falls under (the key's, the key+alias's); None: no limit on that dimension."""

    name: str
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Quota:
    """One dimension's state for OpenAI's headers: its limit, what is left, and seconds until fully refilled."""

    limit: int
    remaining: int
    reset: float


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on a request; the quotas are the most constrained limit of each dimension (None: no limit).

    `oversized`: the request wants more tokens than a whole minute's tpm, so waiting will never help.
    `exceeded`: the first limit that refused it (`key:crm-app tpm`), for the error message.
    """

    allowed: bool
    retry_after: float = 0.0
    requests: Quota | None = None
    tokens: Quota | None = None
    oversized: bool = False
    exceeded: str = ""


ALLOW = Decision(allowed=True)
"""The answer when no limit applies, or the limits store is down and `on_redis_down` is allow."""


@dataclass(frozen=True, slots=True)
class Cell:
    """One GCRA counter a request touches: a spec's rpm or tpm, its limit per minute, what the request costs."""

    name: str
    dimension: Literal["rpm", "tpm"]
    limit: int
    cost: int

    @property
    def key(self) -> str:
        return f"{self.name}:{self.dimension}"

    @property
    def tokens(self) -> bool:
        return self.dimension == "tpm"

    @property
    def step(self) -> int:
        """Microseconds the request moves the TAT (rounded up, so rounding never admits more)."""
        return -(-self.cost * PERIOD_US // self.limit)


def cells(specs: Sequence[LimitSpec], tokens: int) -> list[Cell]:
    """The counters a request with this many (estimated) tokens consumes, in a stable order."""
    found: list[Cell] = []
    for spec in specs:
        if spec.rpm is not None:
            found.append(Cell(spec.name, "rpm", spec.rpm, 1))
        if spec.tpm is not None:
            found.append(Cell(spec.name, "tpm", spec.tpm, max(0, tokens)))
    return found


def shift(limit: int, tokens: int) -> int:
    """Microseconds a token correction moves a tpm TAT (negative gives allowance back)."""
    return round(tokens * PERIOD_US / limit)


def quota(cell: Cell, tat: int, now: int) -> Quota:
    """What is left of the cell's allowance at `now`, given its TAT."""
    ahead = min(max(0, tat - now), PERIOD_US)
    remaining = (PERIOD_US - ahead) * cell.limit // PERIOD_US
    return Quota(cell.limit, remaining, max(0, tat - now) / MICROS)


def tightest(quotas: list[Quota]) -> Quota | None:
    """The quota that runs out first: least remaining, then the longest reset."""
    return min(quotas, key=lambda q: (q.remaining, -q.reset), default=None)


def decide(todo: Sequence[Cell], before: Sequence[int], now: int, allowed: bool | None = None) -> Decision:
    """The decision for TATs read before the request; `allowed` when the Redis script already decided it."""
    after = [max(tat, now) + cell.step for cell, tat in zip(todo, before, strict=True)]
    waits = [tat - PERIOD_US - now for tat in after]
    ok = all(w <= 0 for w in waits) if allowed is None else allowed
    kept = after if ok else list(before)
    quotas = [(cell.tokens, quota(cell, tat, now)) for cell, tat in zip(todo, kept, strict=True)]
    exceeded = next((f"{cell.name} {cell.dimension}" for cell, w in zip(todo, waits, strict=True) if w > 0), "")
    return Decision(
        allowed=ok,
        retry_after=0.0 if ok else max([0, *waits]) / MICROS,
        requests=tightest([q for is_tokens, q in quotas if not is_tokens]),
        tokens=tightest([q for is_tokens, q in quotas if is_tokens]),
        oversized=not ok and any(c.tokens and c.cost > c.limit for c in todo),
        exceeded="" if ok else exceeded,
    )


class RateLimiter(Protocol):
    async def check(self, specs: Sequence[LimitSpec], tokens: int) -> Decision:
        """Admit a request of about `tokens` tokens (prompt estimate + max_tokens) under every spec, or none."""
        ...

    async def settle(self, specs: Sequence[LimitSpec], estimated: int, actual: int) -> None:
        """Correct the tpm consumption of an admitted request by its real token count."""
        ...


class MemoryRateLimiter:
    """Limits of this process alone (no Redis configured); `clock` is injectable so tests need not sleep."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.tats: dict[str, int] = {}

    def now(self) -> int:
        return round(self.clock() * MICROS)

    async def check(self, specs: Sequence[LimitSpec], tokens: int) -> Decision:
        todo = cells(specs, tokens)
        if not todo:
            return ALLOW
        now = self.now()
        decision = decide(todo, [self.tats.get(cell.key, 0) for cell in todo], now)
        if decision.allowed:
            for cell in todo:
                self.tats[cell.key] = max(self.tats.get(cell.key, 0), now) + cell.step
        return decision

    async def settle(self, specs: Sequence[LimitSpec], estimated: int, actual: int) -> None:
        now = self.now()
        for spec in specs:
            if spec.tpm is not None and actual != estimated:
                key = f"{spec.name}:tpm"
                self.tats[key] = max(self.tats.get(key, 0), now) + shift(spec.tpm, actual - estimated)
