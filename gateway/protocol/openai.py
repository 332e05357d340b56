"""OpenAI request bodies: parse once, check the fields the gateway relies on, pass everything else through.

The checks are data (a table per endpoint), so a new OpenAI parameter needs no release: unknown fields
are forwarded untouched. Known fields with wrong types or ranges are refused before any upstream call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidRequest

Check = Callable[[Any], str | None]
"""Returns what is wrong with a value (completing "must ..."), or None when it is fine."""

MAX_MESSAGES = 10_000
MAX_TOOLS = 512
MAX_EMBEDDING_INPUTS = 2048

# Fields a client may never set: they would choose where a request goes or which credentials it carries.
FORBIDDEN_FIELDS = ("api_base", "base_url", "api_key", "api_version", "custom_llm_provider", "organization")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(v: Any) -> str | None:
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            return _range("an integer", lo, hi)
        return None

    return check


def number(lo: float | None = None, hi: float | None = None) -> Check:
    def check(v: Any) -> str | None:
        if not _is_number(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            return _range("a number", lo, hi)
        return None

    return check


def _range(kind: str, lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"be {kind} between {lo} and {hi}"
    if lo is not None:
        return f"be {kind} >= {lo}"
    return f"be {kind}"


def of_type(kind: type, name: str) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, kind) and (kind is bool or not isinstance(v, bool)):
            return None
        return f"be {name}"

    return check


def nonempty_string(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "be a non-empty string"


def stop_value(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return None
    if isinstance(v, list) and len(v) <= 16 and all(isinstance(s, str) for s in v):
        return None
    return "be a string or a list of at most 16 strings"


def messages(v: Any) -> str | None:
    if not isinstance(v, list) or not v:
        return "be a non-empty array of message objects"
    if len(v) > MAX_MESSAGES:
        return f"have at most {MAX_MESSAGES} messages"
    for i, message in enumerate(v):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"be an array of objects with a string 'role' (item {i} is not)"
    return None


def tools(v: Any) -> str | None:
    if not isinstance(v, list) or len(v) > MAX_TOOLS or not all(isinstance(t, dict) for t in v):
        return f"be an array of at most {MAX_TOOLS} tool objects"
    return None


def prompt(v: Any) -> str | None:
    if isinstance(v, str) or (isinstance(v, list) and v):
        return None
    return "be a string or a non-empty array"


def embedding_input(v: Any) -> str | None:
    if isinstance(v, str) and v:
        return None
    if isinstance(v, list) and 0 < len(v) <= MAX_EMBEDDING_INPUTS:
        return None
    return f"be a non-empty string or an array of 1 to {MAX_EMBEDDING_INPUTS} inputs"


_SAMPLING: dict[str, Check] = {
    "stream": of_type(bool, "a boolean"),
    "stream_options": of_type(dict, "an object"),
    "max_tokens": integer(1),
    "n": integer(1, 128),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "seed": integer(),
    "stop": stop_value,
    "user": of_type(str, "a string"),
}

CHAT_FIELDS: dict[str, Check] = {
    **_SAMPLING,
    "messages": messages,
    "max_completion_tokens": integer(1),
    "tools": tools,
    "logprobs": of_type(bool, "a boolean"),
    "top_logprobs": integer(0, 20),
    "response_format": of_type(dict, "an object"),
    "parallel_tool_calls": of_type(bool, "a boolean"),
}
COMPLETION_FIELDS: dict[str, Check] = {**_SAMPLING, "prompt": prompt, "logprobs": integer(0, 5)}
EMBEDDING_FIELDS: dict[str, Check] = {
    "input": embedding_input,
    "dimensions": integer(1),
    "encoding_format": of_type(str, "a string"),
    "user": of_type(str, "a string"),
}
RESPONSES_FIELDS: dict[str, Check] = {
    "stream": of_type(bool, "a boolean"),
    "max_output_tokens": integer(1),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "tools": of_type(list, "an array"),
    "previous_response_id": of_type(str, "a string"),
    "store": of_type(bool, "a boolean"),
    "instructions": of_type(str, "a string"),
    "user": of_type(str, "a string"),
}


@dataclass(frozen=True, slots=True, eq=False)
class Operation:
    """One OpenAI endpoint the data plane serves."""

    name: str
    path: str
    required: tuple[str, ...]
    fields: Mapping[str, Check]
    streams: bool


CHAT = Operation("chat", "/chat/completions", ("model", "messages"), CHAT_FIELDS, True)
COMPLETIONS = Operation("completions", "/completions", ("model", "prompt"), COMPLETION_FIELDS, True)
EMBEDDINGS = Operation("embeddings", "/embeddings", ("model", "input"), EMBEDDING_FIELDS, False)
RESPONSES = Operation("responses", "/responses", ("model",), RESPONSES_FIELDS, True)
"""The Responses API passed through as it is, to upstreams that serve it."""


def parse_body(raw: bytes) -> dict[str, Any]:
    """JSON object from raw bytes; invalid JSON or UTF-8, or too deep a nesting, is a 400."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc.msg}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    return body


def validate(body: dict[str, Any], op: Operation) -> None:
    """Refuse missing required fields and known fields of the wrong type or range; strip forbidden fields."""
    for name in op.required:
        if body.get(name) is None:
            raise InvalidRequest(f"missing required parameter: '{name}'", param=name, code="missing_required_parameter")
    problem = nonempty_string(body["model"])
    if problem:
        raise InvalidRequest(f"'model' must {problem}", param="model", code="invalid_value")
    fields = op.fields
    for name, value in body.items():
        check = fields.get(name)
        if check is not None and value is not None:
            problem = check(value)
            if problem:
                raise InvalidRequest(f"'{name}' must {problem}", param=name, code="invalid_value")
    for name in FORBIDDEN_FIELDS:
        body.pop(name, None)


DEFAULT_COMPLETION_ESTIMATE = 256


def estimate_tokens(body_bytes: int, body: dict[str, Any]) -> int:
    """A rough token count for capacity checks before any tokenizer runs: ~4 bytes of request per prompt
    token, plus the completion the request allows (or a default), times `n`."""
    limit = (
        body.get("max_completion_tokens")
        or body.get("max_tokens")
        or body.get("max_output_tokens")
        or DEFAULT_COMPLETION_ESTIMATE
    )
    n = body.get("n") or 1
    return body_bytes // 4 + int(limit) * int(n)
