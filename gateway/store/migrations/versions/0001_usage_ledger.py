"""The usage ledger: one row per request attempt that reached an upstream, partitioned by month on `ts`.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLE = "usage_ledger"
INDEXES = (("ts",), ("key_name", "ts"), ("alias", "ts"), ("team", "ts"))


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer, nullable=False, server_default=sa.text("0"))


def _flag(name: str) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean, nullable=False, server_default=sa.text("false"))


def upgrade() -> None:
    """Create the partitioned parent and its indexes; monthly partitions are created at run time."""
    op.create_table(
        TABLE,
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("attempt", sa.SmallInteger, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_name", sa.Text),
        sa.Column("user_name", sa.Text),
        sa.Column("team", sa.Text),
        sa.Column("alias", sa.Text),
        sa.Column("provider", sa.Text),
        sa.Column("upstream_model", sa.Text),
        _counter("prompt_tokens"),
        _counter("cached_tokens"),
        _counter("completion_tokens"),
        _counter("reasoning_tokens"),
        _flag("estimated"),
        sa.Column("cost", sa.Numeric(20, 10), nullable=False, server_default=sa.text("0")),
        sa.Column("currency", sa.CHAR(3), nullable=False, server_default=sa.text("'USD'")),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("http_status", sa.SmallInteger),
        sa.Column("latency_ms", sa.REAL),
        sa.Column("ttfb_ms", sa.REAL),
        _flag("stream"),
        _flag("cache_hit"),
        sa.Column("request_log", JSONB),
        sa.PrimaryKeyConstraint("request_id", "attempt", "ts", name=f"pk_{TABLE}"),
        postgresql_partition_by="RANGE (ts)",
    )
    for columns in INDEXES:
        op.create_index(f"ix_{TABLE}_{'_'.join(columns)}", TABLE, list(columns))


def downgrade() -> None:
    """Drop the ledger with every partition."""
    op.drop_table(TABLE)
