"""The gateway's connection pool to PostgreSQL, and `Database`, which finds, starts, migrates and closes it.

Where the database is: an explicit URL (config `database_url`) > env `SWITCHYARD_DATABASE_URL` > the embedded server
in `data_dir`. Errors name the database with its password hidden.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from sqlalchemy import URL, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.errors import redact
from gateway.store.embedded import EmbeddedPostgres
from gateway.store.errors import DatabaseError
from gateway.store.ledger import ensure_partitions
from gateway.store.migrate import upgrade
from gateway.store.urls import parse_url, resolve_url, safe_url

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0


def create_engine(url: str | URL, *, pool_size: int = 5, max_overflow: int = 5) -> AsyncEngine:
    """An asyncpg engine with a small pool: only the usage writer and the admin API use the database."""
    return create_async_engine(
        parse_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=CONNECT_TIMEOUT_S,
        pool_recycle=1800,
        pool_pre_ping=True,
        connect_args={
            "timeout": CONNECT_TIMEOUT_S,
            "command_timeout": 60,
            "server_settings": {"application_name": "switchyard"},
        },
    )


async def check_connection(engine: AsyncEngine) -> None:
    """Connect once, so a wrong URL fails at start-up with a readable error (password hidden)."""
    url = engine.url
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S + 1), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (DBAPIError, OSError, TimeoutError) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        reason = redact(f"{type(cause).__name__}: {cause}", tuple(filter(None, [url.password])))
        raise DatabaseError(f"cannot connect to PostgreSQL at {safe_url(url)}: {reason}") from None


class Database:
    """The gateway's database: resolves the URL, starts the embedded server when there is none, owns the pool.

    `start` also applies the migrations and makes the ledger's partitions for this month and the next two.
    """

    def __init__(
        self,
        url: str | None = None,
        data_dir: Path | str = ".switchyard",
        *,
        environ: Mapping[str, str] | None = None,
        migrate: bool = True,
    ) -> None:
        self._explicit = resolve_url(url, os.environ if environ is None else environ)
        self._embedded = None if self._explicit else EmbeddedPostgres(data_dir)
        self._migrate = migrate
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The pool; only after `start`."""
        if self._engine is None:
            raise DatabaseError("the database is not started")
        return self._engine

    @property
    def embedded(self) -> EmbeddedPostgres | None:
        """The embedded server, when no URL was given."""
        return self._embedded

    @property
    def display_url(self) -> str:
        """Where the database is, fit for a log line."""
        if self._engine is not None:
            return safe_url(self._engine.url)
        if self._embedded is not None:
            return f"embedded PostgreSQL in {self._embedded.pgdata}"
        return safe_url(parse_url(self._explicit or ""))

    async def start(self) -> None:
        """Connect (starting the embedded server first if needed), migrate, and make the ledger's partitions."""
        if self._engine is not None:
            return
        try:
            self._engine = create_engine(await self._url())
            await check_connection(self._engine)
            if self._migrate:
                await upgrade(self._engine)
                await ensure_partitions(self._engine, datetime.now(UTC))
        except BaseException:
            await self.close()
            raise
        log.info("database ready at %s", self.display_url)

    async def _url(self) -> str:
        if self._embedded is None:
            return self._explicit or ""
        return await asyncio.to_thread(self._embedded.start)

    async def close(self) -> None:
        """Close the pool and release the embedded server (it stops when no other process uses it)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()
        if self._embedded is not None and self._embedded.running:
            await asyncio.to_thread(self._embedded.stop)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def migrate_database(url: str | None, data_dir: Path | str, environ: Mapping[str, str] | None = None) -> str:
    """`switchyard db upgrade`: migrate the configured (or the embedded) database; returns its revision now."""
    async with Database(url, data_dir, environ=environ, migrate=False) as database:
        return await upgrade(database.engine)
