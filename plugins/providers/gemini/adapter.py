"""The `gemini` adapter: OpenAI chat completions and embeddings served by Google's Gemini API (v1beta).

Translation lives in translate.py, stream.py and embeddings.py (pure functions); this class only builds the
URL from the route's model, sends the request, maps an error status, and runs the stream translator.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import orjson

from gateway.config.model import ProviderConfig
from gateway.errors import UpstreamError, UpstreamStreamError
from gateway.protocol.sse import DONE
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from plugins.providers.base import (
    AdapterSettings,
    CallContext,
    Capabilities,
    EventBatches,
    ProviderAdapter,
    merge_headers,
)
from plugins.providers.gemini.embeddings import from_batch_embeds, to_batch_embeds
from plugins.providers.gemini.stream import StreamTranslator, stream_error
from plugins.providers.gemini.translate import from_gemini, parse_error, to_gemini
from plugins.providers.transport import post, sse_batches

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"


def model_url(base_url: str, model: str, method: str) -> str:
    """The endpoint for a model; the name is percent-encoded whole, so it can never add a path or a query."""
    name = model.removeprefix("models/")
    return f"{base_url}/v1beta/models/{quote(name, safe='')}:{method}"


class GeminiAdapter(ProviderAdapter):
    capabilities = Capabilities(chat=True, stream=True, embeddings=True, tools=True, vision=True, reasoning=True)

    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient, settings: AdapterSettings) -> None:
        super().__init__(name, config, client, settings)
        self.base_url = config.base_url or DEFAULT_BASE_URL
        headers = {"content-type": "application/json", "accept": "application/json"}
        if config.api_key:
            headers["x-goog-api-key"] = config.api_key
        self._headers = merge_headers(headers, config.headers)
        self._stream_headers = merge_headers(self._headers, {"accept": "text/event-stream"})

    async def _send(self, url: str, request: dict[str, Any], ctx: CallContext, *, stream: bool) -> UpstreamResponse:
        headers = self._stream_headers if stream else self._headers
        payload = orjson.dumps(request)
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

    async def _post_json(self, method: str, request: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        url = model_url(self.base_url, ctx.upstream_model, method)
        resp = await self._send(url, request, ctx, stream=False)
        raw = await resp.read(self.settings.max_response_bytes)
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamError("the upstream answered with something other than a JSON object")
        return answer

    async def chat(self, body: dict[str, Any], ctx: CallContext) -> bytes:
        answer = await self._post_json("generateContent", to_gemini(body), ctx)
        return orjson.dumps(from_gemini(answer, model=ctx.upstream_model, created=int(time.time())))

    async def embeddings(self, body: dict[str, Any], ctx: CallContext) -> bytes:
        batches = to_batch_embeds(body, ctx.upstream_model)
        answers = [await self._post_json("batchEmbedContents", batch, ctx) for batch in batches]
        return orjson.dumps(from_batch_embeds(answers, body, ctx.upstream_model))

    async def chat_stream(self, body: dict[str, Any], ctx: CallContext) -> EventBatches:
        request = to_gemini(body)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        translator = StreamTranslator(ctx.upstream_model, int(time.time()), include_usage, self.secrets())
        url = model_url(self.base_url, ctx.upstream_model, "streamGenerateContent") + "?alt=sse"
        resp = await self._send(url, request, ctx, stream=True)
        return self._events(resp, ctx.timeouts.idle, translator)

    async def _events(self, resp: UpstreamResponse, idle: float, translator: StreamTranslator) -> EventBatches:
        async with aclosing(sse_batches(resp, idle, self.settings.max_event_bytes)) as batches:
            async for events in batches:
                if out := self._translate(translator, events):
                    yield out
                if translator.failed:
                    return
        if not translator.finished:
            raise UpstreamStreamError("the upstream stream ended before a finish reason")
        yield [*(orjson.dumps(chunk) for chunk in translator.close()), DONE]

    def _translate(self, translator: StreamTranslator, events: list[bytes]) -> list[bytes]:
        """OpenAI payloads for a batch of Gemini events; an error before any chunk raises instead, so the
        router can still retry or fall back."""
        out: list[bytes] = []
        for data in events:
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamStreamError("the upstream sent an event that is not JSON") from None
            if isinstance(event, list) and len(event) == 1:
                event = event[0]
            if not isinstance(event, dict):
                raise UpstreamStreamError("the upstream sent an event that is not a JSON object")
            if "error" in event and not translator.started:
                raise stream_error(event, self.secrets())
            out.extend(orjson.dumps(chunk) for chunk in translator.feed(event))
            if translator.failed:
                break
        return out
