"""Calls the gateway makes to its own aliases from inside: embeddings for knowledge bases, query rewriting and
translation. They go through the router like a client's request, so routes, retries and fallbacks apply."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson

from gateway.config.snapshot import Route, Snapshot
from gateway.errors import GatewayError
from gateway.rag.embed.base import EmbedderError
from gateway.routing.router import Router, Trace
from gateway.upstream.client import Timeouts
from plugins.providers.base import CALLS, CallContext


class SnapshotSource(Protocol):
    @property
    def snapshot(self) -> Snapshot: ...


class InternalCalls:
    """Unary calls to an alias by name; raises LookupError for an unknown alias, GatewayError from upstream."""

    def __init__(self, source: SnapshotSource, router: Router) -> None:
        self.source = source
        self.router = router
        self._ids = itertools.count(1)
        self._prefix = f"rag-{os.getpid():x}-"

    def mode(self, alias: str) -> str | None:
        """What the alias serves (chat, completion, embedding), or None when there is no such alias."""
        found = self.source.snapshot.aliases.get(alias)
        return None if found is None else found.mode

    async def call(self, alias_name: str, operation: str, body: Mapping[str, Any]) -> Any:
        """The alias's answer to `body` (an OpenAI request of `operation`: chat or embeddings), as parsed JSON."""
        snapshot = self.source.snapshot
        alias = snapshot.aliases.get(alias_name)
        if alias is None:
            raise LookupError(f"no model alias named {alias_name!r}")
        call, request = CALLS[operation], {**body, "model": alias_name}
        request_id = f"{self._prefix}{next(self._ids)}"

        async def attempt(route: Route, timeouts: Timeouts) -> bytes:
            return await call(route.adapter, request, CallContext(request_id, route.model, timeouts))

        outcome = await self.router.run(snapshot, alias, attempt, Trace())
        self.router.release(outcome.route)
        return orjson.loads(outcome.result)

    async def complete(self, alias: str, messages: list[dict[str, str]], *, max_tokens: int = 256) -> str:
        """The text of a short chat answer (temperature 0)."""
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0}
        answer = await self.call(alias, "chat", body)
        try:
            return str(answer["choices"][0]["message"]["content"] or "").strip()
        except (KeyError, IndexError, TypeError):
            return ""


class AliasEmbedder:
    """Embeddings from one of the gateway's embedding aliases (a vendor's model, or BGE/Qwen served in house).

    Its vectors are trusted in every language unless `dense_weight` says otherwise (pick a multilingual model)."""

    def __init__(
        self, calls: InternalCalls, alias: str, *, batch_size: int = 64, dense_weight: Mapping[str, float] | None = None
    ) -> None:
        self.calls = calls
        self.alias = alias
        self.batch_size = batch_size
        self._weights = dict(dense_weight or {})

    @property
    def dense_weight(self) -> Mapping[str, float]:
        return self._weights

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self._batch(list(texts[start : start + self.batch_size])))
        return vectors

    async def _batch(self, texts: list[str]) -> list[list[float]]:
        if self.calls.mode(self.alias) != "embedding":
            raise EmbedderError(f"no embedding alias named {self.alias!r}")
        try:
            answer = await self.calls.call(self.alias, "embeddings", {"input": texts})
        except GatewayError as exc:
            raise EmbedderError(f"the embedding alias {self.alias!r} failed ({exc.code})") from None
        except LookupError as exc:
            raise EmbedderError(str(exc)) from None
        return _vectors(answer, len(texts), self.alias)


def _vectors(answer: Any, count: int, alias: str) -> list[list[float]]:
    """The `data[].embedding` lists of an embeddings answer in input order; EmbedderError when malformed."""
    try:
        items = sorted(answer["data"], key=lambda item: int(item.get("index", 0)))
        vectors = [[float(v) for v in item["embedding"]] for item in items]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise EmbedderError(f"the embedding alias {alias!r} answered without float embeddings") from None
    if len(vectors) != count:
        raise EmbedderError(f"the embedding alias {alias!r} returned {len(vectors)} embeddings for {count} texts")
    return vectors
