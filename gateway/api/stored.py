"""Which provider holds a stored Response, and which client key created it.

Responses passed through to an upstream that stores them (OpenAI, vLLM) are fetched, deleted and continued
(`previous_response_id`) later, and those calls must reach the same provider. The gateway shares one
upstream credential among all its client keys, so an id is honoured only for the key that created it:
an unknown id, or another key's, is "not found" and never forwarded.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import orjson
import redis.asyncio as aioredis

from gateway.errors import InvalidRequest, NotFound, Unavailable

TTL_SECONDS = 30 * 24 * 3600
"""OpenAI keeps stored responses for 30 days."""
RESPONSE_ID = re.compile(r"[A-Za-z0-9_\-]{1,200}")


@dataclass(frozen=True, slots=True)
class Owner:
    provider: str
    key: str

    def encode(self) -> bytes:
        return f"{self.provider}\n{self.key}".encode()

    @classmethod
    def decode(cls, raw: bytes) -> Owner:
        provider, _, key = raw.decode().partition("\n")
        return cls(provider, key)


class ResponseIndex(Protocol):
    async def remember(self, response_id: str, owner: Owner) -> None: ...

    async def owner(self, response_id: str) -> Owner | None: ...

    async def forget(self, response_id: str) -> None: ...


class MemoryResponseIndex:
    """The index of one process, bounded (least recently used ids go first); lost on restart."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._owners: OrderedDict[str, Owner] = OrderedDict()

    async def remember(self, response_id: str, owner: Owner) -> None:
        self._owners[response_id] = owner
        self._owners.move_to_end(response_id)
        while len(self._owners) > self.max_entries:
            self._owners.popitem(last=False)

    async def owner(self, response_id: str) -> Owner | None:
        found = self._owners.get(response_id)
        if found is not None:
            self._owners.move_to_end(response_id)
        return found

    async def forget(self, response_id: str) -> None:
        self._owners.pop(response_id, None)


class RedisResponseIndex:
    """The index shared by every gateway process on one Redis, kept as long as the upstream keeps responses."""

    def __init__(self, url: str, prefix: str) -> None:
        self.redis = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.prefix = f"{prefix}:responses:"
        self.log = logging.getLogger("switchyard.responses")

    async def remember(self, response_id: str, owner: Owner) -> None:
        try:
            await self.redis.set(self.prefix + response_id, owner.encode(), ex=TTL_SECONDS)
        except aioredis.RedisError as exc:
            self.log.warning("stored-response index unavailable: %s", exc.__class__.__name__)

    async def owner(self, response_id: str) -> Owner | None:
        try:
            raw = await self.redis.get(self.prefix + response_id)
        except aioredis.RedisError as exc:
            raise Unavailable(
                "stored responses are unavailable right now; try again", code="service_unavailable"
            ) from exc
        if raw is None:
            return None
        return Owner.decode(raw if isinstance(raw, bytes) else raw.encode())

    async def forget(self, response_id: str) -> None:
        try:
            await self.redis.delete(self.prefix + response_id)
        except aioredis.RedisError as exc:
            raise Unavailable(
                "stored responses are unavailable right now; try again", code="service_unavailable"
            ) from exc

    async def aclose(self) -> None:
        await self.redis.aclose()


async def owned(index: ResponseIndex, response_id: str, key: str, *, param: str | None = None) -> Owner:
    """The owner of a response the key created; a malformed, unknown or other key's id is not found."""
    found = await index.owner(response_id) if RESPONSE_ID.fullmatch(response_id) else None
    if found is None or found.key != key:
        shown = response_id[:200]
        if param is not None:
            raise InvalidRequest(f"Previous response with id '{shown}' not found.", param=param, code="not_found")
        raise NotFound(f"Response with id '{shown}' not found.")
    return found


def response_id(answer: bytes) -> str | None:
    """The `id` of a Response object (None when the answer has none)."""
    try:
        data = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    rid = data.get("id") if isinstance(data, dict) else None
    return rid if isinstance(rid, str) else None
