"""A fake OpenAI-compatible upstream for the provider matrix: tool calls, reasoning fields, and Azure's deployment
URLs, on top of the core fake (tests/fakes/openai_upstream.py), whose thread, recorder and behaviours it reuses.

Served under `/v1/...` (OpenAI and every compatible vendor, Responses API included) and under
`/openai/deployments/{deployment}/...` (Azure OpenAI: the deployment in the path, `api-version` in the query,
the key in `api-key`; a request without them is refused like Azure does and listed in `invalid`).
Recorded paths keep their query string.

Model names (the deployment, for Azure):
  tool           chat: two parallel tool calls to the first declared tool (Paris, Tokyo; one call when
                 parallel_tool_calls is false); when the request ends with tool results, answer "results: a | b";
                 streamed as OpenAI streams them (id and name first, arguments in pieces)
  reason         chat: `reasoning_content` (DeepSeek style) and then the answer
  reason-field   chat: a `reasoning` field (vLLM, OpenRouter style) and then the answer
  anything else  what the core fake does with it (echo the last user text, think..., fail-<status>, ...)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import THINKING, FakeOpenAI, Received, _chunk, _completion, _last_user_text
from tests.fakes.responses_api import ResponsesAPI

AZURE_API_VERSIONS = ("2024-10-21", "2025-01-01-preview")
REASONING = "2 plus 2 is 4."
ANSWER = "The answer is 4."
CITIES = ("Paris", "Tokyo")
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def _message_answer(model: str, message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-matrix",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": USAGE,
    }


def _tool_results(messages: list[dict[str, Any]]) -> list[str]:
    """The contents of the tool messages that end the conversation, in order."""
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, str(message.get("content")))
    return results


def _calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools") or [{"function": {"name": "missing_tool"}}]
    name = tools[0]["function"]["name"]
    cities = CITIES[:1] if body.get("parallel_tool_calls") is False else CITIES
    return [
        {
            "id": f"call_{city.lower()}",
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps({"city": city}).decode()},
        }
        for city in cities
    ]


def scripted_message(body: dict[str, Any], model: str) -> tuple[dict[str, Any], str]:
    """The assistant message and finish reason for one of this fake's own model names."""
    if model == "tool":
        results = _tool_results(body.get("messages") or [])
        if results:
            return {"content": "results: " + " | ".join(results)}, "stop"
        return {"content": None, "tool_calls": _calls(body)}, "tool_calls"
    field = "reasoning_content" if model == "reason" else "reasoning"
    return {"content": ANSWER, field: REASONING}, "stop"


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def scripted_deltas(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The message as stream deltas: reasoning and text in small pieces, each tool call's arguments in pieces."""
    yield {"role": "assistant", "content": ""}
    for field in ("reasoning_content", "reasoning"):
        for piece in _pieces(message.get(field) or "", 4):
            yield {field: piece}
    for piece in _pieces(message.get("content") or "", 5):
        yield {"content": piece}
    for index, call in enumerate(message.get("tool_calls") or ()):
        head = {"name": call["function"]["name"], "arguments": ""}
        yield {"tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": head}]}
        for piece in _pieces(call["function"]["arguments"], 4):
            yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}


class MatrixOpenAI(FakeOpenAI):
    SCRIPTED = frozenset({"tool", "reason", "reason-field"})

    def __init__(self) -> None:
        super().__init__()
        self.invalid: list[str] = []

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        azure = "/openai/deployments/{deployment}"
        app.router.add_post(azure + "/chat/completions", self.azure(self.chat))
        app.router.add_post(azure + "/completions", self.azure(self.completions))
        app.router.add_post(azure + "/embeddings", self.azure(self.embeddings))
        self.responses = ResponsesAPI(
            lambda path, headers, body: self.recorder.add_request(Received(path, headers, body))
        )
        self.responses.add_routes(app)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]

    # --- records and checks ------------------------------------------------------------------------------------
    async def _record(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw
        self.recorder.add_request(Received(request.path_qs, dict(request.headers), body))
        return body if isinstance(body, dict) else {}

    def requests(self) -> list[Received]:
        with self.recorder.cond:
            return list(self.recorder.requests)

    def last(self) -> Received:
        with self.recorder.cond:
            return self.recorder.requests[-1]

    def _refuse(self, status: int, message: str) -> web.Response:
        with self.recorder.cond:
            self.invalid.append(message)
        body = {"error": {"code": str(status), "message": message}}
        return web.json_response(body, status=status)

    def azure(self, handler: Any) -> Any:
        """The handler behind Azure's checks: an `api-key` header and a known `api-version` in the query."""

        async def checked(request: web.Request) -> web.StreamResponse:
            if not request.headers.get("api-key"):
                await self._record(request)
                return self._refuse(401, "Access denied due to missing subscription key.")
            if request.query.get("api-version") not in AZURE_API_VERSIONS:
                await self._record(request)
                return self._refuse(404, "Resource not found")
            return await handler(request)  # type: ignore[no-any-return]

        return checked

    # --- chat ----------------------------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        model = str(body.get("model", ""))
        if model not in self.SCRIPTED:
            special = await self._common(request, model)
            if special is not None:
                return special
            if body.get("stream"):
                return await self._stream(request, body, model)
            text = THINKING if model.startswith("think") else "echo: " + _last_user_text(body)
            return web.json_response(_completion(model, text))
        message, finish = scripted_message(body, model)
        if not body.get("stream"):
            return web.json_response(_message_answer(model, message, finish))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for delta in scripted_deltas(message):
            await resp.write(_chunk(model, delta))
        await resp.write(_chunk(model, {}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"id": "chatcmpl-matrix", "object": "chat.completion.chunk", "model": model, "choices": []}
            await resp.write(b"data: " + orjson.dumps({**usage, "usage": USAGE}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp


@contextlib.contextmanager
def running_fake() -> Iterator[MatrixOpenAI]:
    fake = MatrixOpenAI()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
