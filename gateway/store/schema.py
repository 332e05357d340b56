"""SQLAlchemy Core tables of the gateway's database: the definitions that queries and migrations share.

The usage ledger is range-partitioned by month on `ts`; its monthly partitions are made by `gateway.store.ledger`.
"""

from __future__ import annotations

from types import MappingProxyType

from sqlalchemy import (
    CHAR,
    REAL,
    Boolean,
    Column,
    DateTime,
    DefaultClause,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

NAMING = MappingProxyType(
    {
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

LEDGER_TABLE = "usage_ledger"

# The ledger's column defaults: the server defaults below, and what `insert_usage` fills in for a missing key.
LEDGER_DEFAULTS = MappingProxyType(
    {
        "prompt_tokens": 0,
        "cached_tokens": 0,
        "completion_tokens": 0,
        "reasoning_tokens": 0,
        "estimated": False,
        "cost": 0,
        "currency": "USD",
        "stream": False,
        "cache_hit": False,
    }
)


def _default(name: str) -> DefaultClause:
    value = LEDGER_DEFAULTS[name]
    sql = f"'{value}'" if isinstance(value, str) else str(value).lower()
    return DefaultClause(text(sql))


def _counter(name: str) -> Column[int]:
    return Column(name, Integer, nullable=False, server_default=_default(name))


def _flag(name: str) -> Column[bool]:
    return Column(name, Boolean, nullable=False, server_default=_default(name))


metadata = MetaData(naming_convention=dict(NAMING))

usage_ledger = Table(
    LEDGER_TABLE,
    metadata,
    Column("request_id", Text, nullable=False),
    Column("attempt", SmallInteger, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("key_name", Text),
    Column("user_name", Text),
    Column("team", Text),
    Column("alias", Text),
    Column("provider", Text),
    Column("upstream_model", Text),
    _counter("prompt_tokens"),
    _counter("cached_tokens"),
    _counter("completion_tokens"),
    _counter("reasoning_tokens"),
    _flag("estimated"),
    Column("cost", Numeric(20, 10), nullable=False, server_default=_default("cost")),
    Column("currency", CHAR(3), nullable=False, server_default=_default("currency")),
    Column("status", Text, nullable=False),
    Column("http_status", SmallInteger),
    Column("latency_ms", REAL),
    Column("ttfb_ms", REAL),
    _flag("stream"),
    _flag("cache_hit"),
    Column("request_log", JSONB),
    Column("rag", JSONB),
    PrimaryKeyConstraint("request_id", "attempt", "ts"),
    Index(None, "ts"),
    Index(None, "key_name", "ts"),
    Index(None, "alias", "ts"),
    Index(None, "team", "ts"),
    postgresql_partition_by="RANGE (ts)",
)
