"""The Anthropic Messages API as an ingress: requests to the canonical (OpenAI) form, answers and streams back.

Apps built on the Anthropic SDK call `/v1/messages` and reach any alias; the gateway routes the
canonical request as usual and translates the answer into Anthropic's shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from gateway.errors import GatewayError, InvalidRequest

STOP_REASONS: Mapping[str | None, str] = MappingProxyType(
    {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
)
ERROR_TYPES: Mapping[int, str] = MappingProxyType(
    {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        503: "overloaded_error",
    }
)


def error_body(exc: GatewayError) -> bytes:
    """Anthropic's error shape for any gateway error."""
    kind = ERROR_TYPES.get(exc.status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": exc.message}})


# --- requests -------------------------------------------------------------------------------------------------
def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _image(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise InvalidRequest("image blocks need a base64 or url source", param="messages")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_turn(content: Any) -> list[dict[str, Any]]:
    """One user turn: its tool results become tool messages (first), the rest one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            tools.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": _text(block.get("content"))}
            )
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image(block))
        else:
            raise InvalidRequest(f"unsupported content block type {kind!r}", param="messages")
    return tools + ([{"role": "user", "content": parts}] if parts else [])


def _assistant_turn(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    text, calls = [], []
    for block in content or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_choice(choice: dict[str, Any]) -> tuple[Any, bool | None]:
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}, parallel
    return {"auto": "auto", "any": "required", "none": "none"}.get(str(kind), "auto"), parallel


def to_openai(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages API request as the canonical chat request; the checks name Anthropic's fields."""
    for name in ("model", "messages", "max_tokens"):
        if body.get(name) is None:
            raise InvalidRequest(f"missing required parameter: '{name}'", param=name, code="missing_required_parameter")
    out: dict[str, Any] = {"model": body["model"], "messages": _messages(body), "max_tokens": body["max_tokens"]}
    for source, target in SAMPLING.items():
        if body.get(source) is not None:
            out[target] = body[source]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    _tools(body, out)
    effort = _effort(body.get("thinking"))
    if effort is not None:
        out["reasoning_effort"] = effort
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    return out


def _effort(thinking: Any) -> str | None:
    """Anthropic's `thinking` as the canonical `reasoning_effort` (each vendor maps it to its own control):
    a budget up to 1024 tokens is low, up to 8192 medium, more is high; `disabled` is none."""
    if not isinstance(thinking, dict):
        return None
    if thinking.get("type") == "disabled":
        return "none"
    if thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise InvalidRequest("'thinking.budget_tokens' must be a positive integer", param="thinking.budget_tokens")
    return "low" if budget <= 1024 else "medium" if budget <= 8192 else "high"


SAMPLING: Mapping[str, str] = MappingProxyType(
    {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "stop_sequences": "stop"}
)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(body["messages"], list):
        raise InvalidRequest("'messages' must be an array", param="messages")
    messages: list[dict[str, Any]] = []
    system = _text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for message in body["messages"]:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest("each message needs role 'user' or 'assistant'", param="messages")
        if message["role"] == "user":
            messages.extend(_user_turn(message.get("content")))
        else:
            messages.append(_assistant_turn(message.get("content")))
    return messages


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name"),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema") or {},
                },
            }
            for t in tools
            if isinstance(t, dict)
        ]
    if isinstance(body.get("tool_choice"), dict):
        choice, parallel = _tool_choice(body["tool_choice"])
        out["tool_choice"] = choice
        if parallel is not None:
            out["parallel_tool_calls"] = parallel


# --- answers --------------------------------------------------------------------------------------------------
def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
    return {
        "input_tokens": max(0, int(usage.get("prompt_tokens") or 0) - cached),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def _arguments(raw: str | None) -> Any:
    try:
        return orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": raw}


def to_message(completion: bytes) -> bytes:
    """A chat.completion as an Anthropic message."""
    data = orjson.loads(completion)
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": message["reasoning_content"], "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _arguments(function.get("arguments")),
            }
        )
    return orjson.dumps(
        {
            "id": f"msg_{data.get('id', 'switchyard')}",
            "type": "message",
            "role": "assistant",
            "model": data.get("model", ""),
            "content": content,
            "stop_reason": STOP_REASONS.get(choice.get("finish_reason"), "end_turn"),
            "stop_sequence": None,
            "usage": _usage(data.get("usage")),
        }
    )


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


@dataclass(slots=True)
class StreamEncoder:
    """OpenAI chunk payloads in, Anthropic stream events out; one per request."""

    started: bool = False
    block: str | None = None
    """Type of the open content block: text, thinking or tool_use."""
    index: int = -1
    tool_calls: dict[int, int] = field(default_factory=dict)
    stop_reason: str = "end_turn"
    usage: dict[str, int] = field(default_factory=lambda: _usage(None))

    def chunk(self, payload: bytes) -> bytes:
        data = orjson.loads(payload)
        out = [] if self.started else [self._start(data)]
        self.started = True
        if data.get("usage"):
            self.usage = _usage(data["usage"])
        for choice in (data.get("choices") or [])[:1]:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out.append(self._delta({"type": "thinking_delta", "thinking": delta["reasoning_content"]}))
            if delta.get("content"):
                out += self._open("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or []:
                out += self._tool(call)
            if choice.get("finish_reason"):
                self.stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return b"".join(out)

    def _start(self, data: dict[str, Any]) -> bytes:
        message = {
            "id": f"msg_{data.get('id', 'switchyard')}",
            "type": "message",
            "role": "assistant",
            "model": data.get("model", ""),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(None),
        }
        return sse("message_start", {"message": message})

    def _open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        if self.block == kind and kind != "tool_use":
            return []
        out = self._close()
        self.index += 1
        self.block = kind
        out.append(sse("content_block_start", {"index": self.index, "content_block": block}))
        return out

    def _close(self) -> list[bytes]:
        if self.block is None:
            return []
        self.block = None
        return [sse("content_block_stop", {"index": self.index})]

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"index": self.index, "delta": delta})

    def _tool(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        function = call.get("function") or {}
        position = int(call.get("index") or 0)
        if position not in self.tool_calls:
            block = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{position}",
                "name": function.get("name", ""),
                "input": {},
            }
            out += self._open("tool_use", block)
            self.tool_calls[position] = self.index
        if function.get("arguments"):
            out.append(self._delta({"type": "input_json_delta", "partial_json": function["arguments"]}))
        return out

    def end(self) -> bytes:
        out = [] if self.started else [self._start({})]
        out += self._close()
        usage = {"output_tokens": self.usage["output_tokens"]}
        out.append(
            sse("message_delta", {"delta": {"stop_reason": self.stop_reason, "stop_sequence": None}, "usage": usage})
        )
        out.append(sse("message_stop", {}))
        return b"".join(out)

    @staticmethod
    def error(exc: GatewayError) -> bytes:
        return b"event: error\ndata: " + error_body(exc) + b"\n\n"
