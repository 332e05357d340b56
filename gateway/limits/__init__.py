"""Rate limits (requests and tokens per minute) and budgets (money per period), in memory or in Redis.

The request path: `decision = await policy.run(limiter.check(specs, tokens), ALLOW)` -> 429 with
`rate_headers(decision)` unless allowed; `reservation = await policy.run(budgets.reserve(scopes, cost), None)`
-> 429 insufficient_quota on BudgetExceeded; after the answer `policy.quiet(limiter.settle(...))` and
`policy.quiet(budgets.settle(reservation, cost))`. LimitsUnavailable out of `run` means deny: answer 503.
"""

from gateway.limits.budget import (
    BudgetExceeded,
    BudgetScope,
    BudgetStore,
    BudgetUsage,
    MemoryBudgets,
    Reservation,
)
from gateway.limits.headers import duration, rate_headers, retry_after
from gateway.limits.policy import FailPolicy, LimitsUnavailable
from gateway.limits.rate import ALLOW, Decision, LimitSpec, MemoryRateLimiter, Quota, RateLimiter
from gateway.limits.redis_budget import RedisBudgets
from gateway.limits.redis_rate import RedisRateLimiter

__all__ = [
    "ALLOW",
    "BudgetExceeded",
    "BudgetScope",
    "BudgetStore",
    "BudgetUsage",
    "Decision",
    "FailPolicy",
    "LimitSpec",
    "LimitsUnavailable",
    "MemoryBudgets",
    "MemoryRateLimiter",
    "Quota",
    "RateLimiter",
    "RedisBudgets",
    "RedisRateLimiter",
    "Reservation",
    "duration",
    "rate_headers",
    "retry_after",
]
