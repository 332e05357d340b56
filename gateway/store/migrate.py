"""Applies the Alembic migrations shipped in `gateway/store/migrations`, with no alembic.ini on disk.

Used at start-up and by `switchyard db upgrade`; concurrent runs are serialized by an advisory lock in env.py.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, NullPool
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.store.urls import parse_url

SCRIPT_LOCATION = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config built in code: the migrations folder of this package, and the connection to run on."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found in " + str(SCRIPT_LOCATION))
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; None for an empty database."""
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection, revision: str) -> str:
    command.upgrade(alembic_config(connection), revision)
    return current_revision(connection) or ""


async def _upgrade_on(engine: AsyncEngine, revision: str) -> str:
    async with engine.connect() as conn:
        applied = await conn.run_sync(_upgrade, revision)
        await conn.commit()
        return applied


async def upgrade(url_or_engine: str | URL | AsyncEngine, revision: str = "head") -> str:
    """Migrate the database to `revision` (idempotent: a database already there is left as it is); returns it."""
    if isinstance(url_or_engine, AsyncEngine):
        return await _upgrade_on(url_or_engine, revision)
    engine = create_async_engine(parse_url(url_or_engine), poolclass=NullPool)
    try:
        return await _upgrade_on(engine, revision)
    finally:
        await engine.dispose()
