"""The usage ledger against a real PostgreSQL: migrations, idempotent inserts, monthly partitions, retention."""

from __future__ import annotations

import asyncio
import sys
import time
from asyncio.subprocess import PIPE
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

import gateway.admin.store.tables
import gateway.rag.store.tables  # noqa: F401  (and the knowledge-base tables)
from gateway.store.engine import create_engine
from gateway.store.ledger import (
    PartitionCache,
    create_partitions,
    drop_partitions_before,
    ensure_partitions,
    insert_usage,
    partition_names,
)
from gateway.store.migrate import head_revision, upgrade
from gateway.store.schema import metadata

JAN = datetime(2025, 1, 15, 12, tzinfo=UTC)

# The column list: name -> (type as information_schema spells it, nullable, default).
SPEC = {
    "request_id": ("text", False, None),
    "attempt": ("smallint", False, None),
    "ts": ("timestamp with time zone", False, None),
    "key_name": ("text", True, None),
    "user_name": ("text", True, None),
    "team": ("text", True, None),
    "alias": ("text", True, None),
    "provider": ("text", True, None),
    "upstream_model": ("text", True, None),
    "prompt_tokens": ("integer", False, "0"),
    "cached_tokens": ("integer", False, "0"),
    "completion_tokens": ("integer", False, "0"),
    "reasoning_tokens": ("integer", False, "0"),
    "estimated": ("boolean", False, "false"),
    "cost": ("numeric(20,10)", False, "0"),
    "currency": ("character(3)", False, "'USD'::bpchar"),
    "status": ("text", False, None),
    "http_status": ("smallint", True, None),
    "latency_ms": ("real", True, None),
    "ttfb_ms": ("real", True, None),
    "stream": ("boolean", False, "false"),
    "cache_hit": ("boolean", False, "false"),
    "request_log": ("jsonb", True, None),
    "rag": ("jsonb", True, None),
}


def row(request_id: str, ts: datetime = JAN, attempt: int = 0, **fields: Any) -> dict[str, Any]:
    return {"request_id": request_id, "attempt": attempt, "ts": ts, "status": "ok", **fields}


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def where_rows_are(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT request_id, tableoid::regclass::text FROM usage_ledger"))
        return {r[0]: r[1] for r in result}


async def partitions(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return await partition_names(conn)


# --- migrations ---------------------------------------------------------------------------------------------


async def test_migrations_apply_on_an_empty_database_and_rerun_as_no_ops(empty_database_url: str) -> None:
    assert await upgrade(empty_database_url) == head_revision() == "0004"
    assert await upgrade(empty_database_url) == "0004"
    engine = create_engine(empty_database_url)
    try:
        assert await scalar(engine, "SELECT count(*) FROM alembic_version") == 1
        strategy = await scalar(
            engine, "SELECT partstrat::text FROM pg_partitioned_table WHERE partrelid = 'usage_ledger'::regclass"
        )
        assert strategy == "r"  # RANGE
        assert await partitions(engine) == set()  # no DEFAULT partition
    finally:
        await engine.dispose()


# Imports first, then says so and migrates on the parent's "go": the processes migrate at the same moment.
MIGRATE = """
import asyncio, sys
from gateway.store.migrate import upgrade
print("ready", flush=True)
sys.stdin.readline()
print(asyncio.run(upgrade(sys.argv[1])))
"""


async def test_gateway_processes_starting_together_migrate_once(empty_database_url: str) -> None:
    """Workers migrate at start-up at the same moment: the advisory lock makes the others wait, then find it done."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", MIGRATE, empty_database_url, stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        for _ in range(4)
    ]
    for process in processes:
        assert process.stdout is not None
        assert await process.stdout.readline() == b"ready\n"
    outcomes = await asyncio.gather(*(process.communicate(b"go\n") for process in processes))
    assert [p.returncode for p in processes] == [0] * 4, [err.decode()[-400:] for _, err in outcomes]
    assert [out.decode().strip() for out, _ in outcomes] == ["0004"] * 4


async def test_the_table_has_exactly_the_specified_columns(ledger_engine: AsyncEngine) -> None:
    sql = """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = 'usage_ledger'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
    """
    async with ledger_engine.connect() as conn:
        found = {r[0]: (r[1], r[2], r[3]) for r in await conn.execute(text(sql))}
    assert found == SPEC
    assert list(found) == list(SPEC)


async def test_primary_key_and_indexes_are_on_the_partitioned_parent(ledger_engine: AsyncEngine) -> None:
    async with ledger_engine.connect() as conn:
        result = await conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'usage_ledger'"))
        indexes = {name: definition for name, definition in result}
    assert indexes["pk_usage_ledger"].endswith("(request_id, attempt, ts)")
    for name, columns in [("ts", "ts"), ("key_name_ts", "key_name, ts"), ("alias_ts", "alias, ts")]:
        assert indexes[f"ix_usage_ledger_{name}"].endswith(f"USING btree ({columns})")
    assert indexes["ix_usage_ledger_team_ts"].endswith("USING btree (team, ts)")
    await ensure_partitions(ledger_engine, JAN, months_ahead=0)
    child = await scalar(ledger_engine, "SELECT count(*) FROM pg_indexes WHERE tablename = 'usage_ledger_2025_01'")
    assert child == 5  # the key and the four indexes, propagated


async def test_schema_module_matches_the_migrations(ledger_engine: AsyncEngine) -> None:
    def differences(conn: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with ledger_engine.connect() as conn:
        assert await conn.run_sync(differences) == []


# --- inserts ------------------------------------------------------------------------------------------------


async def test_inserting_the_same_batch_twice_inserts_it_once(ledger_engine: AsyncEngine) -> None:
    batch = [row("a"), row("a", attempt=1), row("b"), row("b")]  # "b" twice in one batch, too
    assert await insert_usage(ledger_engine, batch) == 3
    assert await insert_usage(ledger_engine, batch) == 0
    assert await insert_usage(ledger_engine, [*batch, row("c")]) == 1
    assert await scalar(ledger_engine, "SELECT count(*) FROM usage_ledger") == 4


async def test_an_empty_batch_inserts_nothing(ledger_engine: AsyncEngine) -> None:
    assert await insert_usage(ledger_engine, []) == 0


async def test_rows_land_in_the_partition_of_their_utc_month(ledger_engine: AsyncEngine) -> None:
    batch = [
        row("jan-last", datetime(2025, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        row("feb-first", datetime(2025, 2, 1, tzinfo=UTC)),
        row("feb-by-utc", datetime.fromisoformat("2025-03-01T00:30:00+01:00")),
        row("dec", datetime(2024, 12, 31, 12, tzinfo=UTC)),
    ]
    assert await insert_usage(ledger_engine, batch) == 4
    assert await where_rows_are(ledger_engine) == {
        "jan-last": "usage_ledger_2025_01",
        "feb-first": "usage_ledger_2025_02",
        "feb-by-utc": "usage_ledger_2025_02",
        "dec": "usage_ledger_2024_12",
    }
    assert await partitions(ledger_engine) == {"usage_ledger_2024_12", "usage_ledger_2025_01", "usage_ledger_2025_02"}


async def test_values_and_defaults_round_trip(ledger_engine: AsyncEngine) -> None:
    full = row(
        "full",
        key_name="crm-app",
        team="sales",
        alias="chat-default",
        provider="deepseek",
        upstream_model="deepseek-chat",
        prompt_tokens=1200,
        cached_tokens=200,
        completion_tokens=300,
        reasoning_tokens=50,
        estimated=True,
        cost=Decimal("0.0000000001"),
        currency="EUR",
        http_status=200,
        latency_ms=812.5,
        ttfb_ms=95.25,
        stream=True,
        cache_hit=True,
        request_log={"prompt": "héllo", "completion": "hi"},
        rag={"knowledge_bases": ["hr"], "passages": 3, "ms": 4.5},
    )
    await insert_usage(ledger_engine, [full, row("bare", status="timeout")])
    async with ledger_engine.connect() as conn:
        result = await conn.execute(text("SELECT * FROM usage_ledger ORDER BY request_id"))
        bare, stored = (r._asdict() for r in result)
    assert stored == {**full, "user_name": None}
    assert bare == {
        **row("bare", status="timeout"),
        **dict.fromkeys(["key_name", "user_name", "team", "alias", "provider", "upstream_model"]),
        **dict.fromkeys(["prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens"], 0),
        **dict.fromkeys(["estimated", "stream", "cache_hit"], False),
        **dict.fromkeys(["http_status", "latency_ms", "ttfb_ms", "request_log", "rag"]),
        "cost": Decimal(0),
        "currency": "USD",
    }


async def test_a_batch_of_1000_rows_takes_milliseconds(ledger_engine: AsyncEngine) -> None:
    cache = PartitionCache()
    start = JAN - timedelta(days=20)
    batch = [row(f"req-{i}", start + timedelta(hours=i), cost=0.0012, prompt_tokens=i) for i in range(1000)]
    await insert_usage(ledger_engine, batch[:1], cache)  # warm the pool and the partitions
    began = time.perf_counter()
    assert await insert_usage(ledger_engine, batch, cache) == 999
    elapsed = time.perf_counter() - began
    assert elapsed < 1.0, f"1000 rows took {elapsed:.3f} s"
    assert cache.known == {(2024, 12), (2025, 1), (2025, 2)}
    assert await scalar(ledger_engine, "SELECT sum(prompt_tokens) FROM usage_ledger") == sum(range(1000))


async def test_on_a_connection_the_callers_transaction_decides(ledger_engine: AsyncEngine) -> None:
    async with ledger_engine.connect() as conn:
        assert await insert_usage(conn, [row("rolled-back")]) == 1
        await conn.rollback()
        assert await insert_usage(conn, [row("committed")]) == 1
        await conn.commit()
    assert set(await where_rows_are(ledger_engine)) == {"committed"}


async def test_a_cached_partition_dropped_meanwhile_is_made_again(ledger_engine: AsyncEngine) -> None:
    cache = PartitionCache()
    assert await insert_usage(ledger_engine, [row("first")], cache) == 1
    assert await drop_partitions_before(ledger_engine, datetime(2025, 2, 1, tzinfo=UTC)) == ["usage_ledger_2025_01"]
    assert await insert_usage(ledger_engine, [row("replayed")], cache) == 1
    assert await where_rows_are(ledger_engine) == {"replayed": "usage_ledger_2025_01"}


# --- partitions ---------------------------------------------------------------------------------------------


async def test_ensure_partitions_makes_this_month_and_the_next_ones_once(ledger_engine: AsyncEngine) -> None:
    created = await ensure_partitions(ledger_engine, datetime(2025, 11, 30, 23, 59, tzinfo=UTC))
    assert created == ["usage_ledger_2025_11", "usage_ledger_2025_12", "usage_ledger_2026_01"]
    assert await ensure_partitions(ledger_engine, datetime(2025, 11, 1, tzinfo=UTC)) == []
    assert await ensure_partitions(ledger_engine, datetime(2025, 12, 5, tzinfo=UTC), months_ahead=2) == [
        "usage_ledger_2026_02"
    ]
    bound = await scalar(
        ledger_engine, "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'usage_ledger_2026_01'"
    )
    assert bound.replace("+00", "") == "FOR VALUES FROM ('2026-01-01 00:00:00') TO ('2026-02-01 00:00:00')"


async def test_concurrent_partition_creation_is_safe(ledger_engine: AsyncEngine) -> None:
    months = [(2030, 1), (2030, 2)]
    results = await asyncio.gather(*(create_partitions(ledger_engine, months) for _ in range(4)))
    assert sorted(name for names in results for name in names) == ["usage_ledger_2030_01", "usage_ledger_2030_02"]


async def test_drop_partitions_before_drops_whole_months_that_ended(ledger_engine: AsyncEngine) -> None:
    await ensure_partitions(ledger_engine, datetime(2025, 1, 1, tzinfo=UTC), months_ahead=3)
    await insert_usage(ledger_engine, [row("jan"), row("feb", datetime(2025, 2, 10, tzinfo=UTC))])
    assert await drop_partitions_before(ledger_engine, datetime(2025, 2, 20, tzinfo=UTC)) == ["usage_ledger_2025_01"]
    assert await drop_partitions_before(ledger_engine, datetime(2025, 3, 1, tzinfo=UTC)) == ["usage_ledger_2025_02"]
    assert await drop_partitions_before(ledger_engine, datetime(2025, 3, 1, tzinfo=UTC)) == []
    assert await partitions(ledger_engine) == {"usage_ledger_2025_03", "usage_ledger_2025_04"}
    assert await scalar(ledger_engine, "SELECT count(*) FROM usage_ledger") == 0


async def test_drop_partitions_before_leaves_other_tables_alone(ledger_engine: AsyncEngine) -> None:
    async with ledger_engine.begin() as conn:
        await conn.execute(text("CREATE TABLE usage_ledger_2024_01 (x int)"))  # named like one, not a partition
    try:
        await ensure_partitions(ledger_engine, JAN, months_ahead=0)
        dropped = await drop_partitions_before(ledger_engine, datetime(2030, 1, 1, tzinfo=UTC))
        assert dropped == ["usage_ledger_2025_01"]
        assert await scalar(ledger_engine, "SELECT to_regclass('usage_ledger_2024_01') IS NOT NULL") is True
    finally:
        async with ledger_engine.begin() as conn:
            await conn.execute(text("DROP TABLE usage_ledger_2024_01"))
