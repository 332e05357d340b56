"""Anthropic stream events -> OpenAI chat.completion.chunk dicts: a pure, stateful translator, one per stream.

Anthropic sends message_start, then per content block a content_block_start, its deltas and a
content_block_stop, then message_delta (stop reason, output usage) and message_stop; ping may come anywhere
and an `error` event ends a broken stream. Text becomes `content`, thinking `reasoning_content`, and each
tool_use block one entry of `tool_calls` whose arguments arrive as partial JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import UpstreamStatusError
from plugins.providers.anthropic.translate import error_from_object, error_payload, finish_reason, openai_usage

Json = dict[str, Any]
STREAM_ERROR_STATUS = 500
"""Assumed for an in-band error of a type the table does not know."""

_DELTA_FIELDS = {"text_delta": ("text", "content"), "thinking_delta": ("thinking", "reasoning_content")}
_START_FIELDS = {"text": ("text", "content"), "thinking": ("thinking", "reasoning_content")}


def stream_error(event: Json, secrets: tuple[str, ...] = ()) -> UpstreamStatusError:
    """The gateway error for an in-band `error` event."""
    error = event.get("error")
    return error_from_object(error if isinstance(error, dict) else {}, STREAM_ERROR_STATUS, secrets)


@dataclass(slots=True)
class StreamTranslator:
    """Feed each decoded Anthropic event; get the OpenAI chunks it stands for (often none)."""

    model: str
    created: int
    include_usage: bool = False
    secrets: tuple[str, ...] = ()
    id: str = "chatcmpl-anthropic"
    started: bool = False
    """message_start was seen."""
    finished: bool = False
    """message_stop or an error event was seen: nothing more will come."""
    failed: bool = False
    usage: Json = field(default_factory=dict)
    tool_indexes: dict[int, int] = field(default_factory=dict)
    """Anthropic content block index -> OpenAI tool call index."""

    def feed(self, event: Json) -> list[Json]:
        handler = _HANDLERS.get(str(event.get("type")))
        return handler(self, event) if handler is not None else []

    def chunk(self, delta: Json, finish: str | None = None) -> Json:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def _message_start(self, event: Json) -> list[Json]:
        message = event.get("message") or {}
        self.id = message.get("id") or self.id
        self.model = message.get("model") or self.model
        self._add_usage(message.get("usage"))
        self.started = True
        return [self.chunk({"role": "assistant", "content": ""})]

    def _block_start(self, event: Json) -> list[Json]:
        block = event.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            index = self.tool_indexes[int(event.get("index", 0))] = len(self.tool_indexes)
            call = {"index": index, "id": block.get("id"), "type": "function"}
            return [self.chunk({"tool_calls": [{**call, "function": {"name": block.get("name"), "arguments": ""}}]})]
        source, target = _START_FIELDS.get(str(kind), ("", ""))
        return [self.chunk({target: block[source]})] if source and block.get(source) else []

    def _block_delta(self, event: Json) -> list[Json]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "input_json_delta":
            index = self.tool_indexes.get(int(event.get("index", 0)))
            if index is None or not delta.get("partial_json"):
                return []
            return [self.chunk({"tool_calls": [{"index": index, "function": {"arguments": delta["partial_json"]}}]})]
        source, target = _DELTA_FIELDS.get(str(kind), ("", ""))
        return [self.chunk({target: delta[source]})] if source and delta.get(source) else []

    def _message_delta(self, event: Json) -> list[Json]:
        self._add_usage(event.get("usage"))
        stop_reason = (event.get("delta") or {}).get("stop_reason")
        return [self.chunk({}, finish_reason(stop_reason) or "stop")]

    def _message_stop(self, event: Json) -> list[Json]:
        self.finished = True
        if not self.include_usage:
            return []
        usage = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        return [{**usage, "choices": [], "usage": openai_usage(self.usage)}]

    def _error(self, event: Json) -> list[Json]:
        self.finished = self.failed = True
        return [error_payload(stream_error(event, self.secrets))]

    def _add_usage(self, usage: Any) -> None:
        """Anthropic's counts are cumulative: a later event's value replaces an earlier one."""
        if isinstance(usage, dict):
            self.usage.update({k: v for k, v in usage.items() if v is not None})


_HANDLERS: dict[str, Callable[[StreamTranslator, Json], list[Json]]] = {
    "message_start": StreamTranslator._message_start,
    "content_block_start": StreamTranslator._block_start,
    "content_block_delta": StreamTranslator._block_delta,
    "message_delta": StreamTranslator._message_delta,
    "message_stop": StreamTranslator._message_stop,
    "error": StreamTranslator._error,
}
