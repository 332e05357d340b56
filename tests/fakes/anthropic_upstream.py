"""A fake Anthropic Messages API (POST /v1/messages) whose behaviour is chosen by the model name.

Every request body is validated against the `anthropic` SDK's own request types (MessageCreateParams, made
strict: unknown fields and wrong shapes are refused) and against the rules those types cannot express
(alternating roles, tool results answering the previous turn's tool uses, thinking budget below max_tokens).
A bad request gets Anthropic's 400 error body, and the problem is recorded in `recorder.invalid`.
Answers and stream events follow Anthropic's documented examples and are checked against the SDK's
response models before they are sent.

Model names:
  anything else        echo the last user text ("echo: ...")
  tool                 answer with two parallel tool_use blocks (one when parallel use is disabled);
                       when the last user turn carries tool results, answer with their contents
  think                a thinking block (naming the budget it was given), then text
  cache                usage with cache read and cache creation tokens
  stop-seq             stop_reason stop_sequence (the request's first stop sequence)
  max-tokens           stop_reason max_tokens
  refusal              stop_reason refusal, no content
  error-<type>         that Anthropic error type with its documented status (overloaded_error: 529)
  bad-key              401 authentication_error echoing the x-api-key it received
  stream-error         (streaming) some text, then an in-band overloaded_error event
  stream-error-early   (streaming) an in-band error event before message_start
  stream-cut           (streaming) message_start and one delta, then a clean end without message_stop
"""

from __future__ import annotations

import collections.abc
import contextlib
import functools
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, NotRequired, Required, Union, get_args, get_origin

import orjson
import pydantic
from aiohttp import web
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming, MessageCreateParamsStreaming
from pydantic import ConfigDict, TypeAdapter
from typing_extensions import TypedDict, is_typeddict

from tests.fakes.openai_upstream import FakeOpenAI, Received

API_VERSIONS = ("2023-06-01", "2023-01-01")
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
ERROR_MESSAGES = {
    "invalid_request_error": "prompt is too long: 250000 tokens > 200000 maximum",
    "not_found_error": "model: claude-nonexistent",
    "overloaded_error": "Overloaded",
}
# Sampling fields the Messages API documents but SDK 2.14's MessageCreateParams no longer declares.
SAMPLING_RANGES = {"temperature": (0.0, 1.0), "top_p": (0.0, 1.0), "top_k": (0, 1_000_000)}


# --- strict request validation against the SDK's types ------------------------------------------------------------


class _Strict:
    """Rebuilds the SDK's request TypedDicts so pydantic checks them eagerly and strictly.

    The SDK declares lists as `Iterable[...]`, which pydantic validates lazily, and its TypedDicts ignore
    unknown keys; here every Iterable becomes a list, every TypedDict forbids extra keys, and the response
    models that request unions also admit (for passing a Message back) are left out: JSON carries params.
    """

    DROP = object()

    def __init__(self) -> None:
        self.memo: dict[Any, Any] = {}

    def convert(self, tp: Any) -> Any:
        if is_typeddict(tp):
            return self.typed_dict(tp)
        origin, args = get_origin(tp), get_args(tp)
        if origin is Annotated:
            return self.convert(args[0])
        if origin in (Required, NotRequired):
            return origin[self.convert(args[0])]
        if origin in (Union, types.UnionType):
            members = [self.convert(a) for a in args if not (isinstance(a, type) and issubclass(a, pydantic.BaseModel))]
            members = [m for m in members if m is not self.DROP]
            return Union[tuple(members)] if members else self.DROP  # noqa: UP007
        if origin in (collections.abc.Iterable, collections.abc.Sequence, list) and args:
            return list[self.convert(args[0])]
        if origin in (dict, collections.abc.Mapping) and args:
            return dict[args[0], self.convert(args[1])]
        return tp

    def typed_dict(self, cls: Any) -> Any:
        if cls in self.memo:
            return self.memo[cls]
        self.memo[cls] = cls  # a recursive type falls back to the SDK's own definition
        fields = {}
        for name, hint in typing.get_type_hints(cls, include_extras=True).items():
            converted = self.convert(hint)
            if get_origin(converted) not in (Required, NotRequired):
                converted = (Required if name in cls.__required_keys__ else NotRequired)[converted]
            fields[name] = converted
        strict = TypedDict(cls.__name__, fields)
        config = dict(getattr(cls, "__pydantic_config__", None) or {})
        config.setdefault("extra", "forbid")
        strict.__pydantic_config__ = ConfigDict(**config)
        self.memo[cls] = strict
        return strict


@functools.cache
def _request_adapter(stream: bool) -> TypeAdapter[Any]:
    params = MessageCreateParamsStreaming if stream else MessageCreateParamsNonStreaming
    return TypeAdapter(_Strict().convert(params))


def _sampling_problem(body: dict[str, Any]) -> str | None:
    for name, (lo, hi) in SAMPLING_RANGES.items():
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi
        ):
            return f"{name}: must be a number between {lo} and {hi}"
    return None


def _types_problem(body: dict[str, Any]) -> str | None:
    rest = {k: v for k, v in body.items() if k not in SAMPLING_RANGES}
    try:
        _request_adapter(body.get("stream") is True).validate_python(rest)
    except pydantic.ValidationError as exc:
        deepest = max(exc.errors(), key=lambda e: len(e["loc"]))  # the most specific of a union's complaints
        where = ".".join(str(p) for p in deepest["loc"] if not str(p).startswith(("list[", "union[", "dict[")))
        return f"{where}: {deepest['msg']}"
    return _sampling_problem(body)


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _turns_problem(messages: list[dict[str, Any]]) -> str | None:
    """Roles alternate starting with user; tool results answer exactly the previous turn's tool uses."""
    pending: set[str] = set()
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            return f"messages.{i}.role: roles must alternate user/assistant (got {message['role']})"
        blocks = _blocks(message)
        if any(b["type"] == "text" and not b["text"] for b in blocks):
            return f"messages.{i}: text content blocks must be non-empty"
        results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        if set(results) != pending:
            return f"messages.{i}: tool_result blocks must answer the tool_use ids {sorted(pending)}"
        if results and blocks[0]["type"] != "tool_result":
            return f"messages.{i}: tool_result blocks must come first"
        pending = {b["id"] for b in blocks if b["type"] == "tool_use"}
    return None


def _system_problem(body: dict[str, Any]) -> str | None:
    system = body.get("system")
    if isinstance(system, list) and any(not block["text"] for block in system):
        return "system: text content blocks must be non-empty"
    return None


def _thinking_problem(body: dict[str, Any]) -> str | None:
    thinking = body.get("thinking") or {}
    budget = thinking.get("budget_tokens") if thinking.get("type") == "enabled" else None
    if budget is not None and not 1024 <= budget < body["max_tokens"]:
        return "thinking.budget_tokens: must be at least 1024 and less than max_tokens"
    return None


def request_problem(body: Any) -> str | None:
    """What is wrong with a Messages request body, or None when the real API would accept it."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    problem = _types_problem(body)
    if problem is None:
        problem = _turns_problem(body["messages"]) or _system_problem(body) or _thinking_problem(body)
    return problem


# --- answers ------------------------------------------------------------------------------------------------------


def error_response(kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}
    return web.json_response(body, status=ERROR_STATUS.get(kind, 500), headers=headers)


def _texts(message: dict[str, Any], kind: str = "text") -> list[Any]:
    key = "text" if kind == "text" else "content"
    return [b.get(key) for b in _blocks(message) if b["type"] == kind]


def _last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body["messages"] if m["role"] == "user"]
    return " ".join(_texts(users[-1])) if users else ""


def _message(model: str, content: list[dict[str, Any]], stop: str = "end_turn", **usage: int) -> dict[str, Any]:
    """An answer shaped like the API reference's example."""
    counts = {"input_tokens": 12, "output_tokens": 6, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {**counts, **usage},
    }


def _tool_answer(body: dict[str, Any], model: str) -> dict[str, Any]:
    results = _texts(body["messages"][-1], "tool_result")
    if results:
        flat = [r if isinstance(r, str) else " ".join(b["text"] for b in r) for r in results]
        return _message(model, [{"type": "text", "text": "results: " + " | ".join(flat)}])
    name = body["tools"][0]["name"] if body.get("tools") else "missing_tool"
    single = (body.get("tool_choice") or {}).get("disable_parallel_tool_use") is True
    cities = ["Paris"] if single else ["Paris", "Tokyo"]
    calls = [
        {"type": "tool_use", "id": f"toolu_01A09q90qw90lq917835lq{i}", "name": name, "input": {"city": city}}
        for i, city in enumerate(cities)
    ]
    return _message(model, [{"type": "text", "text": "Let me check the weather."}, *calls], "tool_use")


def _think_answer(body: dict[str, Any], model: str) -> dict[str, Any]:
    budget = (body.get("thinking") or {}).get("budget_tokens")
    thought = {"type": "thinking", "thinking": f"Budget {budget}. 2 plus 2 is 4.", "signature": "EqQBCgIYAhIM1gbcDa9"}
    return _message(model, [thought, {"type": "text", "text": "The answer is 4."}])


def answer(body: dict[str, Any]) -> dict[str, Any]:
    """The Message for a valid request, by model name."""
    model = body["model"]
    echo = [{"type": "text", "text": "echo: " + _last_user_text(body)}]
    if model == "tool":
        return _tool_answer(body, model)
    if model == "think":
        return _think_answer(body, model)
    if model == "cache":
        return _message(model, echo, input_tokens=5, cache_read_input_tokens=100, cache_creation_input_tokens=20)
    if model == "stop-seq":
        return {**_message(model, echo, "stop_sequence"), "stop_sequence": body["stop_sequences"][0]}
    if model == "max-tokens":
        return _message(model, [{"type": "text", "text": "This answer was cut"}], "max_tokens")
    if model == "refusal":
        return _message(model, [], "refusal")
    return _message(model, echo)


# --- streams ------------------------------------------------------------------------------------------------------


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _block_events(index: int, block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind = block["type"]
    empty = {"text": {"text": ""}, "thinking": {"thinking": "", "signature": ""}}.get(kind, {"input": {}})
    yield {"type": "content_block_start", "index": index, "content_block": {**block, **empty}}
    if kind == "text":
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"], 6)]
    elif kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"], 8)]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:
        arguments = orjson.dumps(block["input"]).decode()
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in ["", *_pieces(arguments, 5)]]
    for delta in deltas:
        yield {"type": "content_block_delta", "index": index, "delta": delta}
    yield {"type": "content_block_stop", "index": index}


def stream_events(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The documented event sequence for a message: start, blocks (a ping after the first start), delta, stop."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    yield {
        "type": "message_start",
        "message": {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage},
    }
    for index, block in enumerate(message["content"]):
        for event in _block_events(index, block):
            yield event
            if event["type"] == "content_block_start" and index == 0:
                yield {"type": "ping"}
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    yield {"type": "message_delta", "delta": stop, "usage": {"output_tokens": usage["output_tokens"]}}
    yield {"type": "message_stop"}


_EVENT = TypeAdapter(RawMessageStreamEvent)


def sse(event: dict[str, Any]) -> bytes:
    """One event as Anthropic frames it (`event:` and `data:` lines); checked against the SDK's event models."""
    if event["type"] not in ("ping", "error"):
        _EVENT.validate_python(event)
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def scripted_stream(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The events to send for a streaming request, failures included."""
    model = body["model"]
    if model == "stream-error-early":
        yield OVERLOADED
        return
    events = stream_events(_message(model, [{"type": "text", "text": "partial answer before trouble"}]))
    if model == "stream-error":
        yield from (e for e in events if e["type"] in ("message_start", "content_block_start", "content_block_delta"))
        yield OVERLOADED
    elif model == "stream-cut":
        yield next(events)
        yield {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        yield {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "cut short"}}
    else:
        yield from stream_events(answer(body))


# --- the server ---------------------------------------------------------------------------------------------------


class FakeAnthropic(FakeOpenAI):
    """Reuses the OpenAI fake's thread, event loop and recorder; serves only POST /v1/messages."""

    def __init__(self) -> None:
        super().__init__()
        self.invalid: list[str] = []

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.messages)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]

    def bodies(self) -> list[Any]:
        with self.recorder.cond:
            return [r.body for r in self.recorder.requests]

    def last(self) -> Received:
        with self.recorder.cond:
            return self.recorder.requests[-1]

    def last_headers(self) -> dict[str, str]:
        """The last request's headers, names in lower case."""
        return {name.lower(): value for name, value in self.last().headers.items()}

    def _refuse(self, problem: str) -> web.Response:
        with self.recorder.cond:
            self.invalid.append(problem)
        return error_response("invalid_request_error", problem)

    def _header_problem(self, request: web.Request) -> web.Response | None:
        if not request.headers.get("x-api-key"):
            return error_response("authentication_error", "x-api-key header is required")
        if request.headers.get("anthropic-version") not in API_VERSIONS:
            return self._refuse(f"anthropic-version: unknown version {request.headers.get('anthropic-version')!r}")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._refuse("content-type must be application/json")
        return None

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        refused = self._header_problem(request)
        if refused is not None:
            return refused
        problem = request_problem(body)
        if problem is not None:
            return self._refuse(problem)
        model = body["model"]
        if model.startswith("error-"):
            kind = model.removeprefix("error-")
            headers = {"retry-after": "7"} if kind in ("rate_limit_error", "overloaded_error") else None
            return error_response(kind, ERROR_MESSAGES.get(kind, f"fake {kind}"), headers)
        if model == "bad-key":
            return error_response("authentication_error", f"invalid x-api-key: {request.headers['x-api-key']}")
        if body.get("stream"):
            return await self._stream(request, body, model)
        message = answer(body)
        Message.model_validate(message)
        return web.json_response(message, headers={"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy"})

    async def _stream(self, request: web.Request, body: dict[str, Any], model: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        for event in scripted_stream(body):
            await resp.write(sse(event))
        self.recorder.add_finished(model)
        return resp


@contextlib.contextmanager
def running_fake() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
