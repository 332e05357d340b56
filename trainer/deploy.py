"""Serving a fine-tuned LoRA adapter: loaded into a running vLLM, and reachable behind a gateway model alias.

`deploy` loads the job's adapter through vLLM's runtime LoRA API (`POST /v1/load_lora_adapter`, which exists only
when vLLM runs with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), checks `/v1/models` lists it with its `parent`, then
creates (or updates) the admin store's model alias routed to `{provider, model: <adapter name>}` in one audited
transaction that bumps the config version, so every gateway process serves it within a second. `undeploy` removes
the alias, then unloads the adapter. `serve_command` is the argv of a vLLM that serves the adapters from its
start (`--lora-modules`), printed for the operator and never run by the gateway. `export` merges base + adapter
into a standalone model with `llamafactory-cli export`, in the trainer's venv and its own process group.

Chat templates must agree. LLaMA-Factory renders every training row with the job's `template` (`qwen` by
default: ChatML, plus Qwen2.5's default system prompt when a row has none); vLLM renders every chat request with
the tokenizer's own `chat_template` (chat_template.jinja or tokenizer_config.json in its `--model` folder), one
template for the whole server, adapters included. When the two differ the model is asked in a format it was not
trained on and answers worse, silently; LLaMA-Factory does not always say so (`llama3` on a Qwen tokenizer keeps
the tokenizer's template untouched). The tiny test model's tokenizer carries ChatML with that same default system
prompt, so it matches `qwen` token for token and vLLM needs no flag. `check_template` settles it for any job: in the
trainer's venv it encodes a conversation, with and without a system message, both ways, and when the tokens
differ writes LLaMA-Factory's template as Jinja to `<job dir>/chat_template.jinja`; `serve-command` then adds
`--chat-template` with that file. Adapters that trained with different templates need vLLM servers of their own.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.admin.live import POLL_INTERVAL
from gateway.admin.merge import merge
from gateway.admin.store import repo
from gateway.config.loader import ConfigError
from gateway.config.model import GatewayConfig, ModelConfig
from gateway.rag.workspace import served_config
from gateway.store.engine import Database
from plugins.providers.registry import NEEDS_BASE_URL, provider_types, resolve
from trainer import llamafactory, process
from trainer.service import TrainerService
from trainer.store import JobRecord, TrainerStore, checked
from trainer.vllm_api import (
    RUNTIME_ENV,
    DeployError,
    adapter_card,
    check_template,
    last_line,
    listed,
    load_adapter,
    rank_limit,
    serve_command,
    unload_adapter,
)

ADAPTER_FILES: Final = ("adapter_config.json", "adapter_model.safetensors")
NOT_ADAPTERS: Final = frozenset({"freeze", "full"})
EXPORT_LIMIT_S: Final = 3600.0
ALIAS: Final = re.compile(r"[\w.@/:-]{1,200}")
DRAIN_S: Final = 4 * POLL_INTERVAL
"""After an alias is deleted, how long undeploy waits before unloading: every gateway process polls the config
version every POLL_INTERVAL (and most hear the NOTIFY at once), so none still routes to the adapter."""


# --- the job --------------------------------------------------------------------------------------------------


def adapter_folder(job: JobRecord) -> Path:
    """The folder of a succeeded LoRA job's adapter; DeployError `not_ready` otherwise."""
    if job.status != "succeeded" or not job.adapter or not job.adapter.get("path"):
        raise DeployError(f"job {job.name!r} is {job.status}: only a succeeded job has an adapter", "not_ready")
    if job.spec.get("method") in NOT_ADAPTERS:
        method = job.spec["method"]
        message = f"job {job.name!r} trained all weights ({method}), not an adapter: serve {job.adapter['path']} itself"
        raise DeployError(message, "not_ready")
    folder = Path(job.adapter["path"]).absolute()
    missing = [f for f in ADAPTER_FILES if not (folder / f).is_file()]
    if missing:
        raise DeployError(f"job {job.name!r}: {', '.join(missing)} missing in {folder}", "not_ready")
    return folder


def adapter_rank(folder: Path, job: JobRecord) -> int:
    """The adapter's LoRA rank: adapter_config.json's `r`, else the job's hyper-parameter."""
    try:
        rank = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("r")
    except (OSError, ValueError, AttributeError):
        rank = None
    return int(rank) if isinstance(rank, int) else int(job.spec.get("hyper", {}).get("lora_rank", 8))


# --- the gateway alias in the admin store ---------------------------------------------------------------------


def alias_spec(provider: str, adapter_name: str) -> dict[str, Any]:
    """The alias's `models.<alias>` mapping: one route to the adapter on the vLLM provider."""
    spec = ModelConfig.model_validate({"routes": [{"provider": provider, "model": adapter_name}]})
    return spec.model_dump(mode="json", exclude_unset=True)


def _routes_to(spec: Mapping[str, Any], provider: str, model: str) -> bool:
    return any(r.get("provider") == provider and r.get("model") == model for r in spec.get("routes") or [])


async def _check_config(conn: AsyncConnection, file_config: GatewayConfig, models: list[dict[str, Any]]) -> None:
    """Refuse aliases that would not make a valid merged config (a bad one would stop every later admin change)."""
    providers, teams = await repo.list_providers(conn), await repo.list_teams(conn)
    try:
        merge(
            file_config,
            providers,
            models,
            teams,
            decrypt=lambda _token, _name: "checked-not-decrypted",
            provider_types=provider_types(),
            needs_base_url=NEEDS_BASE_URL,
        )
    except ConfigError as exc:
        raise DeployError("the gateway config would be invalid: " + "; ".join(exc.lines()[:5]), "invalid") from None


async def _write_alias(conn: AsyncConnection, before: dict[str, Any] | None, alias: str, spec: Any) -> dict[str, Any]:
    try:
        if before is None:
            return await repo.create_model(conn, alias, spec)
        return await repo.update_model(conn, before["id"], {"spec": spec, "enabled": True})
    except repo.StoreError as exc:
        raise DeployError(f"model alias {alias!r}: {exc}", "conflict") from None


async def put_alias(
    engine: AsyncEngine, file_config: GatewayConfig, alias: str, spec: dict[str, Any], *, actor: str, replace: bool
) -> dict[str, Any]:
    """Create the alias, or update one that already routes the same way (any other only when `replace`); audited,
    with the config version bumped in the same transaction. Returns the row."""
    if alias in file_config.models:
        raise DeployError(f"the model {alias!r} is managed by the config file: choose another alias", "conflict")
    async with engine.begin() as conn:
        rows = await repo.list_models(conn)
        before = next((r for r in rows if r["alias"] == alias), None)
        if before is not None and not replace and before["spec"].get("routes") != spec["routes"]:
            message = f"the model alias {alias!r} already exists and routes elsewhere: pass --replace to re-point it"
            raise DeployError(message, "conflict")
        others = [r for r in rows if r["alias"] != alias]
        await _check_config(conn, file_config, [*others, {"alias": alias, "spec": spec, "enabled": True}])
        row = await _write_alias(conn, before, alias, spec)
        await repo.append_audit(
            conn, actor, "create" if before is None else "update", "model", alias, before, row, None
        )
        await repo.bump_version(conn)
    return row


async def drop_alias(
    engine: AsyncEngine, file_config: GatewayConfig, alias: str, route: tuple[str, str], *, actor: str
) -> bool:
    """Delete the alias when it still routes to `route` (provider, model); audited and the version bumped.
    False when it is gone or now routes elsewhere (then it is left alone)."""
    async with engine.begin() as conn:
        rows = await repo.list_models(conn)
        before = next((r for r in rows if r["alias"] == alias), None)
        if before is None or not _routes_to(before["spec"], *route):
            return False
        await _check_config(conn, file_config, [r for r in rows if r["alias"] != alias])
        await repo.delete_model(conn, before["id"])
        await repo.append_audit(conn, actor, "delete", "model", alias, before, None, None)
        await repo.bump_version(conn)
    return True


# --- deploy and undeploy --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gateway:
    """What deploy and undeploy change besides vLLM: the job records, the admin store, and the file config that
    the stored aliases are merged with."""

    store: TrainerStore
    engine: AsyncEngine
    file_config: GatewayConfig
    actor: str = "trainer"


@dataclass(frozen=True, slots=True)
class Upstream:
    """A vLLM provider: its gateway name, OpenAI base URL (ending in /v1) and key."""

    name: str
    base_url: str
    api_key: str | None = None


async def _ensure_loaded(vllm: Upstream, name: str, path: str, client: httpx.AsyncClient) -> bool:
    """Load the adapter; False when vLLM already serves this very adapter (same name, same folder)."""
    try:
        await load_adapter(vllm.base_url, name, path, api_key=vllm.api_key, client=client)
    except DeployError as exc:
        if exc.kind != "already_loaded":
            raise
        card = await adapter_card(vllm.base_url, name, api_key=vllm.api_key, client=client)
        if card is None or card.get("root") != path:
            raise
        return False
    if not await listed(vllm.base_url, name, api_key=vllm.api_key, client=client):
        raise DeployError(f"vLLM accepted {name!r} but does not list it under /models", "refused")
    return True


def _check_redeploy(job: JobRecord, provider: str, alias: str, name: str) -> None:
    """Deploying again the same way is fine (it repairs); another alias, provider or adapter name is not."""
    if not ALIAS.fullmatch(alias):
        raise DeployError(f"{alias[:100]!r} is not a model alias (letters, digits, '_.@/:-'; at most 200)", "conflict")
    current = job.deployed or {}
    wanted = {"alias": alias, "provider": provider, "adapter_name": name}
    if current and any(current.get(k) != v for k, v in wanted.items()):
        message = f"job {job.name!r} is deployed as {current.get('alias')!r} on {current.get('provider')!r}"
        raise DeployError(message + ": undeploy it first", "conflict")


async def deploy(
    job: JobRecord,
    provider_name: str,
    provider_base_url: str,
    alias: str,
    *,
    gateway: Gateway,
    client: httpx.AsyncClient,
    api_key: str | None = None,
    adapter_name: str | None = None,
    lora_path: str | None = None,
    replace: bool = False,
) -> JobRecord:
    """Load a succeeded job's adapter into vLLM and serve it as model alias `alias` (live in every gateway
    process); records `deployed` on the job. `lora_path` is the adapter folder as vLLM's machine sees it."""
    folder = adapter_folder(job)
    name = checked(adapter_name or job.name)
    _check_redeploy(job, provider_name, alias, name)
    path = lora_path or str(folder)
    vllm = Upstream(provider_name, provider_base_url, api_key)
    loaded_now = await _ensure_loaded(vllm, name, path, client)
    try:
        await put_alias(
            gateway.engine,
            gateway.file_config,
            alias,
            alias_spec(provider_name, name),
            actor=gateway.actor,
            replace=replace,
        )
    except BaseException:
        if loaded_now:
            await asyncio.shield(_unload_quietly(vllm, name, client))
        raise
    record = {"provider": provider_name, "alias": alias, "adapter_name": name, "at": time.time()}
    return gateway.store.update_job(job.name, deployed=record)


async def _unload_quietly(vllm: Upstream, name: str, client: httpx.AsyncClient) -> None:
    """Undo a load after a later step failed; that step's error is the one worth showing."""
    try:
        await unload_adapter(vllm.base_url, name, api_key=vllm.api_key, client=client)
    except DeployError:
        return


async def undeploy(
    job: JobRecord,
    provider_base_url: str | None,
    *,
    gateway: Gateway,
    client: httpx.AsyncClient,
    api_key: str | None = None,
    drain_s: float = DRAIN_S,
) -> JobRecord:
    """Remove the job's alias (when it still routes to the adapter), give every gateway process `drain_s` seconds to
    stop routing to it, unload the adapter from vLLM (skipped when `provider_base_url` is None: the provider is
    gone), and clear `deployed`. Safe to run again after a failure."""
    current = job.deployed
    if not current:
        raise DeployError(f"job {job.name!r} is not deployed", "not_deployed")
    route = (str(current["provider"]), str(current["adapter_name"]))
    if await drop_alias(gateway.engine, gateway.file_config, str(current["alias"]), route, actor=gateway.actor):
        await asyncio.sleep(drain_s)
    if provider_base_url is not None:
        try:
            await unload_adapter(provider_base_url, route[1], api_key=api_key, client=client)
        except DeployError as exc:
            if exc.kind != "not_loaded":
                raise
    return gateway.store.update_job(job.name, deployed=None)


def upstream_of(config: GatewayConfig, name: str) -> Upstream:
    """The provider `name` of a (merged) config as vLLM is reached: its preset's base URL filled in."""
    provider = config.providers.get(name)
    if provider is None:
        known = ", ".join(sorted(config.providers)) or "none"
        raise DeployError(f"no provider named {name!r}; known: {known}", "unknown_provider")
    _, filled, _ = resolve(provider)
    if not filled.base_url:
        raise DeployError(f"provider {name!r} has no base_url", "unknown_provider")
    return Upstream(name, filled.base_url, filled.api_key or None)


# --- export ---------------------------------------------------------------------------------------------------


async def export(
    job: JobRecord, venv: Path, *, base_model_dir: str | Path, job_dir: Path, limit_s: float = EXPORT_LIMIT_S
) -> Path:
    """Merge the job's adapter into its base model with `llamafactory-cli export` (the trainer's venv, a minimal
    environment, its own process group; log in export.log) and return `<job dir>/merged`."""
    folder = adapter_folder(job)
    merged = job_dir / "merged"
    config = llamafactory.export_config(base_model_dir, folder, merged, str(job.spec.get("template", "qwen")))
    yaml_path = llamafactory.write_yaml(job_dir / "export.yaml", config)
    home = job_dir / "home"
    home.mkdir(exist_ok=True)
    log = job_dir / "export.log"
    env = process.child_env(venv, home)
    run = await process.start(llamafactory.argv(venv, yaml_path, "export"), log_path=log, cwd=job_dir, env=env)
    try:
        status = await run.wait(limit_s)
    except BaseException:
        await asyncio.shield(run.cancel())
        raise
    if status != "succeeded":
        why = "timed out" if run.timed_out else f"exit status {run.returncode}"
        raise DeployError(f"export of {job.name!r} failed ({why}): {last_line(log)} (see {log})", "export_failed")
    return merged


# --- what the CLI runs ----------------------------------------------------------------------------------------


async def deploy_named(
    cfg: GatewayConfig,
    store: TrainerStore,
    name: str,
    provider: str,
    alias: str,
    *,
    adapter_name: str | None = None,
    lora_path: str | None = None,
    replace: bool = False,
) -> str:
    """`switchyard trainer deploy`: the provider found in the file and the database, as the gateway merges them."""
    job = store.job(name)
    async with Database(cfg.database_url, cfg.data_dir) as database, httpx.AsyncClient() as client:
        vllm = upstream_of(await served_config(cfg, database.engine), provider)
        done = await deploy(
            job,
            vllm.name,
            vllm.base_url,
            alias,
            gateway=Gateway(store, database.engine, cfg, actor="trainer-cli"),
            client=client,
            api_key=vllm.api_key,
            adapter_name=adapter_name,
            lora_path=lora_path,
            replace=replace,
        )
    deployed = done.deployed or {}
    return f"{done.name}: serving as model {alias!r} (adapter {deployed.get('adapter_name')!r} on {provider!r})"


async def undeploy_named(cfg: GatewayConfig, store: TrainerStore, name: str) -> str:
    """`switchyard trainer undeploy`: the alias removed, the adapter unloaded (unless its provider is gone)."""
    job = store.job(name)
    if not job.deployed:
        raise DeployError(f"job {name!r} is not deployed", "not_deployed")
    async with Database(cfg.database_url, cfg.data_dir) as database, httpx.AsyncClient() as client:
        merged = await served_config(cfg, database.engine)
        provider = str(job.deployed["provider"])
        vllm = upstream_of(merged, provider) if provider in merged.providers else None
        gateway = Gateway(store, database.engine, cfg, actor="trainer-cli")
        await undeploy(
            job, vllm.base_url if vllm else None, gateway=gateway, client=client, api_key=vllm.api_key if vllm else None
        )
    gone = "" if vllm else f" (provider {provider!r} is gone: nothing unloaded)"
    return f"{name}: model {job.deployed['alias']!r} removed{gone}"


def base_model_dir(service: TrainerService, job: JobRecord) -> Path:
    """The registered folder of the job's base model; DeployError when it is no longer registered."""
    base = str(job.spec.get("base_model", ""))
    if base not in service.config.base_models:
        raise DeployError(f"base model {base!r} is no longer under trainer.base_models", "not_ready")
    return Path(service.config.base_models[base])


async def export_named(service: TrainerService, name: str) -> str:
    """`switchyard trainer export`: the merged model's folder, in a line."""
    job = service.store.job(name)
    folder = base_model_dir(service, job)
    merged = await export(job, service.venv, base_model_dir=folder, job_dir=service.store.job_dir(name))
    return f"{name}: merged model in {merged}"


async def serve_command_for(
    service: TrainerService, name: str, template_file: str | None = None
) -> tuple[list[str], list[str]]:
    """`switchyard trainer serve-command`: the vLLM argv serving the job's adapter, and notes for the operator;
    without `template_file`, the job's chat template is checked against the base tokenizer's (check_template)."""
    job = service.store.job(name)
    folder, base = adapter_folder(job), base_model_dir(service, job)
    template = str(job.spec.get("template", "qwen"))
    notes = [f"to add adapters later with `switchyard trainer deploy`, start vLLM with {RUNTIME_ENV}=True"]
    if template_file is None:
        differs = await check_template(service.venv, base, template, service.store.job_dir(name))
        if differs is not None:
            notes.append(f"the base tokenizer's chat template differs from {template!r}, which the job trained with")
            template_file = str(differs)
    rank = rank_limit(adapter_rank(folder, job))
    argv = serve_command(base, {job.name: folder}, template_file=template_file, max_lora_rank=rank)
    return argv, notes


def dashboard_argv(venv: Path, logdir: Path, port: int) -> list[str]:
    """`swanlab watch` of the trainer's SwanLab folder on loopback (it wants a port of its own, not a sub-path)."""
    return [str(venv / "bin" / "swanlab"), "watch", str(logdir), "-h", "127.0.0.1", "-p", str(port)]
