"""`GET /v1/key/info`: what the calling API key may do and what is left of its budgets, for the key's holder."""

from __future__ import annotations

from typing import Any, Protocol

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler

from gateway.admin.respond import json_response
from gateway.auth.keys import authenticate
from gateway.config.snapshot import Snapshot
from gateway.limits.budget import BudgetStore
from gateway.protocol.headers import read_headers


class Source(Protocol):
    @property
    def snapshot(self) -> Snapshot: ...


def key_info_routes(source: Source, budgets: BudgetStore) -> list[HTTPRouteHandler]:
    @get("/v1/key/info")
    async def key_info(request: Request[Any, Any, Any]) -> Response[bytes]:
        key = authenticate(source.snapshot.keys, read_headers(request.scope["headers"]))
        limits = [{"scope": s.name, "rpm": s.rpm, "tpm": s.tpm} for s in key.limits]
        limits += [{"scope": s.name, "rpm": s.rpm, "tpm": s.tpm} for s in key.model_limits.values()]
        spend = []
        for scope in key.budgets:
            used = await budgets.usage(scope)
            remaining = max(scope.limit - used.spent - used.reserved, 0)
            spend.append(
                {
                    "scope": scope.name,
                    "period": scope.period,
                    "currency": scope.currency,
                    "limit": str(scope.limit),
                    "spent": str(used.spent),
                    "reserved": str(used.reserved),
                    "remaining": str(remaining),
                }
            )
        models = sorted(key.models) if key.models is not None else None
        body = {"name": key.name, "team": key.team, "user": key.user, "models": models, "limits": limits}
        return json_response({**body, "budgets": spend})

    return [key_info]
