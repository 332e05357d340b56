"""Background indexing of uploaded documents: any gateway process claims a pending document (a lease in the
database, so a process that dies mid-way hands it over), chunks it, embeds the chunks in batches off the event
loop, and stores them at once; a document that cannot be indexed is marked failed with the reason."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config.model import RagConfig
from gateway.rag.embed.base import EmbedderError
from gateway.rag.embedders import Embedders
from gateway.rag.ingest import Chunk, DocumentError, ParsedDocument, Section, chunk
from gateway.rag.store import repo
from gateway.rag.store.repo import ChunkInput, Claimed, KnowledgeBase, KnowledgeBaseError
from gateway.rag.store.search import language_weight

log = logging.getLogger("switchyard.rag")

LEASE_SECONDS: Final = 120.0
RENEW_SQL: Final = text(
    "UPDATE kb_documents SET claimed_until = now() + make_interval(secs => :lease) "
    "WHERE id = :id AND content_hash = :hash"
)


def to_source(doc: ParsedDocument) -> dict[str, Any]:
    """A parsed document as JSON for `kb_documents.source`: its text and where each section sits in it."""
    sections = [[list(s.heading_path), s.start, len(s.text)] for s in doc.sections]
    return {"kind": doc.kind, "title": doc.title, "language": doc.language, "text": doc.text, "sections": sections}


def from_source(name: str, source: Mapping[str, Any], content_hash: str) -> ParsedDocument:
    """The parsed document back from `to_source`."""
    body: str = source["text"]
    sections = tuple(Section(tuple(h), body[start : start + size], start) for h, start, size in source["sections"])
    return ParsedDocument(name, source["kind"], source["title"], source["language"], body, sections, content_hash)


def chunking_of(kb: KnowledgeBase, config: RagConfig) -> dict[str, int]:
    """The knowledge base's chunk size and overlap in tokens (its own settings, else the gateway's)."""
    return {
        "max_tokens": int(kb.chunking.get("max_tokens", config.chunk_tokens)),
        "overlap": int(kb.chunking.get("overlap", config.chunk_overlap)),
    }


class Indexer:
    def __init__(
        self,
        engine_source: Callable[[], AsyncEngine | None],
        embedders: Embedders,
        config: RagConfig,
        poll: float = 5.0,
    ) -> None:
        self.engine_source = engine_source
        self.embedders = embedders
        self.config = config
        self.poll = poll
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self.config.ingest_workers)]

    def kick(self) -> None:
        """A document was uploaded here: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def drain(self, kb_ids: Collection[int] | None = None) -> int:
        """Index pending documents (of `kb_ids` only, if given) until none is left (the CLI's `kb add`); returns
        how many were handled."""
        handled = 0
        while await self.run_once(kb_ids):
            handled += 1
        return handled

    async def _loop(self) -> None:
        while True:
            try:
                worked = await self.run_once()
            except Exception as exc:  # the database may be away: try again later
                log.warning("knowledge bases: indexing paused (%s)", type(exc).__name__)
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll):
                        await self._wake.wait()
                self._wake.clear()

    async def run_once(self, kb_ids: Collection[int] | None = None) -> bool:
        """Claim one pending document (of `kb_ids`, if given) and index it; False when there is none (or no
        database)."""
        engine = self.engine_source()
        if engine is None:
            return False
        async with engine.begin() as conn:
            claimed = await repo.claim_pending(conn, lease=LEASE_SECONDS, kb_ids=kb_ids)
        if claimed is None:
            return False
        await self._index(engine, claimed)
        return True

    async def _index(self, engine: AsyncEngine, claimed: Claimed) -> None:
        try:
            async with engine.connect() as conn:
                kb = await repo.get_knowledge_base(conn, claimed.kb_id)
            if kb is None:
                return
            chunks = await self._chunks(kb, claimed)
            inputs = await self._embedded(engine, kb, claimed, chunks)
            async with engine.begin() as conn:
                await repo.store_chunks(conn, claimed.id, claimed.content_hash, inputs)
            log.info("knowledge base %s: indexed %s (%d chunks)", kb.name, claimed.name, len(inputs))
        except (DocumentError, EmbedderError, KnowledgeBaseError, ValueError) as exc:
            await self._fail(engine, claimed, str(exc) or type(exc).__name__)

    async def _chunks(self, kb: KnowledgeBase, claimed: Claimed) -> list[Chunk]:
        doc = from_source(claimed.name, claimed.source, claimed.content_hash)
        sizes = chunking_of(kb, self.config)
        return await asyncio.to_thread(chunk, doc, max_tokens=sizes["max_tokens"], overlap=sizes["overlap"])

    async def _embedded(
        self, engine: AsyncEngine, kb: KnowledgeBase, claimed: Claimed, chunks: Sequence[Chunk]
    ) -> list[ChunkInput]:
        """The chunks with their embeddings; chunks in a language the embedder cannot read get none."""
        embedder = self.embedders.for_kb(kb, "ingest")
        weights = self.embedders.dense_weight(kb)
        wanted = [c for c in chunks if language_weight(weights, c.language) > 0]
        vectors: dict[int, list[float]] = {}
        step = self.config.embed_batch * 4
        for start in range(0, len(wanted), step):
            batch = wanted[start : start + step]
            for piece, vector in zip(batch, await embedder.embed([c.text for c in batch]), strict=True):
                vectors[piece.index] = vector
            await self._renew(engine, claimed)
        return [ChunkInput(c.text, c.language, c.token_count, c.heading_path, vectors.get(c.index)) for c in chunks]

    @staticmethod
    async def _renew(engine: AsyncEngine, claimed: Claimed) -> None:
        async with engine.begin() as conn:
            await conn.execute(RENEW_SQL, {"lease": LEASE_SECONDS, "id": claimed.id, "hash": claimed.content_hash})

    @staticmethod
    async def _fail(engine: AsyncEngine, claimed: Claimed, reason: str) -> None:
        log.warning("knowledge bases: could not index %s: %s", claimed.name, reason)
        async with engine.begin() as conn:
            await repo.set_document_status(conn, claimed.id, "failed", reason[:500], content_hash=claimed.content_hash)
