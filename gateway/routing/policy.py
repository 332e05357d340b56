"""How the router reads an upstream failure: retry it, cool the route, or fall back by cause."""

from __future__ import annotations

import re
from collections.abc import Iterable

from gateway.errors import UpstreamError, UpstreamStatusError

CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length", "model_context_window_exceeded"})
CONTEXT_TEXT = re.compile(
    r"context length|context window|maximum context|prompt is too long|too many (input )?tokens|input is too long"
    r"|range of input length",
    re.IGNORECASE,
)
POLICY_CODES = frozenset({"content_policy_violation", "content_filter", "data_inspection_failed", "content_filtered"})
POLICY_TEXT = re.compile(
    r"content (management )?policy|safety system|content filter|inappropriate content|sensitive content",
    re.IGNORECASE,
)


def _status(exc: UpstreamError) -> int | None:
    return exc.upstream_status if isinstance(exc, UpstreamStatusError) else None


def is_context_window(exc: UpstreamError) -> bool:
    return _status(exc) in (400, 413, 422) and (exc.code in CONTEXT_CODES or bool(CONTEXT_TEXT.search(exc.message)))


def is_content_policy(exc: UpstreamError) -> bool:
    return _status(exc) in (400, 403, 422) and (exc.code in POLICY_CODES or bool(POLICY_TEXT.search(exc.message)))


def is_retryable(exc: UpstreamError, retry_on: frozenset[int]) -> bool:
    """Connection errors, timeouts and broken streams always; upstream statuses when listed."""
    status = _status(exc)
    return status is None or status in retry_on


def is_route_failure(exc: UpstreamError) -> bool:
    """Whether the failure speaks against the route (not against the request)."""
    status = _status(exc)
    if status == 403 and is_content_policy(exc):
        return False
    return status is None or status in (401, 402, 403, 404, 408, 429) or status >= 500


def is_hard_failure(exc: UpstreamError, keywords: Iterable[str]) -> bool:
    """Auth or quota trouble with the vendor: cool the route at once instead of counting."""
    status = _status(exc)
    if status is None:
        return False
    if status in (401, 402, 403) and not is_content_policy(exc):
        return True
    text = f"{exc.code or ''} {exc.message}".lower()
    return any(word.lower() in text for word in keywords if word)
