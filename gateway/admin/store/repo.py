"""Data access for the admin API: parameterized SQLAlchemy Core statements returning plain dicts.

Every function takes an `AsyncConnection` (the caller's transaction: the caller commits) or an `AsyncEngine` (one
transaction per call). Writes run in a SAVEPOINT, so an integrity error leaves the caller's transaction usable; it is
raised as `Conflict` (a unique field taken), `InvalidValue` (a missing referenced row, a value a check refuses) or
`NotFoundError`, with a message naming the field and never its value. Rows include `password_hash` and `api_key_enc`
(login and the live config need them); `public(row)` drops them before a row leaves the admin API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import MappingProxyType
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Executable, Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.admin.store.tables import (
    CONFIG_CHANNEL,
    CONSTRAINT_FIELDS,
    OBJECT_NAMES,
    ROLES,
    SECRET_COLUMNS,
    api_keys,
    audit_log,
    config_version,
    models,
    providers,
    refresh_tokens,
    teams,
    users,
)
from gateway.config.snapshot import hash_key

Target = AsyncConnection | AsyncEngine
Record = dict[str, Any]

KEY_PREFIX_LENGTH = 10
_UNIQUE, _FOREIGN_KEY, _CHECK, _NOT_NULL, _RESTRICT = "23505", "23503", "23514", "23502", "23001"

# The columns `update_<object>` may change; ids, hashes, stamps and revocation have functions of their own.
UPDATABLE = MappingProxyType(
    {
        "teams": frozenset({"name", "budget"}),
        "users": frozenset({"username", "password_hash", "role", "team_id", "disabled"}),
        "api_keys": frozenset({"name", "owner_id", "team_id", "models", "rpm", "tpm", "budget", "expires_at"}),
        "providers": frozenset({"name", "type", "base_url", "api_key_enc", "headers", "settings", "enabled"}),
        "models": frozenset({"alias", "spec", "enabled"}),
    }
)


STILL_REFERENCED = MappingProxyType(
    {"fk_knowledge_bases_team_id_teams": "the team still owns knowledge bases: delete or move them first"}
)
"""Foreign keys that refuse a delete (RESTRICT): the message says what still refers to the row."""


class StoreError(Exception):
    """An admin store error whose message is safe to show: it names a field, never a value."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Conflict(StoreError):
    """A unique field (a name, a username, a key) is already taken."""


class NotFoundError(StoreError):
    """No row with that id or name."""


class InvalidValue(StoreError, ValueError):
    """A value the schema refuses: a reference to a missing row, a role not allowed, a required field left out."""


# --- plumbing -------------------------------------------------------------------------------------------------


@asynccontextmanager
async def _connect(conn: Target) -> AsyncIterator[AsyncConnection]:
    if isinstance(conn, AsyncEngine):
        async with conn.begin() as connection:
            yield connection
    else:
        yield conn


def _refusal(exc: IntegrityError) -> StoreError:
    """The integrity error as a StoreError naming the field (asyncpg's error carries the constraint's name)."""
    cause = getattr(exc.orig, "__cause__", None)
    code = getattr(exc.orig, "sqlstate", None)
    constraint = getattr(cause, "constraint_name", None) or ""
    field = CONSTRAINT_FIELDS.get(constraint) or getattr(cause, "column_name", None) or "a field"
    thing = OBJECT_NAMES.get(getattr(cause, "table_name", None) or "", "row")
    if code == _UNIQUE:
        return Conflict(f"a {thing} with this {field} already exists", field)
    if code in (_FOREIGN_KEY, _RESTRICT) and constraint in STILL_REFERENCED:
        return Conflict(STILL_REFERENCED[constraint], field)
    if code == _FOREIGN_KEY:
        return InvalidValue(f"{field} refers to a row that does not exist", field)
    if code == _CHECK and field == "role":
        return InvalidValue(f"role must be one of {', '.join(ROLES)}", field)
    if code == _NOT_NULL:
        return InvalidValue(f"{field} is required", field)
    return InvalidValue(f"the {thing}'s {field} has a value that is not allowed", field)


async def _read(conn: Target, statement: Executable) -> list[Record]:
    async with _connect(conn) as connection:
        result = await connection.execute(statement)
        return [dict(row._mapping) for row in result]


async def _write(conn: Target, statement: Executable) -> list[Record]:
    """Run a write in a savepoint; integrity errors become StoreErrors and leave the outer transaction usable."""
    async with _connect(conn) as connection:
        try:
            async with connection.begin_nested():
                result = await connection.execute(statement)
        except IntegrityError as exc:
            raise _refusal(exc) from None
        return [dict(row._mapping) for row in result] if result.returns_rows else []


def _one(rows: Sequence[Record], table: Table) -> Record:
    if not rows:
        raise NotFoundError(f"no such {OBJECT_NAMES[table.name]}")
    return rows[0]


def _equal(*pairs: tuple[ColumnElement[Any], Any]) -> list[ColumnElement[bool]]:
    """`column = value` for each pair whose value is given (not None)."""
    return [column == value for column, value in pairs if value is not None]


def _where(table: Table, id_or_name: int | str, name_column: str = "name") -> ColumnElement[bool]:
    return table.c.id == id_or_name if isinstance(id_or_name, int) else table.c[name_column] == id_or_name


async def _create(conn: Target, table: Table, values: Mapping[str, Any]) -> Record:
    return (await _write(conn, insert(table).values(dict(values)).returning(*table.c)))[0]


async def _get(conn: Target, table: Table, where: ColumnElement[bool]) -> Record:
    return _one(await _read(conn, select(table).where(where)), table)


async def _list(conn: Target, table: Table, *where: ColumnElement[bool]) -> list[Record]:
    return await _read(conn, select(table).where(*where).order_by(table.c.id))


async def _update(conn: Target, table: Table, row_id: int, changes: Mapping[str, Any]) -> Record:
    unknown = set(changes) - UPDATABLE[table.name]
    if unknown:
        raise InvalidValue(f"cannot change {', '.join(sorted(unknown))} of a {OBJECT_NAMES[table.name]}")
    statement = update(table).where(table.c.id == row_id).values({**changes, "updated_at": func.now()})
    return _one(await _write(conn, statement.returning(*table.c)), table)


async def _delete(conn: Target, table: Table, row_id: int) -> Record:
    return _one(await _write(conn, delete(table).where(table.c.id == row_id).returning(*table.c)), table)


def public(row: Mapping[str, Any]) -> Record:
    """The row without its secrets (password hash, provider key ciphertext): what the admin API may send out."""
    return {name: value for name, value in row.items() if name not in SECRET_COLUMNS}


# --- teams ----------------------------------------------------------------------------------------------------


async def create_team(conn: Target, name: str, budget: Mapping[str, Any] | None = None) -> Record:
    """Insert a team; Conflict when the name is taken."""
    return await _create(conn, teams, {"name": name, "budget": budget})


async def get_team(conn: Target, id_or_name: int | str) -> Record:
    """The team with this id (int) or name (str)."""
    return await _get(conn, teams, _where(teams, id_or_name))


async def list_teams(conn: Target) -> list[Record]:
    """Every team, by id."""
    return await _list(conn, teams)


async def update_team(conn: Target, team_id: int, changes: Mapping[str, Any]) -> Record:
    """Change a team's name or budget; returns the new row."""
    return await _update(conn, teams, team_id, changes)


async def delete_team(conn: Target, team_id: int) -> Record:
    """Delete a team (its users and keys keep existing, without a team); returns the deleted row."""
    return await _delete(conn, teams, team_id)


# --- users ----------------------------------------------------------------------------------------------------


def _lower_username(values: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if isinstance(out.get("username"), str):
        out["username"] = out["username"].lower()
    return out


async def create_user(
    conn: Target, username: str, password_hash: str, role: str, *, team_id: int | None = None, disabled: bool = False
) -> Record:
    """Insert a user, username lower-cased; Conflict when taken in any case."""
    values = {"username": username, "password_hash": password_hash, "role": role, "team_id": team_id}
    return await _create(conn, users, _lower_username({**values, "disabled": disabled}))


async def get_user(conn: Target, user_id: int) -> Record:
    """The user with this id."""
    return await _get(conn, users, users.c.id == user_id)


async def get_user_by_username(conn: Target, username: str) -> Record:
    """The user with this username, in any case."""
    return await _get(conn, users, func.lower(users.c.username) == username.lower())


async def list_users(conn: Target, team_id: int | None = None) -> list[Record]:
    """Every user (of one team when given), by id."""
    return await _list(conn, users, *_equal((users.c.team_id, team_id)))


async def update_user(conn: Target, user_id: int, changes: Mapping[str, Any]) -> Record:
    """Change a user's username (lower-cased), password hash, role, team or disabled flag."""
    return await _update(conn, users, user_id, _lower_username(changes))


async def delete_user(conn: Target, user_id: int) -> Record:
    """Delete a user: their refresh tokens go too, their keys stay without an owner."""
    return await _delete(conn, users, user_id)


async def record_login(conn: Target, user_id: int, at: datetime) -> None:
    """Set the user's `last_login_at`."""
    await _write(conn, update(users).where(users.c.id == user_id).values(last_login_at=at))


async def count_users(conn: Target) -> int:
    """How many users exist (zero: the first one may be created without logging in)."""
    return int((await _read(conn, select(func.count().label("n")).select_from(users)))[0]["n"])


# --- API keys -------------------------------------------------------------------------------------------------


async def create_api_key(
    conn: Target,
    name: str,
    secret: str,
    *,
    owner_id: int | None = None,
    team_id: int | None = None,
    models: Sequence[str] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    budget: Mapping[str, Any] | None = None,
    expires_at: datetime | None = None,
) -> Record:
    """Insert a virtual key, stored as the sha256 hex of `secret` and its first 10 characters; the secret is not."""
    values = {"name": name, "key_hash": hash_key(secret), "prefix": secret[:KEY_PREFIX_LENGTH]}
    limits = {"models": None if models is None else list(models), "rpm": rpm, "tpm": tpm, "budget": budget}
    scope = {"owner_id": owner_id, "team_id": team_id, "expires_at": expires_at}
    return await _create(conn, api_keys, {**values, **limits, **scope})


async def get_api_key(conn: Target, key_id: int) -> Record:
    """The key with this id."""
    return await _get(conn, api_keys, api_keys.c.id == key_id)


async def list_api_keys(conn: Target, team_id: int | None = None, owner_id: int | None = None) -> list[Record]:
    """Every key, revoked and expired ones too (of one team and/or owner when given), by id."""
    return await _list(conn, api_keys, *_equal((api_keys.c.team_id, team_id), (api_keys.c.owner_id, owner_id)))


async def update_api_key(conn: Target, key_id: int, changes: Mapping[str, Any]) -> Record:
    """Change a key's name, owner, team, models, limits, budget or expiry."""
    return await _update(conn, api_keys, key_id, changes)


async def revoke_api_key(conn: Target, key_id: int, at: datetime | None = None) -> Record:
    """Mark a key revoked (at `at`, default now); revoking twice keeps the first time."""
    when = func.coalesce(api_keys.c.revoked_at, at if at is not None else func.now())
    statement = update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=when, updated_at=func.now())
    return _one(await _write(conn, statement.returning(*api_keys.c)), api_keys)


async def delete_api_key(conn: Target, key_id: int) -> Record:
    """Delete a key; returns the deleted row."""
    return await _delete(conn, api_keys, key_id)


async def touch_api_key_used(conn: Target, key_hash: str, at: datetime) -> bool:
    """Move the key's `last_used_at` forward to `at`; False when no key has this hash or it was already later."""
    newer = (api_keys.c.last_used_at.is_(None)) | (api_keys.c.last_used_at < at)
    statement = update(api_keys).where(api_keys.c.key_hash == key_hash, newer).values(last_used_at=at)
    return bool(await _write(conn, statement.returning(api_keys.c.id)))


async def touch_keys_used(conn: Target, last_used: Mapping[str, datetime]) -> int:
    """Move `last_used_at` forward for keys by name (from a batch of usage rows); returns how many moved."""
    moved = 0
    for name, at in last_used.items():
        newer = (api_keys.c.last_used_at.is_(None)) | (api_keys.c.last_used_at < at)
        statement = update(api_keys).where(api_keys.c.name == name, newer).values(last_used_at=at)
        moved += len(await _write(conn, statement.returning(api_keys.c.id)))
    return moved


# --- providers and models -------------------------------------------------------------------------------------


async def create_provider(
    conn: Target,
    name: str,
    type: str,
    *,
    base_url: str | None = None,
    api_key_enc: str | None = None,
    headers: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    enabled: bool = True,
) -> Record:
    """Insert a provider; `api_key_enc` is the ciphertext of its key, `headers` stored as given."""
    values = {"name": name, "type": type, "base_url": base_url, "api_key_enc": api_key_enc, "enabled": enabled}
    extra = {"headers": dict(headers or {}), "settings": dict(settings or {})}
    return await _create(conn, providers, {**values, **extra})


async def get_provider(conn: Target, id_or_name: int | str) -> Record:
    """The provider with this id (int) or name (str)."""
    return await _get(conn, providers, _where(providers, id_or_name))


async def list_providers(conn: Target) -> list[Record]:
    """Every provider, by id, with its key's ciphertext (the live config decrypts it)."""
    return await _list(conn, providers)


async def update_provider(conn: Target, provider_id: int, changes: Mapping[str, Any]) -> Record:
    """Change a provider's fields; returns the new row."""
    return await _update(conn, providers, provider_id, changes)


async def delete_provider(conn: Target, provider_id: int) -> Record:
    """Delete a provider; returns the deleted row."""
    return await _delete(conn, providers, provider_id)


async def create_model(conn: Target, alias: str, spec: Mapping[str, Any], enabled: bool = True) -> Record:
    """Insert a model alias; `spec` is its YAML `models.<alias>` mapping."""
    return await _create(conn, models, {"alias": alias, "spec": dict(spec), "enabled": enabled})


async def get_model(conn: Target, id_or_alias: int | str) -> Record:
    """The model with this id (int) or alias (str)."""
    return await _get(conn, models, _where(models, id_or_alias, "alias"))


async def list_models(conn: Target) -> list[Record]:
    """Every model alias, by id."""
    return await _list(conn, models)


async def update_model(conn: Target, model_id: int, changes: Mapping[str, Any]) -> Record:
    """Change a model's alias, spec or enabled flag; returns the new row."""
    return await _update(conn, models, model_id, changes)


async def delete_model(conn: Target, model_id: int) -> Record:
    """Delete a model alias; returns the deleted row."""
    return await _delete(conn, models, model_id)


# --- refresh tokens -------------------------------------------------------------------------------------------


async def store_refresh(conn: Target, user_id: int, token_hash: str, family: str, expires_at: datetime) -> Record:
    """Record a refresh token (by its hash) of a login's family."""
    values = {"user_id": user_id, "token_hash": token_hash, "family": family, "expires_at": expires_at}
    return await _create(conn, refresh_tokens, values)


async def use_refresh(conn: Target, token_hash: str, now: datetime) -> Record | None:
    """Mark a valid token used and return it; None when it is unknown, used, revoked or expired. Single-shot."""
    valid = (
        refresh_tokens.c.token_hash == token_hash,
        refresh_tokens.c.used_at.is_(None),
        refresh_tokens.c.revoked_at.is_(None),
        refresh_tokens.c.expires_at > now,
    )
    statement = update(refresh_tokens).where(*valid).values(used_at=now).returning(*refresh_tokens.c)
    rows = await _write(conn, statement)
    return rows[0] if rows else None


async def find_refresh(conn: Target, token_hash: str) -> Record | None:
    """The token with this hash in any state (a used one presented again means the family leaked)."""
    rows = await _read(conn, select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash))
    return rows[0] if rows else None


async def _revoke_tokens(conn: Target, where: ColumnElement[bool]) -> int:
    live = refresh_tokens.c.revoked_at.is_(None)
    statement = update(refresh_tokens).where(where, live).values(revoked_at=func.now())
    return len(await _write(conn, statement.returning(refresh_tokens.c.id)))


async def revoke_family(conn: Target, family: str) -> int:
    """Revoke every token of a login's family; returns how many were still unrevoked."""
    return await _revoke_tokens(conn, refresh_tokens.c.family == family)


async def revoke_user_tokens(conn: Target, user_id: int) -> int:
    """Revoke every token of a user (password change, disable, logout everywhere)."""
    return await _revoke_tokens(conn, refresh_tokens.c.user_id == user_id)


async def purge_refresh_tokens(conn: Target, expired_before: datetime) -> int:
    """Delete tokens that expired before this time; returns how many."""
    statement = delete(refresh_tokens).where(refresh_tokens.c.expires_at < expired_before)
    return len(await _write(conn, statement.returning(refresh_tokens.c.id)))


# --- audit log and config version -----------------------------------------------------------------------------


def _audit_json(value: Mapping[str, Any] | None) -> Any:
    """A row snapshot as JSON data (datetimes, decimals as strings), its secrets left out."""
    return (
        None
        if value is None
        else orjson.loads(orjson.dumps(public(value), default=str, option=orjson.OPT_NON_STR_KEYS))
    )


async def append_audit(  # noqa: PLR0917 - the audit entry's fields, in order
    conn: Target,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | int | None,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    ip: str | None,
) -> Record:
    """Append an audit entry; `before`/`after` are row snapshots, stored without their secret columns."""
    snapshots = {"before": _audit_json(before), "after": _audit_json(after)}
    subject = {"object_type": object_type, "object_id": None if object_id is None else str(object_id)}
    return await _create(conn, audit_log, {"actor": actor, "action": action, **subject, **snapshots, "ip": ip})


async def list_audit(
    conn: Target, limit: int, before_id: int | None = None, object_type: str | None = None
) -> list[Record]:
    """The newest entries first, `limit` of them, older than `before_id` (the next page) and of one type if given."""
    where = _equal((audit_log.c.object_type, object_type))
    if before_id is not None:
        where.append(audit_log.c.id < before_id)
    return await _read(conn, select(audit_log).where(*where).order_by(audit_log.c.id.desc()).limit(limit))


async def bump_version(conn: Target) -> int:
    """Add one to the config version and NOTIFY `switchyard_config` with it, both in the caller's transaction."""
    statement = update(config_version).where(config_version.c.id == 1)
    bumped = statement.values(version=config_version.c.version + 1).returning(config_version.c.version)
    async with _connect(conn) as connection:
        version = int((await connection.execute(bumped)).scalar_one())
        await connection.execute(select(func.pg_notify(CONFIG_CHANNEL, str(version))))
    return version


async def get_version(conn: Target) -> int:
    """The current config version."""
    return int((await _read(conn, select(config_version.c.version).where(config_version.c.id == 1)))[0]["version"])
