"""Virtual keys under `/admin/api/keys`: the secret is shown once (field `key`) and stored as a hash; list shows
the prefix and last use; revoke and rotate. Members manage their own keys, admins and viewers see their team's,
owners all. A key can never reach past its creator: it belongs to the creator's team (owners choose)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from litestar import Request, Response, delete, get, patch, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody
from pydantic import BaseModel, ConfigDict, Field

from gateway.admin.context import AdminContext, Ctx, Name, Principal, as_id, caller, client_ip
from gateway.admin.respond import json_response, listing, store_errors
from gateway.admin.store import repo
from gateway.config.model import BudgetConfig
from gateway.errors import InvalidRequest, NotFound, PermissionDenied

SECRET_PREFIX = "sk-sy-"  # noqa: S105 - the prefix of generated keys, not a secret


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.@-]+$")
    models: list[str] | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    budget: BudgetConfig | None = None
    expires_at: datetime | None = None
    owner_id: int | None = None
    team_id: int | None = None


class KeyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[\w.@-]+$")
    models: list[str] | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    budget: BudgetConfig | None = None
    expires_at: datetime | None = None


def key_out(row: dict[str, Any]) -> dict[str, Any]:
    fields = ("id", "name", "prefix", "owner_id", "team_id", "models", "rpm", "tpm", "budget")
    stamps = ("expires_at", "revoked_at", "last_used_at", "created_at", "updated_at")
    return {k: row.get(k) for k in (*fields, *stamps)}


def sees_key(who: Principal, key: dict[str, Any]) -> bool:
    if who.role == "owner" or key["owner_id"] == who.id:
        return True
    return who.role in ("admin", "viewer") and who.team_id is not None and key["team_id"] == who.team_id


def manages_key(who: Principal, key: dict[str, Any]) -> bool:
    if who.role == "owner" or key["owner_id"] == who.id:
        return True
    return who.role == "admin" and who.team_id is not None and key["team_id"] == who.team_id


def _check_models(ctx: AdminContext, models: list[str] | None) -> None:
    unknown = [m for m in models or [] if m not in ctx.live.merged.models]
    if unknown:
        raise InvalidRequest(f"no model alias named {', '.join(sorted(unknown))}", param="models")


async def _visible_key(ctx: AdminContext, who: Principal, key_id: int, *, manage: bool) -> dict[str, Any]:
    async with store_errors():
        row = await repo.get_api_key(ctx.engine, key_id)
    if not sees_key(who, row):
        raise NotFound("no such key")
    if manage and not manages_key(who, row):
        raise PermissionDenied("you may not change this key")
    return row


async def _mint(
    ctx: AdminContext, request: Request[Any, Any, Any], who: Principal, spec: dict[str, Any], action: str
) -> dict[str, Any]:
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    async with store_errors(), ctx.engine.begin() as conn:
        row = await repo.create_api_key(conn, secret=secret, **spec)
        await ctx.audit(conn, who, action, ("key", row["id"]), None, row, client_ip(request))
    await ctx.live.refresh()
    return {**key_out(row), "key": secret}


@get("/admin/api/keys", opt={"role": "member"})
async def list_keys(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    who = caller(request)
    return listing([key_out(k) for k in await repo.list_api_keys(ctx.engine) if sees_key(who, k)])


@post("/admin/api/keys", opt={"role": "member"})
async def create_key(ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[KeyBody]) -> Response[bytes]:
    who, body = caller(request), data
    _check_models(ctx, body.models)
    if body.name in {k.name for k in ctx.file_config.keys}:
        raise InvalidRequest(f"the key name '{body.name}' is used in the config file", param="name")
    owner_id = body.owner_id if who.at_least("admin") and body.owner_id is not None else (who.id or None)
    team_id = body.team_id if who.role == "owner" else who.team_id
    spec = body.model_dump(mode="json", exclude={"owner_id", "team_id", "expires_at"})
    spec |= {"owner_id": owner_id, "team_id": team_id, "expires_at": body.expires_at}
    return json_response(await _mint(ctx, request, who, spec, "create"), 201)


@get("/admin/api/keys/{key_ref:str}", opt={"role": "member"})
async def get_key(ctx: Ctx, request: Request[Any, Any, Any], key_ref: Name) -> Response[bytes]:
    key_id = await _key_id(ctx, key_ref)
    return json_response(key_out(await _visible_key(ctx, caller(request), key_id, manage=False)))


@patch("/admin/api/keys/{key_ref:str}", opt={"role": "member"})
async def update_key(
    ctx: Ctx, request: Request[Any, Any, Any], key_ref: Name, data: JSONBody[KeyPatch]
) -> Response[bytes]:
    key_id = await _key_id(ctx, key_ref)
    who = caller(request)
    before = await _visible_key(ctx, who, key_id, manage=True)
    body = data
    _check_models(ctx, body.models)
    changes = body.model_dump(mode="json", exclude_unset=True)
    if "expires_at" in changes:
        changes["expires_at"] = body.expires_at
    async with store_errors(), ctx.engine.begin() as conn:
        row = await repo.update_api_key(conn, key_id, changes)
        await ctx.audit(conn, who, "update", ("key", key_id), before, row, client_ip(request))
    await ctx.live.refresh()
    return json_response(key_out(row))


@delete("/admin/api/keys/{key_ref:str}", opt={"role": "member"}, status_code=200)
async def revoke_key(ctx: Ctx, request: Request[Any, Any, Any], key_ref: Name) -> Response[bytes]:
    key_id = await _key_id(ctx, key_ref)
    who = caller(request)
    before = await _visible_key(ctx, who, key_id, manage=True)
    async with store_errors(), ctx.engine.begin() as conn:
        row = await repo.revoke_api_key(conn, key_id)
        await ctx.audit(conn, who, "revoke", ("key", key_id), before, row, client_ip(request))
    await ctx.live.refresh()
    return json_response(key_out(row))


@post("/admin/api/keys/{key_ref:str}/rotate", opt={"role": "member"})
async def rotate_key(ctx: Ctx, request: Request[Any, Any, Any], key_ref: Name) -> Response[bytes]:
    """A new secret with the same settings; the old key stops working at once."""
    key_id = await _key_id(ctx, key_ref)
    who = caller(request)
    old = await _visible_key(ctx, who, key_id, manage=True)
    if old["revoked_at"] is not None:
        raise InvalidRequest("a revoked key cannot be rotated")
    async with store_errors(), ctx.engine.begin() as conn:
        await repo.revoke_api_key(conn, key_id)
        await repo.update_api_key(conn, key_id, {"name": f"{old['name']}.rotated.{key_id}"})
    keep = ("name", "owner_id", "team_id", "models", "rpm", "tpm", "budget", "expires_at")
    return json_response(await _mint(ctx, request, who, {k: old[k] for k in keep}, "rotate"), 201)


KEY_ROUTES: list[HTTPRouteHandler] = [list_keys, create_key, get_key, update_key, revoke_key, rotate_key]


async def _key_id(ctx: AdminContext, ref: str) -> int:
    """A key's id from its id or its name."""
    number = as_id(ref)
    if number is not None:
        return number
    found = [k for k in await repo.list_api_keys(ctx.engine) if k["name"] == ref]
    if not found:
        raise NotFound("no such key")
    return int(found[0]["id"])
