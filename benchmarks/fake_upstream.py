"""A fast, static fake OpenAI upstream for the overhead benchmark.

A raw asyncio (uvloop when installed) HTTP/1.1 server: keep-alive, pipelining-safe, no framework. Every
POST /v1/chat/completions gets the same canned `chat.completion` JSON, or, when the body asks for
`"stream": true`, the same canned SSE stream of STREAM_CHUNKS events ending with `data: [DONE]`, sent as
chunked transfer encoding, one HTTP chunk (one write) per event. All answers are pre-encoded at start-up,
so the per-request cost is a header scan and a few writes; it is meant to be far faster than the gateway.

    python benchmarks/fake_upstream.py [--host 127.0.0.1] [--port 0] [--cpu 1]

Prints `READY <port>` on stdout once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
from typing import cast

STREAM_CHUNKS = 20
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024

_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.IGNORECASE)
_CONN_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)

CREATED = 1700000000
MODEL = "fake-model"


def _completion_body() -> bytes:
    body = {
        "id": "chatcmpl-fake0000000000000000",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! This is a canned answer from the fake upstream."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
        "system_fingerprint": "fp_fake",
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _chunk(delta: dict[str, object], finish: str | None, usage: dict[str, int] | None = None) -> bytes:
    body: dict[str, object] = {
        "id": "chatcmpl-fake0000000000000000",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def stream_events() -> list[bytes]:
    """STREAM_CHUNKS SSE events (role, tokens, finish with usage), then `data: [DONE]`."""
    events = [_chunk({"role": "assistant", "content": ""}, None)]
    for i in range(STREAM_CHUNKS - 2):
        events.append(_chunk({"content": f" tok{i}"}, None))
    events.append(_chunk({}, "stop", {"prompt_tokens": 12, "completion_tokens": STREAM_CHUNKS - 2, "total_tokens": 30}))
    events.append(b"data: [DONE]\n\n")
    return events


def _response(status: bytes, headers: list[bytes], body: bytes) -> bytes:
    head = [b"HTTP/1.1 " + status, *headers, b"content-length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


JSON_RESPONSE = _response(b"200 OK", [b"content-type: application/json", b"x-fake-upstream: 1"], _completion_body())
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\nx-fake-upstream: 1\r\n\r\n"
)
STREAM_PARTS = [STREAM_HEAD + _http_chunk(e) if i == 0 else _http_chunk(e) for i, e in enumerate(stream_events())]
STREAM_PARTS.append(b"0\r\n\r\n")
NOT_FOUND = _response(
    b"404 Not Found",
    [b"content-type: application/json"],
    b'{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}',
)
BAD_REQUEST = _response(
    b"400 Bad Request",
    [b"content-type: application/json", b"connection: close"],
    b'{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":null}}',
)


class FakeUpstream(asyncio.Protocol):
    __slots__ = ("_buf", "transport")

    def __init__(self) -> None:
        self._buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        transport = self.transport
        assert transport is not None
        while True:  # one pass per complete request in the buffer (pipelining); bounded by the buffer
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    self._fail(transport)
                    return
                break
            head = buf[: end + 2]
            match = _CONTENT_LENGTH.search(head)
            length = int(match.group(1)) if match else 0
            if _CHUNKED.search(head) or length > MAX_BODY_BYTES:
                self._fail(transport)
                return
            total = end + 4 + length
            if len(buf) < total:
                break
            body = buf[end + 4 : total]
            buf = buf[total:]
            self._answer(transport, head, body)
            if _CONN_CLOSE.search(head):
                transport.close()
                self._buf = b""
                return
        self._buf = buf

    def _answer(self, transport: asyncio.Transport, head: bytes, body: bytes) -> None:
        line_end = head.find(b"\r\n")
        request_line = head[:line_end]
        if not request_line.startswith((b"POST /v1/chat/completions ", b"POST /v1/chat/completions?")):
            transport.write(NOT_FOUND)
            return
        if _STREAM_TRUE.search(body):
            for part in STREAM_PARTS:
                transport.write(part)
        else:
            transport.write(JSON_RESPONSE)

    def _fail(self, transport: asyncio.Transport) -> None:
        transport.write(BAD_REQUEST)
        transport.close()
        self._buf = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._buf = b""


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FakeUpstream, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    async with server:
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as READY <port>)")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the fake upstream only listens on loopback")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
