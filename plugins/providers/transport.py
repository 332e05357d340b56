"""What every adapter does the same way: POST a request and turn a non-200 into a gateway error, and read an
SSE body as batches of event payloads (bounded, closed when done). Adapters differ only in translation."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping

from gateway.errors import UpstreamError, UpstreamStreamError
from gateway.protocol.sse import SSEDecoder, SSEError
from gateway.upstream.client import Timeouts, UpstreamClient, UpstreamResponse

MAX_ERROR_BODY = 64 * 1024

ErrorParser = Callable[[int, bytes, "str | None", tuple[str, ...]], UpstreamError]
"""(status, body, Retry-After, secrets) -> the gateway error to raise; each vendor knows its error bodies."""


async def post(
    client: UpstreamClient,
    url: str,
    headers: Mapping[str, str],
    payload: bytes | None,
    timeouts: Timeouts,
    *,
    stream: bool,
    parse_error: ErrorParser,
    secrets: tuple[str, ...],
    method: str = "POST",
) -> UpstreamResponse:
    """The upstream's response once it answered 200; any other status raises the vendor's error, redacted."""
    resp = await client.send(method, url, headers, payload, timeouts, stream=stream)
    if resp.status != 200:
        try:
            raw = await resp.read(MAX_ERROR_BODY)
        except UpstreamStreamError:
            raw = b""
        raise parse_error(resp.status, raw, resp.headers.get("retry-after"), secrets)
    return resp


async def sse_batches(resp: UpstreamResponse, idle: float, max_event_bytes: int) -> AsyncGenerator[list[bytes], None]:
    """Event payloads grouped as they arrived (a last batch at a clean end). An oversized event yields the events
    before it, then raises UpstreamStreamError. The response is closed when the generator ends or is closed."""
    decoder = SSEDecoder(max_event_bytes)
    try:
        async for chunk in resp.iter_chunks(idle):
            try:
                events = decoder.feed(chunk)
            except SSEError as exc:
                if exc.events:
                    yield exc.events
                raise UpstreamStreamError(str(exc)) from None
            if events:
                yield events
        tail = decoder.close()
        if tail:
            yield tail
    finally:
        resp.close()
