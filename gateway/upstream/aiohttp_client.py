"""UpstreamClient on one pooled aiohttp ClientSession (measured 7x faster than httpx's transport here)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping

import aiohttp
import aiohttp.abc

from gateway.errors import UpstreamConnectError, UpstreamError, UpstreamStreamError, UpstreamTimeout
from gateway.upstream.client import Timeouts, UpstreamResponse

USER_AGENT = "switchyard"


def map_error(exc: BaseException, *, started: bool) -> UpstreamError:
    """aiohttp/asyncio failures -> gateway errors, without the upstream's address in the message."""
    if isinstance(exc, asyncio.TimeoutError):
        what = "stream stalled" if started else "no response"
        return UpstreamTimeout(f"upstream timed out ({what})")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        refused = isinstance(exc.os_error, PermissionError)  # the pinned resolver's policy said no
        why = "its address is refused by provider_urls" if refused else "its host name does not resolve"
        return UpstreamConnectError(f"could not connect to upstream: {why}")
    if isinstance(exc, aiohttp.ClientSSLError):
        return UpstreamConnectError("could not connect to upstream: TLS handshake or certificate check failed")
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        reason = os.strerror(errno) if errno and errno > 0 else "connection failed"
        return UpstreamConnectError(f"could not connect to upstream: {reason}")
    if started or isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamStreamError("upstream connection broke off in the middle of the response")
    return UpstreamConnectError(f"upstream connection failed: {exc.__class__.__name__}")


def _too_large(limit: int) -> UpstreamError:
    return UpstreamError(f"upstream response larger than {limit} bytes", code="upstream_response_too_large")


class AiohttpResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self, limit: int) -> bytes:
        try:
            body = await self._read(limit)
        except BaseException:
            self._resp.close()
            raise
        self._resp.release()
        return body

    async def _read(self, limit: int) -> bytes:
        length = self._resp.content_length
        if length is not None and length > limit:
            raise _too_large(limit)
        try:
            if length is not None:
                return await self._resp.read()
            parts: list[bytes] = []
            size = 0
            async for chunk in self._resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                parts.append(chunk)
            return b"".join(parts)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise map_error(exc, started=True) from None

    async def iter_chunks(self, idle: float) -> AsyncIterator[bytes]:
        content = self._resp.content
        try:
            while True:
                async with asyncio.timeout(idle):
                    chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise map_error(exc, started=True) from None

    def close(self) -> None:
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


class AiohttpUpstream:
    """One ClientSession for the process: created at start-up, closed at shutdown."""

    def __init__(
        self, *, limit: int = 0, keepalive_timeout: float = 30.0, resolver: aiohttp.abc.AbstractResolver | None = None
    ) -> None:
        connector = aiohttp.TCPConnector(
            limit=limit, ttl_dns_cache=300, keepalive_timeout=keepalive_timeout, resolver=resolver
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            auto_decompress=True,
            skip_auto_headers=("Content-Type",),
        )
        self._timeouts: dict[tuple[Timeouts, bool], aiohttp.ClientTimeout] = {}

    @property
    def ready(self) -> bool:
        return not self._session.closed

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
        timeout = self._timeouts.get((timeouts, stream))
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=timeouts.total, sock_connect=timeouts.connect, sock_read=None if stream else timeouts.first_byte
            )
            if len(self._timeouts) < 1024:  # routes' own limits; later attempts' cut-down ones are one-offs
                self._timeouts[(timeouts, stream)] = timeout
        try:
            resp = await self._session.request(
                method, url, headers=headers, data=body, timeout=timeout, allow_redirects=False
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise map_error(exc, started=False) from None
        return AiohttpResponse(resp)

    async def aclose(self) -> None:
        await self._session.close()
