"""Alembic migrations of the gateway's database; a package so that they ship in the wheel."""
