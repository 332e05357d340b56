"""Exact-match response cache: in Redis when configured, else an in-process LRU bounded in bytes.

The key is a digest of the normalised request (alias, every parameter but the stream switches, and the
API key's name unless the alias shares entries), so different keys never see each other's answers by
default. Non-stream answers are stored as their JSON body; streams as the list of their SSE events,
replayed as SSE.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

IGNORED_FIELDS = ("stream", "stream_options")


def cache_key(alias: str, body: dict[str, Any], scope: str | None, *, stream: bool) -> str:
    """The request's identity for the cache; `scope` is the API key's name (None when shared)."""
    normal = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    normal["model"] = alias
    raw = orjson.dumps([scope, stream, normal], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


def encode_events(events: list[bytes]) -> bytes:
    return orjson.dumps([e.decode() for e in events])


def decode_events(stored: bytes) -> list[bytes]:
    return [e.encode() for e in orjson.loads(stored)]


class ResponseCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...


class MemoryCache:
    """LRU with per-entry expiry; evicts the least recently used entries beyond `max_bytes`."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.size = 0
        self.entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self.clock() >= expires:
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self.entries:
            self._drop(key)
        self.entries[key] = (self.clock() + ttl, value)
        self.size += len(value)
        while self.size > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def _drop(self, key: str) -> None:
        _, value = self.entries.pop(key)
        self.size -= len(value)


class RedisCache:
    """Entries shared by every gateway process; a Redis failure is a cache miss, never a failed request."""

    def __init__(self, url: str, prefix: str) -> None:
        self.redis = aioredis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        self.prefix = f"{prefix}:cache:"
        self.log = logging.getLogger("switchyard.cache")

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self.redis.get(self.prefix + key)
        except RedisError as exc:
            self.log.warning("response cache unavailable: %s", exc.__class__.__name__)
            return None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            await self.redis.set(self.prefix + key, value, px=int(ttl * 1000))
        except RedisError as exc:
            self.log.warning("response cache unavailable: %s", exc.__class__.__name__)

    async def aclose(self) -> None:
        await self.redis.aclose()
