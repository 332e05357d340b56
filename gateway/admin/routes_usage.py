"""`GET /admin/api/usage`: the usage ledger grouped and summed, scoped by the caller's role (owners everything,
admins and viewers their team, members their own keys). Query: `since` (7d, 24h, an ISO date), `until`, `by`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler

from gateway.admin.context import AdminContext, Ctx, Principal, caller
from gateway.admin.respond import json_response
from gateway.admin.store import repo
from gateway.errors import InvalidRequest, Unavailable
from gateway.metering.reports import Scope, parse_since, usage_report
from gateway.store.errors import DatabaseError


async def scope_of(ctx: AdminContext, who: Principal) -> Scope:
    if who.role == "owner":
        return Scope()
    if who.role == "member":
        keys = [k["name"] for k in await repo.list_api_keys(ctx.engine, owner_id=who.id)]
        return Scope(keys=tuple(keys))
    if who.team_id is None:
        return Scope(keys=())
    return Scope(team=(await repo.get_team(ctx.engine, who.team_id))["name"])


@get("/admin/api/usage", opt={"role": "member"})
async def usage(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    params = request.query_params
    now = datetime.now(UTC)
    by = [part for part in (params.get("by") or "alias").split(",") if part]
    try:
        since = parse_since(params.get("since") or "7d", now)
        until = parse_since(params["until"], now) if params.get("until") else None
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="since") from None
    scope = await scope_of(ctx, caller(request))
    try:
        rows = await usage_report(ctx.engine, since, by, until, scope)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="by") from None
    except (DatabaseError, OSError) as exc:
        raise Unavailable("the usage ledger is unavailable right now", code="database_unavailable") from exc
    return json_response({"object": "list", "since": since.isoformat(), "by": by, "data": rows})


ADMIN_USAGE_ROUTES: list[HTTPRouteHandler] = [usage]
