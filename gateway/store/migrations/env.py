"""Alembic environment: runs the migrations online, on the connection `gateway.store.migrate` hands over.

Run by the `alembic` command instead, it connects to `sqlalchemy.url` from the ini file with the async engine.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, pool, text
from sqlalchemy.ext.asyncio import async_engine_from_config

import gateway.admin.store.tables  # noqa: F401  (the admin tables join the shared metadata)
from gateway.rag.store.tables import is_embedding_table
from gateway.store.schema import metadata

# Serializes migrations of gateway processes that start together (an arbitrary, fixed advisory-lock key).
MIGRATION_LOCK_KEY = 0x5357_4D49_4752  # "SWMIGR"


def run_on(connection: Connection) -> None:
    """Apply the pending revisions in one transaction, holding the migration lock until it commits."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        transaction_per_migration=False,
        include_name=lambda name, kind, _parent: not (kind == "table" and is_embedding_table(name or "")),
    )
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def run_from_ini() -> None:
    """Connect with the async engine to the URL of the alembic ini file and migrate."""
    config = context.config
    engine = async_engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_on)
            await connection.commit()
    finally:
        await engine.dispose()


def main() -> None:
    """Entry point alembic runs: offline SQL scripts are not supported, the ledger DDL is data-dependent."""
    if context.is_offline_mode():
        raise RuntimeError("offline (--sql) migrations are not supported; run them against a database")
    connection = context.config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_from_ini())
    else:
        run_on(connection)


main()
