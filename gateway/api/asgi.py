"""Raw ASGI helpers for the data plane: one pass over the headers, a bounded body read, JSON and error sends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.errors import GatewayError, InvalidRequest, PayloadTooLarge, UnsupportedMediaType

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = (b"content-type", b"application/json")


class ClientGone(Exception):
    """The client closed the connection before the gateway answered."""


def check_json_content_type(content_type: bytes | None) -> None:
    """A missing content type is accepted (some SDKs omit it); a declared non-JSON one is a 415."""
    if content_type is None:
        return
    media = content_type.split(b";", 1)[0].strip().lower()
    if media != b"application/json" and not media.endswith(b"+json"):
        raise UnsupportedMediaType("Content-Type must be application/json")


async def read_body(receive: Receive, limit: int, content_length: bytes | None) -> bytes:
    """The whole request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise InvalidRequest("invalid Content-Length header") from None
        if declared > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_bytes(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, body: bytes) -> None:
    await send_bytes(send, status, body, [JSON_TYPE])


async def send_error(send: Send, exc: GatewayError, body: bytes | None = None) -> None:
    """An error response: OpenAI's shape unless the ingress renders its own `body`."""
    headers = [JSON_TYPE, *exc.headers()]
    if isinstance(exc, PayloadTooLarge):
        headers.append((b"connection", b"close"))  # the rest of the body is never read
    await send_bytes(send, exc.status, exc.body() if body is None else body, headers)


class DisconnectWatch:
    """Cancels the serving task when the client disconnects, so the upstream call is cancelled too.

    Start it only after the request body was read: from then on, `receive()` returns only at disconnect
    (or once the response is complete, when the watch is already stopped). The listening task starts
    after `delay` seconds, so fast answers never pay for it; a disconnect is still noticed within
    `delay` plus one event-loop turn.
    """

    __slots__ = ("_armed", "_receive", "_task", "_timer", "_watcher", "gone")

    def __init__(self, receive: Receive, delay: float = 0.25) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("DisconnectWatch needs a running task")
        self._task = task
        self._receive = receive
        self._armed = True
        self.gone = False
        self._watcher: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        if self._armed:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    if self._armed:
                        self.gone = True
                        self._task.cancel()
                    return
        except asyncio.CancelledError:
            return  # stopped: the request finished first

    def stop(self) -> None:
        self._armed = False
        self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None  # no task -> frame -> watch -> task cycle left for the GC
