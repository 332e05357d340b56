"""Serving fine-tuned adapters from the admin API: `POST /admin/api/training/jobs/{name}/deploy` loads a succeeded
job's adapter into a `vllm` provider and creates the model alias that routes to it (audited, live in every
gateway process), `.../undeploy` reverses it, `GET .../serve-command` is the `vllm serve` command that serves the
adapter from its start. Admins act on their team's jobs, owners on any (see trainer.deploy)."""

from __future__ import annotations

from typing import Any

import httpx
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import JSONBody
from pydantic import BaseModel, ConfigDict, Field

from gateway.admin.context import Ctx, Name, caller
from gateway.admin.respond import json_response
from gateway.admin.routes_training import BASE, job_out, visible_job
from gateway.errors import InvalidRequest, Unavailable
from trainer import deploy
from trainer.vllm_api import DeployError


class DeployBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str = Field(min_length=1, max_length=200)
    alias: str = Field(min_length=1, max_length=200)
    replace: bool = False
    """Take over an existing stored alias that routes elsewhere."""


def _refused(exc: DeployError) -> Exception:
    """A usage problem (unknown provider, job not ready, alias conflict) is a 400; vLLM's failures a 503."""
    if exc.usage:
        return InvalidRequest(str(exc), code=exc.kind)
    return Unavailable(str(exc), code=f"vllm_{exc.kind}")


@post(f"{BASE}/jobs/{{name:str}}/deploy", opt={"role": "admin"}, status_code=200)
async def deploy_job(
    ctx: Ctx, request: Request[Any, Any, Any], name: Name, data: JSONBody[DeployBody]
) -> Response[bytes]:
    who = caller(request)
    job = visible_job(ctx, who, name, manage=True)
    store = ctx.scheduler.service.store
    try:
        vllm = deploy.upstream_of(ctx.live.merged, data.provider)
        async with httpx.AsyncClient() as client:
            done = await deploy.deploy(
                job,
                vllm.name,
                vllm.base_url,
                data.alias,
                gateway=deploy.Gateway(store, ctx.engine, ctx.file_config, actor=who.username),
                client=client,
                api_key=vllm.api_key,
                replace=data.replace,
            )
    except DeployError as exc:
        raise _refused(exc) from None
    return json_response(job_out(done, who))


@post(f"{BASE}/jobs/{{name:str}}/undeploy", opt={"role": "admin"}, status_code=200)
async def undeploy_job(ctx: Ctx, request: Request[Any, Any, Any], name: Name) -> Response[bytes]:
    who = caller(request)
    job = visible_job(ctx, who, name, manage=True)
    if not job.deployed:
        raise InvalidRequest(f"job {name!r} is not deployed", code="not_deployed")
    store = ctx.scheduler.service.store
    try:
        provider = ctx.live.merged.providers.get(str(job.deployed.get("provider")))
        base_url = deploy.upstream_of(ctx.live.merged, str(job.deployed["provider"])) if provider else None
        async with httpx.AsyncClient() as client:
            done = await deploy.undeploy(
                job,
                base_url.base_url if base_url else None,
                gateway=deploy.Gateway(store, ctx.engine, ctx.file_config, actor=who.username),
                client=client,
                api_key=base_url.api_key if base_url else None,
            )
    except DeployError as exc:
        raise _refused(exc) from None
    return json_response(job_out(done, who))


@get(f"{BASE}/jobs/{{name:str}}/serve-command", opt={"role": "admin"})
async def job_serve_command(ctx: Ctx, request: Request[Any, Any, Any], name: Name) -> Response[bytes]:
    """The argv of a vLLM serving the base model with this job's adapter (for the operator to run), after the job's
    chat template is checked against the base tokenizer's (it takes a few seconds: it runs in the trainer's venv)."""
    visible_job(ctx, caller(request), name)
    try:
        argv, notes = await deploy.serve_command_for(ctx.scheduler.service, name)
    except DeployError as exc:
        raise _refused(exc) from None
    return json_response({"argv": argv, "notes": notes})


DEPLOY_ROUTES: list[HTTPRouteHandler] = [deploy_job, undeploy_job, job_serve_command]
