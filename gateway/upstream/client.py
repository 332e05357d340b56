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
    """Seconds: TCP connect, first byte (first event, for streams), silence between stream reads, total."""

    connect: float
    first_byte: float
    idle: float
    total: float

    def within(self, remaining: float) -> Timeouts:
        """The same limits, none longer than `remaining` (what is left of a request's deadline).

        Within 50 ms of the total the object itself is returned, so a first attempt reuses it (and the
        client's cached timeout objects).
        """
        if remaining + 0.05 >= self.total:
            return self
        return Timeouts(
            min(self.connect, remaining), min(self.first_byte, remaining), min(self.idle, remaining), remaining
        )


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self, limit: int) -> bytes:
        """The whole body; UpstreamError when it exceeds `limit` bytes."""
        ...

    def iter_chunks(self, idle: float) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; UpstreamTimeout after `idle` seconds without any."""
        ...

    def close(self) -> None:
        """Release the connection; an unfinished body closes it instead of returning it to the pool."""
        ...


class UpstreamClient(Protocol):
    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
        *,
        stream: bool = False,
    ) -> UpstreamResponse:
        """Send a request and return once the response headers arrived.

        Without `stream`, `first_byte` bounds every read; with it, the caller bounds the wait for the first
        event itself and passes `idle` to `iter_chunks`.
        """
        ...

    @property
    def ready(self) -> bool: ...

    async def aclose(self) -> None: ...
