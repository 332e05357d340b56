"""Fixtures for tests against a real PostgreSQL: one server per session, a fresh database per test.

The server is $SWITCHYARD_TEST_DATABASE_URL when set (its role needs CREATEDB), else an embedded one started once
in a temp dir and stopped at the end of the session. Each test that asks gets its own database, dropped after it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.store.embedded import EmbeddedPostgres
from gateway.store.engine import create_engine
from gateway.store.ledger import partition_names
from gateway.store.migrate import upgrade
from gateway.store.urls import parse_url

TEST_URL_ENV = "SWITCHYARD_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The test server's URL: $SWITCHYARD_TEST_DATABASE_URL, or an embedded server for this session."""
    configured = os.environ.get(TEST_URL_ENV)
    if configured:
        yield configured
        return
    with server_dir() as data_dir:
        server = EmbeddedPostgres(data_dir)
        try:
            yield server.start()
        finally:
            server.stop()


@contextmanager
def server_dir() -> Iterator[Path]:
    """A data dir for an embedded server, outside pytest's tmp dirs: another pytest run on the machine deletes old
    ones (it keeps three), which would pull the data from under a running server."""
    path = Path(tempfile.mkdtemp(prefix="switchyard-pg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A fresh data dir for a test that starts its own embedded server."""
    with server_dir() as path:
        yield path


async def create_database(server_url: str) -> str:
    """Create a new, empty database on the test server; returns its URL."""
    server = parse_url(server_url)
    name = f"switchyard_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str, url: str) -> None:
    """Drop a test database, closing whatever connections it still has."""
    admin = create_async_engine(parse_url(server_url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{parse_url(url).database}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture
async def empty_database_url(database_url: str) -> AsyncIterator[str]:
    """A new, empty database on the test server, dropped after the test: for tests of the migrations themselves."""
    url = await create_database(database_url)
    try:
        yield url
    finally:
        await drop_database(database_url, url)


async def _create_migrated(server_url: str) -> str:
    url = await create_database(server_url)
    await upgrade(url)
    return url


@pytest.fixture(scope="session")
def migrated_database_url(database_url: str) -> Iterator[str]:
    """One database per session migrated to the newest revision; `ledger_engine` empties it before each test."""
    url = asyncio.run(_create_migrated(database_url))
    try:
        yield url
    finally:
        asyncio.run(drop_database(database_url, url))


@pytest.fixture
async def ledger_engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the migrated test database with an empty ledger: every partition dropped, so no rows either."""
    engine = create_engine(migrated_database_url)
    try:
        async with engine.begin() as conn:
            for name in await partition_names(conn):
                await conn.execute(text(f'DROP TABLE "{name}"'))
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="session", autouse=True)
def gateway_database_url(database_url: str) -> Iterator[str]:
    """The database every gateway of the session writes its usage ledger to (SWITCHYARD_DATABASE_URL)."""
    url = asyncio.run(create_database(database_url))
    previous = os.environ.get("SWITCHYARD_DATABASE_URL")
    os.environ["SWITCHYARD_DATABASE_URL"] = url
    yield url
    if previous is None:
        os.environ.pop("SWITCHYARD_DATABASE_URL", None)
    else:
        os.environ["SWITCHYARD_DATABASE_URL"] = previous
    asyncio.run(drop_database(database_url, url))
