"""JSON answers of the admin API, and the store's errors as API errors (409, 404, 400) with their safe messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from litestar import Request, Response

from gateway.admin.store import repo
from gateway.errors import ClientError, InvalidRequest, NotFound, PayloadTooLarge

JSON = "application/json"


class Conflict(ClientError):
    status = 409
    code = "conflict"


def json_response(data: Any, status: int = 200) -> Response[bytes]:
    return Response(
        orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS), status_code=status, media_type=JSON
    )


def listing(rows: list[dict[str, Any]]) -> Response[bytes]:
    return json_response({"object": "list", "data": rows})


@asynccontextmanager
async def store_errors() -> AsyncIterator[None]:
    """Run a block of store calls; their refusals leave as the matching API error."""
    try:
        yield
    except repo.Conflict as exc:
        raise Conflict(str(exc), param=exc.field) from None
    except repo.NotFoundError as exc:
        raise NotFound(str(exc)) from None
    except repo.InvalidValue as exc:
        raise InvalidRequest(str(exc), param=exc.field) from None


async def read_bounded(request: Request[Any, Any, Any], limit: int, too_large: PayloadTooLarge) -> bytes:
    """The raw body, refused with `too_large` by its Content-Length, else as soon as the bytes received pass
    `limit` (a chunked upload is never read past it)."""
    if (request.content_length or 0) > limit:
        raise too_large
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise too_large
    return bytes(body)
