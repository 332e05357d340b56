"""The state of one gateway process: config snapshot, pooled upstream client, adapters.

Created by the app factory; started and stopped by the app's lifespan. Handlers read `snapshot`.
"""

from __future__ import annotations

import gc

from gateway.config.model import GatewayConfig
from gateway.config.snapshot import Snapshot, build_snapshot
from gateway.errors import GatewayError
from gateway.routing.health import MemoryHealth
from gateway.routing.router import Router
from gateway.upstream.aiohttp_client import AiohttpUpstream
from gateway.upstream.client import UpstreamClient
from plugins.providers.base import AdapterSettings
from plugins.providers.registry import create_adapter


class NotReady(GatewayError):
    status = 503
    type = "server_error"
    code = "not_ready"


class Runtime:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._snapshot: Snapshot | None = None
        self._client: UpstreamClient | None = None
        self.health = MemoryHealth()
        self.router = Router(self.health)

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            raise NotReady("the gateway is starting")
        return self._snapshot

    @property
    def ready(self) -> bool:
        return self._snapshot is not None and self._client is not None and self._client.ready

    async def start(self) -> None:
        client = AiohttpUpstream()
        limit = self.config.server.max_response_bytes
        settings = AdapterSettings(max_response_bytes=limit, max_event_bytes=min(limit, 8 * 1024 * 1024))
        adapters = {
            name: create_adapter(name, provider, client, settings) for name, provider in self.config.providers.items()
        }
        self._client = client
        self._snapshot = build_snapshot(self.config, adapters)
        gc.collect()
        gc.freeze()  # start-up objects live forever: keep them out of every later collection

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
