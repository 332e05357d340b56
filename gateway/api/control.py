"""Control-plane routes on Litestar: liveness, readiness, and the model list a key may see."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from litestar import Request, Response, get
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from gateway.api.access import RECORD, AccessRecord
from gateway.auth.keys import authenticate
from gateway.config.snapshot import ClientKey
from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, NotFound, ServerError
from gateway.protocol.headers import read_headers
from gateway.runtime import Runtime

JSON = "application/json"


def _model(alias: FromPath[str], created: int) -> dict[str, object]:
    return {"id": alias, "object": "model", "created": created, "owned_by": "switchyard"}


def control_routes(runtime: Runtime) -> list[HTTPRouteHandler]:
    created = int(time.time())

    @get("/healthz", sync_to_thread=False)
    def healthz() -> Response[bytes]:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @get("/readyz", sync_to_thread=False)
    def readyz() -> Response[bytes]:
        if runtime.ready:
            return Response(b'{"status":"ready"}', media_type=JSON)
        return Response(b'{"status":"starting"}', status_code=503, media_type=JSON)

    def caller(request: Request[Any, Any, Any]) -> ClientKey:
        key = authenticate(runtime.snapshot.keys, read_headers(request.scope["headers"]))
        record: AccessRecord = request.scope[RECORD]  # type: ignore[literal-required]
        record.key = key.name
        return key

    @get("/v1/models", sync_to_thread=False)
    def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
        snapshot = runtime.snapshot
        key = caller(request)
        data = [_model(alias, created) for alias in snapshot.aliases if key.allows(alias)]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)

    @get("/v1/models/{model_id:path}", sync_to_thread=False)
    def get_model(request: Request[Any, Any, Any], model_id: FromPath[str]) -> Response[bytes]:
        snapshot = runtime.snapshot
        key = caller(request)
        alias = model_id.lstrip("/")
        if alias not in snapshot.aliases or not key.allows(alias):
            raise ModelNotFound(f"the model '{alias}' does not exist", param="model")
        return Response(orjson.dumps(_model(alias, created)), media_type=JSON)

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[str]:
        body = runtime.metrics.render(runtime.route_labels())
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return [healthz, readyz, list_models, get_model, metrics]


def gateway_error_response(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Every error leaves in OpenAI's shape, Litestar's own (404 route, 405 method) included."""
    if not isinstance(exc, GatewayError):
        if isinstance(exc, HTTPException) and exc.status_code < 500:
            exc = _from_http(exc)
        elif _is_bad_data(exc):
            exc = InvalidRequest("a value cannot be stored: text may not contain NUL characters or invalid Unicode")
        else:
            logging.getLogger("switchyard.control").error("unexpected error", exc_info=exc)
            exc = ServerError("internal error")
    headers = dict((k.decode(), v.decode()) for k, v in exc.headers())
    return Response(exc.body(), status_code=exc.status, media_type=JSON, headers=headers)


def _is_bad_data(exc: Exception) -> bool:
    """PostgreSQL refused a value (SQLSTATE class 22: NUL in text, an out-of-range number): the request's fault."""
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")


def _from_http(exc: HTTPException) -> GatewayError:
    if exc.status_code == 404:
        return NotFound("no such endpoint")
    message, param = str(exc.detail), None
    problems = exc.extra if isinstance(exc, ValidationException) and isinstance(exc.extra, list) else []
    if problems and isinstance(problems[0], dict):
        param = str(problems[0].get("key") or "") or None
        message = f"{param}: {problems[0].get('message')}" if param else str(problems[0].get("message"))
    error = GatewayError(message, param=param)
    error.status = exc.status_code
    error.type = "invalid_request_error"
    return error
