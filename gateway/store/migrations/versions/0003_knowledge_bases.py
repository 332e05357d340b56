"""Knowledge bases: knowledge_bases, kb_documents, kb_chunks (English and CJK keyword tsvectors, GIN-indexed).

The pgvector extension is created when the server has it (a failure to create it is logged, not fatal): without
it the tables still come and retrieval is keyword-only. The per-dimension embedding tables (`kb_embeddings_<dim>`,
each with an HNSW cosine index) are made at run time when a knowledge base needs one; the downgrade drops them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-01-03
"""

from __future__ import annotations

import logging
import re
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.exc import DBAPIError

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)

TABLES = ("kb_chunks", "kb_documents", "knowledge_bases")
EMBEDDING_TABLE = re.compile(r"kb_embeddings_[1-9][0-9]*")


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False)


def _stamps() -> list[sa.Column[Any]]:
    return [
        sa.Column(n, sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()"))
        for n in ("created_at", "updated_at")
    ]


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    name = op.f(f"fk_{table}_{column}_{target}")
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=name, ondelete=ondelete)


def _count(name: str, kind: type[sa.Integer] = sa.Integer) -> sa.Column[int]:
    return sa.Column(name, kind, nullable=False, server_default=sa.text("0"))


def _create_vector_extension() -> None:
    """CREATE EXTENSION vector in a savepoint when the server offers it; without it retrieval is keyword-only."""
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first() is None:
        log.warning("pgvector is not available on this server: knowledge bases will use keyword search only")
        return
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    except DBAPIError as exc:
        log.warning("cannot create the pgvector extension (%s): knowledge bases will use keyword search only", exc)


def _create_knowledge_bases() -> None:
    op.create_table(
        "knowledge_bases",
        _id(),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("team_id", sa.BigInteger),
        sa.Column("embedding_alias", sa.Text, nullable=False, server_default=sa.text("'local'")),
        sa.Column("dimensions", sa.Integer, nullable=False),
        sa.Column("chunking", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_bases")),
        sa.UniqueConstraint("name", name=op.f("uq_knowledge_bases_name")),
        _fk("knowledge_bases", "team_id", "teams", "RESTRICT"),
        sa.CheckConstraint("dimensions BETWEEN 1 AND 2000", name=op.f("ck_knowledge_bases_dimensions")),
    )
    op.create_index("ix_knowledge_bases_team_id", "knowledge_bases", ["team_id"])


def _create_documents() -> None:
    op.create_table(
        "kb_documents",
        _id(),
        sa.Column("kb_id", sa.BigInteger, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("content_hash", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'pending'")),
        sa.Column("error", sa.Text),
        _count("chunk_count"),
        _count("bytes", sa.BigInteger),
        sa.Column("language", sa.Text),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_documents")),
        sa.UniqueConstraint("kb_id", "name", name=op.f("uq_kb_documents_kb_id_name")),
        _fk("kb_documents", "kb_id", "knowledge_bases", "CASCADE"),
        sa.CheckConstraint("status IN ('pending', 'indexed', 'failed')", name=op.f("ck_kb_documents_status")),
    )


def _create_chunks() -> None:
    op.create_table(
        "kb_chunks",
        _id(),
        sa.Column("kb_id", sa.BigInteger, nullable=False),
        sa.Column("document_id", sa.BigInteger, nullable=False),
        sa.Column("chunk_index", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("heading_path", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]")),
        sa.Column("language", sa.Text, nullable=False),
        sa.Column("token_count", sa.Integer, nullable=False),
        sa.Column("keywords", TSVECTOR, nullable=False),
        sa.Column("cjk", TSVECTOR, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_chunks")),
        sa.UniqueConstraint("document_id", "chunk_index", name=op.f("uq_kb_chunks_document_id_chunk_index")),
        _fk("kb_chunks", "kb_id", "knowledge_bases", "CASCADE"),
        _fk("kb_chunks", "document_id", "kb_documents", "CASCADE"),
    )
    op.create_index("ix_kb_chunks_kb_id", "kb_chunks", ["kb_id"])
    op.create_index("ix_kb_chunks_keywords", "kb_chunks", ["keywords"], postgresql_using="gin")
    op.create_index("ix_kb_chunks_cjk", "kb_chunks", ["cjk"], postgresql_using="gin")


def upgrade() -> None:
    """Create the extension where possible, then the three knowledge-base tables and their indexes."""
    _create_vector_extension()
    _create_knowledge_bases()
    _create_documents()
    _create_chunks()


def downgrade() -> None:
    """Drop the on-demand embedding tables, then the knowledge-base tables; the extension stays (others may use it)."""
    bind = op.get_bind()
    names = bind.execute(
        sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename ~ :pattern"),
        {"pattern": "^kb_embeddings_[0-9]+$"},
    ).scalars()
    for name in list(names):
        if EMBEDDING_TABLE.fullmatch(name):
            op.drop_table(name)
    for table in TABLES:
        op.drop_table(table)
