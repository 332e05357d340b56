"""Data access for knowledge bases, their documents and chunks (with embeddings when pgvector is installed).

Every function takes an `AsyncConnection` and runs inside the caller's transaction; writes that must be atomic on
their own (a document's chunk replacement, an insert that may conflict) run in a savepoint. Ingestion is two steps:
`upsert_document` records the new content hash (status pending; the previous chunks stay searchable), then
`store_chunks` replaces the chunks at once and marks the document indexed, unless a newer upload superseded it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Executable,
    RowMapping,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, CreateTable

from gateway.rag.store.tables import (
    LOCAL_EMBEDDER,
    STATUSES,
    check_dimensions,
    cjk_tsvector,
    embedding_table,
    embedding_table_name,
    kb_chunks,
    kb_documents,
    knowledge_bases,
)

# Advisory-lock class for creating an embedding table (the second key is the dimension count): "KB".
EMBEDDING_LOCK: Final = 0x4B42
# One row per element of the array parameters; `keywords` is English full text, headings at weight B.
INSERT_CHUNKS: Final = text(
    """
    INSERT INTO kb_chunks (kb_id, document_id, chunk_index, text, heading_path, language, token_count, keywords, cjk)
    SELECT :kb_id, :document_id, c.ord - 1, c.text, h.path, c.language, c.token_count,
           setweight(to_tsvector('english', array_to_string(h.path, ' ')), 'B') || to_tsvector('english', c.text),
           CAST(c.cjk AS tsvector)
    FROM unnest(CAST(:texts AS text[]), CAST(:heading_paths AS jsonb[]), CAST(:languages AS text[]),
                CAST(:token_counts AS int[]), CAST(:cjk AS text[]))
         WITH ORDINALITY AS c(text, heading_path, language, token_count, cjk, ord)
    CROSS JOIN LATERAL (SELECT ARRAY(SELECT jsonb_array_elements_text(c.heading_path)) AS path) AS h
    RETURNING chunk_index, id
    """
)
_UNIQUE, _FOREIGN_KEY = "23505", "23503"
DOCUMENT_COLUMNS: Final = tuple(c for c in kb_documents.c if c.name != "source")
"""A document's row as listed: everything but its parsed source, which can be large."""


class KnowledgeBaseError(Exception):
    """A knowledge-base store error the admin API can show as it is."""


class NameTaken(KnowledgeBaseError):
    """A knowledge base with this name already exists."""


class NotFound(KnowledgeBaseError, LookupError):
    """The knowledge base, team or document referred to does not exist."""


class InvalidValue(KnowledgeBaseError, ValueError):
    """A value the schema refuses (a status, a dimension count)."""


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    """A row of `knowledge_bases`."""

    id: int
    name: str
    team_id: int | None
    embedding_alias: str
    dimensions: int
    chunking: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Document:
    """A row of `kb_documents`."""

    id: int
    kb_id: int
    name: str
    content_hash: str
    status: str
    error: str | None
    chunk_count: int
    bytes: int
    language: str | None
    created_at: datetime
    updated_at: datetime
    claimed_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A pending document a process took to index: its content hash and parsed source."""

    id: int
    kb_id: int
    name: str
    content_hash: str
    source: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Upserted:
    """The document after `upsert_document`; `changed` is False when its content was already there."""

    document: Document
    changed: bool


@dataclass(frozen=True, slots=True)
class ChunkInput:
    """One chunk to store: its text, language, token count, heading path and (optionally) its embedding."""

    text: str
    language: str
    token_count: int
    heading_path: Sequence[str] = ()
    embedding: Sequence[float] | None = field(default=None, repr=False)


# --- plumbing -------------------------------------------------------------------------------------------------


def _refusal(exc: IntegrityError) -> KnowledgeBaseError:
    code = getattr(exc.orig, "sqlstate", None)
    if code == _UNIQUE:
        return NameTaken("a knowledge base with this name already exists")
    if code == _FOREIGN_KEY:
        return NotFound("the knowledge base or team referred to does not exist")
    return InvalidValue("a value of the knowledge base is not allowed")


async def _write_one(conn: AsyncConnection, statement: Executable) -> RowMapping | None:
    """Run a write returning at most one row in a savepoint; integrity errors become KnowledgeBaseErrors."""
    try:
        async with conn.begin_nested():
            return (await conn.execute(statement)).mappings().first()
    except IntegrityError as exc:
        raise _refusal(exc) from None


def _kb(row: RowMapping) -> KnowledgeBase:
    return KnowledgeBase(**row)


def _document(row: RowMapping) -> Document:
    return Document(**row)


# --- pgvector ---------------------------------------------------------------------------------------------------


async def vector_available(conn: AsyncConnection) -> bool:
    """Whether the pgvector extension is installed in this database (else retrieval is keyword-only)."""
    found = await conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'vector'"))
    return found.first() is not None


async def ensure_embedding_table(conn: AsyncConnection, dimensions: int) -> bool:
    """Create `kb_embeddings_<dim>` with its HNSW cosine index if missing; False when pgvector is not installed."""
    name = embedding_table_name(dimensions)
    if not await vector_available(conn):
        return False
    await conn.execute(text("SELECT pg_advisory_xact_lock(:lock, :dims)"), {"lock": EMBEDDING_LOCK, "dims": dimensions})
    if (await conn.execute(text("SELECT to_regclass(:name)"), {"name": name})).scalar() is None:
        table = embedding_table(dimensions)
        await conn.execute(CreateTable(table))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            await conn.execute(CreateIndex(index))
    return True


# --- knowledge bases --------------------------------------------------------------------------------------------


async def create_knowledge_base(
    conn: AsyncConnection,
    name: str,
    *,
    dimensions: int,
    embedding_alias: str = LOCAL_EMBEDDER,
    team_id: int | None = None,
    chunking: Mapping[str, Any] | None = None,
    description: str = "",
    settings: Mapping[str, Any] | None = None,
) -> KnowledgeBase:
    """Create a knowledge base (and its dimension's embedding table when pgvector is there); NameTaken, NotFound."""
    try:
        check_dimensions(dimensions)
    except ValueError as exc:
        raise InvalidValue(str(exc)) from None
    values = {"name": name, "dimensions": dimensions, "embedding_alias": embedding_alias, "team_id": team_id}
    extra = {"chunking": dict(chunking or {}), "description": description, "settings": dict(settings or {})}
    statement = insert(knowledge_bases).values(**values, **extra).returning(*knowledge_bases.c)
    row = await _write_one(conn, statement)
    assert row is not None  # an INSERT ... RETURNING that did not raise returns its row
    await ensure_embedding_table(conn, dimensions)
    return _kb(row)


def _kb_where(kb: int | str) -> ColumnElement[bool]:
    return knowledge_bases.c.id == kb if isinstance(kb, int) else knowledge_bases.c.name == kb


async def get_knowledge_base(conn: AsyncConnection, kb: int | str) -> KnowledgeBase | None:
    """The knowledge base with this id (an int) or name (a str), or None."""
    row = (await conn.execute(select(knowledge_bases).where(_kb_where(kb)))).mappings().first()
    return None if row is None else _kb(row)


async def list_knowledge_bases(
    conn: AsyncConnection, *, team_ids: Collection[int] | None = None
) -> list[KnowledgeBase]:
    """All knowledge bases by name, or those of the given teams."""
    statement = select(knowledge_bases).order_by(knowledge_bases.c.name)
    if team_ids is not None:
        statement = statement.where(knowledge_bases.c.team_id.in_(list(team_ids)))
    return [_kb(row) for row in (await conn.execute(statement)).mappings()]


async def delete_knowledge_base(conn: AsyncConnection, kb: int | str) -> bool:
    """Delete a knowledge base with its documents, chunks and embeddings; False when there was none."""
    result = await conn.execute(delete(knowledge_bases).where(_kb_where(kb)).returning(knowledge_bases.c.id))
    return result.first() is not None


# --- documents --------------------------------------------------------------------------------------------------


async def upsert_document(
    conn: AsyncConnection,
    kb_id: int,
    name: str,
    content_hash: str,
    *,
    size: int,
    language: str | None = None,
    source: Mapping[str, Any] | None = None,
) -> Upserted:
    """Record a document's content: new or changed (or previously failed) -> pending and `changed`; else a no-op.

    A changed document keeps its previous chunks (still searchable) until `store_chunks` replaces them.
    """
    values = {"kb_id": kb_id, "name": name, "content_hash": content_hash, "bytes": size, "language": language}
    insert_row = pg_insert(kb_documents).values(**values, status="pending", source=source)
    new = insert_row.excluded
    statement = insert_row.on_conflict_do_update(
        index_elements=[kb_documents.c.kb_id, kb_documents.c.name],
        set_={"content_hash": new.content_hash, "bytes": new.bytes, "language": new.language, "status": "pending"}
        | {"error": None, "updated_at": func.now(), "source": new.source, "claimed_until": None},
        where=or_(kb_documents.c.content_hash != new.content_hash, kb_documents.c.status == "failed"),
    ).returning(*DOCUMENT_COLUMNS)
    row = await _write_one(conn, statement)
    if row is not None:
        return Upserted(_document(row), changed=True)
    document = await get_document(conn, kb_id, name)
    assert document is not None  # the conflict that skipped the update is this row
    return Upserted(document, changed=False)


def _document_where(kb_id: int, document: int | str) -> ColumnElement[bool]:
    column = kb_documents.c.id if isinstance(document, int) else kb_documents.c.name
    return (kb_documents.c.kb_id == kb_id) & (column == document)


async def get_document(conn: AsyncConnection, kb_id: int, document: int | str) -> Document | None:
    """A document of the knowledge base by id or name, or None."""
    statement = select(*DOCUMENT_COLUMNS).where(_document_where(kb_id, document))
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else _document(row)


async def list_documents(conn: AsyncConnection, kb_id: int, *, status: str | None = None) -> list[Document]:
    """The knowledge base's documents by name, with their status and error; only those of `status` if given."""
    statement = select(*DOCUMENT_COLUMNS).where(kb_documents.c.kb_id == kb_id).order_by(kb_documents.c.name)
    if status is not None:
        statement = statement.where(kb_documents.c.status == status)
    return [_document(row) for row in (await conn.execute(statement)).mappings()]


async def delete_document(conn: AsyncConnection, kb_id: int, document: int | str) -> bool:
    """Delete a document (its chunks and embeddings go with it); False when there was none."""
    statement = delete(kb_documents).where(_document_where(kb_id, document)).returning(kb_documents.c.id)
    return (await conn.execute(statement)).first() is not None


async def set_document_status(
    conn: AsyncConnection, document_id: int, status: str, error: str | None = None, *, content_hash: str | None = None
) -> bool:
    """Set a document's status and error; "failed" also drops its chunks. With `content_hash`, only for that content.

    Returns False when no document matched (deleted, or superseded by a newer upload).
    """
    if status not in STATUSES:
        raise InvalidValue(f"status must be one of {', '.join(STATUSES)}")
    where = kb_documents.c.id == document_id
    if content_hash is not None:
        where &= kb_documents.c.content_hash == content_hash
    changes: dict[str, Any] = {"status": status, "error": error, "updated_at": func.now(), "claimed_until": None}
    if status == "failed":
        changes["chunk_count"] = 0
    async with conn.begin_nested():
        row = (
            await conn.execute(update(kb_documents).where(where).values(changes).returning(kb_documents.c.id))
        ).first()
        if row is not None and status == "failed":
            await conn.execute(delete(kb_chunks).where(kb_chunks.c.document_id == document_id))
    return row is not None


# --- chunks -------------------------------------------------------------------------------------------------------


def _vector(values: Sequence[float], dimensions: int) -> list[float]:
    """The embedding as a list of floats, checked: the KB's dimension count, finite, not all zero."""
    vector = [float(v) for v in values]
    if len(vector) != dimensions:
        raise InvalidValue(f"an embedding has {len(vector)} dimensions, the knowledge base {dimensions}")
    if not all(math.isfinite(v) for v in vector) or not any(vector):
        raise InvalidValue("an embedding must be finite and not all zero")
    return vector


async def _lock_document(conn: AsyncConnection, document_id: int, content_hash: str) -> tuple[int, int] | None:
    """Lock the document row if it still holds this content; returns (kb_id, dimensions)."""
    statement = (
        select(kb_documents.c.kb_id, knowledge_bases.c.dimensions)
        .join(knowledge_bases, knowledge_bases.c.id == kb_documents.c.kb_id)
        .where(kb_documents.c.id == document_id, kb_documents.c.content_hash == content_hash)
        .with_for_update(of=kb_documents)
    )
    row = (await conn.execute(statement)).first()
    return None if row is None else (row.kb_id, row.dimensions)


def _clean(value: str) -> str:
    """The text without NUL characters, which PostgreSQL text cannot hold (extracted PDFs have them)."""
    return value.replace("\x00", "")


def _chunk_params(kb_id: int, document_id: int, chunks: Sequence[ChunkInput]) -> dict[str, Any]:
    """The parameters of INSERT_CHUNKS: one array per column, in chunk order."""
    texts = [_clean(chunk.text) for chunk in chunks]
    headings = [[_clean(h) for h in chunk.heading_path] for chunk in chunks]
    return {
        "kb_id": kb_id,
        "document_id": document_id,
        "texts": texts,
        "heading_paths": [json.dumps(path, ensure_ascii=False) for path in headings],
        "languages": [chunk.language for chunk in chunks],
        "token_counts": [chunk.token_count for chunk in chunks],
        "cjk": [cjk_tsvector(body, path) for body, path in zip(texts, headings, strict=True)],
    }


async def _insert_chunks(
    conn: AsyncConnection, kb_id: int, document_id: int, chunks: Sequence[ChunkInput]
) -> list[int]:
    """Insert the chunks in one statement; returns their ids in chunk order."""
    if not chunks:
        return []
    rows = await conn.execute(INSERT_CHUNKS, _chunk_params(kb_id, document_id, chunks))
    ids: dict[int, int] = {row.chunk_index: row.id for row in rows}
    return [ids[index] for index in range(len(chunks))]


def _vectors(chunks: Sequence[ChunkInput], dimensions: int) -> list[list[float] | None]:
    """Each chunk's checked embedding (None where it has none), before anything is written."""
    return [None if chunk.embedding is None else _vector(chunk.embedding, dimensions) for chunk in chunks]


def _embedding_rows(
    kb_id: int, ids: Sequence[int], chunks: Sequence[ChunkInput], vectors: Sequence[list[float] | None]
) -> list[dict[str, Any]]:
    return [
        {"chunk_id": chunk_id, "kb_id": kb_id, "language": chunk.language, "embedding": vector}
        for chunk_id, chunk, vector in zip(ids, chunks, vectors, strict=True)
        if vector is not None
    ]


async def _insert_embeddings(conn: AsyncConnection, dimensions: int, rows: Sequence[Mapping[str, Any]]) -> None:
    """Store embedding rows when pgvector is installed (creating the dimension's table if it is missing)."""
    if rows and await ensure_embedding_table(conn, dimensions):
        await conn.execute(insert(embedding_table(dimensions)), list(rows))


async def store_chunks(
    conn: AsyncConnection, document_id: int, content_hash: str, chunks: Sequence[ChunkInput]
) -> bool:
    """Replace the document's chunks (and embeddings) with these and mark it indexed, atomically.

    Returns False, writing nothing, when the document is gone or now holds other content (a newer upload).
    Embeddings are stored when pgvector is installed and ignored otherwise.
    """
    async with conn.begin_nested():
        found = await _lock_document(conn, document_id, content_hash)
        if found is None:
            return False
        kb_id, dimensions = found
        vectors = _vectors(chunks, dimensions)  # all checked before anything is written
        await conn.execute(delete(kb_chunks).where(kb_chunks.c.document_id == document_id))
        ids = await _insert_chunks(conn, kb_id, document_id, chunks)
        await _insert_embeddings(conn, dimensions, _embedding_rows(kb_id, ids, chunks, vectors))
        changes = {"status": "indexed", "error": None, "chunk_count": len(chunks), "updated_at": func.now()}
        changes |= {"claimed_until": None}
        await conn.execute(update(kb_documents).where(kb_documents.c.id == document_id).values(changes))
    return True


# --- the indexing queue -----------------------------------------------------------------------------------------

CLAIM_SQL: Final = text(
    """
    UPDATE kb_documents SET claimed_until = now() + make_interval(secs => :lease)
    WHERE id = (
        SELECT id FROM kb_documents
        WHERE status = 'pending' AND source IS NOT NULL AND (claimed_until IS NULL OR claimed_until < now())
          AND (CAST(:kb_ids AS bigint[]) IS NULL OR kb_id = ANY(CAST(:kb_ids AS bigint[])))
        ORDER BY updated_at, id
        FOR UPDATE SKIP LOCKED
        LIMIT 1
    )
    RETURNING id, kb_id, name, content_hash, source
    """
)


async def claim_pending(
    conn: AsyncConnection, *, lease: float, kb_ids: Collection[int] | None = None
) -> Claimed | None:
    """Take the oldest pending document no live process holds (of `kb_ids` only, if given), for `lease` seconds;
    None when there is none.

    A process that dies mid-way loses its claim when the lease runs out, and another one takes the document over.
    """
    ids = None if kb_ids is None else list(kb_ids)
    row = (await conn.execute(CLAIM_SQL, {"lease": lease, "kb_ids": ids})).mappings().first()
    return None if row is None else Claimed(**row)


async def document_counts(conn: AsyncConnection, kb_ids: Collection[int]) -> dict[int, dict[str, int]]:
    """Per knowledge base: how many documents are pending, indexed and failed, and how many chunks it holds."""
    statement = (
        select(kb_documents.c.kb_id, kb_documents.c.status, func.count(), func.sum(kb_documents.c.chunk_count))
        .where(kb_documents.c.kb_id.in_(list(kb_ids)))
        .group_by(kb_documents.c.kb_id, kb_documents.c.status)
    )
    counts: dict[int, dict[str, int]] = {kb: dict.fromkeys((*STATUSES, "chunks"), 0) for kb in kb_ids}
    for kb_id, status, number, chunks in await conn.execute(statement):
        counts[kb_id][status] = number
        counts[kb_id]["chunks"] += int(chunks or 0)
    return counts
