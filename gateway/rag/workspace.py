"""What a `switchyard kb` command works in: the database, and, only for knowledge bases embedded through an alias,
provider adapters over one upstream client and a router for the config file's aliases merged with those stored in
the database (as the gateway serves them). No metering, limits or background tasks run."""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Final, Self

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.admin.merge import merge
from gateway.admin.security.crypto import KEY_ENV, DecryptionError, SecretBox, load_box
from gateway.admin.security.ssrf import PinnedResolver
from gateway.admin.store import repo as admin_repo
from gateway.config.loader import ConfigError
from gateway.config.model import GatewayConfig
from gateway.config.snapshot import Snapshot, build_snapshot
from gateway.errors import Unavailable
from gateway.rag.internal import InternalCalls
from gateway.rag.service import KnowledgeService
from gateway.rag.store import repo
from gateway.rag.store.repo import KnowledgeBase
from gateway.rag.store.tables import LOCAL_EMBEDDER
from gateway.routing.health import MemoryHealth
from gateway.routing.router import Router
from gateway.routing.stats import RouteStats
from gateway.runtime import connect_policy
from gateway.store.engine import Database
from gateway.store.errors import DatabaseError
from gateway.upstream.aiohttp_client import AiohttpUpstream
from plugins.providers.base import AdapterSettings
from plugins.providers.registry import NEEDS_BASE_URL, create_adapter, provider_types

USAGE: Final = 2
FAILED: Final = 1


class CliError(Exception):
    """A one-line message for stderr, and the exit status."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


def usage_error(message: str) -> CliError:
    return CliError(message, USAGE)


class Snapshots:
    """The `.snapshot` that internal calls route by; set by `Workspace.route`."""

    def __init__(self) -> None:
        self.current: Snapshot | None = None

    @property
    def snapshot(self) -> Snapshot:
        if self.current is None:
            raise Unavailable("the model aliases are not loaded", code="not_ready")
        return self.current


class Workspace:
    """What a `kb` command runs against: the database (started on first use) and, on request, the aliases."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.database = Database(cfg.database_url, cfg.data_dir)
        self.snapshots = Snapshots()
        self.calls = InternalCalls(self.snapshots, Router(MemoryHealth(), RouteStats()))
        self.service = KnowledgeService(self._engine_or_none, self.calls, cfg.rag, warm_up=False)
        self._client: AiohttpUpstream | None = None

    def _engine_or_none(self) -> AsyncEngine | None:
        try:
            return self.database.engine
        except DatabaseError:
            return None

    async def engine(self) -> AsyncEngine:
        """The database's pool, connecting (and migrating) first when needed."""
        await self.database.start()
        return self.database.engine

    async def kb(self, name: str) -> KnowledgeBase:
        """The knowledge base of this name; a usage error when there is none."""
        async with (await self.engine()).connect() as conn:
            found = await repo.get_knowledge_base(conn, name)
        if found is None:
            raise usage_error(f"no knowledge base named {name!r} (see `switchyard kb list`)")
        return found

    async def route(self, embedding: str) -> None:
        """Make the aliases callable when `embedding` is one (the `local` model needs none of this)."""
        if embedding == LOCAL_EMBEDDER or self.snapshots.current is not None:
            return
        config = await served_config(self.cfg, await self.engine())
        self._client = AiohttpUpstream(resolver=PinnedResolver(connect_policy(self.cfg)))
        limit = config.server.max_response_bytes
        settings = AdapterSettings(max_response_bytes=limit, max_event_bytes=min(limit, 8 * 1024 * 1024))
        adapters = {name: create_adapter(name, p, self._client, settings) for name, p in config.providers.items()}
        self.snapshots.current = build_snapshot(config, adapters)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.service.stop()
        if self._client is not None:
            await self._client.aclose()
        await self.database.close()


async def served_config(cfg: GatewayConfig, engine: AsyncEngine) -> GatewayConfig:
    """The file config with the providers, models and teams stored in the database, as the gateway merges them;
    the file's alone (with a note on stderr) when the stored part cannot be used."""
    async with engine.connect() as conn:
        providers, models = await admin_repo.list_providers(conn), await admin_repo.list_models(conn)
        teams = await admin_repo.list_teams(conn)
    try:
        box = load_box(os.environ) if os.environ.get(KEY_ENV) else None
        return merge(
            cfg,
            providers,
            models,
            teams,
            decrypt=lambda token, name: _decrypt(box, token, name),
            provider_types=provider_types(),
            needs_base_url=NEEDS_BASE_URL,
        )
    except (ConfigError, DecryptionError, ValueError) as exc:
        reason = exc.lines()[0] if isinstance(exc, ConfigError) else str(exc) or type(exc).__name__
        print(f"note: the providers and models stored in the database are not used: {reason}", file=sys.stderr)
        return cfg


def _decrypt(box: SecretBox | None, token: str, name: str) -> str:
    if box is None:
        raise ConfigError([(f"providers.{name}.api_key", f"stored encrypted, but {KEY_ENV} is not set")])
    return box.decrypt(token, context=name)
