"""`GET /admin/api/usage`: the usage ledger grouped and summed, for the admin UI and scripts.

Guarded by the config's `admin_key` (a bearer token, compared in constant time) until user accounts exist;
without one the endpoint is off. Query: `since` (7d, 24h, an ISO date), `until`, `by` (comma-separated groups).
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler

from gateway.errors import AuthenticationFailed, GatewayError, InvalidRequest, PermissionDenied
from gateway.metering.reports import parse_since, usage_report
from gateway.store.engine import Database
from gateway.store.errors import DatabaseError


class DatabaseUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "database_unavailable"


class Source(Protocol):
    @property
    def admin_key(self) -> str | None: ...

    @property
    def database(self) -> Database | None: ...


def require_admin(request: Request[Any, Any, Any], admin_key: str | None) -> None:
    if admin_key is None:
        raise PermissionDenied("the admin API is off: set admin_key in the config", code="admin_api_disabled")
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), admin_key.encode()):
        raise AuthenticationFailed("a valid admin key is required ('Authorization: Bearer <admin_key>')")


def admin_usage_routes(source: Source) -> list[HTTPRouteHandler]:
    @get("/admin/api/usage")
    async def usage(request: Request[Any, Any, Any]) -> Response[bytes]:
        require_admin(request, source.admin_key)
        params = request.query_params
        now = datetime.now(UTC)
        by = [part for part in (params.get("by") or "alias").split(",") if part]
        try:
            since = parse_since(params.get("since") or "7d", now)
            until = parse_since(params["until"], now) if params.get("until") else None
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="since") from None
        database = source.database
        if database is None:
            raise DatabaseUnavailable("metering is off (metering.enabled: false)")
        try:
            rows = await usage_report(database.engine, since, by, until)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="by") from None
        except (DatabaseError, OSError) as exc:
            raise DatabaseUnavailable("the usage ledger is unavailable right now") from exc
        body = {"object": "list", "since": since.isoformat(), "by": by, "data": rows}
        return Response(orjson.dumps(body), media_type="application/json")

    return [usage]
