"""The request headers the gateway acts on, read in one pass over ASGI's header list."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class RequestHeaders:
    authorization: bytes | None = None
    x_api_key: bytes | None = None
    api_key: bytes | None = None
    content_type: bytes | None = None
    content_length: bytes | None = None


_WANTED = {
    b"authorization": "authorization",
    b"x-api-key": "x_api_key",
    b"api-key": "api_key",
    b"content-type": "content_type",
    b"content-length": "content_length",
}


def read_headers(raw: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
    """The headers the gateway acts on, from ASGI's lower-cased header list; the first of each wins."""
    found = RequestHeaders()
    for name, value in raw:
        attr = _WANTED.get(name)
        if attr is not None and getattr(found, attr) is None:
            setattr(found, attr, value)
    return found
