"""Responses API answer shapes (items, usage, the Response object) and the stream encoder built on them.

`StreamEncoder` turns chat.completion.chunk payloads into Responses stream events: each reasoning or text run
becomes one output item with one content part, each tool call one `function_call` item.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from gateway.errors import GatewayError, UpstreamStreamError

INCOMPLETE: Mapping[str | None, str] = MappingProxyType(
    {"length": "max_output_tokens", "content_filter": "content_filter"}
)
DELTA_EVENTS: Mapping[str, str] = MappingProxyType(
    {"message": "response.output_text.delta", "reasoning": "response.reasoning_text.delta"}
)
DONE_EVENTS: Mapping[str, str] = MappingProxyType(
    {"message": "response.output_text.done", "reasoning": "response.reasoning_text.done"}
)


# --- shapes -----------------------------------------------------------------------------------------------------
def base_id(chat_id: Any) -> str:
    """The upstream completion id without its `chatcmpl-` prefix (a fresh one when there is none)."""
    text = str(chat_id or "") or uuid.uuid4().hex
    return text.removeprefix("chatcmpl-")


def usage(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage as Responses usage; None when the upstream sent none."""
    if not raw:
        return None
    prompt, completion = int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0)
    details = raw.get("prompt_tokens_details") or {}
    cached, written = int(details.get("cached_tokens") or 0), int(details.get("cache_write_tokens") or 0)
    reasoning = int((raw.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(raw.get("total_tokens") or prompt + completion),
    }


def message_item(item_id: str, text: str | None, refusal: str | None = None) -> dict[str, Any]:
    """A completed assistant message item."""
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "output_text", "text": text, "annotations": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"type": "message", "id": item_id, "role": "assistant", "status": "completed", "content": content}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    """A reasoning item carrying the upstream's reasoning text (no summary)."""
    return {"type": "reasoning", "id": item_id, "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    """A function_call item."""
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _echo_tools(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    tools = [t for t in request.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    return [
        {
            "type": "function",
            "name": t.get("name", ""),
            "description": t.get("description"),
            "parameters": t.get("parameters"),
            "strict": t.get("strict"),
        }
        for t in tools
    ]


def _echo(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request settings a Response object repeats back."""
    parallel = request.get("parallel_tool_calls")
    return {
        "instructions": request.get("instructions") if isinstance(request.get("instructions"), str) else None,
        "max_output_tokens": request.get("max_output_tokens"),
        "parallel_tool_calls": True if parallel is None else bool(parallel),
        "previous_response_id": None,
        "reasoning": request.get("reasoning") if isinstance(request.get("reasoning"), dict) else None,
        "store": False,
        "temperature": request.get("temperature", 1.0),
        "text": request.get("text") if isinstance(request.get("text"), dict) else {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": _echo_tools(request),
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "user": request.get("safety_identifier") or request.get("user"),
        "metadata": request.get("metadata") if isinstance(request.get("metadata"), dict) else {},
    }


def envelope(
    request: Mapping[str, Any],
    head: Mapping[str, Any],
    output: list[dict[str, Any]],
    *,
    status: str = "completed",
    finish: str | None = None,
    used: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A whole Response object; `finish` (a chat finish_reason) may turn a completed one incomplete."""
    reason = INCOMPLETE.get(finish)
    if reason and status == "completed":
        status = "incomplete"
    return {
        **head,
        "object": "response",
        "status": status,
        "error": None,
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "output": output,
        "usage": used,
        **_echo(request),
    }


def sse(kind: str, data: dict[str, Any]) -> bytes:
    """One named Responses stream event."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


# --- the stream ---------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class StreamEncoder:
    """Chat chunk payloads in, Responses stream events out; one per request (the Responses request body)."""

    request: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] | None = None
    sequence: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)
    """Every output item so far, by output index, as it will read when done."""
    open: list[int] = field(default_factory=list)
    calls: dict[int, int] = field(default_factory=dict)
    """Chat tool-call index -> output index."""
    finish: str | None = None
    used: dict[str, Any] | None = None

    def chunk(self, payload: bytes) -> bytes:
        """Events for one chat.completion.chunk payload."""
        data = orjson.loads(payload)
        out = self._start(data)
        if data.get("usage"):
            self.used = usage(data["usage"])
        for choice in (data.get("choices") or [])[:1]:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                out += self._text("reasoning", delta["reasoning_content"])
            if delta.get("content"):
                out += self._text("message", delta["content"])
            for call in delta.get("tool_calls") or []:
                out += self._call(call)
            self.finish = choice.get("finish_reason") or self.finish
        return b"".join(out)

    def end(self) -> bytes:
        """Close what is open, then response.completed (or response.incomplete) with the whole Response."""
        out = self._start({})
        out += self._close(list(self.open))
        response = envelope(self.request, self._head(), self.items, finish=self.finish, used=self.used)
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        out.append(self._event(kind, response=response))
        return b"".join(out)

    def error(self, exc: GatewayError) -> bytes:
        """An `error` event, then response.failed; nothing may follow."""
        out = self._start({})
        out.append(self._event("error", code=exc.code, message=exc.message, param=exc.param))
        code = "rate_limit_exceeded" if exc.status == 429 else "server_error"
        response = envelope(self.request, self._head(), self.items, status="failed", used=self.used)
        response["error"] = {"code": code, "message": exc.message}
        out.append(self._event("response.failed", response=response))
        return b"".join(out)

    def _event(self, kind: str, **data: Any) -> bytes:
        event = sse(kind, {**data, "sequence_number": self.sequence})
        self.sequence += 1
        return event

    def _head(self) -> dict[str, Any]:
        assert self.head is not None
        return self.head

    def _start(self, data: dict[str, Any]) -> list[bytes]:
        if self.head is not None:
            return []
        model = data.get("model") or self.request.get("model") or ""
        created = int(data.get("created") or time.time())
        self.head = {"id": f"resp_{base_id(data.get('id'))}", "created_at": created, "model": model}
        response = envelope(self.request, self.head, [], status="in_progress")
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{self._head()['id'].removeprefix('resp_')}_{len(self.items)}"

    def _add(self, item: dict[str, Any], shown: dict[str, Any]) -> bytes:
        """Register an item (its final form) and announce it as it stands now (`shown`)."""
        self.items.append(item)
        self.open.append(len(self.items) - 1)
        return self._event("response.output_item.added", output_index=len(self.items) - 1, item=shown)

    def _text(self, kind: str, delta: str) -> list[bytes]:
        """A reasoning or text delta, opening its item (and closing any other) first when needed."""
        out: list[bytes] = []
        current = self.open[-1] if self.open else None
        if current is None or self.items[current]["type"] != kind:
            out += self._close(list(self.open))
            out += self._open_text(kind)
            current = self.open[-1]
        item = self.items[current]
        item["content"][0]["text"] += delta
        extra: dict[str, Any] = {"logprobs": []} if kind == "message" else {}
        out.append(
            self._event(
                DELTA_EVENTS[kind], item_id=item["id"], output_index=current, content_index=0, delta=delta, **extra
            )
        )
        return out

    def _open_text(self, kind: str) -> list[bytes]:
        if kind == "message":
            item, part = message_item(self._new_id("msg"), ""), {"type": "output_text", "text": "", "annotations": []}
        else:
            item, part = reasoning_item(self._new_id("rs"), ""), {"type": "reasoning_text", "text": ""}
        shown = {**item, "content": [], **({"status": "in_progress"} if kind == "message" else {})}
        out = [self._add(item, shown)]
        item["content"] = [part]
        index = len(self.items) - 1
        out.append(
            self._event(
                "response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part
            )
        )
        return out

    def _call(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        function = call.get("function") or {}
        position = int(call.get("index") or 0)
        if position not in self.calls:
            if self.open and self.items[self.open[-1]]["type"] != "function_call":
                out += self._close([self.open[-1]])
            item_id = self._new_id("fc")
            call_id = call.get("id") or item_id.replace("fc_", "call_", 1)
            item = call_item(item_id, call_id, function.get("name") or "", "")
            out.append(self._add(item, {**item, "status": "in_progress"}))
            self.calls[position] = len(self.items) - 1
        index = self.calls[position]
        item = self.items[index]
        if function.get("arguments"):
            item["arguments"] += function["arguments"]
            delta = function["arguments"]
            out.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=delta
                )
            )
        return out

    def _close(self, indexes: list[int]) -> list[bytes]:
        """Done events for open items, in output order."""
        out: list[bytes] = []
        for index in sorted(indexes):
            self.open.remove(index)
            item = self.items[index]
            if item["type"] == "function_call":
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        name=item["name"],
                        arguments=item["arguments"],
                    )
                )
            else:
                out += self._close_part(index, item)
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _close_part(self, index: int, item: dict[str, Any]) -> list[bytes]:
        part = item["content"][0]
        place = {"item_id": item["id"], "output_index": index, "content_index": 0}
        extra: dict[str, Any] = {"logprobs": []} if item["type"] == "message" else {}
        return [
            self._event(DONE_EVENTS[item["type"]], text=part["text"], **place, **extra),
            self._event("response.content_part.done", part=part, **place),
        ]


@dataclass(slots=True)
class RelayEncoder:
    """A Responses stream from an upstream that speaks it, relayed event by event with the event names restored;
    it notes the response's id (from `response.created`) so the response can be found again."""

    response_id: str | None = None
    sequence: int = 0

    def chunk(self, payload: bytes) -> bytes:
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamStreamError("upstream sent an event that is not JSON") from None
        if not isinstance(data, dict):
            raise UpstreamStreamError("upstream sent an event that is not a JSON object")
        kind = str(data.get("type") or "message")
        if self.response_id is None and isinstance(data.get("response"), dict):
            self.response_id = data["response"].get("id")
        self.sequence = int(data.get("sequence_number") or self.sequence) + 1
        return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"

    def end(self) -> bytes:
        return b""

    def error(self, exc: GatewayError) -> bytes:
        """The stream broke: an `error` event, as the Responses API ends a failed stream."""
        data = {"code": exc.code, "message": exc.message, "param": exc.param, "sequence_number": self.sequence}
        return sse("error", data)
