"""Per-request decisions the data plane takes from an alias's settings: cache use and sticky-session key."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.cache import cache_key
from gateway.config.snapshot import Alias, ClientKey
from gateway.protocol.headers import cache_directives, header_value

MAX_RECORDED_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CachePlan:
    key: str
    ttl: float
    lookup: bool
    """False for `Cache-Control: no-cache` (fetch fresh, then store) and `no-store`."""
    store: bool
    """False for `Cache-Control: no-store`."""


def plan_cache(
    alias: Alias, key: ClientKey, cache_control: bytes | None, body: dict[str, Any], *, stream: bool
) -> CachePlan | None:
    """How the response cache applies to this request; None when neither the alias nor the key opted in."""
    settings = alias.cache or key.cache
    if settings is None:
        return None
    directives = cache_directives(cache_control)
    no_store = "no-store" in directives
    scope = None if settings.shared else key.name
    return CachePlan(
        key=cache_key(alias.name, body, scope, stream=stream),
        ttl=settings.ttl,
        lookup=not no_store and "no-cache" not in directives,
        store=not no_store,
    )


def affinity(alias: Alias, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The sticky-session key of a request to a sticky alias, if it carries one."""
    sticky = alias.sticky
    if sticky is None:
        return None
    if sticky.by == "user":
        user = body.get("user")
        return user if isinstance(user, str) and user else None
    return header_value(headers, sticky.header.lower().encode()) or None


@dataclass(slots=True)
class Recording:
    """The events of a stream being relayed, kept for the cache while they stay under a size bound."""

    events: list[bytes] = field(default_factory=list)
    size: int = 0
    complete: bool = True

    def add(self, batch: list[bytes], *, failed: bool) -> None:
        if failed:
            self.complete = False
        if not self.complete:
            return
        for event in batch:
            if event == b"[DONE]":
                return
            self.size += len(event)
            self.events.append(event)
        if self.size > MAX_RECORDED_BYTES:
            self.complete, self.events = False, []
