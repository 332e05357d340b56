"""`Database` start-up against real servers: the configured one, an unreachable one, and the embedded one."""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.store.embedded import EmbeddedPostgres
from gateway.store.engine import Database, migrate_database
from gateway.store.errors import DatabaseError
from gateway.store.ledger import insert_usage, partition_name, partition_names
from gateway.store.urls import URL_ENV

SECRET = "pw-canary-5b2d4680f3a9"


def months_from_now(count: int) -> list[str]:
    year, month = datetime.now(UTC).year, datetime.now(UTC).month
    names = []
    for _ in range(count):
        names.append(partition_name((year, month)))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return names


async def test_start_migrates_and_makes_this_and_the_next_two_months(empty_database_url: str, tmp_path: Path) -> None:
    database = Database(None, tmp_path, environ={URL_ENV: empty_database_url})
    await database.start()
    try:
        assert database.embedded is None
        await database.start()  # a second start is a no-op
        async with database.engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            names = await partition_names(conn)
        assert version == "0004"
        assert names == set(months_from_now(3))
    finally:
        await database.close()
    with pytest.raises(DatabaseError, match="not started"):
        _ = database.engine


async def test_an_unreachable_database_fails_start_without_the_password(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    database = Database(f"postgresql://switchyard:{SECRET}@127.0.0.1:1/ledger", tmp_path)
    with pytest.raises(DatabaseError) as info:
        await database.start()
    message = str(info.value)
    assert message.startswith("cannot connect to PostgreSQL at postgresql+asyncpg://switchyard:***@127.0.0.1:1/ledger:")
    assert SECRET not in "".join(traceback.format_exception(info.value))
    assert SECRET not in caplog.text
    assert not list(tmp_path.iterdir())  # with a URL, no embedded server was started
    with pytest.raises(DatabaseError):
        _ = database.engine


async def test_a_malformed_url_fails_start_without_the_password(tmp_path: Path) -> None:
    database = Database(f"postgresql://switchyard:{SECRET}@db:port/ledger", tmp_path)
    with pytest.raises(DatabaseError, match="not a valid URL") as info:
        await database.start()
    assert SECRET not in "".join(traceback.format_exception(info.value))


async def test_without_a_url_the_embedded_server_is_started_shared_and_stopped(embedded_dir: Path) -> None:
    """The gateway's default: PostgreSQL in data_dir. Two users in one process share it; the last one stops it."""
    assert await migrate_database(None, embedded_dir, environ={}) == "0004"
    pid_file = embedded_dir / "postgres" / "postmaster.pid"
    assert not pid_file.exists()  # `switchyard db upgrade` leaves no server behind

    first, second = Database(None, embedded_dir, environ={}), Database(None, embedded_dir, environ={})
    await first.start()
    await second.start()
    assert first.display_url == second.display_url
    assert first.display_url.startswith("postgresql+asyncpg://postgres@/postgres?host=")
    await first.close()
    assert await insert_usage(
        second.engine, [{"request_id": "r", "attempt": 0, "ts": datetime.now(UTC), "status": "ok"}]
    )
    async with second.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM pg_extension WHERE extname = 'plpgsql'")) == 1
        assert await conn.scalar(text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")) == 1
    await second.close()
    assert not pid_file.exists()


def test_embedded_start_is_idempotent_and_returns_a_socket_url(embedded_dir: Path) -> None:
    server = EmbeddedPostgres(embedded_dir)
    url = server.start()
    try:
        assert server.start() == url
        assert server.running
        assert url.startswith("postgresql+asyncpg://postgres@/postgres?host=")
        assert (embedded_dir / "postgres" / "PG_VERSION").read_text().strip() == "18"
    finally:
        server.stop()
    assert not server.running
    server.stop()  # stopping twice is harmless
    assert not (embedded_dir / "postgres" / "postmaster.pid").exists()
