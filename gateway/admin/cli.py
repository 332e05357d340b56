"""`switchyard secrets rotate`: re-encrypt every stored provider credential under the current
SWITCHYARD_SECRET_KEY (after moving the old key to SWITCHYARD_SECRET_KEY_OLD)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from gateway.admin.security.crypto import DecryptionError, SecretBox, load_box
from gateway.admin.store import repo
from gateway.config.model import GatewayConfig
from gateway.store.engine import Database
from gateway.store.errors import DatabaseError


async def rotate(cfg: GatewayConfig, box: SecretBox) -> tuple[int, int]:
    """(rotated, already current) provider credentials; one transaction, audited, live in every process."""
    rotated = current = 0
    async with Database(cfg.database_url, cfg.data_dir) as database, database.engine.begin() as conn:
        for row in await repo.list_providers(conn):
            token = row["api_key_enc"]
            if not token:
                continue
            if not box.needs_rotation(token):
                current += 1
                continue
            fresh = box.rotate(token, context=row["name"])
            after = await repo.update_provider(conn, row["id"], {"api_key_enc": fresh})
            await repo.append_audit(conn, "system", "rotate-secret", "provider", row["name"], row, after, None)
            rotated += 1
        if rotated:
            await repo.bump_version(conn)
    return rotated, current


def secrets_rotate(cfg: GatewayConfig, _args: argparse.Namespace) -> int:
    try:
        box = load_box(os.environ)
        rotated, current = asyncio.run(rotate(cfg, box))
    except ValueError as exc:
        print(f"secrets: {exc}", file=sys.stderr)
        return 2
    except (DatabaseError, DecryptionError) as exc:
        print(f"secrets: {exc}", file=sys.stderr)
        return 1
    print(f"re-encrypted {rotated} provider credential(s); {current} already under the current key")
    return 0


def add_commands(commands: Any, load: Any) -> None:
    """Register `secrets rotate` on the CLI's subparsers; `load(path)` reads a config (None if invalid)."""

    def command(args: argparse.Namespace) -> int:
        cfg = load(args.config)
        return 1 if cfg is None else secrets_rotate(cfg, args)

    group = commands.add_parser("secrets", help="stored provider credentials")
    sub = group.add_subparsers(dest="secrets_command", required=True)
    rot = sub.add_parser("rotate", help="re-encrypt stored provider credentials under the current key")
    rot.add_argument("--config", required=True, help="path to gateway.yaml")
    rot.set_defaults(func=command)
