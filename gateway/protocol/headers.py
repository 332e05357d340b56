"""The request headers the gateway acts on, read in one pass over ASGI's header list."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(slots=True)
class RequestHeaders:
    authorization: bytes | None = None
    x_api_key: bytes | None = None
    api_key: bytes | None = None
    content_type: bytes | None = None
    content_length: bytes | None = None
    cache_control: bytes | None = None


_WANTED: Mapping[bytes, str] = MappingProxyType(
    {
        b"authorization": "authorization",
        b"x-api-key": "x_api_key",
        b"api-key": "api_key",
        b"content-type": "content_type",
        b"content-length": "content_length",
        b"cache-control": "cache_control",
    }
)


def read_headers(raw: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
    """The headers the gateway acts on, from ASGI's lower-cased header list; the first of each wins."""
    found = RequestHeaders()
    for name, value in raw:
        attr = _WANTED.get(name)
        if attr is not None and getattr(found, attr) is None:
            setattr(found, attr, value)
    return found


def header_value(raw: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """One header's value by lower-case name (for headers only some aliases use)."""
    for key, value in raw:
        if key == name:
            return value.decode("latin-1")
    return None


def cache_directives(value: bytes | None) -> frozenset[str]:
    """The request's Cache-Control directives, lower-cased (`no-cache`, `no-store`, ...)."""
    if not value:
        return frozenset()
    return frozenset(part.strip().split("=", 1)[0].lower() for part in value.decode("latin-1").split(","))
