"""Providers and model aliases under `/admin/api/`: the same fields as the config file, live in every process
within a second. File objects are listed too (`managed_by: file`) and read-only. Every change is checked by
merging it with the rest exactly as a config file would be; provider credentials are encrypted at rest and
never sent back (masked), and base URLs must pass the SSRF policy (`provider_urls`)."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, delete, get, patch, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.admin.context import AdminContext, Ctx, Name, body_of, caller, client_ip
from gateway.admin.merge import merge
from gateway.admin.respond import Conflict, json_response, listing, store_errors
from gateway.admin.security.crypto import mask
from gateway.admin.security.ssrf import UnsafeUrl, validate_url
from gateway.admin.store import repo
from gateway.config.loader import ConfigError, pydantic_problems
from gateway.config.model import ModelConfig, ProviderConfig, TimeoutConfig
from gateway.config.snapshot import DEFAULT_TIMEOUTS
from gateway.errors import GatewayError, InvalidRequest, NotFound
from gateway.routing.probe import PROBES
from plugins.providers.base import CALLS, CallContext
from plugins.providers.registry import NEEDS_BASE_URL, provider_types

NAME = r"^[\w.@/-]+$"
SETTINGS = ("timeout", "api_version", "responses_api", "stream_options")


class ProviderBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=NAME)
    type: str = Field(min_length=1, max_length=50)
    base_url: str | None = Field(default=None, max_length=2048)
    api_key: str | None = Field(default=None, max_length=4096)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: TimeoutConfig | None = None
    api_version: str | None = None
    responses_api: bool | None = None
    stream_options: bool | None = None
    enabled: bool = True


class ProviderPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str | None = Field(default=None, max_length=2048)
    api_key: str | None = Field(default=None, max_length=4096)
    headers: dict[str, str] | None = None
    timeout: TimeoutConfig | None = None
    api_version: str | None = None
    responses_api: bool | None = None
    stream_options: bool | None = None
    enabled: bool | None = None


class ProbeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200)
    mode: str = Field(default="chat", pattern="^(chat|completion|embedding)$")


def _masked_headers(headers: dict[str, str]) -> dict[str, str]:
    return {name: mask(value) for name, value in headers.items()}


def _provider_from_file(name: Name, p: ProviderConfig) -> dict[str, Any]:
    out = p.model_dump(mode="json", exclude={"api_key", "headers"}, exclude_none=True)
    return {
        "name": name,
        **out,
        "api_key": mask(p.api_key) if p.api_key else None,
        "headers": _masked_headers(p.headers),
        "enabled": True,
        "managed_by": "file",
    }


def _model_from_file(alias: Name, m: ModelConfig) -> dict[str, Any]:
    return {"alias": alias, **m.model_dump(mode="json", exclude_none=True), "enabled": True, "managed_by": "file"}


def _provider_out(ctx: AdminContext, row: dict[str, Any]) -> dict[str, Any]:
    secret = None
    if row.get("api_key_enc") and ctx.box is not None:
        secret = mask(ctx.box.decrypt(row["api_key_enc"], context=row["name"]))
    return {
        "id": row["id"],
        "name": row["name"],
        "type": row["type"],
        "base_url": row["base_url"],
        **(row["settings"] or {}),
        "api_key": secret,
        "headers": _masked_headers(row["headers"] or {}),
        "enabled": row["enabled"],
        "managed_by": "api",
    }


def _decrypt(ctx: AdminContext, token: str, name: Name) -> str:
    if ctx.box is None:
        raise ConfigError([(f"providers.{name}.api_key", "SWITCHYARD_SECRET_KEY is not set")])
    return ctx.box.decrypt(token, context=name)


async def _check(ctx: AdminContext, providers: list[dict[str, Any]], models: list[dict[str, Any]]) -> None:
    """Refuse a change that would not make a valid config, naming every problem."""
    teams = await repo.list_teams(ctx.engine)
    try:
        merge(
            ctx.file_config,
            providers,
            models,
            teams,
            decrypt=lambda token, name: _decrypt(ctx, token, name),
            provider_types=provider_types(),
            needs_base_url=NEEDS_BASE_URL,
        )
    except ConfigError as exc:
        raise InvalidRequest("; ".join(exc.lines())) from None


async def _row_for(ctx: AdminContext, body: ProviderBody | ProviderPatch, base: dict[str, Any]) -> dict[str, Any]:
    given = body.model_dump(mode="json", exclude_unset=True)
    row = dict(base)
    settings = dict(row.get("settings") or {})
    settings.update({k: v for k, v in given.items() if k in SETTINGS})
    row["settings"] = {k: v for k, v in settings.items() if v is not None}
    for field in ("base_url", "headers", "enabled", "type", "name"):
        if field in given:
            row[field] = given[field]
    if row.get("base_url"):
        try:
            await validate_url(row["base_url"], ctx.url_policy)
        except (UnsafeUrl, OSError) as exc:
            raise InvalidRequest(f"base_url: {exc}", param="base_url") from None
    if given.get("api_key"):
        if ctx.box is None:
            raise InvalidRequest("set SWITCHYARD_SECRET_KEY to store provider credentials", param="api_key")
        row["api_key_enc"] = ctx.box.encrypt(given["api_key"], context=row["name"])
    return row


def _not_file(ctx: AdminContext, name: Name, kind: str) -> None:
    if name in (ctx.file_config.providers if kind == "provider" else ctx.file_config.models):
        raise Conflict(f"the {kind} '{name}' is managed by the config file; change it there")


@get("/admin/api/providers", opt={"role": "viewer"})
async def list_providers(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    rows = [_provider_from_file(n, p) for n, p in ctx.file_config.providers.items()]
    return listing(rows + [_provider_out(ctx, r) for r in await repo.list_providers(ctx.engine)])


@post("/admin/api/providers", opt={"role": "admin"})
async def create_provider(ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[ProviderBody]) -> Response[bytes]:
    body = data
    _not_file(ctx, body.name, "provider")
    row = await _row_for(ctx, body, {"name": body.name, "type": body.type, "headers": {}, "settings": {}})
    others = [p for p in await repo.list_providers(ctx.engine) if p["name"] != body.name]
    await _check(ctx, [*others, row], await repo.list_models(ctx.engine))
    async with store_errors(), ctx.engine.begin() as conn:
        created = await repo.create_provider(
            conn,
            body.name,
            body.type,
            base_url=row.get("base_url"),
            api_key_enc=row.get("api_key_enc"),
            headers=row["headers"],
            settings=row["settings"],
            enabled=body.enabled,
        )
        await ctx.audit(conn, caller(request), "create", ("provider", body.name), None, created, client_ip(request))
    await ctx.live.refresh()
    return json_response(_provider_out(ctx, created), 201)


@get("/admin/api/providers/{name:str}", opt={"role": "viewer"})
async def get_provider(ctx: Ctx, request: Request[Any, Any, Any], name: Name) -> Response[bytes]:
    if name in ctx.file_config.providers:
        return json_response(_provider_from_file(name, ctx.file_config.providers[name]))
    async with store_errors():
        return json_response(_provider_out(ctx, await repo.get_provider(ctx.engine, name)))


@patch("/admin/api/providers/{name:str}", opt={"role": "admin"})
async def update_provider(
    ctx: Ctx, request: Request[Any, Any, Any], name: Name, data: JSONBody[ProviderPatch]
) -> Response[bytes]:
    _not_file(ctx, name, "provider")
    body = data
    async with store_errors():
        before = await repo.get_provider(ctx.engine, name)
    row = await _row_for(ctx, body, before)
    others = [p for p in await repo.list_providers(ctx.engine) if p["name"] != name]
    await _check(ctx, [*others, row], await repo.list_models(ctx.engine))
    changes = {k: row.get(k) for k in ("base_url", "api_key_enc", "headers", "settings", "enabled")}
    async with store_errors(), ctx.engine.begin() as conn:
        after = await repo.update_provider(conn, before["id"], changes)
        await ctx.audit(conn, caller(request), "update", ("provider", name), before, after, client_ip(request))
    await ctx.live.refresh()
    return json_response(_provider_out(ctx, after))


@delete("/admin/api/providers/{name:str}", opt={"role": "admin"}, status_code=200)
async def delete_provider(ctx: Ctx, request: Request[Any, Any, Any], name: Name) -> Response[bytes]:
    _not_file(ctx, name, "provider")
    others = [p for p in await repo.list_providers(ctx.engine) if p["name"] != name]
    await _check(ctx, others, await repo.list_models(ctx.engine))
    async with store_errors(), ctx.engine.begin() as conn:
        before = await repo.get_provider(conn, name)
        await repo.delete_provider(conn, before["id"])
        await ctx.audit(conn, caller(request), "delete", ("provider", name), before, None, client_ip(request))
    await ctx.live.refresh()
    return json_response({"name": name, "deleted": True})


@post("/admin/api/providers/{name:str}/test", opt={"role": "admin"}, status_code=200)
async def test_provider(
    ctx: Ctx, request: Request[Any, Any, Any], name: Name, data: JSONBody[ProbeBody]
) -> Response[bytes]:
    """A tiny request through the provider: latency, or the vendor's error."""
    body = data
    adapter = ctx.snapshot().adapters.get(name)
    if adapter is None:
        raise NotFound(f"no provider named '{name}'")
    op, probe = PROBES[body.mode]
    route = next((r for a in ctx.snapshot().aliases.values() for r in a.routes if r.provider == name), None)
    timeouts = route.timeouts if route is not None else None
    started = time.perf_counter()
    try:
        await CALLS[op](adapter, dict(probe), CallContext("provider-test", body.model, timeouts or DEFAULT_TIMEOUTS))
    except GatewayError as exc:
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        return json_response({"ok": False, "latency_ms": elapsed, "status": exc.status, "error": exc.message})
    return json_response({"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)})


CONFIG_ROUTES: list[HTTPRouteHandler] = [
    list_providers,
    create_provider,
    get_provider,
    update_provider,
    delete_provider,
    test_provider,
]


def _model_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "alias": row["alias"], **row["spec"], "enabled": row["enabled"], "managed_by": "api"}


async def _parsed(request: Request[Any, Any, Any], alias: str | None) -> tuple[str, dict[str, Any], bool]:
    data = await body_of(request, _Raw)
    raw = dict(data.model_extra or {})
    name = alias or raw.pop("alias", None)
    raw.pop("alias", None)
    enabled = bool(raw.pop("enabled", True))
    if not isinstance(name, str) or not name:
        raise InvalidRequest("missing required parameter: 'alias'", param="alias")
    try:
        spec = ModelConfig.model_validate(raw).model_dump(mode="json", exclude_unset=True)
    except ValidationError as exc:
        raise InvalidRequest("; ".join(f"{p}: {m}" for p, m in pydantic_problems(exc))) from None
    return name, spec, enabled


@get("/admin/api/models", opt={"role": "viewer"})
async def list_models(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    rows = [_model_from_file(a, m) for a, m in ctx.file_config.models.items()]
    return listing(rows + [_model_out(r) for r in await repo.list_models(ctx.engine)])


@post("/admin/api/models", opt={"role": "admin"})
async def create_model(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    alias, spec, enabled = await _parsed(request, None)
    if alias in ctx.file_config.models:
        raise Conflict(f"the model '{alias}' is managed by the config file; change it there")
    others = [m for m in await repo.list_models(ctx.engine) if m["alias"] != alias]
    await _check(
        ctx, await repo.list_providers(ctx.engine), [*others, {"alias": alias, "spec": spec, "enabled": enabled}]
    )
    async with store_errors(), ctx.engine.begin() as conn:
        row = await repo.create_model(conn, alias, spec, enabled)
        await ctx.audit(conn, caller(request), "create", ("model", alias), None, row, client_ip(request))
    await ctx.live.refresh()
    return json_response(_model_out(row), 201)


@get("/admin/api/models/{alias:path}", opt={"role": "viewer"})
async def get_model(ctx: Ctx, request: Request[Any, Any, Any], alias: Name) -> Response[bytes]:
    alias = alias.lstrip("/")
    if alias in ctx.file_config.models:
        return json_response(_model_from_file(alias, ctx.file_config.models[alias]))
    async with store_errors():
        return json_response(_model_out(await repo.get_model(ctx.engine, alias)))


@patch("/admin/api/models/{alias:path}", opt={"role": "admin"})
async def update_model(ctx: Ctx, request: Request[Any, Any, Any], alias: Name) -> Response[bytes]:
    alias = alias.lstrip("/")
    if alias in ctx.file_config.models:
        raise Conflict(f"the model '{alias}' is managed by the config file; change it there")
    async with store_errors():
        before = await repo.get_model(ctx.engine, alias)
    _, spec, enabled = await _parsed(request, alias)
    merged_spec = {**before["spec"], **spec}
    others = [m for m in await repo.list_models(ctx.engine) if m["alias"] != alias]
    await _check(
        ctx, await repo.list_providers(ctx.engine), [*others, {"alias": alias, "spec": merged_spec, "enabled": enabled}]
    )
    async with store_errors(), ctx.engine.begin() as conn:
        row = await repo.update_model(conn, before["id"], {"spec": merged_spec, "enabled": enabled})
        await ctx.audit(conn, caller(request), "update", ("model", alias), before, row, client_ip(request))
    await ctx.live.refresh()
    return json_response(_model_out(row))


@delete("/admin/api/models/{alias:path}", opt={"role": "admin"}, status_code=200)
async def delete_model(ctx: Ctx, request: Request[Any, Any, Any], alias: Name) -> Response[bytes]:
    alias = alias.lstrip("/")
    if alias in ctx.file_config.models:
        raise Conflict(f"the model '{alias}' is managed by the config file; change it there")
    others = [m for m in await repo.list_models(ctx.engine) if m["alias"] != alias]
    await _check(ctx, await repo.list_providers(ctx.engine), others)
    async with store_errors(), ctx.engine.begin() as conn:
        before = await repo.get_model(conn, alias)
        await repo.delete_model(conn, before["id"])
        await ctx.audit(conn, caller(request), "delete", ("model", alias), before, None, client_ip(request))
    await ctx.live.refresh()
    return json_response({"alias": alias, "deleted": True})


MODEL_ROUTES: list[HTTPRouteHandler] = [list_models, create_model, get_model, update_model, delete_model]


class _Raw(BaseModel):
    """Any JSON object (the model spec is validated against ModelConfig itself)."""

    model_config = ConfigDict(extra="allow")
