"""Alembic revision files; run them with `gateway.store.migrate.upgrade`."""
