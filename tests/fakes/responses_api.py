"""The Responses API on the fake OpenAI upstream: create (stream or not), retrieve, input items, delete.

Shapes follow OpenAI's API reference examples. Responses are stored unless `store` is false, and a
`previous_response_id` must name a stored one. The answer echoes the last input text.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

Record = Callable[[str, dict[str, str], Any], None]
"""(path with query, headers, JSON body) -> None: how the fake upstream logs a request."""


def _input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}]
    return [item for item in raw or [] if isinstance(item, dict)]


def _last_text(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        content = item.get("content")
        if isinstance(content, str):
            return content
        for part in content or []:
            if isinstance(part, dict) and part.get("type") == "input_text":
                return str(part.get("text", ""))
    return ""


def _error(status: int, message: str, param: str | None, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return web.json_response(body, status=status)


class ResponsesAPI:
    def __init__(self, record: Record) -> None:
        self.record = record
        self.stored: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        self.ids = itertools.count(1)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self.create)
        app.router.add_get("/v1/responses/{rid}", self.retrieve)
        app.router.add_get("/v1/responses/{rid}/input_items", self.input_items)
        app.router.add_delete("/v1/responses/{rid}", self.delete)

    def _record(self, request: web.Request, body: Any = None) -> None:
        self.record(request.path_qs, dict(request.headers), body)

    def _response(self, body: dict[str, Any], rid: str, text: str, status: str) -> dict[str, Any]:
        message = {
            "type": "message",
            "id": f"msg_{rid}",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        done = status == "completed"
        return {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body.get("model"),
            "output": [message] if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": {
                "input_tokens": 5,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": len(text.split()),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 5 + len(text.split()),
            }
            if done
            else None,
            "user": None,
            "metadata": {},
        }

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self._record(request, body)
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.stored:
            message = f"Previous response with id '{previous}' not found."
            return _error(400, message, "previous_response_id", "previous_response_not_found")
        rid = f"resp_fake{next(self.ids):04d}"
        items = _input_items(body)
        text = "echo: " + _last_text(items) + (f" (after {previous})" if previous else "")
        final = self._response(body, rid, text, "completed")
        if body.get("store", True):
            self.stored[rid] = (final, items)
        if not body.get("stream"):
            return web.json_response(final)
        return await self._stream(request, body, rid, text, final)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], rid: str, text: str, final: dict[str, Any]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        item = final["output"][0]
        pending = self._response(body, rid, text, "in_progress")
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": pending},
            {"type": "response.in_progress", "response": pending},
            {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
            {
                "type": "response.content_part.added",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
        ]
        for word in text.split(" "):
            events.append(
                {
                    "type": "response.output_text.delta",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "delta": word + " ",
                }
            )
        events += [
            {
                "type": "response.output_text.done",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "text": text,
            },
            {
                "type": "response.content_part.done",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "part": item["content"][0],
            },
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": final},
        ]
        for n, event in enumerate(events):
            data = orjson.dumps({**event, "sequence_number": n})
            await resp.write(b"event: " + event["type"].encode() + b"\ndata: " + data + b"\n\n")
        await resp.write_eof()
        return resp

    async def retrieve(self, request: web.Request) -> web.Response:
        self._record(request)
        found = self.stored.get(request.match_info["rid"])
        if found is None:
            return _error(404, "Response not found.", None, "not_found")
        return web.json_response(found[0])

    async def input_items(self, request: web.Request) -> web.Response:
        self._record(request)
        found = self.stored.get(request.match_info["rid"])
        if found is None:
            return _error(404, "Response not found.", None, "not_found")
        data = [{"id": f"in_{n}", **item} for n, item in enumerate(found[1])]
        if request.query.get("order") == "asc":
            data = list(reversed(data))
        return web.json_response(
            {"object": "list", "data": data, "first_id": data[0]["id"], "last_id": data[-1]["id"], "has_more": False}
        )

    async def delete(self, request: web.Request) -> web.Response:
        self._record(request)
        rid = request.match_info["rid"]
        if self.stored.pop(rid, None) is None:
            return _error(404, "Response not found.", None, "not_found")
        return web.json_response({"id": rid, "object": "response", "deleted": True})
