"""Database URLs: where the database is (config > env > embedded), checked to be PostgreSQL, safe to log.

Parsing errors never repeat the URL, which may carry a password.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError

from gateway.store.errors import DatabaseError

URL_ENV = "SWITCHYARD_DATABASE_URL"
DRIVER = "postgresql+asyncpg"


def parse_url(raw: str | URL) -> URL:
    """A PostgreSQL URL on the asyncpg driver (`postgres://` and `postgresql://` are accepted and switched to it)."""
    try:
        url = raw if isinstance(raw, URL) else make_url(raw)
    except (ArgumentError, ValueError):
        # SQLAlchemy's message repeats the whole string, password included.
        raise DatabaseError("the database URL is not a valid URL, e.g. postgresql://user:password@host/db") from None
    backend = url.drivername.split("+")[0]
    if backend not in ("postgresql", "postgres"):
        raise DatabaseError(f"the database URL must be a PostgreSQL URL, not {backend}://")
    return url.set(drivername=DRIVER)


def safe_url(url: URL) -> str:
    """The URL as it may be logged: the password replaced by ***."""
    return url.render_as_string(hide_password=True)


def resolve_url(explicit: str | None, environ: Mapping[str, str]) -> str | None:
    """The configured URL, else $SWITCHYARD_DATABASE_URL, else None (meaning: the embedded server)."""
    return explicit or environ.get(URL_ENV) or None
