"""Login, token refresh (rotating, reuse detected), logout and "who am I" under `/admin/api/auth/`.

A refresh token is single-use: using it returns a new pair and marks it used; presenting a used token again
means it was stolen (or replayed), so its whole family — every token descended from that login — is revoked.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody
from pydantic import BaseModel, ConfigDict, Field

from gateway.admin.context import PUBLIC, AdminContext, Ctx, caller, client_ip
from gateway.admin.security import dummy_verify, hash_refresh_token, new_refresh_token, verify_password
from gateway.admin.store import repo
from gateway.errors import AuthenticationFailed, RateLimited

JSON = "application/json"


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=4096)


class Refresh(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=1, max_length=200)


def _json(data: Any, status: int = 200) -> Response[bytes]:
    return Response(orjson.dumps(data, default=str), status_code=status, media_type=JSON)


async def _pair(ctx: AdminContext, user: dict[str, Any], family: str | None = None) -> dict[str, Any]:
    access, expires_in = ctx.issuer.issue_access(str(user["id"]), user["role"])
    refresh, digest = new_refresh_token()
    expires = datetime.now(UTC) + timedelta(seconds=ctx.refresh_ttl)
    await repo.store_refresh(ctx.engine, user["id"], digest, family or secrets.token_hex(16), expires)
    return {"access_token": access, "refresh_token": refresh, "token_type": "bearer", "expires_in": expires_in}


@post("/admin/api/auth/login", opt={"role": PUBLIC}, status_code=200)
async def login(ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[Login]) -> Response[bytes]:
    body = data
    ip = client_ip(request) or "?"
    wait = ctx.throttle.check(body.username, ip)
    if wait > 0:
        raise RateLimited("too many failed logins: try again later", retry_after=wait)
    try:
        user: dict[str, Any] | None = await repo.get_user_by_username(ctx.engine, body.username)
    except repo.NotFoundError:
        user = None
    if user is None:
        await asyncio.to_thread(dummy_verify, body.password)  # the same time as a real check
        ok = False
    else:
        ok = await asyncio.to_thread(verify_password, body.password, user["password_hash"])
    if not ok or user is None or user["disabled"]:
        ctx.throttle.failure(body.username, ip)
        raise AuthenticationFailed("wrong username or password")
    ctx.throttle.success(body.username, ip)
    async with ctx.engine.begin() as conn:
        await repo.record_login(conn, user["id"], datetime.now(UTC))
        await repo.append_audit(conn, user["username"], "login", "user", user["id"], None, None, ip)
    return _json(await _pair(ctx, user))


@post("/admin/api/auth/refresh", opt={"role": PUBLIC}, status_code=200)
async def refresh(ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[Refresh]) -> Response[bytes]:
    token = data.refresh_token
    digest, now = hash_refresh_token(token), datetime.now(UTC)
    used = await repo.use_refresh(ctx.engine, digest, now)
    if used is None:
        known = await repo.find_refresh(ctx.engine, digest)
        if known is not None and known["used_at"] is not None:
            await repo.revoke_family(ctx.engine, known["family"])  # a used token came back: stolen
        raise AuthenticationFailed("invalid or expired refresh token: log in again")
    user = await repo.get_user(ctx.engine, used["user_id"])
    if user["disabled"]:
        raise AuthenticationFailed("this account is disabled")
    return _json(await _pair(ctx, user, used["family"]))


@post("/admin/api/auth/logout", opt={"role": "viewer"}, status_code=200)
async def logout(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    who = caller(request)
    revoked = await repo.revoke_user_tokens(ctx.engine, who.id)
    return _json({"logged_out": True, "revoked_refresh_tokens": revoked})


@get("/admin/api/auth/me", opt={"role": "viewer"})
async def me(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    who = caller(request)
    return _json({"id": who.id, "username": who.username, "role": who.role, "team_id": who.team_id})


AUTH_ROUTES: list[HTTPRouteHandler] = [login, refresh, logout, me]
