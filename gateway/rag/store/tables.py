"""Knowledge-base tables on the shared `metadata` (migration 0003), the per-dimension embedding tables, and the
encoding of the `cjk` keyword column.

Embeddings: an HNSW index needs a vector column of one fixed dimension, and knowledge bases may use embedders of
different dimensions. So each dimension in use gets its own table `kb_embeddings_<dim>` (chunk_id -> kb_chunks,
kb_id, language, embedding vector(<dim>)) with an HNSW `vector_cosine_ops` index, created on demand by
`repo.create_knowledge_base` when the pgvector extension is installed. Its name is built only from a validated integer.
These tables are not on the shared metadata (they exist only in databases that need them); `is_embedding_table`
names them for Alembic's `include_name` filter.

Keywords: `keywords` is an English tsvector (headings at weight B, then the text). `cjk` holds the CJK characters
as overlapping bigrams (a run of one character as itself), built here in Python as a tsvector literal: Chinese
has no spaces between words, and bigrams need no segmenter and no extension (pg_trgm, zhparser) in the database.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, Final

from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR

import gateway.admin.store.tables  # noqa: F401  (knowledge_bases.team_id refers to its `teams`)
from gateway.store.schema import metadata

STATUSES: Final = ("pending", "indexed", "failed")
MAX_DIMENSIONS: Final = 2000
"""pgvector's HNSW index takes `vector` columns of at most 2,000 dimensions."""
EMBEDDING_TABLE: Final = re.compile(r"kb_embeddings_([1-9][0-9]*)")
LOCAL_EMBEDDER: Final = "local"

CJK: Final = re.compile(
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f]+"
)
"""Runs of ideographs (with extensions A-H and compatibility), kana and Hangul syllables."""
MAX_POSITION: Final = 16383
"""The largest position a tsvector stores; later positions are clamped to it."""
MAX_POSITIONS_PER_LEXEME: Final = 256


def _id() -> Column[int]:
    return Column("id", BigInteger, Identity(), primary_key=True)


def _now(name: str) -> Column[Any]:
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


def _count(name: str, kind: type[Integer] = Integer) -> Column[int]:
    return Column(name, kind, nullable=False, server_default=text("0"))


knowledge_bases = Table(
    "knowledge_bases",
    metadata,
    _id(),
    Column("name", Text, nullable=False, unique=True),
    # RESTRICT: deleting a team must not silently delete its documents, nor (SET NULL) re-scope them.
    Column("team_id", BigInteger, ForeignKey("teams.id", ondelete="RESTRICT"), index=True),
    Column("embedding_alias", Text, nullable=False, server_default=text(f"'{LOCAL_EMBEDDER}'")),
    Column("dimensions", Integer, nullable=False),
    Column("chunking", JSONB(none_as_null=True), nullable=False, server_default=text("'{}'::jsonb")),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("settings", JSONB(none_as_null=True), nullable=False, server_default=text("'{}'::jsonb")),
    _now("created_at"),
    _now("updated_at"),
    CheckConstraint(f"dimensions BETWEEN 1 AND {MAX_DIMENSIONS}", name="dimensions"),
)

kb_documents = Table(
    "kb_documents",
    metadata,
    _id(),
    Column("kb_id", BigInteger, ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("error", Text),
    _count("chunk_count"),
    _count("bytes", BigInteger),
    Column("language", Text),
    # The parsed document (title, kind, sections), so any gateway process can index it.
    Column("source", JSONB(none_as_null=True)),
    # While a process indexes the document: until when its claim holds (then another may take it over).
    Column("claimed_until", DateTime(timezone=True)),
    _now("created_at"),
    _now("updated_at"),
    UniqueConstraint("kb_id", "name"),
    CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})", name="status"),
)

kb_chunks = Table(
    "kb_chunks",
    metadata,
    _id(),
    Column("kb_id", BigInteger, ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("document_id", BigInteger, ForeignKey("kb_documents.id", ondelete="CASCADE"), nullable=False),
    Column("chunk_index", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("heading_path", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("language", Text, nullable=False),
    Column("token_count", Integer, nullable=False),
    Column("keywords", TSVECTOR, nullable=False),
    Column("cjk", TSVECTOR, nullable=False),
    UniqueConstraint("document_id", "chunk_index"),
    Index("ix_kb_chunks_keywords", "keywords", postgresql_using="gin"),
    Index("ix_kb_chunks_cjk", "cjk", postgresql_using="gin"),
)


# --- per-dimension embedding tables ---------------------------------------------------------------------------


def check_dimensions(dimensions: int) -> int:
    """The dimension count itself if it is an int HNSW can index (1..2000); else ValueError."""
    if type(dimensions) is not int or not 1 <= dimensions <= MAX_DIMENSIONS:
        raise ValueError(f"dimensions must be an integer from 1 to {MAX_DIMENSIONS}, not {dimensions!r}")
    return dimensions


def embedding_table_name(dimensions: int) -> str:
    """`kb_embeddings_<dim>`: the only way such a name is made, from a checked integer."""
    return f"kb_embeddings_{check_dimensions(dimensions)}"


def is_embedding_table(name: str | None) -> bool:
    """Whether a table name is one of the on-demand embedding tables (for Alembic's `include_name`)."""
    return name is not None and EMBEDDING_TABLE.fullmatch(name) is not None


def embedding_table(dimensions: int) -> Table:
    """The embedding table of one dimension, on a MetaData of its own (it is created on demand, not migrated)."""
    name = embedding_table_name(dimensions)
    return Table(
        name,
        MetaData(),
        Column("chunk_id", BigInteger, ForeignKey(kb_chunks.c.id, ondelete="CASCADE"), primary_key=True),
        Column("kb_id", BigInteger, nullable=False),
        Column("language", Text, nullable=False),
        Column("embedding", VECTOR(dimensions), nullable=False),
        Index(f"ix_{name}_kb_id", "kb_id"),
        Index(
            f"ix_{name}_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )


# --- the cjk column's encoding --------------------------------------------------------------------------------


def cjk_terms(text: str) -> list[str]:
    """The CJK bigrams of a text in order (a lone character as itself), after NFKC normalization."""
    terms: list[str] = []
    for run in CJK.findall(unicodedata.normalize("NFKC", text)):
        terms.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
    return terms


def _quote(term: str) -> str:
    """A term as a quoted tsvector/tsquery lexeme."""
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


def cjk_tsvector(text: str, headings: Sequence[str] = ()) -> str:
    """A tsvector literal of the bigrams of the headings (weight B) then of the text (weight D), with positions."""
    positions: dict[str, list[str]] = {}
    heading_terms = [t for heading in headings for t in cjk_terms(heading)]
    for index, term in enumerate([*heading_terms, *cjk_terms(text)]):
        weight = "B" if index < len(heading_terms) else ""
        slots = positions.setdefault(term, [])
        if len(slots) < MAX_POSITIONS_PER_LEXEME:
            slots.append(f"{min(index + 1, MAX_POSITION)}{weight}")
    return " ".join(f"{_quote(term)}:{','.join(slots)}" for term, slots in positions.items())


def cjk_tsquery(text: str) -> str | None:
    """A tsquery matching any of the text's distinct CJK bigrams; None when the text has no CJK characters."""
    terms = _distinct(cjk_terms(text))
    return " | ".join(_quote(t) for t in terms) or None


def _distinct(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
