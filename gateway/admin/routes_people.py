"""Teams and users under `/admin/api/`. Owners manage everything; admins manage the members and viewers of their
own team; nobody changes their own role or team, and nobody grants a role above what they may manage."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from litestar import Request, Response, delete, get, patch, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody
from pydantic import BaseModel, ConfigDict, Field

from gateway.admin.context import AdminContext, Ctx, Name, Principal, as_id, caller, client_ip
from gateway.admin.respond import json_response, listing, store_errors
from gateway.admin.security import check_password_policy, hash_password
from gateway.admin.store import repo
from gateway.config.model import BudgetConfig
from gateway.errors import InvalidRequest, NotFound, PermissionDenied

Role = Literal["owner", "admin", "member", "viewer"]


class TeamBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.@-]+$")
    budget: BudgetConfig | None = None


class TeamPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[\w.@-]+$")
    budget: BudgetConfig | None = None


class UserBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=100, pattern=r"^[\w.@-]+$")
    password: str = Field(min_length=1, max_length=1024)
    role: Role = "member"
    team_id: int | None = None


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str | None = Field(default=None, min_length=1, max_length=1024)
    role: Role | None = None
    team_id: int | None = None
    disabled: bool | None = None


def _team_out(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "name", "budget", "created_at", "updated_at")}


def _user_out(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "username", "role", "team_id", "disabled", "created_at", "updated_at", "last_login_at")
    return {k: row.get(k) for k in keys}


def sees_user(who: Principal, user: dict[str, Any]) -> bool:
    """Owners see everyone; admins and viewers their team; members themselves."""
    if who.role == "owner" or user["id"] == who.id:
        return True
    return who.role in ("admin", "viewer") and who.team_id is not None and user["team_id"] == who.team_id


def may_manage(who: Principal, role: str, team_id: int | None) -> bool:
    """Whether `who` may create, change or delete a user with this role in this team."""
    if who.role == "owner":
        return True
    return who.role == "admin" and role in ("member", "viewer") and team_id is not None and team_id == who.team_id


async def _password_hash(password: str) -> str:
    problem = check_password_policy(password)
    if problem:
        raise InvalidRequest(problem, param="password")
    return await asyncio.to_thread(hash_password, password)


@get("/admin/api/teams", opt={"role": "viewer"})
async def list_teams(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    who = caller(request)
    rows = await repo.list_teams(ctx.engine)
    return listing([_team_out(t) for t in rows if who.role == "owner" or t["id"] == who.team_id])


@post("/admin/api/teams", opt={"role": "owner"})
async def create_team(ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[TeamBody]) -> Response[bytes]:
    body = data
    if body.name in ctx.file_config.teams:
        raise InvalidRequest(f"the team '{body.name}' is defined in the config file", param="name")
    budget = body.budget.model_dump(mode="json") if body.budget else None
    async with store_errors(), ctx.engine.begin() as conn:
        row = await repo.create_team(conn, body.name, budget)
        await ctx.audit(conn, caller(request), "create", ("team", row["id"]), None, row, client_ip(request))
    await ctx.live.refresh()
    return json_response(_team_out(row), 201)


@get("/admin/api/teams/{team_ref:str}", opt={"role": "viewer"})
async def get_team(ctx: Ctx, request: Request[Any, Any, Any], team_ref: Name) -> Response[bytes]:
    team_id = await _team_id(ctx, team_ref)
    who = caller(request)
    async with store_errors():
        row = await repo.get_team(ctx.engine, team_id)
    if who.role != "owner" and row["id"] != who.team_id:
        raise NotFound("no such team")
    return json_response(_team_out(row))


@patch("/admin/api/teams/{team_ref:str}", opt={"role": "owner"})
async def update_team(
    ctx: Ctx, request: Request[Any, Any, Any], team_ref: Name, data: JSONBody[TeamPatch]
) -> Response[bytes]:
    team_id = await _team_id(ctx, team_ref)
    changes = data.model_dump(mode="json", exclude_unset=True)
    async with store_errors(), ctx.engine.begin() as conn:
        before = await repo.get_team(conn, team_id)
        row = await repo.update_team(conn, team_id, changes)
        await ctx.audit(conn, caller(request), "update", ("team", team_id), before, row, client_ip(request))
    await ctx.live.refresh()
    return json_response(_team_out(row))


@delete("/admin/api/teams/{team_ref:str}", opt={"role": "owner"}, status_code=200)
async def delete_team(ctx: Ctx, request: Request[Any, Any, Any], team_ref: Name) -> Response[bytes]:
    team_id = await _team_id(ctx, team_ref)
    async with store_errors(), ctx.engine.begin() as conn:
        for key in await repo.list_api_keys(conn, team_id=team_id):
            await repo.revoke_api_key(conn, key["id"])  # a team's keys must not outlive its budget
        row = await repo.delete_team(conn, team_id)
        await ctx.audit(conn, caller(request), "delete", ("team", team_id), row, None, client_ip(request))
    await ctx.live.refresh()
    return json_response({"id": team_id, "deleted": True})


TEAM_ROUTES: list[HTTPRouteHandler] = [list_teams, create_team, get_team, update_team, delete_team]


async def _visible_user(ctx: AdminContext, who: Principal, user_id: int) -> dict[str, Any]:
    async with store_errors():
        row = await repo.get_user(ctx.engine, user_id)
    if not sees_user(who, row):
        raise NotFound("no such user")
    return row


@get("/admin/api/users", opt={"role": "member"})
async def list_users(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    who = caller(request)
    rows = await repo.list_users(ctx.engine)
    return listing([_user_out(u) for u in rows if sees_user(who, u)])


@post("/admin/api/users", opt={"role": "admin"})
async def create_user(ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[UserBody]) -> Response[bytes]:
    who, body = caller(request), data
    team_id = body.team_id if who.role == "owner" else who.team_id
    if not may_manage(who, body.role, team_id):
        raise PermissionDenied(f"you may not create a user with the {body.role} role in that team")
    password_hash = await _password_hash(body.password)
    async with store_errors(), ctx.engine.begin() as conn:
        row = await repo.create_user(conn, body.username, password_hash, body.role, team_id=team_id)
        await ctx.audit(conn, who, "create", ("user", row["id"]), None, row, client_ip(request))
    return json_response(_user_out(row), 201)


@get("/admin/api/users/{user_ref:str}", opt={"role": "member"})
async def get_user(ctx: Ctx, request: Request[Any, Any, Any], user_ref: Name) -> Response[bytes]:
    user_id = await _user_id(ctx, user_ref)
    return json_response(_user_out(await _visible_user(ctx, caller(request), user_id)))


@patch("/admin/api/users/{user_ref:str}", opt={"role": "member"})
async def update_user(
    ctx: Ctx, request: Request[Any, Any, Any], user_ref: Name, data: JSONBody[UserPatch]
) -> Response[bytes]:
    user_id = await _user_id(ctx, user_ref)
    who, body = caller(request), data
    target = await _visible_user(ctx, who, user_id)
    changes = body.model_dump(exclude_unset=True)
    _check_user_change(who, target, changes)
    if "password" in changes:
        changes["password_hash"] = await _password_hash(changes.pop("password"))
    async with store_errors(), ctx.engine.begin() as conn:
        row = await repo.update_user(conn, user_id, changes)
        if {"password_hash", "role", "disabled"} & changes.keys():
            await repo.revoke_user_tokens(conn, user_id)  # sessions end when credentials or rights change
        await ctx.audit(conn, who, "update", ("user", user_id), target, row, client_ip(request))
    return json_response(_user_out(row))


@delete("/admin/api/users/{user_ref:str}", opt={"role": "admin"}, status_code=200)
async def delete_user(ctx: Ctx, request: Request[Any, Any, Any], user_ref: Name) -> Response[bytes]:
    user_id = await _user_id(ctx, user_ref)
    who = caller(request)
    target = await _visible_user(ctx, who, user_id)
    if target["id"] == who.id or not may_manage(who, target["role"], target["team_id"]):
        raise PermissionDenied("you may not delete this user")
    async with store_errors(), ctx.engine.begin() as conn:
        row = await repo.delete_user(conn, user_id)
        await ctx.audit(conn, who, "delete", ("user", user_id), row, None, client_ip(request))
    return json_response({"id": user_id, "deleted": True})


USER_ROUTES: list[HTTPRouteHandler] = [list_users, create_user, get_user, update_user, delete_user]


def _check_user_change(who: Principal, target: dict[str, Any], changes: dict[str, Any]) -> None:
    """Self-service is the password only; everything else needs the right to manage the user before and after."""
    if target["id"] == who.id:
        if changes.keys() - {"password"}:
            raise PermissionDenied("you may change only your own password, not your role, team or status")
        return
    role = changes.get("role", target["role"])
    team_id = changes["team_id"] if "team_id" in changes else target["team_id"]
    if who.role != "owner" and "team_id" in changes:
        raise PermissionDenied("only an owner moves users between teams")
    if not (may_manage(who, target["role"], target["team_id"]) and may_manage(who, role, team_id)):
        raise PermissionDenied("you may not change this user that way")


async def _team_id(ctx: AdminContext, ref: str) -> int:
    """A team's id from its id or its name."""
    number = as_id(ref)
    async with store_errors():
        row = await repo.get_team(ctx.engine, number if number is not None else ref)
    return int(row["id"])


async def _user_id(ctx: AdminContext, ref: str) -> int:
    """A user's id from its id or username."""
    number = as_id(ref)
    if number is not None:
        return number
    async with store_errors():
        row = await repo.get_user_by_username(ctx.engine, ref)
    return int(row["id"])
