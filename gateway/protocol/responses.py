"""The OpenAI Responses API as an ingress: requests to the canonical (chat completions) form, answers back.

Apps built on `client.responses` call `/v1/responses` and reach any alias. The gateway keeps no state, so
whatever needs stored responses (`previous_response_id`, conversations, background runs) is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.protocol.responses_stream import StreamEncoder, base_id, call_item, envelope, message_item, reasoning_item
from gateway.protocol.responses_stream import usage as _usage

__all__ = ["StreamEncoder", "to_openai", "to_response"]

STATEFUL = ("previous_response_id", "conversation", "background", "prompt")
ROLES = frozenset({"user", "system", "developer", "assistant"})
TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
SAMPLING: Mapping[str, str] = MappingProxyType(
    {
        "temperature": "temperature",
        "top_p": "top_p",
        "max_output_tokens": "max_tokens",
        "parallel_tool_calls": "parallel_tool_calls",
        "prompt_cache_key": "prompt_cache_key",
    }
)


# --- requests -------------------------------------------------------------------------------------------------
def _part(part: Any) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in TEXT_PARTS:
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal") or "")}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_image":
        raise InvalidRequest("input_image needs an image_url: file_id is not supported by this gateway", param="input")
    raise InvalidRequest(f"content part type {kind!r} is not supported by this gateway", param="input")


def _joined(parts: list[dict[str, Any]], role: str) -> str:
    if any(p["type"] != "text" for p in parts):
        raise InvalidRequest(f"{role} messages take text only", param="input")
    return "".join(p["text"] for p in parts)


def _message(item: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    role = item.get("role")
    if role not in ROLES:
        raise InvalidRequest("each message needs role 'user', 'system', 'developer' or 'assistant'", param="input")
    content = item.get("content")
    if isinstance(content, list):
        parts = [_part(p) for p in content]
        content = parts if role == "user" else _joined(parts, role)
    elif not isinstance(content, str):
        raise InvalidRequest("message content must be a string or an array of parts", param="input")
    messages.append({"role": role, "content": content})


def _function_call(item: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    """A function_call item joins the assistant turn before it (parallel calls share one message)."""
    function = {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}
    call = {"id": item.get("call_id"), "type": "function", "function": function}
    if messages and messages[-1]["role"] == "assistant":
        messages[-1].setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _function_output(item: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    output = item.get("output")
    if isinstance(output, list):
        output = _joined([_part(p) for p in output], "function_call_output")
    messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": str(output or "")})


def _drop(item: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    """Reasoning items from earlier turns: the canonical form has no place for them."""


ITEMS: Mapping[str, Callable[[dict[str, Any], list[dict[str, Any]]], None]] = MappingProxyType(
    {"message": _message, "function_call": _function_call, "function_call_output": _function_output, "reasoning": _drop}
)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    source = body["input"]
    if isinstance(source, str):
        return [*messages, {"role": "user", "content": source}]
    if not isinstance(source, list):
        raise InvalidRequest("'input' must be a string or an array of items", param="input")
    for item in source:
        kind = item.get("type", "message" if "role" in item else None) if isinstance(item, dict) else None
        handler = ITEMS.get(str(kind))
        if handler is None:
            raise InvalidRequest(f"input item type {kind!r} is not supported by this gateway", param="input")
        handler(item, messages)
    return messages


def _tool(tool: Any) -> dict[str, Any]:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind != "function":
        raise InvalidRequest(f"tool type {kind!r} is not supported by this gateway: only 'function'", param="tools")
    function = {"name": tool.get("name")}
    for name in ("description", "parameters", "strict"):
        if tool.get(name) is not None:
            function[name] = tool[name]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest("tool_choice must be 'auto', 'none', 'required' or a function", param="tool_choice")


def _response_format(fmt: Any) -> dict[str, Any] | None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "description", "schema", "strict") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(f"text.format type {kind!r} is not supported", param="text.format")


def _options(body: dict[str, Any], out: dict[str, Any]) -> None:
    """Tools, output format, reasoning effort and user: each only when the request sets it."""
    if body.get("tools"):
        out["tools"] = [_tool(t) for t in body["tools"]]
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    text: dict[str, Any] = body["text"] if isinstance(body.get("text"), dict) else {}
    response_format = _response_format(text.get("format"))
    if response_format:
        out["response_format"] = response_format
    if text.get("verbosity"):
        out["verbosity"] = text["verbosity"]
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    if effort:
        out["reasoning_effort"] = effort
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str):
        out["user"] = user


def to_openai(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses API request as the canonical chat request; the checks name the Responses fields."""
    for name in ("model", "input"):
        if body.get(name) is None:
            raise InvalidRequest(f"missing required parameter: '{name}'", param=name, code="missing_required_parameter")
    for name in STATEFUL:
        if body.get(name):
            raise InvalidRequest(f"'{name}' is not supported by this gateway: send the whole input", param=name)
    out: dict[str, Any] = {"model": body["model"], "messages": _messages(body)}
    for source, target in SAMPLING.items():
        if body.get(source) is not None:
            out[target] = body[source]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    _options(body, out)
    return out


# --- answers --------------------------------------------------------------------------------------------------
def _output(message: dict[str, Any], rid: str) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        output.append(reasoning_item(f"rs_{rid}", message["reasoning_content"]))
    if message.get("content") or message.get("refusal"):
        output.append(message_item(f"msg_{rid}", message.get("content"), message.get("refusal")))
    for n, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        call_id = call.get("id") or f"call_{rid}_{n}"
        output.append(call_item(f"fc_{rid}_{n}", call_id, function.get("name") or "", function.get("arguments") or ""))
    return output


def to_response(completion: bytes, request: dict[str, Any]) -> bytes:
    """A chat.completion as a Response object; `request` is the client's Responses request (echoed settings)."""
    data = orjson.loads(completion)
    choice = (data.get("choices") or [{}])[0]
    rid = base_id(data.get("id"))
    head = {
        "id": f"resp_{rid}",
        "created_at": int(data.get("created") or time.time()),
        "model": data.get("model") or request.get("model") or "",
    }
    output = _output(choice.get("message") or {}, rid)
    used = _usage(data.get("usage"))
    return orjson.dumps(envelope(request, head, output, finish=choice.get("finish_reason"), used=used))
