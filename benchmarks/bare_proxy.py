"""The bare Litestar + aiohttp pass-through: the reference the gateway's throughput is compared against.

One route, POST /v1/chat/completions, forwarded as is to the upstream URL on one aiohttp ClientSession
(TCPConnector(limit=0), created at start-up, closed at shutdown). Non-stream bodies are relayed whole
(`await resp.read()`); a body asking for `"stream": true` (a byte check, no JSON parsing) gets the
upstream's body chunks relayed as they arrive, as a text/event-stream. No key check, no logging, no
parsing: what is left is Litestar + uvicorn (uvloop, httptools, no access log) + aiohttp, the floor any
gateway built on them pays.

    python benchmarks/bare_proxy.py --upstream http://127.0.0.1:PORT/v1/chat/completions [--port 0]

The upstream URL may also come from BARE_UPSTREAM. Prints `READY <port>` on stdout once listening; stops
on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import uvicorn
from litestar import Litestar, Request, Response, post
from litestar.response import Stream

PATH = "/v1/chat/completions"
UPSTREAM_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bare-proxy"}
_STREAM_TRUE = (b'"stream":true', b'"stream": true')


async def _relay(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    finally:
        resp.release()


def make_app(upstream: str) -> Litestar:
    sessions: list[aiohttp.ClientSession] = []

    async def start() -> None:
        sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))

    async def stop() -> None:
        while sessions:
            await sessions.pop().close()

    @post(PATH)
    async def proxy(request: Request[Any, Any, Any]) -> Response[Any]:
        body = await request.body()
        session = sessions[0]
        if _STREAM_TRUE[0] in body or _STREAM_TRUE[1] in body:
            resp = await session.post(upstream, data=body, headers=UPSTREAM_HEADERS)
            return Stream(_relay(resp), media_type="text/event-stream", status_code=resp.status)
        async with session.post(upstream, data=body, headers=UPSTREAM_HEADERS) as resp:
            data = await resp.read()
        return Response(data, media_type="application/json", status_code=resp.status)

    return Litestar([proxy], on_startup=[start], on_shutdown=[stop], openapi_config=None, logging_config=None)


class _Server(uvicorn.Server):
    """Says `READY <port>` once the listening socket is up (the port may have been 0)."""

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            print(f"READY {port}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", default=os.environ.get("BARE_UPSTREAM"), help="upstream URL (or BARE_UPSTREAM)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as READY <port>)")
    args = parser.parse_args()
    if not args.upstream:
        parser.error("--upstream (or BARE_UPSTREAM) is required")
    config = uvicorn.Config(
        make_app(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    _Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
