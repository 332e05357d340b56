"""Usage read from canonical (OpenAI wire format) answers, and estimated when the upstream gave none.

Chunks are touched as little as possible: a byte check comes before any JSON parse. Upstream numbers that
cannot be true (negative, not integers, over MAX_TOKENS) are not billed: the usage is estimated instead and
marked `flagged`, so the operator can see which upstream reports nonsense.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway.metering.tokens import TokenCounter

MAX_TOKENS: Final = 10_000_000
"""More tokens than any one request can use: a count above it is absurd."""
MAX_TEXT_CHARS: Final = 2_000_000
"""Generated text a StreamTally keeps for an estimate; past it, characters are only counted."""
CHARS_PER_TOKEN: Final = 3
"""For text past MAX_TEXT_CHARS: a conservative characters-per-token figure."""

_USAGE_KEY: Final = b'"usage"'
_DONE: Final = b"[DONE]"


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one answer; cached is part of prompt, reasoning part of completion.

    `estimated`: counted here, not reported by the upstream. `flagged`: the upstream reported absurd
    numbers; a flagged usage that is not estimated holds zeros and must be estimated before billing.
    """

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    flagged: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def billable(self) -> bool:
        """False only for a flagged upstream report that still needs an estimate."""
        return self.estimated or not self.flagged


def parse_usage(raw: Any) -> Usage | None:
    """An OpenAI `usage` object (chat, completions, embeddings, or Responses-style) as Usage; None when absent."""
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens", raw.get("input_tokens"))
    completion = raw.get("completion_tokens", raw.get("output_tokens"))
    if prompt is None and completion is None:
        return None
    counts = [_count(v) for v in (prompt, _cached(raw), completion, _reasoning(raw))]
    if any(c is None for c in counts):
        return Usage(flagged=True)
    prompt_n, cached_n, completion_n, reasoning_n = (c or 0 for c in counts)
    return Usage(prompt_n, min(cached_n, prompt_n), completion_n, min(reasoning_n, completion_n))


def _count(value: Any) -> int | None:
    """A sane token count (missing is 0); None when absurd: negative, fractional, too big, or not a number."""
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        return None
    return value


def _detail(raw: Mapping[str, Any], *path: str) -> Any:
    node: Any = raw
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _cached(raw: Mapping[str, Any]) -> Any:
    """OpenAI's details, Responses' details, DeepSeek's `prompt_cache_hit_tokens`, Moonshot's `cached_tokens`."""
    for path in (
        ("prompt_tokens_details", "cached_tokens"),
        ("input_tokens_details", "cached_tokens"),
        ("prompt_cache_hit_tokens",),
        ("cached_tokens",),
    ):
        value = _detail(raw, *path)
        if value is not None:
            return value
    return None


def _reasoning(raw: Mapping[str, Any]) -> Any:
    value = _detail(raw, "completion_tokens_details", "reasoning_tokens")
    return _detail(raw, "output_tokens_details", "reasoning_tokens") if value is None else value


def _loads(data: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def usage_from_body(body: bytes) -> Usage | None:
    """The usage of a chat.completion, text_completion or embeddings body; None when it has none."""
    data = _loads(body)
    return parse_usage(data.get("usage")) if data is not None else None


def may_carry_usage(payload: bytes) -> bool:
    """A byte check: does this chunk have a `usage` key that is not null? (True may still be a false alarm.)"""
    at = payload.rfind(_USAGE_KEY)
    if at < 0:
        return False
    rest = payload[at + len(_USAGE_KEY) : at + len(_USAGE_KEY) + 16].lstrip(b" \t\r\n:")
    return not rest.startswith(b"null")


def usage_from_chunk(payload: bytes) -> Usage | None:
    """The usage in one SSE chunk payload; the JSON is parsed only when the bytes say usage is there."""
    if not may_carry_usage(payload):
        return None
    data = _loads(payload)
    return parse_usage(data.get("usage")) if data is not None else None


def is_usage_only_chunk(payload: bytes) -> bool:
    """The final `choices: []` chunk that carries only usage: stripped when the client did not ask for usage."""
    if not may_carry_usage(payload):
        return False
    data = _loads(payload)
    return data is not None and data.get("choices") == [] and isinstance(data.get("usage"), dict)


def estimate_usage(
    counter: TokenCounter,
    model: str,
    request: Mapping[str, Any],
    text: str,
    reasoning: str = "",
    *,
    flagged: bool = False,
) -> Usage:
    """Usage counted here: the prompt from the request body, the completion from the generated text."""
    reasoning_tokens = counter.count_text(model, reasoning)
    completion = counter.count_text(model, text) + reasoning_tokens
    prompt = counter.count_request(model, request)
    return Usage(prompt, 0, completion, reasoning_tokens, estimated=True, flagged=flagged)


def usage_for_body(counter: TokenCounter, model: str, request: Mapping[str, Any], body: bytes) -> Usage:
    """A non-stream answer's usage: the upstream's when sane, else estimated from the request and the answer."""
    data = _loads(body) or {}
    reported = parse_usage(data.get("usage"))
    if reported is not None and reported.billable:
        return reported
    texts = _Texts()
    for choice in _choices(data):
        texts.add_choice(choice.get("message"), choice)
    return texts.estimate(counter, model, request, flagged=reported is not None and reported.flagged)


def _choices(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    choices = data.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


class _Texts:
    """Generated text kept for an estimate: answer and reasoning apart, bounded in characters."""

    __slots__ = ("_answer", "_chars", "_limit", "_overflow", "_reasoning")

    def __init__(self, limit: int | None = None) -> None:
        self._limit = MAX_TEXT_CHARS if limit is None else limit
        self._answer: list[str] = []
        self._reasoning: list[str] = []
        self._chars = 0
        self._overflow = 0

    def add_choice(self, delta: Any, choice: Mapping[str, Any]) -> None:
        """One choice's message or delta (and a legacy completion's `text`)."""
        self._add(self._answer, choice.get("text"))
        if not isinstance(delta, dict):
            return
        self._add(self._answer, delta.get("content"))
        self._add(self._answer, delta.get("refusal"))
        self._add(self._reasoning, delta.get("reasoning_content"))
        self._add(self._reasoning, delta.get("reasoning"))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    self._add(self._answer, function.get("name"))
                    self._add(self._answer, function.get("arguments"))

    @property
    def overflow(self) -> int:
        return self._overflow

    def add_overflow(self, chars: int) -> None:
        """Text seen but not kept: it counts at CHARS_PER_TOKEN."""
        self._overflow += chars

    def _add(self, parts: list[str], value: Any) -> None:
        if not isinstance(value, str) or not value:
            return
        if self._chars + len(value) > self._limit:
            self._overflow += len(value)
            return
        parts.append(value)
        self._chars += len(value)

    def estimate(self, counter: TokenCounter, model: str, request: Mapping[str, Any], *, flagged: bool) -> Usage:
        """An estimated Usage for this text; characters past the bound count at CHARS_PER_TOKEN."""
        usage = estimate_usage(
            counter, model, request, "".join(self._answer), "".join(self._reasoning), flagged=flagged
        )
        extra = -(-self._overflow // CHARS_PER_TOKEN)
        if not extra:
            return usage
        return Usage(usage.prompt_tokens, 0, usage.completion_tokens + extra, usage.reasoning_tokens, True, flagged)


def _usage_field(data: Mapping[str, Any]) -> Any:
    """A chunk's usage; a Responses stream carries it in the final event's `response`, Moonshot in a choice."""
    if "usage" in data:
        return data["usage"]
    response = data.get("response")
    if isinstance(response, dict):
        return response.get("usage")
    choices = data.get("choices")  # Moonshot puts it in the last chunk's choice
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0].get("usage")
    return None


class StreamTally:
    """Fed each SSE chunk payload of one stream: keeps the last usage seen and the raw payloads.

    Feeding is a byte check and a list append (the hot path); payloads are parsed only when `result` needs an
    estimate (no usage came, or the client left). Up to MAX_TEXT_CHARS bytes of payloads are kept; past that,
    a payload's text is counted at once and only its length kept.
    """

    __slots__ = ("_kept", "_overflow", "_payloads", "_usage")

    def __init__(self) -> None:
        self._usage: Usage | None = None
        self._payloads: list[bytes] = []
        self._kept = 0
        self._overflow = 0

    @property
    def usage(self) -> Usage | None:
        """The last usage the upstream sent (possibly flagged); None if none yet."""
        return self._usage

    def feed(self, payload: bytes) -> None:
        """Take one chunk payload (`[DONE]` and non-JSON payloads are ignored)."""
        if may_carry_usage(payload):
            data = _loads(payload)
            if data is not None:
                self._usage = parse_usage(_usage_field(data)) or self._usage
        if self._kept + len(payload) > MAX_TEXT_CHARS:
            spill = _Texts(limit=0)  # past the bound only the characters are counted
            for choice in _choices(_loads(payload) or {}):
                spill.add_choice(choice.get("delta"), choice)
            self._overflow += spill.overflow
            return
        self._payloads.append(payload)
        self._kept += len(payload)

    def result(self, counter: TokenCounter, model: str, request: Mapping[str, Any]) -> Usage:
        """The stream's usage: the upstream's last sane report, or an estimate (flagged if the report was absurd)."""
        if self._usage is not None and self._usage.billable:
            return self._usage
        texts = _Texts()
        for payload in self._payloads:
            data = None if payload.startswith(_DONE) else _loads(payload)
            for choice in _choices(data or {}):
                texts.add_choice(choice.get("delta"), choice)
        texts.add_overflow(self._overflow)
        return texts.estimate(counter, model, request, flagged=self._usage is not None and self._usage.flagged)
