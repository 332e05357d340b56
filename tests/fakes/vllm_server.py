"""A fake vLLM OpenAI server with its runtime LoRA API, on the OpenAI fake's thread, event loop and recorder.

Routes, as vLLM serves them:
  POST /v1/load_lora_adapter    {"lora_name", "lora_path"}: 200 and a plain-text success line; 400 when a field is
                                missing or the name is already loaded; 404 when the folder holds no
                                adapter_config.json ("No adapter found for ..."). The folder is read from disk.
  POST /v1/unload_lora_adapter  {"lora_name"}: 200; 404 when no adapter of that name is loaded.
  GET  /v1/models               the base model, then each adapter with `root` (its folder) and `parent`.
  POST /v1/chat/completions     answered (the OpenAI fake's echo, streaming too) for the base model and loaded
                                adapters only; 404 "The model `x` does not exist." otherwise.
Without runtime updates (vLLM started without VLLM_ALLOW_RUNTIME_LORA_UPDATING) the two LoRA routes do not exist
and answer FastAPI's `{"detail": "Not Found"}`, like any unknown path. With `api_key`, every /v1 route wants
`Authorization: Bearer <key>` and answers vLLM's 401 `{"error": "Unauthorized"}` otherwise. Errors have vLLM's
current shape `{"error": {"message", "type", "param", "code"}}`, or its older flat one with `legacy_errors`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import FakeOpenAI, Received

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeVLLM(FakeOpenAI):
    """vLLM serving `base_model` (from the folder `root`), with adapters loaded and unloaded at run time."""

    def __init__(
        self,
        base_model: str = "tiny-base",
        *,
        root: str = "/models/tiny-base",
        runtime_updates: bool = True,
        api_key: str | None = None,
        legacy_errors: bool = False,
    ) -> None:
        super().__init__()
        self.base_model = base_model
        self.root = root
        self.runtime_updates = runtime_updates
        self.api_key = api_key
        self.legacy_errors = legacy_errors
        self._adapters: dict[str, str] = {}
        """Loaded adapters, name -> folder; changed on the fake's loop, read by tests under the recorder's lock."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def loaded(self) -> dict[str, str]:
        with self.recorder.cond:
            return dict(self._adapters)

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        if self.runtime_updates:
            app.router.add_post("/v1/load_lora_adapter", self.load)
            app.router.add_post("/v1/unload_lora_adapter", self.unload)
        app.router.add_route("*", "/{tail:.*}", self.unknown_route)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]

    # --- vLLM's answers -----------------------------------------------------------------------------------------

    def _error(self, status: int, message: str, kind: str) -> web.Response:
        info = {"message": message, "type": kind, "param": None, "code": status}
        body = {"object": "error", **info} if self.legacy_errors else {"error": info}
        return web.json_response(body, status=status)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        wanted = f"Bearer {self.api_key}"
        if self.api_key and request.path.startswith("/v1") and request.headers.get("Authorization") != wanted:
            return web.json_response({"error": "Unauthorized"}, status=401)
        return await handler(request)

    async def unknown_route(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"detail": "Not Found"}, status=404)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        body = orjson.loads(raw) if raw else {}
        self.recorder.add_request(Received(request.path, dict(request.headers), body))
        return body if isinstance(body, dict) else {}

    async def load(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return self._error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        if name in self.loaded():
            return self._error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
        if not (Path(path) / "adapter_config.json").is_file():
            return self._error(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
        with self.recorder.cond:
            self._adapters[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        name = body.get("lora_name")
        with self.recorder.cond:
            found = self._adapters.pop(name, None) if isinstance(name, str) else None
        if found is None:
            return self._error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def models(self, request: web.Request) -> web.StreamResponse:
        cards = [{"id": self.base_model, "object": "model", "owned_by": "vllm", "root": self.root, "parent": None}]
        cards += [
            {"id": name, "object": "model", "owned_by": "vllm", "root": path, "parent": self.base_model}
            for name, path in self.loaded().items()
        ]
        return web.json_response({"object": "list", "data": cards})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        model = orjson.loads(await request.read() or b"{}").get("model")
        if model != self.base_model and model not in self.loaded():
            return self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
        return await super().chat(request)
