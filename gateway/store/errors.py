"""The storage layer's one error: a database that cannot be reached, started or used.

Messages name the database with its password hidden, so they are safe to log and to print at start-up.
"""

from __future__ import annotations


class DatabaseError(RuntimeError):
    """The database is unreachable, refused us, or is not PostgreSQL; the message never carries a password."""
