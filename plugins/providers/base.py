"""The provider adapter interface (strategy pattern): one class per upstream API, registered by name.

An adapter receives the canonical request (OpenAI wire format, already validated, as a dict) and a context,
talks to its upstream through the shared UpstreamClient, and returns canonical bytes: a JSON body, or
batches of SSE event payloads. It reads no globals and knows nothing of routing, retries or auth.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from gateway.config.model import ProviderConfig
from gateway.errors import InvalidRequest
from gateway.upstream.client import Timeouts, UpstreamClient

EventBatches = AsyncGenerator[list[bytes], None]
"""SSE event payloads (the `data:` values, `[DONE]` included) grouped as they arrived from upstream."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    chat: bool = True
    stream: bool = True
    completions: bool = False
    embeddings: bool = False
    tools: bool = False
    vision: bool = False
    responses: bool = False
    reasoning: bool = False


@dataclass(frozen=True, slots=True)
class CallContext:
    request_id: str
    upstream_model: str
    timeouts: Timeouts
    """This attempt's limits: the route's, cut to what is left of the request's deadline."""


@dataclass(frozen=True, slots=True)
class AdapterSettings:
    """Gateway-wide limits an adapter must honour."""

    max_response_bytes: int = 64 * 1024 * 1024
    max_event_bytes: int = 8 * 1024 * 1024


def merge_headers(base: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """`base` with `overrides` applied, header names compared without regard to case."""
    lowered = {name.lower() for name in overrides}
    return {**{k: v for k, v in base.items() if k.lower() not in lowered}, **overrides}


class ProviderAdapter:
    """Base class; an adapter overrides what its upstream supports. The defaults refuse with a clear 400."""

    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient, settings: AdapterSettings) -> None:
        self.name = name
        self.config = config
        self.client = client
        self.settings = settings
        self.rewrite: Callable[[dict[str, Any]], None] | None = None
        """A vendor preset's adjustment of the canonical request, applied before it is sent."""
        self.speaks_responses = False
        """The upstream serves the Responses API, so `/v1/responses` passes through to it unchanged."""

    def secrets(self) -> tuple[str, ...]:
        """Values that must never leave the gateway in a message or log line."""
        return (self.config.api_key,) if self.config.api_key else ()

    def _unsupported(self, what: str) -> InvalidRequest:
        return InvalidRequest(f"provider '{self.name}' does not support {what}", code="unsupported_operation")

    async def chat(self, body: dict[str, Any], ctx: CallContext) -> bytes:
        raise self._unsupported("chat completions")

    async def chat_stream(self, body: dict[str, Any], ctx: CallContext) -> EventBatches:
        raise self._unsupported("streaming chat completions")

    async def completions(self, body: dict[str, Any], ctx: CallContext) -> bytes:
        raise self._unsupported("text completions")

    async def completions_stream(self, body: dict[str, Any], ctx: CallContext) -> EventBatches:
        raise self._unsupported("streaming text completions")

    async def embeddings(self, body: dict[str, Any], ctx: CallContext) -> bytes:
        raise self._unsupported("embeddings")

    async def responses(self, body: dict[str, Any], ctx: CallContext) -> bytes:
        raise self._unsupported("the Responses API")

    async def responses_stream(self, body: dict[str, Any], ctx: CallContext) -> EventBatches:
        raise self._unsupported("the Responses API")

    async def stored_response(self, method: str, path: str, ctx: CallContext) -> bytes:
        """GET or DELETE `/responses/{path}` (a stored response, its input items) at the upstream."""
        raise self._unsupported("stored responses")

    async def list_models(self, ctx: CallContext) -> list[str]:
        return []


Call = Callable[[ProviderAdapter, dict[str, Any], CallContext], Awaitable[bytes]]
StreamCall = Callable[[ProviderAdapter, dict[str, Any], CallContext], Awaitable[EventBatches]]

# Operation name (see gateway.protocol.openai) -> adapter method; late-bound so subclasses' overrides apply.
CALLS: Mapping[str, Call] = MappingProxyType(
    {
        "chat": lambda adapter, body, ctx: adapter.chat(body, ctx),
        "completions": lambda adapter, body, ctx: adapter.completions(body, ctx),
        "embeddings": lambda adapter, body, ctx: adapter.embeddings(body, ctx),
        "responses": lambda adapter, body, ctx: adapter.responses(body, ctx),
    }
)
STREAM_CALLS: Mapping[str, StreamCall] = MappingProxyType(
    {
        "chat": lambda adapter, body, ctx: adapter.chat_stream(body, ctx),
        "completions": lambda adapter, body, ctx: adapter.completions_stream(body, ctx),
        "responses": lambda adapter, body, ctx: adapter.responses_stream(body, ctx),
    }
)
