"""What every admin route needs: the database, the token issuer, the login throttle, the live config, and who is
calling (a `Principal`, checked against the route's declared role by `role_guard`)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import orjson
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.params import PathParameter
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.admin.live import LiveConfig
from gateway.admin.security import InvalidToken, LoginThrottle, TokenIssuer
from gateway.admin.security.crypto import SecretBox
from gateway.admin.security.ssrf import UrlPolicy
from gateway.admin.store import repo
from gateway.config.model import GatewayConfig
from gateway.config.snapshot import Snapshot
from gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied, Unavailable
from gateway.rag.service import KnowledgeService
from trainer.scheduler import Scheduler

M = TypeVar("M", bound=BaseModel)
Role = Literal["owner", "admin", "member", "viewer"]
RANK: Mapping[str, int] = {"viewer": 1, "member": 2, "admin": 3, "owner": 4}
PUBLIC = "public"
"""The declared role of the routes that need no login (login and refresh themselves)."""


@dataclass(frozen=True, slots=True)
class Principal:
    id: int
    username: str
    role: str
    team_id: int | None

    def at_least(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


@dataclass(slots=True)
class AdminContext:
    engine_source: Callable[[], AsyncEngine | None]
    issuer: TokenIssuer
    throttle: LoginThrottle
    live: LiveConfig
    box: SecretBox | None
    """Encrypts provider credentials; None when SWITCHYARD_SECRET_KEY is not set (no credentials via the API)."""
    url_policy: UrlPolicy
    snapshot: Callable[[], Snapshot]
    knowledge: KnowledgeService
    scheduler: Scheduler
    """Fine-tuning: its `service` (datasets, jobs, the trainer config) and `store`; cancels running jobs."""
    refresh_ttl: int = 14 * 24 * 3600

    @property
    def engine(self) -> AsyncEngine:
        engine = self.engine_source()
        if engine is None:
            raise Unavailable("the admin API needs the database, which is not available", code="admin_unavailable")
        return engine

    @property
    def file_config(self) -> GatewayConfig:
        return self.live.file_config

    async def principal(self, request: ASGIConnection[Any, Any, Any, Any]) -> Principal:
        """The caller, from `Authorization: Bearer <access token>` (the user must still exist and be enabled), or
        the config's `admin_key`, which acts as an owner (for scripts)."""
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("log in first: send 'Authorization: Bearer <access_token>'")
        admin_key = self.file_config.admin_key
        if admin_key and hmac.compare_digest(token.strip().encode(), admin_key.encode()):
            return Principal(0, "admin-key", "owner", None)
        try:
            claims = self.issuer.verify_access(token.strip())
        except InvalidToken as exc:
            raise AuthenticationFailed(exc.message) from None
        async with self.engine.connect() as conn:
            try:
                user = await repo.get_user(conn, int(claims.subject))
            except (repo.NotFoundError, ValueError):
                raise AuthenticationFailed("this account no longer exists") from None
        if user["disabled"] or user["role"] != claims.role:
            raise AuthenticationFailed("this session is no longer valid: log in again")
        return Principal(user["id"], user["username"], user["role"], user["team_id"])

    async def audit(  # noqa: PLR0917 - an audit entry's fields, in order
        self,
        conn: AsyncConnection,
        who: Principal | str,
        action: str,
        what: tuple[str, str | int | None],
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        ip: str | None,
    ) -> None:
        """Record a change and announce a new config version, in the change's own transaction."""
        actor = who.username if isinstance(who, Principal) else who
        await repo.append_audit(conn, actor, action, what[0], what[1], before, after, ip)
        await repo.bump_version(conn)


Name = Annotated[str, PathParameter(min_length=1, max_length=200)]
"""A name in a path (a provider, a model alias), or an id or a name (teams, users by username, keys)."""


def as_id(ref: str) -> int | None:
    """The row id a path reference names, when it is a number that fits 64 bits; None means it is a name."""
    return int(ref) if ref.isascii() and ref.isdigit() and len(ref) <= 18 else None


Ctx = NamedDependency[AdminContext]
"""How a route handler asks for the context (the admin router provides it as `ctx`)."""


def client_ip(request: Request[Any, Any, Any]) -> str | None:
    client = request.scope.get("client")
    return str(client[0]) if client else None


async def body_of(request: Request[Any, Any, Any], model: type[M]) -> M:
    """The JSON body as `model`; a 400 naming the first bad field otherwise."""
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body must be JSON", code="invalid_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise InvalidRequest(f"{where}: {message}" if where else message, param=where) from None


def role_guard(context: Callable[[], AdminContext]) -> Callable[..., Any]:
    """A Litestar guard: the route's `opt["role"]` is the least role that may call it; the caller goes to
    `request.state.principal`. A route without a declared role is refused for everyone."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        needed = str(handler.opt.get("role"))
        if needed == PUBLIC:
            return
        if needed not in RANK:
            raise PermissionDenied("this route declares no role")
        who = await context().principal(connection)
        if not who.at_least(needed):
            raise PermissionDenied(f"this needs the {needed} role or higher")
        connection.state.principal = who

    return guard


def caller(request: Request[Any, Any, Any]) -> Principal:
    who: Principal = request.state.principal
    return who
