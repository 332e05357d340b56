"""Wiring only: a Litestar app with the raw-ASGI data plane and the control plane, wrapped for access logs."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from litestar import Litestar, asgi
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from gateway.admin.service import AdminService
from gateway.api.access import AccessLogMiddleware, LineWriter
from gateway.api.asgi import Receive, Scope, Send
from gateway.api.control import control_routes, gateway_error_response
from gateway.api.ingress import INGRESSES, Ingress
from gateway.api.proxy import DataPlane
from gateway.api.stored_routes import stored_routes
from gateway.config.loader import load_config
from gateway.config.model import GatewayConfig
from gateway.logs import configure_logging
from gateway.protocol.openai import CHAT, COMPLETIONS, EMBEDDINGS, Operation
from gateway.rag.routes import knowledge_routes
from gateway.runtime import Runtime
from plugins.providers.registry import NEEDS_BASE_URL, provider_types

CONFIG_ENV = "SWITCHYARD_CONFIG"


ASGIHandler = Callable[[Scope, Receive, Send], Awaitable[None]]


def _data_handlers(plane: DataPlane) -> dict[str, ASGIHandler]:
    """The data plane's POST endpoints by exact path: raw ASGI handlers."""

    def op_handler(op: Operation) -> ASGIHandler:
        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            await plane.handle(scope, receive, send, op)

        return handler

    def ingress_handler(ingress: Ingress) -> ASGIHandler:
        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            await plane.handle(scope, receive, send, CHAT, ingress=ingress)

        return handler

    handlers = {"/v1" + op.path: op_handler(op) for op in (CHAT, COMPLETIONS, EMBEDDINGS)}
    handlers["/v1/messages"] = ingress_handler(INGRESSES["anthropic"])
    handlers["/v1/responses"] = ingress_handler(INGRESSES["responses"])
    return handlers


class FastPaths:
    """The data plane's exact paths go straight to their handlers; everything else (lifespan, the control plane,
    the admin API, and odd spellings of a data-plane path) goes through Litestar, whose routes hold the same
    handlers. Saves Litestar's router and exception middleware on every proxied request."""

    def __init__(self, app: Any, handlers: Mapping[str, ASGIHandler]) -> None:
        self.app = app
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" else None
        await (handler or self.app)(scope, receive, send)


def create_app(config: GatewayConfig, path: Path | None = None) -> AccessLogMiddleware:
    """The whole gateway; `path` is the config file, re-read when it changes."""
    runtime = Runtime(config)
    admin = AdminService(runtime, path)
    lines = LineWriter()
    plane = DataPlane(
        runtime,
        runtime.router,
        runtime.metrics,
        runtime.cache,
        runtime.responses,
        accounting=runtime.metering.accounting,
        rag=runtime.knowledge.hook,
    )
    handlers = _data_handlers(plane)
    app = Litestar(
        route_handlers=[
            *control_routes(runtime),
            *(asgi(path, copy_scope=False, name=path)(handler) for path, handler in handlers.items()),
            *stored_routes(runtime),
            *knowledge_routes(runtime),
            admin.router(),
            *admin.data_plane_routes(),
        ],
        on_startup=[runtime.start, admin.start],
        on_shutdown=[admin.stop, runtime.stop, lines.flush],
        exception_handlers={Exception: gateway_error_response},
        openapi_config=OpenAPIConfig(
            title="Switchyard",
            version="0.1.0",
            description="The admin API (/admin/api) and the gateway's control endpoints.",
            path="/docs",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        request_max_body_size=config.server.max_body_bytes,
        logging_config=None,
    )
    return AccessLogMiddleware(FastPaths(app, handlers), runtime.metrics, lines)


def app_from_env() -> AccessLogMiddleware:
    """Factory for uvicorn workers: the config path comes from SWITCHYARD_CONFIG (set by `switchyard serve`)."""
    configure_logging()
    path = Path(os.environ[CONFIG_ENV])
    return create_app(load_config(path, provider_types(), needs_base_url=NEEDS_BASE_URL), path)
