"""Live configuration: the file and the database merged, re-merged when either changes, in every process.

Every admin change bumps `config_version` in the database; each gateway process polls that one row twice a
second (cheap, and it cannot miss a change the way a dropped notification can) and re-merges when it moved.
The config file is re-read when its modification time changes or on SIGHUP; an invalid file is refused and
the last good config stays. The request path only ever sees a finished, validated snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.admin.merge import Decrypt, managed_keys, merge
from gateway.admin.store import repo
from gateway.config.loader import ConfigError, load_config
from gateway.config.model import GatewayConfig
from gateway.config.snapshot import ClientKey

log = logging.getLogger("switchyard.config")

POLL_INTERVAL = 0.5
Apply = Callable[[GatewayConfig, Mapping[str, ClientKey]], None]


class LiveConfig:
    def __init__(
        self,
        path: Path | None,
        file_config: GatewayConfig,
        engine: Callable[[], AsyncEngine | None],
        decrypt: Decrypt,
        apply: Apply,
        *,
        provider_types: list[str],
        needs_base_url: frozenset[str],
    ) -> None:
        self.path = path
        self.file_config = file_config
        self.engine = engine
        self.decrypt = decrypt
        self.apply = apply
        self.provider_types = provider_types
        self.needs_base_url = needs_base_url
        self.version: int | None = None
        self.merged = file_config
        self._mtime = self._file_mtime()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def _file_mtime(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime if self.path else None
        except OSError:
            return None

    async def refresh(self) -> bool:
        """Merge the file and the database now and apply the result; False (old config kept) when it is invalid."""
        engine = self.engine()
        if engine is None:
            self.apply(self.file_config, {})
            return True
        async with engine.connect() as conn:
            version = await repo.get_version(conn)
            providers, models = await repo.list_providers(conn), await repo.list_models(conn)
            teams, users, keys = (
                await repo.list_teams(conn),
                await repo.list_users(conn),
                await repo.list_api_keys(conn),
            )
        try:
            merged = merge(
                self.file_config,
                providers,
                models,
                teams,
                decrypt=self.decrypt,
                provider_types=self.provider_types,
                needs_base_url=self.needs_base_url,
            )
        except ConfigError as exc:
            log.error("config version %s not applied, the last good one stays: %s", version, "; ".join(exc.lines()))
            self.version = version
            return False
        team_names = {t["id"]: t["name"] for t in teams}
        usernames = {u["id"]: u["username"] for u in users}
        self.apply(merged, managed_keys(keys, merged, team_names, usernames, datetime.now(UTC)))
        self.merged, self.version = merged, version
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-config")
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._wake.set)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await self._wake.wait()
            forced = self._wake.is_set()
            self._wake.clear()
            try:
                await self._tick(forced)
            except Exception as exc:  # the database may be away; the current config keeps serving
                log.warning("config refresh failed: %s", type(exc).__name__)

    async def _tick(self, forced: bool) -> None:
        mtime = self._file_mtime()
        if forced or mtime != self._mtime:
            self._mtime = mtime
            if not self._reload_file():
                return
            await self.refresh()
            return
        engine = self.engine()
        if engine is None:
            return
        async with engine.connect() as conn:
            version = await repo.get_version(conn)
        if version != self.version:
            await self.refresh()

    def _reload_file(self) -> bool:
        if self.path is None:
            return True
        try:
            self.file_config = load_config(self.path, self.provider_types, needs_base_url=self.needs_base_url)
        except ConfigError as exc:
            log.error("%s not reloaded, the running config stays: %s", self.path, "; ".join(exc.lines()))
            return False
        log.warning("%s reloaded", self.path)
        return True
