"""Knowledge bases as one gateway process runs them: the embedders, the background indexer, retrieval, and the
operations the admin API, the CLI and the search endpoint share (create, add a document, search)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config.model import RagConfig
from gateway.errors import InvalidRequest, PayloadTooLarge, Unavailable
from gateway.rag.embed.base import EmbedderError
from gateway.rag.embedders import Embedders
from gateway.rag.hook import RagHook
from gateway.rag.indexer import Indexer, to_source
from gateway.rag.ingest import DocumentError, Limits, parse
from gateway.rag.internal import InternalCalls
from gateway.rag.retrieve import Retriever
from gateway.rag.store import repo
from gateway.rag.store.repo import KnowledgeBase, Upserted
from gateway.rag.store.search import Hit
from gateway.rag.store.tables import LOCAL_EMBEDDER

log = logging.getLogger("switchyard.rag")

NAME: Final = re.compile(r"^[\w.-]{1,100}$")
LOCAL_CHUNK_TOKENS: Final = 240
"""all-MiniLM-L6-v2 reads 256 word pieces: longer chunks of a local-embedder knowledge base would be cut."""
WARM_UP_SQL: Final = text("SELECT 1 FROM knowledge_bases WHERE embedding_alias = :local LIMIT 1")
LANGUAGES: Final = frozenset({"zh", "en", "mixed", "other"})


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InvalidRequest("a knowledge base name is 1-100 letters, digits, '_', '.' or '-'", param="name")
    return name


def check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """Per-language trust in the embedder's vectors: languages zh/en/mixed/other, values 0..1."""
    checked = dict(weights or {})
    if not set(checked) <= LANGUAGES or not all(isinstance(v, int | float) and 0 <= v <= 1 for v in checked.values()):
        raise InvalidRequest("dense_weight maps zh, en, mixed or other to a number from 0 to 1", param="dense_weight")
    return checked


class KnowledgeService:
    def __init__(
        self,
        engine_source: Callable[[], AsyncEngine | None],
        calls: InternalCalls,
        config: RagConfig,
        *,
        warm_up: bool = True,
    ) -> None:
        self.engine_source = engine_source
        self.config = config
        self.embedders = Embedders(calls, config)
        self.indexer = Indexer(engine_source, self.embedders, config)
        self.retriever = Retriever(self.embedders)
        self.hook = RagHook(engine_source, self.retriever, calls)
        self.limits = Limits(max_bytes=config.max_upload_bytes)
        self._warming: asyncio.Task[None] | None = None
        self.warm_up = warm_up
        """Start the local query worker ahead of requests (a gateway does; a CLI command does not)."""

    @property
    def engine(self) -> AsyncEngine:
        engine = self.engine_source()
        if engine is None:
            raise Unavailable("knowledge bases need the database, which is not available", code="database_unavailable")
        return engine

    def start(self) -> None:
        self.indexer.start()
        self._warming = asyncio.create_task(self._warm_up(check=True))

    async def stop(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        await self.indexer.stop()
        await self.embedders.aclose()

    async def _warm_up(self, *, check: bool) -> None:
        """Start the local model's query worker now (about 10 s) rather than on a user's request: at start when a
        knowledge base uses it (`check`), or when one that does is created."""
        engine = self.engine_source()
        try:
            if check:
                if engine is None:
                    return
                async with engine.connect() as conn:
                    if (await conn.execute(WARM_UP_SQL, {"local": LOCAL_EMBEDDER})).first() is None:
                        return
            await self.embedders.local("query").embed(["warm up"])
        except (EmbedderError, SQLAlchemyError, OSError) as exc:
            log.warning("knowledge bases: the local embedder did not warm up (%s)", exc)

    async def create(
        self,
        name: str,
        *,
        embedding: str = LOCAL_EMBEDDER,
        team_id: int | None = None,
        description: str = "",
        chunking: Mapping[str, int] | None = None,
        dense_weight: Mapping[str, float] | None = None,
    ) -> KnowledgeBase:
        """A new knowledge base; its embedder is asked for its dimension count first (a clear 400 if it fails)."""
        check_name(name)
        chunking = dict(chunking or {})
        if embedding == LOCAL_EMBEDDER:
            chunking.setdefault("max_tokens", min(LOCAL_CHUNK_TOKENS, self.config.chunk_tokens))
        settings: dict[str, Any] = {"dense_weight": check_weights(dense_weight)} if dense_weight else {}
        try:
            dimensions = await self.embedders.dimensions(embedding)
        except EmbedderError as exc:
            raise InvalidRequest(str(exc), param="embedding", code="embedder_unavailable") from None
        async with self.engine.begin() as conn:
            created = await repo.create_knowledge_base(
                conn,
                name,
                dimensions=dimensions,
                embedding_alias=embedding,
                team_id=team_id,
                chunking=chunking,
                description=description,
                settings=settings,
            )
        if self.warm_up and embedding == LOCAL_EMBEDDER and (self._warming is None or self._warming.done()):
            self._warming = asyncio.create_task(self._warm_up(check=False))
        return created

    async def add(self, kb: KnowledgeBase, filename: str, data: bytes) -> Upserted:
        """Parse an upload (off the event loop) and queue it for indexing; unchanged content is a no-op."""
        if len(data) > self.config.max_upload_bytes:
            raise PayloadTooLarge(f"the document is over the upload limit of {self.config.max_upload_bytes} bytes")
        try:
            doc = await asyncio.to_thread(parse, filename, data, self.limits)
        except DocumentError as exc:
            raise InvalidRequest(str(exc), param="file", code="invalid_document") from None
        async with self.engine.begin() as conn:
            upserted = await repo.upsert_document(
                conn, kb.id, doc.name, doc.content_hash, size=len(data), language=doc.language, source=to_source(doc)
            )
        if upserted.changed:
            self.indexer.kick()
        return upserted

    async def search(
        self, kbs: Sequence[KnowledgeBase], query: str, *, top_k: int = 5, min_similarity: float = 0.25
    ) -> list[Hit]:
        """The best passages of these knowledge bases for a query (the caller checked access)."""
        if not query.strip():
            raise InvalidRequest("the query is empty", param="query")
        try:
            return await self.retriever.retrieve(self.engine, kbs, [query], top_k=top_k, min_similarity=min_similarity)
        except EmbedderError as exc:
            raise Unavailable(str(exc), code="embedder_unavailable") from None
