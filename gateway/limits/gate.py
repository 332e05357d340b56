"""Admission by limits: a key's rate limits and budgets checked before the upstream call, settled after it.

A key with no limits and no budget costs nothing here. Redis failures follow `on_redis_down` (FailPolicy):
allow lets the request through, deny answers 503.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateway.config.snapshot import ClientKey
from gateway.errors import RateLimited, Unavailable
from gateway.limits.budget import BudgetExceeded, BudgetStore, Reservation
from gateway.limits.headers import rate_headers
from gateway.limits.policy import FailPolicy, LimitsUnavailable
from gateway.limits.rate import ALLOW, Decision, LimitSpec, RateLimiter

SMALLEST_HOLD = Decimal("0.0000000001")
"""Held when a request's cost cannot be known in advance, so an exhausted budget still refuses it."""


class RateLimitExceeded(RateLimited):
    """429 with OpenAI's `x-ratelimit-*` headers (and Retry-After when waiting helps)."""

    def __init__(self, decision: Decision) -> None:
        what = decision.exceeded or "rate limit"
        if decision.oversized:
            message = f"Request too large: it asks for more tokens than {what} allows in a minute"
        else:
            message = f"Rate limit reached ({what}); retry after {decision.retry_after:.1f}s"
        super().__init__(message, retry_after=decision.retry_after)
        self.decision = decision

    def headers(self) -> list[tuple[bytes, bytes]]:
        return rate_headers(self.decision)


class QuotaExceeded(RateLimited):
    type = "insufficient_quota"
    code = "insufficient_quota"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return []


@dataclass(slots=True)
class Admission:
    specs: tuple[LimitSpec, ...]
    tokens: int
    reservation: Reservation | None
    headers: list[tuple[bytes, bytes]]


class Gate:
    def __init__(self, limiter: RateLimiter, budgets: BudgetStore, policy: FailPolicy) -> None:
        self.limiter = limiter
        self.budgets = budgets
        self.policy = policy

    async def admit(self, key: ClientKey, alias: str, tokens: int, worst: Decimal, currency: str) -> Admission | None:
        """Take the request's place under every limit of the key, or raise the 429 (or 503) to answer."""
        specs = key.specs(alias)
        if not specs and not key.budgets:
            return None
        headers: list[tuple[bytes, bytes]] = []
        try:
            if specs:
                decision = await self.policy.run(self.limiter.check(specs, tokens), ALLOW)
                if not decision.allowed:
                    raise RateLimitExceeded(decision)
                headers = rate_headers(decision)
            reservation = await self._reserve(key, specs, tokens, worst, currency)
        except LimitsUnavailable:
            raise Unavailable(
                "rate limits and budgets are unavailable right now; try again", code="limits_unavailable"
            ) from None
        return Admission(specs, tokens, reservation, headers)

    async def _reserve(
        self, key: ClientKey, specs: tuple[LimitSpec, ...], tokens: int, worst: Decimal, currency: str
    ) -> Reservation | None:
        scopes = tuple(s for s in key.budgets if s.currency == currency)
        if not scopes:
            return None
        try:
            return await self.policy.run(self.budgets.reserve(scopes, max(worst, SMALLEST_HOLD)), None)
        except BudgetExceeded as exc:
            if specs:
                await self.policy.quiet(self.limiter.settle(specs, tokens, 0))
            raise QuotaExceeded(f"You exceeded your current quota: the {exc.scope.name} budget is spent") from None

    async def settle(self, admission: Admission, tokens: int, cost: Decimal) -> None:
        """The request's real tokens and cost replace what was held for it."""
        if admission.specs:
            await self.policy.quiet(self.limiter.settle(admission.specs, admission.tokens, tokens))
        if admission.reservation is not None:
            await self.policy.quiet(self.budgets.settle(admission.reservation, cost))
