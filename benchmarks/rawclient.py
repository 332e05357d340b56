"""A minimal keep-alive HTTP/1.1 client on a raw asyncio Protocol, for timing requests with little noise.

One connection carries one request at a time. It understands Content-Length and chunked responses and
records, per request, the time to the first body byte and to the last byte. Used by the latency rounds
and by the Python fallback load generator of benchmarks/overhead.py.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import cast

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.IGNORECASE)
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class ProtocolError(Exception):
    """The server's answer could not be parsed, or the connection broke off."""


@dataclass(slots=True)
class Reply:
    status: int
    ttfb_ns: int  # request written -> first byte of the response body
    total_ns: int  # request written -> last byte of the response
    body: bytes


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Parse:
    """Incremental parser state of one response."""

    __slots__ = ("buf", "chunked", "length", "parts", "pos", "status", "t_body")

    def __init__(self) -> None:
        self.buf = b""
        self.status = 0
        self.length: int | None = -1  # -1: headers not seen yet; None: chunked
        self.chunked = False
        self.parts: list[bytes] = []
        self.pos = 0
        self.t_body = 0

    def feed_head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 65536:
                raise ProtocolError("response headers too large")
            return False
        head = self.buf[: end + 2]
        if not head.startswith(b"HTTP/1."):
            raise ProtocolError(f"not an HTTP response: {head[:40]!r}")
        self.status = int(head[9:12])
        self.buf = self.buf[end + 4 :]
        if _CHUNKED.search(head):
            self.length = None
        else:
            match = _CONTENT_LENGTH.search(head)
            self.length = int(match.group(1)) if match else 0
        return True

    def feed_chunks(self) -> bytes | None:
        """The whole body once the terminating zero-size chunk arrived, else None."""
        buf = self.buf
        pos = self.pos
        while True:  # one pass per complete chunk in the buffer
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            if size == 0:
                if buf.find(b"\r\n", eol + 2) < 0:  # trailers (none expected) and the final CRLF
                    break
                return b"".join(self.parts)
            end = eol + 2 + size
            if len(buf) < end + 2:
                break
            self.parts.append(buf[eol + 2 : end])
            pos = end + 2
        self.pos = pos
        if len(buf) > MAX_RESPONSE_BYTES:
            raise ProtocolError("response too large")
        return None


class RawConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._fut: asyncio.Future[Reply] | None = None
        self._parse = _Parse()
        self._t0 = 0
        self.closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, host: str, port: int, connect_s: float = 5.0) -> RawConnection:
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(loop.create_connection(cls, host, port), connect_s)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        self._fail(ProtocolError(f"connection closed by the server ({exc!r})"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def request(self, raw: bytes, limit_s: float) -> Reply:
        if self.transport is None:
            raise ProtocolError("connection is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Reply] = loop.create_future()
        self._fut = fut
        self._parse = _Parse()
        timer = loop.call_later(limit_s, self._fail, TimeoutError(f"no complete response within {limit_s}s"))
        self._t0 = time.perf_counter_ns()
        self.transport.write(raw)
        try:
            return await fut
        finally:
            timer.cancel()

    def _fail(self, exc: Exception) -> None:
        fut, self._fut = self._fut, None
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        if self._fut is None:
            return  # nothing outstanding: unexpected bytes are ignored
        p = self._parse
        p.buf = p.buf + data if p.buf else data
        try:
            if p.length == -1 and not p.feed_head():
                return
            if p.buf and not p.t_body:
                p.t_body = now
            if p.length is None:
                body = p.feed_chunks()
                if body is None:
                    return
            else:
                if len(p.buf) < p.length:
                    return
                body = p.buf[: p.length]
        except (ProtocolError, ValueError) as exc:
            self._fail(ProtocolError(str(exc)))
            self.close()
            return
        fut, self._fut = self._fut, None
        if not fut.done():
            fut.set_result(Reply(p.status, (p.t_body or now) - self._t0, now - self._t0, body))


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    first_error: str | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0


async def closed_loop_load(
    host: str, port: int, raw: bytes, concurrency: int, duration: float, *, max_requests: int, limit_s: float = 10.0
) -> LoadResult:
    """`concurrency` keep-alive connections, each sending back-to-back requests until `duration` is over."""
    conns = [await RawConnection.open(host, port) for _ in range(concurrency)]
    result = LoadResult()
    per_conn = max(1, max_requests // concurrency)
    deadline = time.monotonic() + duration

    async def worker(conn: RawConnection) -> None:
        for _ in range(per_conn):
            if time.monotonic() >= deadline:
                return
            try:
                reply = await conn.request(raw, limit_s)
            except (ProtocolError, TimeoutError) as exc:
                result.errors += 1
                result.first_error = result.first_error or repr(exc)
                return
            if reply.status != 200:
                result.errors += 1
                result.first_error = result.first_error or f"HTTP {reply.status}: {reply.body[:200]!r}"
            else:
                result.requests += 1
                result.latencies_ns.append(reply.total_ns)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        result.elapsed_s = time.perf_counter() - started
        for c in conns:
            c.close()
    return result
