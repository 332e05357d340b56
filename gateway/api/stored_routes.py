"""`GET/DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`: stored responses, fetched from the
provider that made them, for the key that made them (see gateway.api.stored)."""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlencode

from litestar import Request, Response, delete, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from gateway.api.access import RECORD, AccessRecord
from gateway.api.stored import RESPONSE_ID, ResponseIndex, owned
from gateway.auth.keys import authenticate
from gateway.config.snapshot import Snapshot, route_timeouts
from gateway.errors import InvalidRequest, NotFound, UpstreamStatusError
from gateway.protocol.headers import read_headers
from plugins.providers.base import CallContext

JSON = "application/json"


class Source(Protocol):
    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def responses(self) -> ResponseIndex: ...


def _query(params: Any) -> str:
    """The list parameters of `input_items`, checked, re-encoded (nothing else reaches the upstream URL)."""
    out: dict[str, str] = {}
    limit = params.get("limit")
    if limit is not None:
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            raise InvalidRequest("'limit' must be an integer from 1 to 100", param="limit")
        out["limit"] = limit
    order = params.get("order")
    if order is not None:
        if order not in ("asc", "desc"):
            raise InvalidRequest("'order' must be 'asc' or 'desc'", param="order")
        out["order"] = order
    after = params.get("after")
    if after is not None:
        if not RESPONSE_ID.fullmatch(after):
            raise InvalidRequest("'after' must be an item id", param="after")
        out["after"] = after
    return "?" + urlencode(out) if out else ""


def stored_routes(source: Source) -> list[HTTPRouteHandler]:
    async def forward(request: Request[Any, Any, Any], method: str, rid: str, suffix: str = "") -> Response[bytes]:
        snapshot = source.snapshot
        key = authenticate(snapshot.keys, read_headers(request.scope["headers"]))
        record: AccessRecord = request.scope[RECORD]  # type: ignore[literal-required]
        record.key = key.name
        owner = await owned(source.responses, rid, key.name)
        adapter = snapshot.adapters.get(owner.provider)
        if adapter is None:
            raise NotFound(f"Response with id '{rid}' not found.")
        ctx = CallContext(record.request_id, "", route_timeouts(adapter.config.timeout, None))
        try:
            body = await adapter.stored_response(method, rid + suffix, ctx)
        except UpstreamStatusError as exc:
            if exc.upstream_status != 404:
                raise
            await source.responses.forget(rid)
            raise NotFound(f"Response with id '{rid}' not found.") from None
        if method == "DELETE":
            await source.responses.forget(rid)
        return Response(body, media_type=JSON)

    @get("/v1/responses/{response_id:str}")
    async def retrieve(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes]:
        return await forward(request, "GET", response_id)

    @get("/v1/responses/{response_id:str}/input_items")
    async def input_items(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes]:
        return await forward(request, "GET", response_id, "/input_items" + _query(request.query_params))

    @delete("/v1/responses/{response_id:str}", status_code=200)
    async def remove(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes]:
        return await forward(request, "DELETE", response_id)

    return [retrieve, input_items, remove]
