"""The admin API's tables and data access against a real PostgreSQL: migration 0002, CRUD, uniqueness, foreign keys,
single-shot refresh tokens, the append-only audit log and the config version's NOTIFY."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.admin.store import Conflict, InvalidValue, NotFoundError, public, repo
from gateway.admin.store.tables import CONFIG_CHANNEL, CONSTRAINT_FIELDS, USERNAME_INDEX
from gateway.config.snapshot import hash_key
from gateway.store.engine import create_engine
from gateway.store.migrate import alembic_config, upgrade
from gateway.store.schema import metadata
from gateway.store.urls import parse_url

ADMIN_TABLES = {"teams", "users", "refresh_tokens", "api_keys", "providers", "models", "audit_log", "config_version"}
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
SPEC = {
    "routes": [{"provider": "deepseek", "model": "deepseek-chat", "weight": 3}],
    "fallbacks": ["chat-backup"],
    "pricing": {"input": 0.27, "cached_input": 0.07, "output": 1.1, "currency": "USD"},
    "reasoning": "split",
}


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    """The session's migrated database with the admin tables emptied (TRUNCATE passes the audit log's trigger)."""
    engine = create_engine(migrated_database_url)
    try:
        async with engine.begin() as conn:
            tables = ", ".join(sorted(ADMIN_TABLES - {"config_version"}))
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))  # knowledge bases refer to teams
            await conn.execute(text("UPDATE config_version SET version = 0"))
        yield engine
    finally:
        await engine.dispose()


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        return {r[0] for r in result}


def asyncpg_dsn(url: str) -> str:
    return parse_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# --- migration ----------------------------------------------------------------------------------------------


async def downgrade_to(engine: AsyncEngine, revision: str) -> None:
    def run(conn: Connection) -> None:
        command.downgrade(alembic_config(conn), revision)

    async with engine.connect() as conn:
        await conn.run_sync(run)
        await conn.commit()


async def test_0002_applies_after_0001_downgrades_cleanly_and_reapplies(empty_database_url: str) -> None:
    assert await upgrade(empty_database_url, "0001") == "0001"
    assert await upgrade(empty_database_url, "0002") == "0002"
    engine = create_engine(empty_database_url)
    try:
        assert await table_names(engine) == ADMIN_TABLES | {"usage_ledger", "alembic_version"}
        assert await repo.get_version(engine) == 0
        await downgrade_to(engine, "0001")
        assert await table_names(engine) == {"usage_ledger", "alembic_version"}
        assert await scalar(engine, "SELECT count(*) FROM pg_proc WHERE proname = 'audit_log_append_only'") == 0
        assert await scalar(engine, "SELECT version_num FROM alembic_version") == "0001"
        assert await upgrade(engine, "0002") == "0002"
        assert await repo.get_version(engine) == 0
    finally:
        await engine.dispose()


async def test_tables_module_matches_the_migrations(empty_database_url: str) -> None:
    await upgrade(empty_database_url)

    def differences(conn: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    engine = create_engine(empty_database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(differences) == []
    finally:
        await engine.dispose()


async def test_every_unique_foreign_and_check_constraint_has_a_field_for_its_messages(engine: AsyncEngine) -> None:
    sql = """
        SELECT conname FROM pg_constraint WHERE conrelid::regclass::text = ANY(:tables) AND contype IN ('u', 'f', 'c')
        UNION
        SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid::regclass::text = ANY(:tables) AND indisunique
            AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = indexrelid)
    """
    async with engine.connect() as conn:
        names = {r[0] for r in await conn.execute(text(sql), {"tables": sorted(ADMIN_TABLES)})}
    assert USERNAME_INDEX in names
    elsewhere = {"fk_knowledge_bases_team_id_teams"}  # on the knowledge-base tables, met when a team is deleted
    assert names == set(CONSTRAINT_FIELDS) - elsewhere


# --- teams, users, keys, providers, models ------------------------------------------------------------------


async def test_team_crud_round_trip(engine: AsyncEngine) -> None:
    budget = {"amount": "10.5", "currency": "USD", "period": "monthly"}
    team = await repo.create_team(engine, "research", budget)
    assert team["id"] > 0 and team["budget"] == budget and team["created_at"] == team["updated_at"]
    assert await repo.get_team(engine, team["id"]) == team
    assert await repo.get_team(engine, "research") == team
    await repo.create_team(engine, "ops")
    assert [t["name"] for t in await repo.list_teams(engine)] == ["research", "ops"]
    changed = await repo.update_team(engine, team["id"], {"name": "science", "budget": None})
    assert (changed["name"], changed["budget"], changed["created_at"]) == ("science", None, team["created_at"])
    assert changed["updated_at"] > team["updated_at"]
    assert await scalar(engine, "SELECT budget IS NULL FROM teams WHERE id = :id", id=team["id"]) is True
    assert (await repo.delete_team(engine, team["id"]))["name"] == "science"
    with pytest.raises(NotFoundError, match="no such team"):
        await repo.get_team(engine, team["id"])
    with pytest.raises(NotFoundError):
        await repo.delete_team(engine, team["id"])
    with pytest.raises(NotFoundError):
        await repo.update_team(engine, team["id"], {"name": "x"})


async def test_a_taken_name_is_a_conflict_naming_the_field_not_the_value(engine: AsyncEngine) -> None:
    await repo.create_team(engine, "secret-team-name")
    with pytest.raises(Conflict) as caught:
        await repo.create_team(engine, "secret-team-name")
    assert caught.value.field == "name"
    assert str(caught.value) == "a team with this name already exists"
    other = await repo.create_team(engine, "other")
    with pytest.raises(Conflict):
        await repo.update_team(engine, other["id"], {"name": "secret-team-name"})


async def test_unknown_changes_are_refused(engine: AsyncEngine) -> None:
    team = await repo.create_team(engine, "t")
    with pytest.raises(InvalidValue, match="cannot change created_at, id"):
        await repo.update_team(engine, team["id"], {"id": 5, "created_at": NOW})


async def test_a_conflict_leaves_the_callers_transaction_usable(engine: AsyncEngine) -> None:
    await repo.create_team(engine, "taken")
    async with engine.begin() as conn:
        with pytest.raises(Conflict):
            await repo.create_team(conn, "taken")
        await repo.create_team(conn, "free")
    assert [t["name"] for t in await repo.list_teams(engine)] == ["taken", "free"]


async def test_usernames_are_stored_lower_case_and_unique_in_any_case(engine: AsyncEngine) -> None:
    alice = await repo.create_user(engine, "Alice", "hash-a", "admin")
    assert alice["username"] == "alice" and alice["disabled"] is False and alice["last_login_at"] is None
    assert (await repo.get_user_by_username(engine, "ALICE"))["id"] == alice["id"]
    with pytest.raises(Conflict) as caught:
        await repo.create_user(engine, "aLiCe", "hash-b", "member")
    assert caught.value.field == "username"
    assert str(caught.value) == "a user with this username already exists"
    bob = await repo.create_user(engine, "bob", "hash-b", "viewer")
    with pytest.raises(Conflict):
        await repo.update_user(engine, bob["id"], {"username": "ALICE"})
    with pytest.raises(NotFoundError):
        await repo.get_user_by_username(engine, "carol")
    assert await repo.count_users(engine) == 2


async def test_the_database_itself_refuses_a_mixed_case_username(engine: AsyncEngine) -> None:
    with pytest.raises(DBAPIError, match="ck_users_username_lower"):
        await scalar(engine, "INSERT INTO users (username, password_hash, role) VALUES ('Bob', 'h', 'admin')")


async def test_user_crud_and_roles(engine: AsyncEngine) -> None:
    team = await repo.create_team(engine, "t")
    user = await repo.create_user(engine, "owner1", "hash", "owner", team_id=team["id"])
    assert user["password_hash"] == "hash" and "password_hash" not in public(user)
    assert await repo.get_user(engine, user["id"]) == user
    assert [u["id"] for u in await repo.list_users(engine, team_id=team["id"])] == [user["id"]]
    assert await repo.list_users(engine, team_id=team["id"] + 1) == []
    changed = await repo.update_user(engine, user["id"], {"role": "viewer", "disabled": True, "password_hash": "h2"})
    assert (changed["role"], changed["disabled"], changed["password_hash"]) == ("viewer", True, "h2")
    await repo.record_login(engine, user["id"], NOW)
    assert (await repo.get_user(engine, user["id"]))["last_login_at"] == NOW
    with pytest.raises(InvalidValue, match="role must be one of owner, admin, member, viewer"):
        await repo.create_user(engine, "x", "hash", "root")
    with pytest.raises(InvalidValue) as caught:
        await repo.create_user(engine, "y", "hash", "member", team_id=team["id"] + 99)
    assert caught.value.field == "team_id"
    await repo.delete_user(engine, user["id"])
    assert await repo.count_users(engine) == 0


async def test_api_keys_are_stored_by_hash_and_prefix(engine: AsyncEngine) -> None:
    team = await repo.create_team(engine, "t")
    owner = await repo.create_user(engine, "dev", "hash", "member", team_id=team["id"])
    secret = "sk-sw-0123456789abcdef0123456789abcdef"
    budget = {"amount": "5", "currency": "USD", "period": "daily"}
    key = await repo.create_api_key(
        engine,
        "crm",
        secret,
        owner_id=owner["id"],
        team_id=team["id"],
        models=["chat"],
        rpm=60,
        tpm=1000,
        budget=budget,
    )
    assert (key["key_hash"], key["prefix"]) == (hash_key(secret), secret[:10])
    assert (key["models"], key["rpm"], key["tpm"], key["budget"]) == (["chat"], 60, 1000, budget)
    assert secret not in str(await scalar(engine, "SELECT row_to_json(api_keys)::text FROM api_keys"))
    plain = await repo.create_api_key(engine, "batch", "sk-sw-other")
    assert await scalar(engine, "SELECT models IS NULL AND budget IS NULL FROM api_keys WHERE id = :id", id=plain["id"])
    assert [k["id"] for k in await repo.list_api_keys(engine)] == [key["id"], plain["id"]]
    assert [k["id"] for k in await repo.list_api_keys(engine, team_id=team["id"])] == [key["id"]]
    assert [k["id"] for k in await repo.list_api_keys(engine, owner_id=owner["id"], team_id=team["id"])] == [key["id"]]
    assert await repo.list_api_keys(engine, owner_id=owner["id"] + 1) == []
    with pytest.raises(Conflict) as caught:
        await repo.create_api_key(engine, "crm-2", secret)
    assert caught.value.field == "key"
    changed = await repo.update_api_key(engine, key["id"], {"models": None, "rpm": 120})
    assert (changed["models"], changed["rpm"]) == (None, 120)


async def test_revoking_and_touching_a_key(engine: AsyncEngine) -> None:
    key = await repo.create_api_key(engine, "k", "sk-sw-revoke-me")
    revoked = await repo.revoke_api_key(engine, key["id"], NOW)
    assert revoked["revoked_at"] == NOW
    assert (await repo.revoke_api_key(engine, key["id"], NOW + timedelta(days=1)))["revoked_at"] == NOW
    assert [k["revoked_at"] for k in await repo.list_api_keys(engine)] == [NOW]
    with pytest.raises(NotFoundError):
        await repo.revoke_api_key(engine, key["id"] + 1)
    assert await repo.touch_api_key_used(engine, key["key_hash"], NOW) is True
    assert await repo.touch_api_key_used(engine, key["key_hash"], NOW - timedelta(seconds=1)) is False
    assert await repo.touch_api_key_used(engine, "0" * 64, NOW) is False
    assert (await repo.get_api_key(engine, key["id"]))["last_used_at"] == NOW
    await repo.delete_api_key(engine, key["id"])
    with pytest.raises(NotFoundError, match="no such API key"):
        await repo.get_api_key(engine, key["id"])


async def test_provider_crud_keeps_the_ciphertext_out_of_public_rows(engine: AsyncEngine) -> None:
    provider = await repo.create_provider(
        engine, "deepseek", "openai", base_url="https://api.deepseek.com/v1", api_key_enc="ciphertext"
    )
    assert (provider["headers"], provider["settings"], provider["enabled"]) == ({}, {}, True)
    assert provider["api_key_enc"] == "ciphertext" and "api_key_enc" not in public(provider)
    assert await repo.get_provider(engine, "deepseek") == provider
    settings = {"timeout": {"connect": 5, "total": 600}, "stream_options": False}
    changed = await repo.update_provider(engine, provider["id"], {"settings": settings, "headers": {"X-Tenant": "a"}})
    assert (changed["settings"], changed["headers"]) == (settings, {"X-Tenant": "a"})
    assert [p["name"] for p in await repo.list_providers(engine)] == ["deepseek"]
    with pytest.raises(Conflict):
        await repo.create_provider(engine, "deepseek", "openai")
    await repo.delete_provider(engine, provider["id"])
    assert await repo.list_providers(engine) == []


async def test_model_spec_round_trips_exactly(engine: AsyncEngine) -> None:
    model = await repo.create_model(engine, "chat-default", SPEC)
    assert model["spec"] == SPEC and model["enabled"] is True
    assert await repo.get_model(engine, "chat-default") == model
    assert await repo.get_model(engine, model["id"]) == model
    changed = await repo.update_model(engine, model["id"], {"enabled": False, "alias": "chat-old"})
    assert (changed["alias"], changed["enabled"], changed["spec"]) == ("chat-old", False, SPEC)
    with pytest.raises(Conflict) as caught:
        await repo.create_model(engine, "chat-old", {})
    assert caught.value.field == "alias"
    assert [m["alias"] for m in await repo.list_models(engine)] == ["chat-old"]
    await repo.delete_model(engine, model["id"])
    with pytest.raises(NotFoundError):
        await repo.get_model(engine, "chat-old")


# --- foreign keys -------------------------------------------------------------------------------------------


async def test_deleting_a_team_leaves_its_users_and_keys_without_one(engine: AsyncEngine) -> None:
    team = await repo.create_team(engine, "t")
    user = await repo.create_user(engine, "u", "hash", "member", team_id=team["id"])
    key = await repo.create_api_key(engine, "k", "sk-sw-team-key", team_id=team["id"], owner_id=user["id"])
    await repo.delete_team(engine, team["id"])
    assert (await repo.get_user(engine, user["id"]))["team_id"] is None
    assert (await repo.get_api_key(engine, key["id"]))["team_id"] is None


async def test_deleting_a_user_drops_their_tokens_and_orphans_their_keys(engine: AsyncEngine) -> None:
    user = await repo.create_user(engine, "u", "hash", "member")
    key = await repo.create_api_key(engine, "k", "sk-sw-user-key", owner_id=user["id"])
    await repo.store_refresh(engine, user["id"], "rt-1", "fam", NOW + timedelta(days=1))
    await repo.delete_user(engine, user["id"])
    assert await repo.find_refresh(engine, "rt-1") is None
    assert (await repo.get_api_key(engine, key["id"]))["owner_id"] is None
    with pytest.raises(InvalidValue) as caught:
        await repo.store_refresh(engine, user["id"], "rt-2", "fam", NOW)
    assert caught.value.field == "user_id"


# --- refresh tokens -----------------------------------------------------------------------------------------


async def test_a_refresh_token_is_used_once_and_reuse_is_detectable(engine: AsyncEngine) -> None:
    user = await repo.create_user(engine, "u", "hash", "member")
    stored = await repo.store_refresh(engine, user["id"], "rt-1", "fam-1", NOW + timedelta(days=7))
    assert stored["used_at"] is None and stored["family"] == "fam-1"
    used = await repo.use_refresh(engine, "rt-1", NOW)
    assert used is not None and used["used_at"] == NOW and used["user_id"] == user["id"]
    assert await repo.use_refresh(engine, "rt-1", NOW) is None
    found = await repo.find_refresh(engine, "rt-1")
    assert found is not None and found["used_at"] == NOW
    assert await repo.find_refresh(engine, "unknown") is None
    assert await repo.use_refresh(engine, "unknown", NOW) is None


async def test_expired_and_revoked_tokens_cannot_be_used(engine: AsyncEngine) -> None:
    user = await repo.create_user(engine, "u", "hash", "member")
    await repo.store_refresh(engine, user["id"], "old", "f1", NOW)
    assert await repo.use_refresh(engine, "old", NOW) is None  # expires_at must be after now
    for token in ("a", "b"):
        await repo.store_refresh(engine, user["id"], token, "f2", NOW + timedelta(days=1))
    await repo.store_refresh(engine, user["id"], "c", "f3", NOW + timedelta(days=1))
    assert await repo.revoke_family(engine, "f2") == 2
    assert await repo.revoke_family(engine, "f2") == 0
    assert await repo.use_refresh(engine, "a", NOW) is None
    assert await repo.revoke_user_tokens(engine, user["id"]) == 2  # "old" and "c"
    assert await repo.use_refresh(engine, "c", NOW) is None
    assert await repo.purge_refresh_tokens(engine, NOW + timedelta(seconds=1)) == 1
    assert await repo.find_refresh(engine, "old") is None


async def test_concurrent_uses_of_one_token_let_exactly_one_through(engine: AsyncEngine) -> None:
    user = await repo.create_user(engine, "u", "hash", "member")
    await repo.store_refresh(engine, user["id"], "race", "f", NOW + timedelta(days=1))
    outcomes = await asyncio.gather(*(repo.use_refresh(engine, "race", NOW) for _ in range(8)))
    assert sum(outcome is not None for outcome in outcomes) == 1


async def test_a_use_waits_for_an_uncommitted_use_and_sees_its_outcome(engine: AsyncEngine) -> None:
    """The second UPDATE waits on the first's row lock, then re-checks `used_at`: commit -> None, rollback -> row."""
    user = await repo.create_user(engine, "u", "hash", "member")
    for commit in (False, True):
        token = f"held-{commit}"
        await repo.store_refresh(engine, user["id"], token, "f", NOW + timedelta(days=1))
        async with engine.connect() as first:
            assert await repo.use_refresh(first, token, NOW) is not None
            second = asyncio.create_task(repo.use_refresh(engine, token, NOW))
            await (first.commit() if commit else first.rollback())
            outcome = await asyncio.wait_for(second, 10)
        assert (outcome is None) is commit


# --- audit log ----------------------------------------------------------------------------------------------


async def test_audit_entries_are_listed_newest_first_by_page_and_type(engine: AsyncEngine) -> None:
    team = await repo.create_team(engine, "t", {"amount": "1", "currency": "USD", "period": "monthly"})
    user = await repo.create_user(engine, "u", "secret-hash", "member")
    first = await repo.append_audit(engine, "admin", "create", "team", team["id"], None, team, "10.0.0.1")
    second = await repo.append_audit(engine, "admin", "update", "user", user["id"], user, user, None)
    third = await repo.append_audit(engine, "system", "login", "user", None, None, None, None)
    assert first["object_id"] == str(team["id"]) and first["ip"] == "10.0.0.1" and first["ts"] is not None
    assert first["after"]["created_at"] == team["created_at"].isoformat() and first["after"]["budget"] == team["budget"]
    assert "password_hash" not in second["before"] and second["after"]["username"] == "u"
    assert third["before"] is None and third["object_id"] is None
    listed = await repo.list_audit(engine, 10)
    assert [e["id"] for e in listed] == [third["id"], second["id"], first["id"]]
    assert [e["id"] for e in await repo.list_audit(engine, 1, before_id=third["id"])] == [second["id"]]
    assert [e["id"] for e in await repo.list_audit(engine, 10, object_type="team")] == [first["id"]]
    assert [e["id"] for e in await repo.list_audit(engine, 10, third["id"], "user")] == [second["id"]]


@pytest.mark.parametrize(
    "sql",
    ["UPDATE audit_log SET actor = 'someone-else'", "DELETE FROM audit_log", "DELETE FROM audit_log WHERE id = 1"],
)
async def test_audit_rows_cannot_be_updated_or_deleted(engine: AsyncEngine, sql: str) -> None:
    entry = await repo.append_audit(engine, "admin", "delete", "key", 1, {"name": "k"}, None, None)
    with pytest.raises(DBAPIError, match="audit_log is append-only"):
        await scalar(engine, sql)
    assert await repo.list_audit(engine, 10) == [entry]


# --- config version -----------------------------------------------------------------------------------------


async def test_bump_version_increments_and_notifies_listeners(engine: AsyncEngine, migrated_database_url: str) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(asyncpg_dsn(migrated_database_url))
    try:
        await listener.add_listener(CONFIG_CHANNEL, lambda _c, _pid, _channel, payload: received.put_nowait(payload))
        assert await repo.get_version(engine) == 0
        assert await repo.bump_version(engine) == 1
        assert await asyncio.wait_for(received.get(), 10) == "1"
        async with engine.begin() as conn:
            assert await repo.bump_version(conn) == 2
            assert await repo.bump_version(conn) == 3
        assert [await asyncio.wait_for(received.get(), 10) for _ in range(2)] == ["2", "3"]
        assert await repo.get_version(engine) == 3
    finally:
        await listener.close()


async def test_a_rolled_back_bump_leaves_the_version(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await repo.bump_version(conn) == 1
        await conn.rollback()
    assert await repo.get_version(engine) == 0
    with pytest.raises(DBAPIError, match="ck_config_version_single_row"):
        await scalar(engine, "INSERT INTO config_version (id, version) VALUES (2, 0)")
