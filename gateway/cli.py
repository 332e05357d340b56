"""`switchyard serve` and `switchyard check-config`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import uvicorn

from gateway.app import CONFIG_ENV
from gateway.config.loader import ConfigError, load_config
from gateway.config.model import GatewayConfig
from plugins.providers.registry import provider_types


def _load(path: str) -> GatewayConfig | None:
    try:
        return load_config(path, provider_types())
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
        timeout_graceful_shutdown=10,
    )
    return 0


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
