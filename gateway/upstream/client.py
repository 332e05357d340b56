"""The data plane's upstream HTTP interface: send a request, get status, headers and the body or a byte stream.

The interface is tiny so adapters never see the HTTP library; lower-layer errors become gateway errors here,
in one place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: TCP connect, wait for the first byte (and between stream reads), whole exchange."""

    connect: float
    first_byte: float
    total: float


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self, limit: int) -> bytes:
        """The whole body; UpstreamError when it exceeds `limit` bytes."""
        ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive."""
        ...

    def close(self) -> None:
        """Release the connection; an unfinished body closes it instead of returning it to the pool."""
        ...


class UpstreamClient(Protocol):
    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeouts: Timeouts
    ) -> UpstreamResponse:
        """Send a request and return once the response headers arrived."""
        ...

    @property
    def ready(self) -> bool: ...

    async def aclose(self) -> None: ...
