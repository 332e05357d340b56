"""Live configuration: the file and the database merged, re-merged when either changes, in every process.

Every admin change bumps `config_version` in the database and NOTIFYs `switchyard_config`; each gateway process
LISTENs (the change lands at once) and also polls that one row twice a second (cheap, and it cannot miss a change
the way a dropped notification or a lost connection can), re-merging when it moved.
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
from gateway.admin.store.tables import CONFIG_CHANNEL
from gateway.config.loader import ConfigError, load_config
from gateway.config.model import GatewayConfig
from gateway.config.snapshot import ClientKey

log = logging.getLogger("switchyard.config")

POLL_INTERVAL = 0.5
Apply = Callable[[GatewayConfig, Mapping[str, ClientKey], GatewayConfig], None]
"""(merged config, managed keys, the file's own config) -> None."""


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
        self._listener: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._sighup = False

    def _file_mtime(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime if self.path else None
        except OSError:
            return None

    async def refresh(self) -> bool:
        """Merge the file and the database now and apply the result; False (old config kept) when it is invalid."""
        engine = self.engine()
        if engine is None:
            self.apply(self.file_config, {}, self.file_config)
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
        self.apply(merged, managed_keys(keys, merged, team_names, usernames, datetime.now(UTC)), self.file_config)
        self.merged, self.version = merged, version
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-config")
        self._listener = asyncio.create_task(self._listen(), name="live-config-listen")
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)

    def _hangup(self) -> None:
        self._sighup = True
        self._wake.set()

    async def stop(self) -> None:
        for task in (self._task, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _listen(self) -> None:
        """LISTEN for the change notifications, so a change lands at once; the poll stays as the backstop."""
        while True:
            engine = self.engine()
            try:
                if engine is not None:
                    async with engine.connect() as conn:
                        raw = (await conn.get_raw_connection()).driver_connection
                        if raw is None:
                            raise RuntimeError("no driver connection")
                        await raw.add_listener(CONFIG_CHANNEL, lambda *_: self._wake.set())
                        await asyncio.Event().wait()  # hold the connection; cancelled at stop
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: the poll carries on, listen again later
                log.debug("config listener stopped: %s", type(exc).__name__)
            await asyncio.sleep(5)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await self._wake.wait()
            forced, self._sighup = self._sighup, False
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
