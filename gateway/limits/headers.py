"""OpenAI's rate-limit response headers from a Decision, as raw ASGI header pairs.

`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the reset as a Go-style duration (`20ms`, `1s`,
`6m0s`, `1h2m3.5s`) as OpenAI sends it, and `retry-after` (whole seconds, rounded up) on a refusal.
"""

from __future__ import annotations

import math

from gateway.limits.rate import Decision, Quota


def duration(seconds: float) -> str:
    """A duration as Go prints it, to the millisecond and rounded up (a client never retries too early)."""
    millis = math.ceil(round(max(0.0, seconds) * 1_000_000) / 1000)
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def retry_after(seconds: float) -> int:
    """Retry-After in whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(round(seconds, 6)))


def quota_headers(quota: Quota | None, dimension: bytes) -> list[tuple[bytes, bytes]]:
    if quota is None:
        return []
    return [
        (b"x-ratelimit-limit-" + dimension, str(quota.limit).encode()),
        (b"x-ratelimit-remaining-" + dimension, str(quota.remaining).encode()),
        (b"x-ratelimit-reset-" + dimension, duration(quota.reset).encode()),
    ]


def rate_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    """The headers for the answer; retry-after only on a refusal that waiting can cure."""
    headers = quota_headers(decision.requests, b"requests") + quota_headers(decision.tokens, b"tokens")
    if not decision.allowed and not decision.oversized:
        headers.append((b"retry-after", str(retry_after(decision.retry_after)).encode()))
    return headers
