"""Knowledge bases at run time: a description and settings per knowledge base, each document's parsed source (so
any gateway process can index it, also after a restart) and the lease of the process indexing it, and what
retrieval did for a request in the usage ledger (`rag`: knowledge bases, passages, milliseconds).

Revision ID: 0004
Revises: 0003
Create Date: 2026-01-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the columns; existing rows get empty settings and no source (re-upload to re-index them)."""
    op.add_column("knowledge_bases", sa.Column("description", sa.Text, nullable=False, server_default=sa.text("''")))
    op.add_column(
        "knowledge_bases", sa.Column("settings", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"))
    )
    op.add_column("kb_documents", sa.Column("source", JSONB))
    op.add_column("kb_documents", sa.Column("claimed_until", sa.DateTime(timezone=True)))
    op.add_column("usage_ledger", sa.Column("rag", JSONB))


def downgrade() -> None:
    """Drop the columns again."""
    op.drop_column("usage_ledger", "rag")
    op.drop_column("kb_documents", "claimed_until")
    op.drop_column("kb_documents", "source")
    op.drop_column("knowledge_bases", "settings")
    op.drop_column("knowledge_bases", "description")
