"""The admin API of one gateway process: its routes behind the role guard, the live config, the owner bootstrap.

The first start with no users creates an owner (`SWITCHYARD_ADMIN_USER`, default `admin`) whose password is
`SWITCHYARD_ADMIN_PASSWORD` or a random one printed once to the console; there is no default password.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from litestar import Router
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.admin.context import AdminContext, role_guard
from gateway.admin.live import LiveConfig
from gateway.admin.routes_audit import AUDIT_ROUTES
from gateway.admin.routes_auth import AUTH_ROUTES
from gateway.admin.routes_config import CONFIG_ROUTES, MODEL_ROUTES
from gateway.admin.routes_deploy import DEPLOY_ROUTES
from gateway.admin.routes_kb import KB_ROUTES
from gateway.admin.routes_keyinfo import key_info_routes
from gateway.admin.routes_keys import KEY_ROUTES
from gateway.admin.routes_people import TEAM_ROUTES, USER_ROUTES
from gateway.admin.routes_training import TRAINING_ROUTES
from gateway.admin.routes_usage import ADMIN_USAGE_ROUTES
from gateway.admin.security import LoginThrottle, TokenIssuer, generate_password, hash_password, load_secret
from gateway.admin.security.crypto import SecretBox, load_box
from gateway.admin.security.ssrf import UrlPolicy
from gateway.admin.store import repo
from gateway.config.loader import ConfigError
from gateway.runtime import Runtime
from plugins.providers.registry import NEEDS_BASE_URL, provider_types

log = logging.getLogger("switchyard.admin")


def _box(env: Mapping[str, str]) -> SecretBox | None:
    if not env.get("SWITCHYARD_SECRET_KEY"):
        return None
    return load_box(env)


class AdminService:
    def __init__(self, runtime: Runtime, config_path: Path | None, env: Mapping[str, str] | None = None) -> None:
        self.runtime = runtime
        self.env = os.environ if env is None else env
        config = runtime.config
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        box = _box(self.env)
        self.live = LiveConfig(
            config_path,
            config,
            self._engine,
            lambda token, name: self._decrypt(box, token, name),
            runtime.apply,
            provider_types=provider_types(),
            needs_base_url=NEEDS_BASE_URL,
        )
        policy = config.provider_urls
        self.context = AdminContext(
            engine_source=self._engine,
            issuer=TokenIssuer(load_secret(self.env, data_dir)),
            throttle=LoginThrottle(),
            live=self.live,
            box=box,
            url_policy=UrlPolicy(policy.allow_private, frozenset(policy.allow_hosts), frozenset(policy.deny_hosts)),
            snapshot=lambda: runtime.snapshot,
            knowledge=runtime.knowledge,
            scheduler=runtime.scheduler,
        )

    @staticmethod
    def _decrypt(box: SecretBox | None, token: str, name: str) -> str:
        if box is None:
            raise ConfigError([(f"providers.{name}.api_key", "stored encrypted, but SWITCHYARD_SECRET_KEY is not set")])
        return box.decrypt(token, context=name)

    def _engine(self) -> AsyncEngine | None:
        return self.runtime.engine()

    def router(self) -> Router:
        """Every `/admin/api/` route, behind the role guard, with the context injected as `ctx`."""
        ctx = self.context
        handlers = [
            *AUTH_ROUTES,
            *TEAM_ROUTES,
            *USER_ROUTES,
            *KEY_ROUTES,
            *CONFIG_ROUTES,
            *MODEL_ROUTES,
            *AUDIT_ROUTES,
            *ADMIN_USAGE_ROUTES,
            *KB_ROUTES,
            *TRAINING_ROUTES,
            *DEPLOY_ROUTES,
        ]
        return Router(
            path="/",
            route_handlers=handlers,
            guards=[role_guard(lambda: ctx)],
            dependencies={"ctx": Provide(lambda: ctx, sync_to_thread=False)},
        )

    def data_plane_routes(self) -> list[HTTPRouteHandler]:
        return key_info_routes(self.runtime, self.runtime.metering.budgets)

    async def start(self) -> None:
        engine = self._engine()
        if engine is not None:
            try:
                await self._bootstrap()
                await self.live.refresh()
            except Exception as exc:  # the database may be away: serve the file config, retry in the loop
                log.warning("admin: could not read the managed config at start (%s)", type(exc).__name__)
        self.live.start()

    async def stop(self) -> None:
        await self.live.stop()

    async def _bootstrap(self) -> None:
        engine = self.context.engine
        if await repo.count_users(engine) > 0:
            return
        username = self.env.get("SWITCHYARD_ADMIN_USER") or "admin"
        given = self.env.get("SWITCHYARD_ADMIN_PASSWORD")
        password = given or generate_password()
        hashed = await asyncio.to_thread(hash_password, password)
        try:
            async with engine.begin() as conn:
                user = await repo.create_user(conn, username, hashed, "owner")
                await repo.append_audit(conn, "system", "create", "user", user["id"], None, user, None)
        except repo.Conflict:
            return  # another worker process created it first
        if given:
            print(
                f"Switchyard: created the owner account '{username}' (password from SWITCHYARD_ADMIN_PASSWORD)",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(
                f"Switchyard: created the owner account '{username}' with the password {password} "
                "(shown once: log in and change it)",
                file=sys.stderr,
                flush=True,
            )
