"""A fake OpenAI-compatible upstream whose behaviour is chosen by the upstream model name.

It records every request it receives (path, headers, JSON body) and every client disconnect it observes,
and runs on its own event loop in a background thread so synchronous tests can drive it.

Model names:
  anything else        answer normally (echo the last user message)
  slow-<ms>            wait <ms> milliseconds, then answer
  fail-<status>[-x]    answer with that HTTP status and an OpenAI error body (429 adds Retry-After: 2)
  bad-key              answer 401 with the received Authorization header echoed in the message
  hang                 never answer (until the client goes away)
  reset                close the connection without answering
  stream-long          stream 400 chunks, 5 ms apart
  drop-mid-stream      stream 3 chunks, then cut the connection
  error-in-stream      stream 2 chunks, then an in-band error event
  no-done              stream 2 chunks and end cleanly without [DONE]
  stall-mid-stream     stream 2 chunks, then go silent (until the client goes away)
  huge-event           stream one chunk, then a 2 MiB line that never ends
  huge                 answer with a 2 MiB body
  flaky-<n>[-x]        answer 500 to the first <n> requests for this model name, then normally
  flaky429-<n>[-x]     answer 429 with Retry-After: 0.3 to the first <n> requests, then normally
  ctx-too-long[-x]     answer 400 context_length_exceeded
  policy[-x]           answer 400 content_policy_violation
  quota[-x]            answer 429 insufficient_quota
  think[-x]            answer with a <think> block in the content (streams cut it every 3 characters)
  no-usage[-x]         answer normally but never report usage (not even when a stream asks for it)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.responses_api import ResponsesAPI


def bag_of_words(text: str, model: str) -> list[float]:
    """`bow-N`: a deterministic N-dimension embedding that reads any language: hashed words and CJK characters,
    normalized, so texts sharing words are similar (a stand-in for a multilingual vendor model)."""
    size = int(model.split("-")[1])
    vector = [0.0] * size
    for term in re.findall(r"[a-z0-9]+|[\u4e00-\u9fff]", text.lower()):
        vector[int(hashlib.sha256(term.encode()).hexdigest(), 16) % size] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm if any(vector) else 1.0 / math.sqrt(size) for v in vector]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)


@dataclass
class Recorder:
    """Thread-safe log of what the fake saw; tests wait on it instead of sleeping."""

    requests: list[Received] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)
    finished_streams: list[str] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add_request(self, item: Received) -> None:
        with self.cond:
            self.requests.append(item)
            self.cond.notify_all()

    def add_disconnect(self, model: str) -> None:
        with self.cond:
            self.disconnects.append(model)
            self.cond.notify_all()

    def add_finished(self, model: str) -> None:
        with self.cond:
            self.finished_streams.append(model)
            self.cond.notify_all()

    def wait_disconnects(self, count: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.disconnects) >= count, timeout)

    def wait_requests(self, count: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.requests) >= count, timeout)

    def clear(self) -> None:
        with self.cond:
            self.requests.clear()
            self.disconnects.clear()
            self.finished_streams.clear()
            self.seen.clear()

    def bump(self, model: str) -> int:
        """How many requests this model name has had, this one included."""
        with self.cond:
            self.seen[model] = self.seen.get(model, 0) + 1
            return self.seen[model]

    def bodies_for(self, model: str) -> list[Any]:
        with self.cond:
            return [r.body for r in self.requests if isinstance(r.body, dict) and r.body.get("model") == model]


THINKING = "<think>\nThe user wants a number.\n</think>\n\nThe answer is 42 <not a tag>."


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "fake_error", "param": None, "code": code}}
    headers = {"Retry-After": "2"} if status == 429 else None
    return web.json_response(body, status=status, headers=headers)


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if isinstance(content, str):
            return content
    return str(body.get("prompt", ""))


class FakeOpenAI:
    def __init__(self) -> None:
        self.recorder = Recorder()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> int:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self.port

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.run_until_complete(self._start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
        loop.close()

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self.azure_chat)
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

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # --- handlers --------------------------------------------------------------------------------------
    async def _record(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw
        self.recorder.add_request(Received(request.path, dict(request.headers), body))
        return body if isinstance(body, dict) else {}

    def _scripted(self, model: str) -> web.StreamResponse | None:
        """Failures that depend on how often the model was asked, or that mimic a vendor's error."""
        kind = model.split("-", 1)[0]
        if kind in ("flaky", "flaky429"):
            failures = int(model.split("-")[1])
            if self.recorder.bump(model) <= failures:
                if kind == "flaky":
                    return _error(500, "flaky failure", "server_error")
                body = {"error": {"message": "slow down", "type": "rate_limit", "param": None, "code": None}}
                return web.json_response(body, status=429, headers={"Retry-After": "0.3"})
        elif kind == "ctx":
            return _error(400, "This model's maximum context length is 8192 tokens.", "context_length_exceeded")
        elif kind == "policy":
            return _error(400, "Your request was rejected by our safety system.", "content_policy_violation")
        elif kind == "quota":
            return _error(429, "You exceeded your current quota.", "insufficient_quota")
        return None

    async def _common(self, request: web.Request, model: str) -> web.StreamResponse | None:
        """Behaviours shared by every endpoint; None means answer normally."""
        scripted = self._scripted(model)
        if scripted is not None:
            return scripted
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.split("-")[1]) / 1000)
        elif model.startswith("fail-"):
            status = int(model.split("-")[1])
            return _error(status, f"fake failure {status}", "fake_code")
        elif model == "bad-key":
            auth = request.headers.get("Authorization", "")
            return _error(401, f"Incorrect API key provided: {auth.removeprefix('Bearer ')}", "invalid_api_key")
        elif model == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.recorder.add_disconnect(model)
                raise
        elif model == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        elif model == "huge":
            return web.json_response(_completion(model, "x" * (2 * 1024 * 1024)))
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        model = str(body.get("model", ""))
        special = await self._common(request, model)
        if special is not None:
            return special
        if body.get("stream"):
            return await self._stream(request, body, model)
        text = THINKING if model.startswith("think") else "echo: " + _last_user_text(body)
        answer = _completion(model, text)
        if model.startswith("no-usage"):
            del answer["usage"]
        return web.json_response(answer)

    async def azure_chat(self, request: web.Request) -> web.StreamResponse:
        """Azure OpenAI: the deployment is in the path, the version in the query, the key in `api-key`."""
        raw = await request.read()
        received = Received(request.path_qs, dict(request.headers), orjson.loads(raw))
        self.recorder.add_request(received)
        deployment = request.match_info["deployment"]
        return web.json_response(_completion(deployment, "echo: " + _last_user_text(received.body)))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        model = str(body.get("model", ""))
        special = await self._common(request, model)
        if special is not None:
            return special
        text = "echo: " + _last_user_text(body)
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for word in text.split(" "):
                chunk = {
                    "id": "cmpl-fake",
                    "object": "text_completion",
                    "model": model,
                    "choices": [{"index": 0, "text": word + " ", "finish_reason": None}],
                }
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            return resp
        return web.json_response(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
            }
        )

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        model = str(body.get("model", ""))
        special = await self._common(request, model)
        if special is not None:
            return special
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        if model.startswith("bow-"):
            data = [
                {"object": "embedding", "index": i, "embedding": bag_of_words(str(t), model)}
                for i, t in enumerate(items)
            ]
        else:
            data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, float(i)]} for i in range(len(items))]
        return web.json_response(
            {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 3, "total_tokens": 3}}
        )

    async def _stream(self, request: web.Request, body: dict[str, Any], model: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            async for part in self._events(body, model, request):
                await resp.write(part)
        except (asyncio.CancelledError, ConnectionResetError):
            self.recorder.add_disconnect(model)
            raise
        self.recorder.add_finished(model)
        return resp

    async def _broken_stream(self, model: str, request: web.Request) -> AsyncIterator[bytes]:
        """Two chunks, then the failure the model name asks for (never a clean end)."""
        yield _chunk(model, {"content": "partial "})
        yield _chunk(model, {"content": "answer "})
        if model == "drop-mid-stream":
            await asyncio.sleep(0.01)
            assert request.transport is not None
            request.transport.abort()
        elif model == "stall-mid-stream":
            await asyncio.Event().wait()
        elif model == "error-in-stream":
            yield b'data: {"error": {"message": "model overloaded mid-stream", "type": "server_error"}}\n\n'

    async def _events(self, body: dict[str, Any], model: str, request: web.Request) -> AsyncIterator[bytes]:
        yield _chunk(model, {"role": "assistant", "content": ""})
        if model.startswith("think"):
            for part in (THINKING[i : i + 3] for i in range(0, len(THINKING), 3)):
                yield _chunk(model, {"content": part})
        elif model == "stream-long":
            for i in range(400):
                yield _chunk(model, {"content": f"t{i} "})
                await asyncio.sleep(0.005)
        elif model == "huge-event":
            yield b"data: " + b"x" * (2 * 1024 * 1024)
            await asyncio.Event().wait()
        elif model in ("drop-mid-stream", "error-in-stream", "no-done", "stall-mid-stream"):
            async for event in self._broken_stream(model, request):
                yield event
            return
        else:
            for word in ("echo:", *_last_user_text(body).split(" ")):
                yield _chunk(model, {"content": word + " "})
        yield _chunk(model, {}, "stop")
        if (body.get("stream_options") or {}).get("include_usage") and not model.startswith("no-usage"):
            usage = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
            yield b"data: " + orjson.dumps(usage) + b"\n\n"
        yield b"data: [DONE]\n\n"


@contextlib.contextmanager
def running_fake() -> Any:
    fake = FakeOpenAI()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
