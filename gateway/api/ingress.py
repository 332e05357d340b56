"""Ingress formats other than OpenAI's chat completions, as data: how a request becomes canonical and how the
canonical answer, stream and errors go back. The OpenAI endpoints use none of this (the fast path)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from gateway.errors import GatewayError
from gateway.protocol import anthropic, responses
from gateway.protocol.openai import RESPONSES, Operation
from gateway.protocol.responses_stream import RelayEncoder


class EventEncoder(Protocol):
    """Canonical stream payloads in, the client's stream events out."""

    def chunk(self, payload: bytes) -> bytes: ...

    def end(self) -> bytes: ...

    def error(self, exc: GatewayError) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Ingress:
    name: str
    request: Callable[[dict[str, Any]], dict[str, Any]]
    """The client's request -> the canonical chat request (raises InvalidRequest)."""
    answer: Callable[[bytes, dict[str, Any]], bytes]
    """The canonical chat.completion -> the client's answer, given the client's original request."""
    encoder: Callable[[dict[str, Any]], EventEncoder]
    error: Callable[[GatewayError], bytes] | None
    """The client's error body; None for OpenAI's."""
    native: Ingress | None = None
    """The pass-through form of this API, used when every route of an alias serves the API itself."""
    native_op: Operation | None = None
    """On a pass-through form: the operation the adapters are called with."""


INGRESSES: Mapping[str, Ingress] = MappingProxyType(
    {
        "anthropic": Ingress(
            "anthropic",
            anthropic.to_openai,
            lambda completion, _request: anthropic.to_message(completion),
            lambda _request: anthropic.StreamEncoder(),
            anthropic.error_body,
        ),
        "responses": Ingress(
            "responses",
            responses.to_openai,
            responses.to_response,
            responses.StreamEncoder,
            None,
            native=Ingress(
                "responses",
                lambda body: body,
                lambda answer, _request: answer,
                lambda _request: RelayEncoder(),
                None,
                native_op=RESPONSES,
            ),
        ),
    }
)
