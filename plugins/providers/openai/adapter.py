"""The `openai` adapter: every OpenAI-compatible upstream (OpenAI, DeepSeek, Qwen compatible mode, GLM, Kimi,
vLLM, Ollama, LM Studio). The canonical form is this wire format, so requests and answers pass through;
only `model` is rewritten.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.config.model import ProviderConfig
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from plugins.providers.base import AdapterSettings, CallContext, Capabilities, EventBatches, ProviderAdapter
from plugins.providers.openai.errors import parse_error
from plugins.providers.transport import post, sse_batches

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIAdapter(ProviderAdapter):
    capabilities = Capabilities(
        chat=True, stream=True, completions=True, embeddings=True, tools=True, vision=True, reasoning=True
    )

    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient, settings: AdapterSettings) -> None:
        super().__init__(name, config, client, settings)
        self.base_url = config.base_url or DEFAULT_BASE_URL
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            **self.auth_headers(),
            **config.headers,
        }
        self._headers = headers
        self._stream_headers = {**headers, "Accept": "text/event-stream"}
        default = config.base_url is None  # OpenAI itself; a compatible server says so in its config
        self.speaks_responses = default if config.responses_api is None else config.responses_api

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    def url(self, path: str, model: str) -> str:
        """Where an operation goes; OpenAI-style APIs name the model in the body, not the URL."""
        return self.base_url + path

    async def _send(self, path: str, body: dict[str, Any], ctx: CallContext, *, stream: bool) -> UpstreamResponse:
        body["model"] = ctx.upstream_model
        if self.rewrite is not None or not self.config.stream_options:
            body = dict(body)  # a fallback to another vendor must see the request as the client sent it
            if not self.config.stream_options:
                body.pop("stream_options", None)
            if self.rewrite is not None:
                self.rewrite(body)
        headers = self._stream_headers if stream else self._headers
        url, payload = self.url(path, ctx.upstream_model), orjson.dumps(body)
        return await post(
            self.client,
            url,
            headers,
            payload,
            ctx.timeouts,
            stream=stream,
            parse_error=parse_error,
            secrets=self.secrets(),
        )

    async def _post(self, path: str, body: dict[str, Any], ctx: CallContext) -> bytes:
        resp = await self._send(path, body, ctx, stream=False)
        return await resp.read(self.settings.max_response_bytes)

    async def _stream(self, path: str, body: dict[str, Any], ctx: CallContext) -> EventBatches:
        resp = await self._send(path, body, ctx, stream=True)
        return sse_batches(resp, ctx.timeouts.idle, self.settings.max_event_bytes)

    async def chat(self, body: dict[str, Any], ctx: CallContext) -> bytes:
        return await self._post("/chat/completions", body, ctx)

    async def chat_stream(self, body: dict[str, Any], ctx: CallContext) -> EventBatches:
        return await self._stream("/chat/completions", body, ctx)

    async def completions(self, body: dict[str, Any], ctx: CallContext) -> bytes:
        return await self._post("/completions", body, ctx)

    async def completions_stream(self, body: dict[str, Any], ctx: CallContext) -> EventBatches:
        return await self._stream("/completions", body, ctx)

    async def embeddings(self, body: dict[str, Any], ctx: CallContext) -> bytes:
        return await self._post("/embeddings", body, ctx)

    async def responses(self, body: dict[str, Any], ctx: CallContext) -> bytes:
        return await self._post("/responses", body, ctx)

    async def responses_stream(self, body: dict[str, Any], ctx: CallContext) -> EventBatches:
        return await self._stream("/responses", body, ctx)

    async def stored_response(self, method: str, path: str, ctx: CallContext) -> bytes:
        url = self.url("/responses/" + path, ctx.upstream_model)
        resp = await post(
            self.client,
            url,
            self._headers,
            None,
            ctx.timeouts,
            stream=False,
            parse_error=parse_error,
            secrets=self.secrets(),
            method=method,
        )
        return await resp.read(self.settings.max_response_bytes)
