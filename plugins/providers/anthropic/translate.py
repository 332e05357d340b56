"""Pure translations between OpenAI chat completions and Anthropic's Messages API, tested on fixtures.

Requests: OpenAI body -> Messages body. Answers: Message -> chat.completion. Errors: Anthropic error body ->
UpstreamStatusError. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.errors import InvalidRequest, UpstreamStatusError, redact
from plugins.providers.openai.errors import parse_retry_after

DEFAULT_MAX_TOKENS = 4096
MIN_THINKING_BUDGET = 1024
EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error type -> (the equivalent OpenAI-side HTTP status, OpenAI error type).
ERROR_TYPES: dict[str, tuple[int, str]] = {
    "invalid_request_error": (400, "invalid_request_error"),
    "authentication_error": (401, "authentication_error"),
    "billing_error": (402, "billing_error"),
    "permission_error": (403, "permission_error"),
    "not_found_error": (404, "invalid_request_error"),
    "request_too_large": (413, "invalid_request_error"),
    "rate_limit_error": (429, "rate_limit_error"),
    "api_error": (500, "server_error"),
    "timeout_error": (504, "server_error"),
    "overloaded_error": (503, "server_error"),
}
OVERLOADED = 529

Json = dict[str, Any]


def _refuse(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


# --- request: OpenAI chat body -> Anthropic Messages body -------------------------------------------------------


def to_anthropic(body: Json, model: str, *, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> Json:
    """The Messages request for an OpenAI chat request; parameters Anthropic lacks are dropped or refused (400)."""
    _refuse_unsupported(body)
    system, messages = convert_messages(body["messages"])
    explicit = body.get("max_completion_tokens") or body.get("max_tokens")
    out: Json = {"model": model, "messages": messages, "max_tokens": explicit or default_max_tokens}
    if system:
        out["system"] = system
    _sampling(body, out)
    _tools(body, out)
    _thinking(body, out, explicit_max=bool(explicit), default_max_tokens=default_max_tokens)
    _response_format(body.get("response_format"), out)
    if body.get("stream") is True:
        out["stream"] = True
    return out


def _refuse_unsupported(body: Json) -> None:
    if (body.get("n") or 1) > 1:
        raise _refuse("Anthropic models return one choice per request; 'n' must be 1", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _refuse("Anthropic models do not return log probabilities", "logprobs")
    if body.get("functions") or body.get("function_call"):
        raise _refuse("the legacy 'functions' parameter is not supported here; use 'tools'", "functions")
    if body.get("audio") or "audio" in (body.get("modalities") or ()):
        raise _refuse("Anthropic models do not produce audio", "modalities")


def _sampling(body: Json, out: Json) -> None:
    temperature = body.get("temperature")
    if temperature is not None:
        out["temperature"] = min(max(float(temperature), 0.0), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if isinstance(body.get("top_k"), int):
        out["top_k"] = body["top_k"]
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    stops = [s for s in stops if isinstance(s, str) and s.strip()]
    if stops:
        out["stop_sequences"] = stops
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}


def _thinking(body: Json, out: Json, *, explicit_max: bool, default_max_tokens: int) -> None:
    """`reasoning_effort` -> an extended-thinking budget below `max_tokens`; a native `thinking` object passes."""
    if isinstance(body.get("thinking"), dict):
        out["thinking"] = body["thinking"]
        return
    effort = body.get("reasoning_effort")
    if effort is None or effort == "none":
        return
    budget = EFFORT_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise InvalidRequest(
            "'reasoning_effort' must be one of none, minimal, low, medium, high",
            param="reasoning_effort",
            code="invalid_value",
        )
    limit = int(out["max_tokens"])
    if budget >= limit and not explicit_max:
        out["max_tokens"] = budget + default_max_tokens
    elif budget >= limit:
        if limit <= MIN_THINKING_BUDGET:
            raise _refuse(f"'reasoning_effort' needs max_tokens above {MIN_THINKING_BUDGET}", "max_tokens")
        budget = limit - 1
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}


def _response_format(fmt: Any, out: Json) -> None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind is None or kind == "text":
        return
    if kind == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        schema = fmt["json_schema"].get("schema") or {"type": "object"}
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return
    raise _refuse("Anthropic supports response_format 'text' and 'json_schema' only", "response_format")


def _tools(body: Json, out: Json) -> None:
    tools = body.get("tools")
    if not tools:
        return
    out["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None:
        out["tool_choice"] = choice


def _tool(tool: Json, where: str) -> Json:
    function = tool.get("function")
    if tool.get("type", "function") != "function" or not isinstance(function, dict) or not function.get("name"):
        raise _refuse("only tools of type 'function' with a name are supported", where)
    out: Json = {"name": function["name"], "input_schema": function.get("parameters") or {"type": "object"}}
    if function.get("description"):
        out["description"] = function["description"]
    if isinstance(function.get("strict"), bool):
        out["strict"] = function["strict"]
    return out


def _tool_choice(choice: Any) -> Json | None:
    simple = {"auto": "auto", "required": "any", "none": "none"}
    if choice is None:
        return None
    if isinstance(choice, str) and choice in simple:
        return {"type": simple[choice]}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        return {"type": "tool", "name": choice["function"]["name"]}
    raise _refuse("'tool_choice' must be auto, required, none or a named function", "tool_choice")


# --- messages ---------------------------------------------------------------------------------------------------


def convert_messages(messages: list[Json]) -> tuple[list[Json], list[Json]]:
    """System text blocks, and the turns with consecutive same-role messages merged (tool results join user)."""
    system: list[Json] = []
    turns: list[Json] = []
    for i, message in enumerate(messages):
        role, where = message.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), where))
            continue
        convert = _CONVERTERS.get(str(role))
        if convert is None:
            raise _refuse(f"message role '{role}' is not supported", f"{where}.role")
        anthropic_role, blocks = convert(message, where)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == anthropic_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": anthropic_role, "content": blocks})
    if not turns:
        raise InvalidRequest("at least one user or assistant message is required", param="messages")
    for turn in turns:  # Anthropic wants a user turn's tool results before anything else in it
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return system, turns


def _text_blocks(content: Any, where: str) -> list[Json]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content or ()):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise _refuse("only text content is supported here", f"{where}.content[{j}]")
        text = part.get("text") or part.get("refusal")
        if text:
            blocks.append({"type": "text", "text": text})
    return blocks


def _user(message: Json, where: str) -> tuple[str, list[Json]]:
    content = message.get("content")
    if isinstance(content, str) or content is None:
        return "user", _text_blocks(content, where)
    return "user", [block for j, part in enumerate(content) if (block := _part(part, f"{where}.content[{j}]"))]


def _part(part: Any, where: str) -> Json | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return {"type": "text", "text": part["text"]} if part.get("text") else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return {"type": "image", "source": image_source(url if isinstance(url, str) else "", where)}
    raise _refuse(f"content parts of type '{kind}' are not supported by Anthropic models", where)


def image_source(url: str, where: str) -> Json:
    """A data URL -> a base64 source; an http(s) URL -> a url source."""
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    header, sep, data = url.partition(",")
    media_type = header.removeprefix("data:").split(";")[0].lower()
    if not url.startswith("data:") or not sep or not header.endswith(";base64") or media_type not in IMAGE_TYPES:
        raise _refuse("images must be http(s) URLs or base64 data URLs of JPEG, PNG, GIF or WebP", where)
    return {"type": "base64", "media_type": media_type, "data": data}


def _assistant(message: Json, where: str) -> tuple[str, list[Json]]:
    blocks = _text_blocks(message.get("content"), where)
    for j, call in enumerate(message.get("tool_calls") or ()):
        blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
    return "assistant", blocks


def _tool_use(call: Any, where: str) -> Json:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not call.get("id") or not function.get("name"):
        raise InvalidRequest("a tool call needs an id and a function name", param=where, code="invalid_value")
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise InvalidRequest(
            "tool call arguments must be a JSON object", param=f"{where}.function.arguments", code="invalid_value"
        )
    return {"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments}


def _tool_result(message: Json, where: str) -> tuple[str, list[Json]]:
    if not message.get("tool_call_id"):
        raise InvalidRequest("a tool message needs 'tool_call_id'", param=f"{where}.tool_call_id", code="invalid_value")
    block: Json = {"type": "tool_result", "tool_use_id": message["tool_call_id"]}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        block["content"] = [b for j, part in enumerate(content) if (b := _part(part, f"{where}.content[{j}]"))]
    return "user", [block]


_CONVERTERS: dict[str, Callable[[Json, str], tuple[str, list[Json]]]] = {
    "user": _user,
    "assistant": _assistant,
    "tool": _tool_result,
}


# --- response: Anthropic Message -> chat.completion -------------------------------------------------------------


def finish_reason(stop_reason: Any) -> str | None:
    return FINISH_REASONS.get(stop_reason, "stop") if stop_reason is not None else None


def openai_usage(usage: Json) -> Json:
    """OpenAI usage; prompt_tokens counts fresh, cache-read and cache-creation input tokens."""
    fresh = usage.get("input_tokens") or 0
    read = usage.get("cache_read_input_tokens") or 0
    created = usage.get("cache_creation_input_tokens") or 0
    output = usage.get("output_tokens") or 0
    prompt = fresh + read + created
    out: Json = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
    }
    details = usage.get("output_tokens_details")
    if isinstance(details, dict) and details.get("thinking_tokens"):
        out["completion_tokens_details"] = {"reasoning_tokens": details["thinking_tokens"]}
    return out


def tool_call(block: Json, index: int) -> Json:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {
        "index": index,
        "id": block["id"],
        "type": "function",
        "function": {"name": block["name"], "arguments": arguments},
    }


def from_anthropic(message: Json, *, created: int) -> Json:
    """The chat.completion for an Anthropic Message; thinking becomes `reasoning_content`."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Json] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            thoughts.append(block.get("thinking") or "")
        elif kind == "tool_use":
            calls.append(tool_call(block, len(calls)))
    text = "".join(texts)
    reply: Json = {"role": "assistant", "content": text if text or not calls else None}
    if thoughts:
        reply["reasoning_content"] = "".join(thoughts)
    if calls:
        reply["tool_calls"] = calls
    choice = {"index": 0, "message": reply, "finish_reason": finish_reason(message.get("stop_reason")) or "stop"}
    return {
        "id": message.get("id") or "chatcmpl-anthropic",
        "object": "chat.completion",
        "created": created,
        "model": message.get("model") or "",
        "choices": [{**choice, "logprobs": None}],
        "usage": openai_usage(message.get("usage") or {}),
    }


# --- errors -----------------------------------------------------------------------------------------------------


def error_from_object(
    error: Json, status: int, secrets: tuple[str, ...], retry_after: str | None = None
) -> UpstreamStatusError:
    """An Anthropic error object ({type, message}) -> UpstreamStatusError; the type decides the status."""
    kind = error.get("type") if isinstance(error.get("type"), str) else None
    mapped_status, openai_type = ERROR_TYPES.get(kind or "", (503 if status == OVERLOADED else status, None))
    message = str(error.get("message") or f"upstream returned HTTP {status}")
    code: str | None = kind
    if mapped_status in (401, 403):  # the gateway's credentials, not the client's
        message = f"the upstream rejected the gateway's credentials: {message}"
        code, openai_type = "upstream_auth_failed", None
    return UpstreamStatusError(
        redact(message, secrets)[:2000],
        upstream_status=mapped_status,
        type_=openai_type or (redact(kind, secrets)[:200] if kind else None),
        code=redact(code, secrets)[:200] if code else None,
        retry_after=parse_retry_after(retry_after),
    )


def parse_error(status: int, raw: bytes, retry_after: str | None, secrets: tuple[str, ...]) -> UpstreamStatusError:
    """An Anthropic error response ({"type": "error", "error": {...}}) -> UpstreamStatusError."""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    inner = body.get("error") if isinstance(body, dict) else None
    error: Json = inner if isinstance(inner, dict) else {"message": inner} if isinstance(inner, str) else {}
    return error_from_object(error, status, secrets, retry_after)


def error_payload(exc: UpstreamStatusError) -> Json:
    """The in-band `{"error": {...}}` event the gateway relays for an error in the middle of a stream."""
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
