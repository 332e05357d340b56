"""The admin API's tables: teams, users, refresh tokens, virtual keys, providers, models, audit log, config version.

`audit_log` is append-only: a row trigger raises on UPDATE and DELETE. TRUNCATE fires no row trigger, so the
table's owner (and a superuser) can still empty it: retention is done that way, on purpose and by hand.
`config_version` holds one row (id = 1) whose `version` every admin change bumps.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("audit_log", "config_version", "models", "providers", "refresh_tokens", "api_keys", "users", "teams")
# (table, column) pairs with a plain index: foreign keys and lookups.
INDEXES = (
    ("users", "team_id"),
    ("refresh_tokens", "user_id"),
    ("refresh_tokens", "family"),
    ("api_keys", "owner_id"),
    ("api_keys", "team_id"),
)

APPEND_ONLY_FUNCTION = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'restrict_violation';
END
$$
"""
APPEND_ONLY_TRIGGER = """
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
"""


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False)


def _stamps(*names: str) -> list[sa.Column[Any]]:
    return [sa.Column(n, sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")) for n in names]


def _at(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True))


def _json(name: str, default: str | None = None) -> sa.Column[Any]:
    server_default = sa.text(f"'{default}'::jsonb") if default is not None else None
    return sa.Column(name, JSONB, nullable=default is None, server_default=server_default)


def _flag(name: str, default: bool) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean, nullable=False, server_default=sa.text(str(default).lower()))


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}"))


def _unique(table: str, column: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(column, name=op.f(f"uq_{table}_{column}"))


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    name = op.f(f"fk_{table}_{column}_{target}")
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=name, ondelete=ondelete)


def _create_identity_tables() -> None:
    op.create_table(
        "teams",
        _id(),
        sa.Column("name", sa.Text, nullable=False),
        _json("budget"),
        *_stamps("created_at", "updated_at"),
        _pk("teams"),
        _unique("teams", "name"),
    )
    op.create_table(
        "users",
        _id(),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("team_id", sa.BigInteger),
        _flag("disabled", False),
        *_stamps("created_at", "updated_at"),
        _at("last_login_at"),
        _pk("users"),
        _fk("users", "team_id", "teams", "SET NULL"),
        sa.CheckConstraint("role IN ('owner', 'admin', 'member', 'viewer')", name=op.f("ck_users_role")),
        sa.CheckConstraint("username = lower(username)", name=op.f("ck_users_username_lower")),
    )
    op.create_index("uq_users_lower_username", "users", [sa.text("lower(username)")], unique=True)
    op.create_table(
        "refresh_tokens",
        _id(),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False),
        sa.Column("family", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        *_stamps("created_at"),
        _at("used_at"),
        _at("revoked_at"),
        _pk("refresh_tokens"),
        _unique("refresh_tokens", "token_hash"),
        _fk("refresh_tokens", "user_id", "users", "CASCADE"),
    )


def _create_gateway_tables() -> None:
    op.create_table(
        "api_keys",
        _id(),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("key_hash", sa.Text, nullable=False),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column("owner_id", sa.BigInteger),
        sa.Column("team_id", sa.BigInteger),
        _json("models"),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        _json("budget"),
        *(_at(name) for name in ("expires_at", "revoked_at", "last_used_at")),
        *_stamps("created_at", "updated_at"),
        _pk("api_keys"),
        _unique("api_keys", "name"),
        _unique("api_keys", "key_hash"),
        _fk("api_keys", "owner_id", "users", "SET NULL"),
        _fk("api_keys", "team_id", "teams", "SET NULL"),
    )
    op.create_table(
        "providers",
        _id(),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("base_url", sa.Text),
        sa.Column("api_key_enc", sa.Text),
        _json("headers", "{}"),
        _json("settings", "{}"),
        _flag("enabled", True),
        *_stamps("created_at", "updated_at"),
        _pk("providers"),
        _unique("providers", "name"),
    )
    op.create_table(
        "models",
        _id(),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("spec", JSONB, nullable=False),
        _flag("enabled", True),
        *_stamps("created_at", "updated_at"),
        _pk("models"),
        _unique("models", "alias"),
    )


def _create_audit_and_version() -> None:
    op.create_table(
        "audit_log",
        _id(),
        *_stamps("ts"),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("object_type", sa.Text, nullable=False),
        sa.Column("object_id", sa.Text),
        _json("before"),
        _json("after"),
        sa.Column("ip", sa.Text),
        _pk("audit_log"),
    )
    op.create_index("ix_audit_log_object_type_id", "audit_log", ["object_type", "id"])
    op.execute(APPEND_ONLY_FUNCTION)
    op.execute(APPEND_ONLY_TRIGGER)
    op.create_table(
        "config_version",
        sa.Column("id", sa.SmallInteger, nullable=False, server_default=sa.text("1")),
        sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_config_version")),
        sa.CheckConstraint("id = 1", name=op.f("ck_config_version_single_row")),
    )
    op.execute("INSERT INTO config_version (id, version) VALUES (1, 0)")


def upgrade() -> None:
    """Create the admin tables, the audit log's append-only trigger and the single config_version row."""
    _create_identity_tables()
    _create_gateway_tables()
    _create_audit_and_version()
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    """Drop every admin table (their indexes and the trigger go with them) and the trigger's function."""
    for table in TABLES:
        op.drop_table(table)
    op.execute("DROP FUNCTION audit_log_append_only()")
