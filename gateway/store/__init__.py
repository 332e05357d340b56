"""Storage: PostgreSQL through SQLAlchemy (asyncpg), Alembic migrations, the embedded server, the usage ledger.

Nothing here runs on the request path: the usage writer and the admin API use it in the background.
"""

from gateway.store.embedded import EmbeddedPostgres
from gateway.store.engine import Database, check_connection, create_engine, migrate_database
from gateway.store.errors import DatabaseError
from gateway.store.ledger import PartitionCache, drop_partitions_before, ensure_partitions, insert_usage
from gateway.store.migrate import upgrade
from gateway.store.schema import metadata, usage_ledger
from gateway.store.urls import URL_ENV, parse_url, resolve_url, safe_url

__all__ = [
    "URL_ENV",
    "Database",
    "DatabaseError",
    "EmbeddedPostgres",
    "PartitionCache",
    "check_connection",
    "create_engine",
    "drop_partitions_before",
    "ensure_partitions",
    "insert_usage",
    "metadata",
    "migrate_database",
    "parse_url",
    "resolve_url",
    "safe_url",
    "upgrade",
    "usage_ledger",
]
