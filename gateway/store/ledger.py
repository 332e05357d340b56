"""Writes to the usage ledger and keeps its monthly partitions: create ahead, insert idempotently, drop for retention.

Partitions are named `usage_ledger_YYYY_MM` and cover one UTC calendar month of `ts`; there is no DEFAULT partition,
so a row's partition is made before its insert. Inserts are one `INSERT ... SELECT FROM unnest(...)` statement per
batch: a fixed, parameterized statement whatever the batch size, idempotent on (request_id, attempt, ts).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.store.schema import LEDGER_DEFAULTS, LEDGER_TABLE, usage_ledger

Target = AsyncEngine | AsyncConnection
Month = tuple[int, int]

# Serializes partition DDL across gateway processes (an arbitrary, fixed advisory-lock key).
PARTITION_LOCK_KEY = 0x5357_5041_5254  # "SWPART"
_PARTITION_NAME = re.compile(rf"^{LEDGER_TABLE}_(\d{{4}})_(\d{{2}})$")
_NO_PARTITION = "23514"  # check_violation: "no partition of relation ... found for row"
REQUIRED = frozenset({"request_id", "attempt", "ts", "status"})
COLUMNS = tuple(column.name for column in usage_ledger.columns)
COLUMN_SET = frozenset(COLUMNS)


def _is_json(name: str) -> bool:
    return isinstance(usage_ledger.columns[name].type, JSONB)


def _array_type(name: str) -> str:
    if _is_json(name):
        return "TEXT[]"  # sent as JSON text, cast to jsonb in the SELECT
    dialect = PGDialect()  # type: ignore[no-untyped-call]
    return f"{usage_ledger.columns[name].type.compile(dialect=dialect)}[]"


def _insert_sql() -> str:
    arrays = ", ".join(f"CAST(:{name} AS {_array_type(name)})" for name in COLUMNS)
    picks = ", ".join(f"CAST(u.{n} AS JSONB)" if _is_json(n) else f"u.{n}" for n in COLUMNS)
    names = ", ".join(COLUMNS)
    # Built once from the table's own column names and types: no value is formatted in, they are all bound.
    return (
        f"INSERT INTO {LEDGER_TABLE} ({names}) SELECT {picks} FROM unnest({arrays}) AS u({names}) "  # noqa: S608
        "ON CONFLICT (request_id, attempt, ts) DO NOTHING"
    )


INSERT_SQL = _insert_sql()
JSON_COLUMNS = tuple(name for name in COLUMNS if _is_json(name))


def month_of(ts: datetime) -> Month:
    """The UTC (year, month) whose partition holds a row with this `ts`; naive datetimes are refused."""
    if not isinstance(ts, datetime) or ts.utcoffset() is None:
        raise ValueError(f"usage timestamps must be timezone-aware datetimes, not {ts!r}")
    utc = ts.astimezone(UTC)
    return utc.year, utc.month


def _next(month: Month) -> Month:
    year, number = month
    return (year + 1, 1) if number == 12 else (year, number + 1)


def _start(month: Month) -> datetime:
    return datetime(month[0], month[1], 1, tzinfo=UTC)


def partition_name(month: Month) -> str:
    """`usage_ledger_YYYY_MM`: the partition of one UTC month."""
    return f"{LEDGER_TABLE}_{month[0]:04d}_{month[1]:02d}"


def _create_sql(month: Month) -> str:
    # DDL takes no bind parameters; every value here is formatted from integers.
    lower, upper = _start(month).isoformat(), _start(_next(month)).isoformat()
    return (
        f'CREATE TABLE IF NOT EXISTS "{partition_name(month)}" PARTITION OF "{LEDGER_TABLE}" '
        f"FOR VALUES FROM ('{lower}') TO ('{upper}')"
    )


@asynccontextmanager
async def _connection(target: Target) -> AsyncIterator[AsyncConnection]:
    """The caller's connection as it is (its transaction, its commit), or a transaction of its own on an engine."""
    if isinstance(target, AsyncConnection):
        yield target
    else:
        async with target.begin() as conn:
            yield conn


async def partition_names(conn: AsyncConnection) -> set[str]:
    """Names of the partitions attached to the ledger now."""
    result = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": LEDGER_TABLE},
    )
    return {str(name) for name in result.scalars()}


async def create_partitions(target: Target, months: Iterable[Month]) -> list[str]:
    """Create the missing partitions of these months under the partition lock; returns the names created."""
    async with _connection(target) as conn:
        wanted = {partition_name(m): m for m in months}
        if wanted.keys() <= await partition_names(conn):
            return []
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PARTITION_LOCK_KEY})
        missing = sorted(wanted.keys() - await partition_names(conn))
        for name in missing:
            await conn.execute(text(_create_sql(wanted[name])))
        return missing


async def ensure_partitions(conn: Target, now: datetime, months_ahead: int = 2) -> list[str]:
    """Make the partitions of `now`'s month and the `months_ahead` months after it; idempotent; returns the new."""
    months = [month_of(now)]
    for _ in range(months_ahead):
        months.append(_next(months[-1]))
    return await create_partitions(conn, months)


async def drop_partitions_before(conn: Target, cutoff: datetime) -> list[str]:
    """Retention: drop every monthly partition that ends at or before `cutoff`; returns the dropped names."""
    month_of(cutoff)  # refuses a naive cutoff
    async with _connection(conn) as c:
        await c.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PARTITION_LOCK_KEY})
        dropped = []
        for name in sorted(await partition_names(c)):
            match = _PARTITION_NAME.match(name)
            if match and _start(_next((int(match[1]), int(match[2])))) <= cutoff:
                await c.execute(text(f'DROP TABLE "{name}"'))
                dropped.append(name)
        return dropped


class PartitionCache:
    """The months whose partitions are known to exist, so that most batches insert without a catalog query.

    One per writer; a month is forgotten when an insert finds its partition gone (dropped by retention elsewhere).
    """

    def __init__(self) -> None:
        self.known: set[Month] = set()

    async def ensure(self, target: Target, months: set[Month]) -> None:
        """Create the partitions of the months not known yet, then remember them."""
        missing = months - self.known
        if missing:
            await create_partitions(target, missing)
            self.known |= missing

    def forget(self, months: Iterable[Month]) -> None:
        """Drop months from the cache: their partitions will be checked again on the next insert."""
        self.known.difference_update(months)


def _cost(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _log(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _value(row: Mapping[str, Any], name: str) -> Any:
    value = row.get(name)
    return LEDGER_DEFAULTS.get(name) if value is None else value  # None means "the default" where there is one


def _columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows to one list per column, defaults filled in; refuses unknown or missing required fields. A JSON column's
    value that is a str is taken as JSON text; anything else is serialized to JSON."""
    for index, row in enumerate(rows):
        unknown, missing = row.keys() - COLUMN_SET, REQUIRED - row.keys()
        if unknown or missing:
            raise ValueError(f"usage row {index}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}")
    columns = {name: [_value(row, name) for row in rows] for name in COLUMNS}
    columns["cost"] = [_cost(v) for v in columns["cost"]]
    for name in JSON_COLUMNS:
        columns[name] = [_log(v) for v in columns[name]]
    return columns


def _missing_partition(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == _NO_PARTITION


async def _insert(target: Target, columns: dict[str, list[Any]], months: set[Month], cache: PartitionCache) -> int:
    await cache.ensure(target, months)
    try:
        async with _connection(target) as conn:
            result = await conn.execute(text(INSERT_SQL), columns)
            return int(result.rowcount)
    except DBAPIError as exc:
        if _missing_partition(exc):
            cache.forget(months)
        raise


async def insert_usage(
    engine_or_conn: Target, rows: Sequence[Mapping[str, Any]], partitions: PartitionCache | None = None
) -> int:
    """Insert usage rows, skipping those already there; returns how many were new. Makes the months' partitions.

    On an engine it commits (and retries once when a cached partition was dropped meanwhile); on a connection the
    caller's transaction holds it. Pass one `PartitionCache` per writer to skip the catalog check on most batches.
    """
    if not rows:
        return 0
    columns = _columns(rows)
    months = {month_of(ts) for ts in columns["ts"]}
    cache = partitions if partitions is not None else PartitionCache()
    try:
        return await _insert(engine_or_conn, columns, months, cache)
    except DBAPIError as exc:
        if isinstance(engine_or_conn, AsyncConnection) or not _missing_partition(exc):
            raise
    return await _insert(engine_or_conn, columns, months, cache)
