"""`switchyard db upgrade` and `switchyard usage`: the database and the usage ledger from the terminal."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.config.model import GatewayConfig
from gateway.metering.reports import GROUPS, parse_since, usage_report
from gateway.store.engine import Database, migrate_database
from gateway.store.errors import DatabaseError

COLUMNS = (
    "requests",
    "errors",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cost",
    "currency",
    "latency_p50_ms",
    "latency_p95_ms",
)


def db_upgrade(cfg: GatewayConfig) -> int:
    try:
        revision = asyncio.run(migrate_database(cfg.database_url, cfg.data_dir))
    except DatabaseError as exc:
        print(f"database: {exc}", file=sys.stderr)
        return 1
    print(f"database at revision {revision}")
    return 0


async def _report(cfg: GatewayConfig, since: datetime, by: list[str]) -> list[dict[str, Any]]:
    async with Database(cfg.database_url, cfg.data_dir, migrate=False) as database:
        return await usage_report(database.engine, since, by)


def usage(cfg: GatewayConfig, args: argparse.Namespace) -> int:
    by = [part.strip() for part in args.by.split(",") if part.strip()]
    try:
        since = parse_since(args.since, datetime.now(UTC))
        rows = asyncio.run(_report(cfg, since, by))
    except ValueError as exc:
        print(f"usage: {exc}", file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print(f"database: {exc}", file=sys.stderr)
        return 1
    print(render(rows, by, args.format), end="")
    return 0


def render(rows: list[dict[str, Any]], by: list[str], form: str) -> str:
    """The report as JSON (a list of objects), CSV, or an aligned table."""
    if form == "json":
        return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n"
    columns = [*by, *COLUMNS]
    if form == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    if not rows:
        lines.append("(no usage in this period)")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def add_commands(commands: Any, load: Any) -> None:
    """Register `db upgrade` and `usage` on the CLI's subparsers; `load(path)` reads a config (None if invalid)."""

    def with_config(run: Any) -> Any:
        def command(args: argparse.Namespace) -> int:
            cfg = load(args.config)
            return 1 if cfg is None else int(run(cfg, args))

        return command

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply the schema migrations")
    upgrade.add_argument("--config", required=True, help="path to gateway.yaml")
    upgrade.set_defaults(func=with_config(lambda cfg, _args: db_upgrade(cfg)))
    report = commands.add_parser("usage", help="tokens, cost and requests from the usage ledger")
    report.add_argument("--config", required=True, help="path to gateway.yaml")
    report.add_argument("--since", default="7d", help="how far back: 30m, 24h, 7d, 2w or an ISO date (default 7d)")
    report.add_argument("--by", default="alias", help=f"group by, comma-separated: {', '.join(GROUPS)}")
    report.add_argument("--format", choices=("table", "json", "csv"), default="table")
    report.set_defaults(func=with_config(usage))
