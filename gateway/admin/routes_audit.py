"""`GET /admin/api/audit`: every change made through the admin API, newest first, append-only (admins and up)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler

from gateway.admin.context import Ctx
from gateway.admin.respond import listing
from gateway.admin.store import repo
from gateway.errors import InvalidRequest


def _int(value: str | None, name: str, default: int | None, hi: int) -> int | None:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= hi:
        raise InvalidRequest(f"'{name}' must be an integer from 1 to {hi}", param=name)
    return int(value)


@get("/admin/api/audit", opt={"role": "admin"})
async def audit(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    params = request.query_params
    limit = _int(params.get("limit"), "limit", 100, 1000) or 100
    before = _int(params.get("before_id"), "before_id", None, 2**62)
    rows = await repo.list_audit(ctx.engine, limit, before_id=before, object_type=params.get("object_type"))
    return listing(rows)


AUDIT_ROUTES: list[HTTPRouteHandler] = [audit]
