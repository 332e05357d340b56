"""SQLAlchemy Core tables of the admin API, on the gateway's shared `metadata` (migration 0002 creates them).

Ids are bigint identities; `created_at`/`updated_at` default to now(). Usernames are stored lower-case and unique
case-insensitively. `audit_log` is append-only (a trigger refuses UPDATE and DELETE); `config_version` has one row.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from gateway.store.schema import metadata

ROLES = ("owner", "admin", "member", "viewer")
CONFIG_CHANNEL = "switchyard_config"
USERNAME_INDEX = "uq_users_lower_username"

# Columns the repo returns but the admin API must never send out (a password hash, a ciphertext).
SECRET_COLUMNS = frozenset({"password_hash", "api_key_enc"})


def _id() -> Column[int]:
    return Column("id", BigInteger, Identity(), primary_key=True)


def _now(name: str, nullable: bool = False) -> Column[Any]:
    return Column(name, DateTime(timezone=True), nullable=nullable, server_default=func.now())


def _at(name: str) -> Column[Any]:
    return Column(name, DateTime(timezone=True))


def _json(name: str, default: str | None = None) -> Column[Any]:
    """A jsonb column; Python None is stored as SQL NULL, not as JSON `null`."""
    server_default = text(f"'{default}'::jsonb") if default is not None else None
    return Column(name, JSONB(none_as_null=True), nullable=default is None, server_default=server_default)


def _flag(name: str, default: bool) -> Column[bool]:
    return Column(name, Boolean, nullable=False, server_default=text(str(default).lower()))


teams = Table(
    "teams",
    metadata,
    _id(),
    Column("name", Text, nullable=False, unique=True),
    _json("budget"),
    _now("created_at"),
    _now("updated_at"),
)

users = Table(
    "users",
    metadata,
    _id(),
    Column("username", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("team_id", BigInteger, ForeignKey("teams.id", ondelete="SET NULL"), index=True),
    _flag("disabled", False),
    _now("created_at"),
    _now("updated_at"),
    _at("last_login_at"),
    CheckConstraint(f"role IN ({', '.join(repr(r) for r in ROLES)})", name="role"),
    CheckConstraint("username = lower(username)", name="username_lower"),
)
Index(USERNAME_INDEX, func.lower(users.c.username), unique=True)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    _id(),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("family", Text, nullable=False, index=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    _now("created_at"),
    _at("used_at"),
    _at("revoked_at"),
)

api_keys = Table(
    "api_keys",
    metadata,
    _id(),
    Column("name", Text, nullable=False, unique=True),
    Column("key_hash", Text, nullable=False, unique=True),
    Column("prefix", Text, nullable=False),
    Column("owner_id", BigInteger, ForeignKey("users.id", ondelete="SET NULL"), index=True),
    Column("team_id", BigInteger, ForeignKey("teams.id", ondelete="SET NULL"), index=True),
    _json("models"),
    Column("rpm", Integer),
    Column("tpm", Integer),
    _json("budget"),
    _at("expires_at"),
    _at("revoked_at"),
    _at("last_used_at"),
    _now("created_at"),
    _now("updated_at"),
)

providers = Table(
    "providers",
    metadata,
    _id(),
    Column("name", Text, nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("base_url", Text),
    Column("api_key_enc", Text),
    _json("headers", "{}"),
    _json("settings", "{}"),
    _flag("enabled", True),
    _now("created_at"),
    _now("updated_at"),
)

models = Table(
    "models",
    metadata,
    _id(),
    Column("alias", Text, nullable=False, unique=True),
    Column("spec", JSONB(none_as_null=True), nullable=False),
    _flag("enabled", True),
    _now("created_at"),
    _now("updated_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    _id(),
    _now("ts"),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("object_type", Text, nullable=False),
    Column("object_id", Text),
    _json("before"),
    _json("after"),
    Column("ip", Text),
    Index(None, "object_type", "id"),
)

config_version = Table(
    "config_version",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False, server_default=text("1")),
    Column("version", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint("id = 1", name="single_row"),
)

# What each table holds, for messages: "a team with this name already exists", "no such team".
OBJECT_NAMES = MappingProxyType(
    {
        "teams": "team",
        "users": "user",
        "refresh_tokens": "refresh token",
        "api_keys": "API key",
        "providers": "provider",
        "models": "model",
        "audit_log": "audit entry",
        "config_version": "config version",
    }
)

# Constraint and unique index names -> the field they are about, so an integrity error can name it (not its value).
CONSTRAINT_FIELDS = MappingProxyType(
    {
        "uq_teams_name": "name",
        USERNAME_INDEX: "username",
        "ck_users_username_lower": "username",
        "ck_users_role": "role",
        "uq_refresh_tokens_token_hash": "token_hash",
        "uq_api_keys_name": "name",
        "uq_api_keys_key_hash": "key",
        "uq_providers_name": "name",
        "uq_models_alias": "alias",
        "fk_users_team_id_teams": "team_id",
        "fk_refresh_tokens_user_id_users": "user_id",
        "fk_api_keys_owner_id_users": "owner_id",
        "fk_api_keys_team_id_teams": "team_id",
        "fk_knowledge_bases_team_id_teams": "team_id",
        "ck_config_version_single_row": "id",
    }
)
