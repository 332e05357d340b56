"""The `anthropic` adapter: OpenAI chat completions served by Anthropic's Messages API (POST /v1/messages).

Translation lives in translate.py and stream.py (pure functions); this class only sends the request, maps an
error status, and runs the stream translator over the decoded events.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Any

import orjson

from gateway.config.model import ProviderConfig
from gateway.errors import UpstreamError, UpstreamStreamError
from gateway.protocol.sse import DONE
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from plugins.providers.anthropic.stream import StreamTranslator, stream_error
from plugins.providers.anthropic.translate import from_anthropic, parse_error, to_anthropic
from plugins.providers.base import (
    AdapterSettings,
    CallContext,
    Capabilities,
    EventBatches,
    ProviderAdapter,
    merge_headers,
)
from plugins.providers.transport import post, sse_batches

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"


class AnthropicAdapter(ProviderAdapter):
    capabilities = Capabilities(chat=True, stream=True, tools=True, vision=True, reasoning=True)

    def __init__(self, name: str, config: ProviderConfig, client: UpstreamClient, settings: AdapterSettings) -> None:
        super().__init__(name, config, client, settings)
        self.url = (config.base_url or DEFAULT_BASE_URL) + "/v1/messages"
        headers = {"content-type": "application/json", "accept": "application/json", "anthropic-version": API_VERSION}
        if config.api_key:
            headers["x-api-key"] = config.api_key
        self._headers = merge_headers(headers, config.headers)
        self._stream_headers = merge_headers(self._headers, {"accept": "text/event-stream"})

    async def _send(self, request: dict[str, Any], ctx: CallContext, *, stream: bool) -> UpstreamResponse:
        headers = self._stream_headers if stream else self._headers
        payload = orjson.dumps(request)
        return await post(
            self.client,
            self.url,
            headers,
            payload,
            ctx.timeouts,
            stream=stream,
            parse_error=parse_error,
            secrets=self.secrets(),
        )

    async def chat(self, body: dict[str, Any], ctx: CallContext) -> bytes:
        resp = await self._send(to_anthropic(body, ctx.upstream_model), ctx, stream=False)
        raw = await resp.read(self.settings.max_response_bytes)
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict) or message.get("type") != "message":
            raise UpstreamError("the upstream answered with something other than a message")
        return orjson.dumps(from_anthropic(message, created=int(time.time())))

    async def chat_stream(self, body: dict[str, Any], ctx: CallContext) -> EventBatches:
        request = {**to_anthropic(body, ctx.upstream_model), "stream": True}
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        translator = StreamTranslator(ctx.upstream_model, int(time.time()), include_usage, self.secrets())
        resp = await self._send(request, ctx, stream=True)
        return self._events(resp, ctx.timeouts.idle, translator)

    async def _events(self, resp: UpstreamResponse, idle: float, translator: StreamTranslator) -> EventBatches:
        async with aclosing(sse_batches(resp, idle, self.settings.max_event_bytes)) as batches:
            async for events in batches:
                if out := self._translate(translator, events):
                    yield out
                if translator.finished:
                    return
        raise UpstreamStreamError("the upstream stream ended before message_stop")

    def _translate(self, translator: StreamTranslator, events: list[bytes]) -> list[bytes]:
        """OpenAI payloads for a batch of Anthropic events; an error before message_start raises instead,
        so the router can still retry or fall back."""
        out: list[bytes] = []
        for data in events:
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamStreamError("the upstream sent an event that is not JSON") from None
            if not isinstance(event, dict):
                raise UpstreamStreamError("the upstream sent an event that is not a JSON object")
            if event.get("type") == "error" and not translator.started:
                raise stream_error(event, self.secrets())
            out.extend(orjson.dumps(chunk) for chunk in translator.feed(event))
            if translator.finished:
                if not translator.failed:
                    out.append(DONE)
                break
        return out
