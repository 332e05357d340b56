"""A fake Gemini API (v1beta generateContent, streamGenerateContent?alt=sse, batchEmbedContents), by model name.

Every request body is validated against the `google-genai` SDK's types (Content, Tool, ToolConfig,
GenerationConfig, ...; unknown fields refused, camelCase names only) and against rules the types cannot express
(roles, one data field per part, function responses answering the previous turn's calls, tool config naming
declared functions). A bad request gets Google's 400 error body, and the problem is recorded in `invalid`.
Answers follow Google's documented examples and are checked against GenerateContentResponse before sending.

Model names:
  anything else   echo the last user text ("echo: ..."); candidateCount candidates
  tool            two parallel functionCall parts (the first with a thoughtSignature, which must come back);
                  when the last turn carries functionResponse parts, answer with their contents
  think           a thought part (naming the thinkingBudget it was given), then text; thoughtsTokenCount
  cache           usage with cachedContentTokenCount
  max-tokens      finishReason MAX_TOKENS
  safety          finishReason SAFETY with safetyRatings and no content
  blocked         promptFeedback.blockReason SAFETY, no candidates
  error-<status>  Google's error body for that HTTP status (400, 403, 404, 429, 500, 503)
  bad-key         400 API_KEY_INVALID echoing the x-goog-api-key it received
  stream-error    (streaming) some text, then an in-band error event
  stream-cut      (streaming) some text, then a clean end without a finishReason
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import orjson
import pydantic
from aiohttp import web
from google.genai import types
from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from tests.fakes.openai_upstream import FakeOpenAI, Received

MODEL_VERSION_SUFFIX = "-001"
SIGNATURE = "c2lnbmF0dXJlLW9mLXRoZS1maXJzdC1jYWxs"
ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    403: ("PERMISSION_DENIED", "Method doesn't allow unregistered callers. Please use API Key."),
    404: ("NOT_FOUND", "models/gemini-nonexistent is not found for API version v1beta."),
    429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in the troubleshooting guide."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}
RATINGS = [
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
]
DATA_FIELDS = ("text", "inlineData", "fileData", "functionCall", "functionResponse")
FREE_FORM = frozenset({"parametersJsonSchema", "responseJsonSchema", "args", "response"})
"""Keys whose values are the caller's own JSON, not API fields."""


# --- strict request validation --------------------------------------------------------------------------------


class _Strict(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=False)


class GenerateContentRequest(_Strict):
    contents: list[types.Content] = Field(min_length=1)
    system_instruction: types.Content | None = None
    tools: list[types.Tool] | None = None
    tool_config: types.ToolConfig | None = None
    generation_config: types.GenerationConfig | None = None
    safety_settings: list[types.SafetySetting] | None = None
    cached_content: str | None = None


class EmbedContentRequest(_Strict):
    model: str = Field(pattern=r"^models/[\w.\-]+$")
    content: types.Content
    task_type: str | None = None
    title: str | None = None
    output_dimensionality: int | None = Field(default=None, ge=1)


class BatchEmbedRequest(_Strict):
    requests: list[EmbedContentRequest] = Field(min_length=1, max_length=100)


def _snake_key(value: Any, where: str = "") -> str | None:
    """The first snake_case key outside the caller's own JSON (the SDK's types would accept it; the API does not)."""
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _snake_key(v, f"{where}[{i}]"))), None)
    if not isinstance(value, dict):
        return None
    for key, inner in value.items():
        if "_" in key:
            return f"{where}.{key}"
        if key not in FREE_FORM and (problem := _snake_key(inner, f"{where}.{key}")):
            return problem
    return None


def _parts_problem(contents: list[dict[str, Any]]) -> str | None:
    calls: list[str] = []
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            return f"contents[{i}].role: must be user or model"
        parts = content.get("parts") or []
        if not parts:
            return f"contents[{i}].parts: must not be empty"
        for j, part in enumerate(parts):
            if sum(1 for f in DATA_FIELDS if f in part) != 1:
                return f"contents[{i}].parts[{j}]: exactly one data field is required"
            if part.get("text") == "":
                return f"contents[{i}].parts[{j}].text: must not be empty"
        answers = [p["functionResponse"]["name"] for p in parts if "functionResponse" in p]
        if answers and sorted(answers) != sorted(calls):
            return f"contents[{i}]: function responses must answer the calls {calls} of the previous turn"
        calls = [p["functionCall"]["name"] for p in parts if "functionCall" in p]
    return None


def _config_problem(body: dict[str, Any]) -> str | None:
    config = body.get("generationConfig") or {}
    if "responseJsonSchema" in config and config.get("responseMimeType") != "application/json":
        return "generationConfig.responseJsonSchema: needs responseMimeType application/json"
    if not 0 <= config.get("temperature", 1) <= 2 or not 0 <= config.get("topP", 1) <= 1:
        return "generationConfig: temperature must be in [0, 2] and topP in [0, 1]"
    if not 1 <= config.get("candidateCount", 1) <= 8:
        return "generationConfig.candidateCount: must be between 1 and 8"
    declared = {d["name"] for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()}
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    allowed = calling.get("allowedFunctionNames")
    if allowed is not None and (calling.get("mode") != "ANY" or not set(allowed) <= declared):
        return "toolConfig.functionCallingConfig.allowedFunctionNames: needs mode ANY and declared functions"
    return None


def request_problem(raw: bytes, kind: type[pydantic.BaseModel]) -> str | None:
    """What is wrong with a request body, or None when the real API would accept it."""
    try:
        kind.model_validate_json(raw)
        body = orjson.loads(raw)
    except pydantic.ValidationError as exc:
        error = max(exc.errors(), key=lambda e: len(e["loc"]))
        return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
    problem = _snake_key(body)
    if problem is not None:
        return f"unknown field {problem.lstrip('.')}"
    if kind is GenerateContentRequest:
        return _parts_problem(body["contents"]) or _config_problem(body)
    return None


# --- answers ------------------------------------------------------------------------------------------------------


def error_response(status: int, message: str | None = None, details: list[Any] | None = None) -> web.Response:
    name, default = ERRORS[status]
    error: dict[str, Any] = {"code": status, "message": message or default, "status": name}
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status)


def _last_user_text(body: dict[str, Any]) -> str:
    users = [c for c in body["contents"] if c["role"] == "user"]
    return " ".join(p["text"] for p in users[-1]["parts"] if "text" in p) if users else ""


def _usage(prompt: int = 8, answer: int = 5, **extra: int) -> dict[str, Any]:
    total = prompt + answer + extra.get("thoughtsTokenCount", 0)
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": answer, "totalTokenCount": total, **extra}
    return {**usage, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}


def _response(model: str, candidates: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """An answer shaped like the API reference's example."""
    return {
        "candidates": candidates,
        "usageMetadata": usage or _usage(),
        "modelVersion": model + MODEL_VERSION_SUFFIX,
        "responseId": "mVqAaJ2iKYqgz7IPoLTV2AQ",
    }


def _candidate(parts: list[dict[str, Any]], finish: str = "STOP", index: int = 0) -> dict[str, Any]:
    return {"content": {"parts": parts, "role": "model"}, "finishReason": finish, "index": index}


def _tool_answer(body: dict[str, Any], model: str) -> dict[str, Any]:
    last = body["contents"][-1]["parts"]
    results = [p["functionResponse"]["response"] for p in last if "functionResponse" in p]
    if results:
        text = "results: " + " | ".join(orjson.dumps(r).decode() for r in results)
        return _response(model, [_candidate([{"text": text}])])
    name = body["tools"][0]["functionDeclarations"][0]["name"] if body.get("tools") else "missing_tool"
    calls = [{"functionCall": {"name": name, "args": {"city": city}}} for city in ("Paris", "Tokyo")]
    calls[0]["thoughtSignature"] = SIGNATURE
    return _response(model, [_candidate(calls)])


def _think_answer(body: dict[str, Any], model: str) -> dict[str, Any]:
    thinking = (body.get("generationConfig") or {}).get("thinkingConfig") or {}
    parts: list[dict[str, Any]] = [{"text": "The answer is 4."}]
    if thinking.get("includeThoughts"):
        parts.insert(0, {"text": f"Budget {thinking.get('thinkingBudget')}. 2 plus 2 is 4.", "thought": True})
    return _response(model, [_candidate(parts)], _usage(thoughtsTokenCount=20))


def answer(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The GenerateContentResponse for a valid request, by model name."""
    echo = [{"text": "echo: " + _last_user_text(body)}]
    if model == "tool":
        return _tool_answer(body, model)
    if model == "think":
        return _think_answer(body, model)
    if model == "cache":
        return _response(model, [_candidate(echo)], _usage(prompt=120, cachedContentTokenCount=100))
    if model == "max-tokens":
        return _response(model, [_candidate([{"text": "This answer was cut"}], "MAX_TOKENS")])
    if model == "safety":
        return _response(model, [{"finishReason": "SAFETY", "index": 0, "safetyRatings": RATINGS}])
    if model == "blocked":
        feedback = {"blockReason": "SAFETY", "safetyRatings": RATINGS}
        return {"promptFeedback": feedback, "usageMetadata": _usage(answer=0), "modelVersion": model}
    count = (body.get("generationConfig") or {}).get("candidateCount", 1)
    candidates = [_candidate([{"text": echo[0]["text"] + (f" #{i}" if i else "")}], index=i) for i in range(count)]
    return _response(model, candidates)


def _missing_signature(body: dict[str, Any]) -> bool:
    """Like Gemini 3: the first function call of a model turn must carry the signature it was given."""
    for content in body["contents"]:
        calls = [p for p in content["parts"] if "functionCall" in p]
        if content["role"] == "model" and calls and calls[0].get("thoughtSignature") != SIGNATURE:
            return True
    return False


# --- streams ------------------------------------------------------------------------------------------------------


def _split(candidate: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A candidate as streamed: text in pieces, other parts whole, the finish reason on the last piece."""
    pieces: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        text = part.get("text")
        if text is None:
            pieces.append(part)
        else:
            pieces.extend({**part, "text": text[i : i + 6]} for i in range(0, len(text), 6))
    for n, piece in enumerate(pieces):
        last = n == len(pieces) - 1
        out = {"content": {"parts": [piece], "role": "model"}, "index": candidate.get("index", 0)}
        yield {**out, **({k: v for k, v in candidate.items() if k != "content"} if last else {})}
    if not pieces:
        yield candidate


def stream_events(full: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The events of a streamed answer; each carries the usage so far, the last the whole usage."""
    if not full.get("candidates"):
        yield full
        return
    usage = full["usageMetadata"]
    partial = {"promptTokenCount": usage["promptTokenCount"], "totalTokenCount": usage["promptTokenCount"]}
    meta = {"modelVersion": full["modelVersion"], "responseId": full["responseId"]}
    events = [{"candidates": [piece], **meta} for c in full["candidates"] for piece in _split(c)]
    for n, event in enumerate(events):
        yield {**event, "usageMetadata": usage if n == len(events) - 1 else partial}


def scripted_stream(body: dict[str, Any], model: str) -> Iterator[dict[str, Any]]:
    if model in ("stream-error", "stream-cut"):
        events = list(stream_events(_response(model, [_candidate([{"text": "partial answer before trouble"}])])))
        del events[-1]["candidates"][0]["finishReason"]
        yield from events
        if model == "stream-error":
            yield {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
        return
    yield from stream_events(answer(body, model))


def sse(event: dict[str, Any]) -> bytes:
    """One event as Google frames it; checked against the SDK's response model first."""
    if "error" not in event:
        types.GenerateContentResponse.model_validate(event)
    return b"data: " + orjson.dumps(event) + b"\r\n\r\n"


def embed_answer(body: dict[str, Any]) -> dict[str, Any]:
    """Deterministic vectors: [length of the text, 0.5, position, ...] cut or padded to the asked dimension."""
    out = []
    for i, request in enumerate(body["requests"]):
        text = " ".join(p.get("text", "") for p in request["content"]["parts"])
        size = request.get("outputDimensionality") or 4
        out.append({"values": ([float(len(text)), 0.5, float(i)] + [0.25] * size)[:size]})
    return {"embeddings": out}


# --- the server ---------------------------------------------------------------------------------------------------


class FakeGemini(FakeOpenAI):
    """Reuses the OpenAI fake's thread, event loop and recorder; serves the Gemini model endpoints."""

    def __init__(self) -> None:
        super().__init__()
        self.invalid: list[str] = []

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1beta/models/{call}", self.model_call)
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
        return {name.lower(): value for name, value in self.last().headers.items()}

    def _refuse(self, problem: str) -> web.Response:
        with self.recorder.cond:
            self.invalid.append(problem)
        return error_response(400, problem)

    async def model_call(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        self.recorder.add_request(Received(request.raw_path, dict(request.headers), body))
        model, _, method = request.match_info["call"].rpartition(":")
        if not request.headers.get("x-goog-api-key"):
            return error_response(403)
        if model == "bad-key":
            info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            return error_response(400, f"API key not valid: {request.headers['x-goog-api-key']}", [info])
        if model.startswith("error-"):
            return self._error(int(model.removeprefix("error-")))
        if method == "batchEmbedContents":
            return self._refuse_or(request_problem(raw, BatchEmbedRequest)) or web.json_response(embed_answer(body))
        refused = self._refuse_or(request_problem(raw, GenerateContentRequest))
        if refused is not None:
            return refused
        if model == "tool" and _missing_signature(body):
            return self._refuse("Function call is missing a thought_signature in functionCall parts.")
        if method == "streamGenerateContent" and request.query.get("alt") == "sse":
            return await self._stream(request, body, model)
        if method != "generateContent":
            return self._refuse(f"unknown method {method}")
        full = answer(body, model)
        types.GenerateContentResponse.model_validate(full)
        return web.json_response(full)

    def _refuse_or(self, problem: str | None) -> web.Response | None:
        return self._refuse(problem) if problem is not None else None

    def _error(self, status: int) -> web.Response:
        if status == 429:
            retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
            return error_response(429, details=[retry])
        return error_response(status)

    async def _stream(self, request: web.Request, body: dict[str, Any], model: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for event in scripted_stream(body, model):
            await resp.write(sse(event))
        self.recorder.add_finished(model)
        return resp


@contextlib.contextmanager
def running_fake() -> Iterator[FakeGemini]:
    fake = FakeGemini()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
