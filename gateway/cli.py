"""The `switchyard` command: serve, check-config, test-routes, db upgrade, usage, secrets rotate, kb, trainer."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import uvicorn

from gateway.admin.cli import add_commands as add_secret_commands
from gateway.app import CONFIG_ENV
from gateway.config.loader import ConfigError, load_config
from gateway.config.model import GatewayConfig
from gateway.config.snapshot import build_snapshot
from gateway.metering.cli import add_commands
from gateway.rag.cli import add_commands as add_kb_commands
from gateway.routing.probe import ProbeResult, probe_all
from gateway.upstream.aiohttp_client import AiohttpUpstream
from plugins.providers.base import AdapterSettings
from plugins.providers.registry import NEEDS_BASE_URL, create_adapter, provider_types
from trainer.cli import add_commands as add_trainer_commands


def _load(path: str) -> GatewayConfig | None:
    try:
        return load_config(path, provider_types(), needs_base_url=NEEDS_BASE_URL)
    except ConfigError as exc:
        print(f"{path}: invalid config", file=sys.stderr)
        for line in exc.lines():
            print(f"  {line}", file=sys.stderr)
        return None


def check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    print(f"{args.config}: ok ({len(cfg.providers)} providers, {len(cfg.models)} models, {len(cfg.keys)} keys)")
    return 0


def serve(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    uvicorn.run(
        "gateway.app:app_from_env",
        factory=True,
        host=args.host or cfg.server.host,
        port=args.port or cfg.server.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="info",
        server_header=False,
        # A worker starting on a busy machine (embedded PostgreSQL, migrations) may not answer the supervisor's
        # health ping within uvicorn's default 5 s, and would be killed and restarted in a loop.
        timeout_worker_healthcheck=60,
        timeout_graceful_shutdown=10,
    )
    return 0


def test_routes(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 1
    unknown = [a for a in args.alias or [] if a not in cfg.models]
    if unknown:
        print(f"no model alias named {', '.join(unknown)}", file=sys.stderr)
        return 1
    results = asyncio.run(_probe(cfg, args.alias or None))
    width = max([len(r.alias) for r in results] + [5])
    route_width = max([len(r.route) for r in results] + [5])
    print(f"{'alias':<{width}}  {'route':<{route_width}}  result  {'ms':>8}  error")
    for r in results:
        status = "ok" if r.ok else "FAILED"
        print(f"{r.alias:<{width}}  {r.route:<{route_width}}  {status:<6}  {r.latency_ms:8.1f}  {r.error or ''}")
    return 0 if all(r.ok for r in results) else 1


async def _probe(cfg: GatewayConfig, aliases: list[str] | None) -> list[ProbeResult]:
    client = AiohttpUpstream()
    try:
        settings = AdapterSettings(max_response_bytes=cfg.server.max_response_bytes)
        adapters = {name: create_adapter(name, p, client, settings) for name, p in cfg.providers.items()}
        return await probe_all(build_snapshot(cfg, adapters), aliases)
    finally:
        await client.aclose()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description="Switchyard LLM gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the gateway")
    run.add_argument("--config", required=True, help="path to gateway.yaml")
    run.add_argument("--host", help="bind address (default: server.host from the config)")
    run.add_argument("--port", type=int, help="port (default: server.port from the config)")
    run.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    run.set_defaults(func=serve)
    check = commands.add_parser("check-config", help="validate a config file and print every problem")
    check.add_argument("config", help="path to gateway.yaml")
    check.set_defaults(func=check_config)
    probe = commands.add_parser("test-routes", help="send a tiny request through every route and report")
    probe.add_argument("--config", required=True, help="path to gateway.yaml")
    probe.add_argument("--alias", action="append", help="only this alias (repeatable)")
    probe.set_defaults(func=test_routes)
    add_commands(commands, _load)
    add_secret_commands(commands, _load)
    add_kb_commands(commands, _load)
    add_trainer_commands(commands, _load)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
