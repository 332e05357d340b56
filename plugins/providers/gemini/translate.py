"""Pure translations between OpenAI chat completions and Gemini's generateContent API, tested on fixtures.

Requests: OpenAI body -> generateContent body (the model travels in the URL). Answers: GenerateContentResponse
-> chat.completion. Errors: Google's error body -> UpstreamStatusError. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from gateway.errors import InvalidRequest, UpstreamError, UpstreamStatusError, redact
from plugins.providers.openai.errors import parse_retry_after

Json = dict[str, Any]
EFFORT_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT"}
    | {"IMAGE_RECITATION", "MODEL_ARMOR"}
)
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
IMAGE_TYPES |= {".gif": "image/gif", ".heic": "image/heic", ".heif": "image/heif"}
SIGNATURE_SEP = "__sig__"
"""Tool call ids carry Gemini's thoughtSignature after this marker, so it returns with the call's history."""
SAMPLING = {"temperature": "temperature", "top_p": "topP", "top_k": "topK", "seed": "seed"}
SAMPLING |= {"presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}
GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{20,}")
# Google's canonical error status -> the OpenAI error type a client sees.
ERROR_TYPES = {
    "INVALID_ARGUMENT": "invalid_request_error",
    "FAILED_PRECONDITION": "invalid_request_error",
    "OUT_OF_RANGE": "invalid_request_error",
    "NOT_FOUND": "invalid_request_error",
    "RESOURCE_EXHAUSTED": "rate_limit_error",
    "INTERNAL": "server_error",
    "UNAVAILABLE": "server_error",
    "DEADLINE_EXCEEDED": "server_error",
}


def _refuse(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


# --- request: OpenAI chat body -> generateContent body -----------------------------------------------------------


def to_gemini(body: Json) -> Json:
    """The generateContent request for an OpenAI chat request; parameters Gemini lacks are dropped or refused."""
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _refuse("log probabilities are not supported for Gemini models", "logprobs")
    if body.get("functions") or body.get("function_call"):
        raise _refuse("the legacy 'functions' parameter is not supported here; use 'tools'", "functions")
    system, contents = convert_messages(body["messages"])
    out: Json = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    _tools(body, out)
    config = generation_config(body)
    if config:
        out["generationConfig"] = config
    return out


def generation_config(body: Json) -> Json:
    """generationConfig from the OpenAI sampling, length, stop, n, format and reasoning parameters."""
    config: Json = {target: body[name] for name, target in SAMPLING.items() if body.get(name) is not None}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else stop
    if (body.get("n") or 1) > 1:
        config["candidateCount"] = body["n"]
    _response_format(body.get("response_format"), config)
    _thinking(body.get("reasoning_effort"), config)
    return config


def _response_format(fmt: Any, config: Json) -> None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind is None or kind == "text":
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
        return
    if kind == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        config["responseMimeType"] = "application/json"
        schema = fmt["json_schema"].get("schema")
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
        return
    raise _refuse("response_format must be text, json_object or json_schema", "response_format")


def _thinking(effort: Any, config: Json) -> None:
    if effort is None:
        return
    budget = EFFORT_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise InvalidRequest(
            "'reasoning_effort' must be one of none, minimal, low, medium, high",
            param="reasoning_effort",
            code="invalid_value",
        )
    config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}


def _tools(body: Json, out: Json) -> None:
    tools = body.get("tools")
    if not tools:
        return
    out["tools"] = [{"functionDeclarations": [_declaration(tool, f"tools[{i}]") for i, tool in enumerate(tools)]}]
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None:
        out["toolConfig"] = {"functionCallingConfig": choice}


def _declaration(tool: Any, where: str) -> Json:
    function = tool.get("function") if isinstance(tool, dict) else None
    if tool.get("type", "function") != "function" or not isinstance(function, dict) or not function.get("name"):
        raise _refuse("only tools of type 'function' with a name are supported", where)
    out: Json = {"name": function["name"]}
    if function.get("description"):
        out["description"] = function["description"]
    if isinstance(function.get("parameters"), dict):
        out["parametersJsonSchema"] = function["parameters"]
    return out


def _tool_choice(choice: Any) -> Json | None:
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if choice is None:
        return None
    if isinstance(choice, str) and choice in modes:
        return {"mode": modes[choice]}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str) and function["name"]:
        return {"mode": "ANY", "allowedFunctionNames": [function["name"]]}
    raise _refuse("'tool_choice' must be auto, required, none or a named function", "tool_choice")


# --- messages ---------------------------------------------------------------------------------------------------

Converter = Callable[[Json, str, dict[str, str]], tuple[str, list[Json]]]


def convert_messages(messages: list[Json]) -> tuple[list[Json], list[Json]]:
    """System parts, and the contents with consecutive same-role turns merged (tool results join user)."""
    system: list[Json] = []
    contents: list[Json] = []
    names: dict[str, str] = {}
    """Tool call id -> function name, from earlier assistant turns."""
    for i, message in enumerate(messages):
        role, where = message.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(text_parts(message.get("content"), where))
            continue
        convert = _CONVERTERS.get(str(role))
        if convert is None:
            raise _refuse(f"message role '{role}' is not supported", f"{where}.role")
        gemini_role, parts = convert(message, where, names)
        if not parts:
            continue
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    if not contents:
        raise InvalidRequest("at least one user or assistant message is required", param="messages")
    return system, contents


def text_parts(content: Any, where: str) -> list[Json]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for j, part in enumerate(content or ()):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise _refuse("only text content is supported here", f"{where}.content[{j}]")
        text = part.get("text") or part.get("refusal")
        if text:
            parts.append({"text": text})
    return parts


def _user(message: Json, where: str, names: dict[str, str]) -> tuple[str, list[Json]]:
    content = message.get("content")
    if isinstance(content, str) or content is None:
        return "user", text_parts(content, where)
    return "user", [p for j, part in enumerate(content) if (p := _part(part, f"{where}.content[{j}]"))]


def _part(part: Any, where: str) -> Json | None:
    kind = part.get("type") if isinstance(part, dict) else None
    value = part.get(str(kind)) if isinstance(part, dict) else None
    if kind == "text":
        return {"text": value} if value else None
    if kind == "image_url":
        url = value.get("url") if isinstance(value, dict) else value
        return image_part(url if isinstance(url, str) else "", where)
    if kind == "input_audio" and isinstance(value, dict) and value.get("data") and value.get("format"):
        return {"inlineData": {"mimeType": f"audio/{value['format']}", "data": value["data"]}}
    if kind == "file" and isinstance(value, dict) and isinstance(value.get("file_data"), str):
        return _data_url(value["file_data"], where) or _bad_data(where)
    raise _refuse(f"content parts of type '{kind}' are not supported by Gemini models", where)


def _data_url(url: str, where: str) -> Json | None:
    header, sep, data = url.partition(",")
    mime = header.removeprefix("data:").split(";")[0].lower()
    if not url.startswith("data:") or not sep or not header.endswith(";base64") or "/" not in mime or not data:
        return None
    return {"inlineData": {"mimeType": mime, "data": data}}


def _bad_data(where: str) -> Json:
    raise _refuse("inline files must be base64 data URLs (data:<type>;base64,...)", where)


def image_part(url: str, where: str) -> Json:
    """A data URL -> inlineData; an http(s) URL -> fileData with the type its extension names, else a 400."""
    if not url.startswith(("http://", "https://")):
        return _data_url(url, where) or _bad_data(where)
    path = url.split("?", 1)[0].split("#", 1)[0].lower()
    mime = next((m for ext, m in IMAGE_TYPES.items() if path.endswith(ext)), None)
    if mime is None:
        raise _refuse(
            "cannot tell the type of this image URL: use one ending in .png, .jpg, .webp, .gif or .heic, or a data URL",
            where,
        )
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _assistant(message: Json, where: str, names: dict[str, str]) -> tuple[str, list[Json]]:
    parts = text_parts(message.get("content"), where)
    for j, call in enumerate(message.get("tool_calls") or ()):
        parts.append(_function_call(call, f"{where}.tool_calls[{j}]", names))
    return "model", parts


def _function_call(call: Any, where: str, names: dict[str, str]) -> Json:
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
    names[str(call["id"])] = function["name"]
    part: Json = {"functionCall": {"name": function["name"], "args": arguments}}
    _, sep, signature = str(call["id"]).partition(SIGNATURE_SEP)
    if sep and signature:
        part["thoughtSignature"] = signature
    return part


def _tool_result(message: Json, where: str, names: dict[str, str]) -> tuple[str, list[Json]]:
    name = names.get(str(message.get("tool_call_id")))
    if name is None:
        raise InvalidRequest(
            "a tool message must answer a tool call of an earlier assistant message",
            param=f"{where}.tool_call_id",
            code="invalid_value",
        )
    content = message.get("content")
    text = content if isinstance(content, str) else "".join(p["text"] for p in text_parts(content, where))
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text
    response = value if isinstance(value, dict) else {"result": value}
    return "user", [{"functionResponse": {"name": name, "response": response}}]


_CONVERTERS: dict[str, Converter] = {"user": _user, "assistant": _assistant, "tool": _tool_result}


# --- response: GenerateContentResponse -> chat.completion --------------------------------------------------------


def finish_reason(reason: Any, has_calls: bool) -> str:
    if reason in FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if has_calls else "stop"


def block_message(reason: Any, ratings: Any, detail: Any = None) -> str:
    """Why Gemini blocked a prompt or an answer, for the client: the reason and the categories that tripped."""
    rated = [r for r in ratings or () if isinstance(r, dict)]
    flagged = [r for r in rated if r.get("blocked")] or [r for r in rated if r.get("probability") in ("MEDIUM", "HIGH")]
    categories = ", ".join(f"{r.get('category')}: {r.get('probability')}" for r in flagged)
    text = f"blocked by the upstream's safety filters ({reason})"
    text += f": {categories}" if categories else ""
    return text + (f". {detail}" if isinstance(detail, str) and detail else "")


def tool_call(part: Json, index: int, new_id: Callable[[], str] = new_call_id) -> Json:
    call = part["functionCall"]
    call_id = call.get("id") or new_id()
    if part.get("thoughtSignature"):
        call_id += SIGNATURE_SEP + str(part["thoughtSignature"])
    arguments = orjson.dumps(call.get("args") or {}).decode()
    function = {"name": call["name"], "arguments": arguments}
    return {"index": index, "id": call_id, "type": "function", "function": function}


def openai_usage(usage: Json) -> Json:
    """OpenAI usage; completion tokens count the answer's and the thoughts' tokens."""
    prompt = usage.get("promptTokenCount") or 0
    thoughts = usage.get("thoughtsTokenCount") or 0
    completion = (usage.get("candidatesTokenCount") or 0) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.get("cachedContentTokenCount") or 0},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def _message(candidate: Json) -> tuple[Json, str]:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Json] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if isinstance(part.get("functionCall"), dict):
            calls.append(tool_call(part, len(calls)))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
    finish = finish_reason(candidate.get("finishReason"), bool(calls))
    text = "".join(texts)
    reply: Json = {"role": "assistant", "content": text if text or not (calls or finish == "content_filter") else None}
    if thoughts:
        reply["reasoning_content"] = "".join(thoughts)
    if calls:
        reply["tool_calls"] = [{k: v for k, v in call.items() if k != "index"} for call in calls]
    if finish == "content_filter":
        detail = candidate.get("finishMessage")
        reply["refusal"] = block_message(candidate.get("finishReason"), candidate.get("safetyRatings"), detail)
    return reply, finish


def prompt_block(response: Json) -> str | None:
    """The refusal text when Gemini blocked the prompt itself (promptFeedback.blockReason), else None."""
    feedback = response.get("promptFeedback")
    if not isinstance(feedback, dict) or not feedback.get("blockReason"):
        return None
    return "the prompt was " + block_message(
        feedback["blockReason"], feedback.get("safetyRatings"), feedback.get("blockReasonMessage")
    )


def from_gemini(response: Json, *, model: str, created: int) -> Json:
    """The chat.completion for a GenerateContentResponse; thought parts become `reasoning_content`."""
    choices = []
    for position, candidate in enumerate(response.get("candidates") or ()):
        reply, finish = _message(candidate)
        index = candidate.get("index", position)
        choices.append({"index": index, "message": reply, "finish_reason": finish, "logprobs": None})
    if not choices:
        refusal = prompt_block(response)
        if refusal is None:
            raise UpstreamError("the upstream answered without any candidate")
        reply = {"role": "assistant", "content": None, "refusal": refusal}
        choices = [{"index": 0, "message": reply, "finish_reason": "content_filter", "logprobs": None}]
    return {
        "id": "chatcmpl-" + str(response.get("responseId") or uuid.uuid4().hex),
        "object": "chat.completion",
        "created": created,
        "model": response.get("modelVersion") or model,
        "choices": sorted(choices, key=lambda c: c["index"]),
        "usage": openai_usage(response.get("usageMetadata") or {}),
    }


# --- errors -----------------------------------------------------------------------------------------------------


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """`redact`, plus anything shaped like a Google API key."""
    return GOOGLE_KEY.sub("[redacted]", redact(text, secrets))


def _retry_delay(error: Json) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail ("retryDelay": "20s")."""
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            return parse_retry_after(str(detail.get("retryDelay") or "").removesuffix("s"))
    return None


def _bad_key(error: Json) -> bool:
    details = error.get("details") or ()
    return any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details)


def error_from_object(
    error: Json, status: int, secrets: tuple[str, ...], retry_after: str | None = None
) -> UpstreamStatusError:
    """A Google error object ({code, message, status, details}) -> UpstreamStatusError with the upstream status."""
    google = error.get("status") if isinstance(error.get("status"), str) else None
    code: str | None = google.lower() if google else None
    openai_type = ERROR_TYPES.get(google or "")
    message = str(error.get("message") or f"upstream returned HTTP {status}")
    if status in (401, 403) or _bad_key(error):  # the gateway's credentials, not the client's
        message = f"the upstream rejected the gateway's credentials: {message}"
        status, code, openai_type = 401 if status == 400 else status, "upstream_auth_failed", None
    return UpstreamStatusError(
        scrub(message, secrets)[:2000],
        upstream_status=status,
        type_=openai_type,
        code=scrub(code, secrets)[:200] if code else None,
        retry_after=parse_retry_after(retry_after) or _retry_delay(error),
    )


def parse_error(status: int, raw: bytes, retry_after: str | None, secrets: tuple[str, ...]) -> UpstreamStatusError:
    """A Google error response ({"error": {...}}, sometimes wrapped in a list) -> UpstreamStatusError."""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, list) and body:
        body = body[0]
    inner = body.get("error") if isinstance(body, dict) else None
    error: Json = inner if isinstance(inner, dict) else {"message": inner} if isinstance(inner, str) else {}
    return error_from_object(error, status, secrets, retry_after)


def error_payload(exc: UpstreamStatusError) -> Json:
    """The in-band `{"error": {...}}` event the gateway relays for an error in the middle of a stream."""
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
