"""Gemini stream events -> OpenAI chat.completion.chunk dicts: a pure, stateful translator, one per stream.

streamGenerateContent?alt=sse sends one GenerateContentResponse per event, each holding the new parts of each
candidate; the last event of a candidate carries its finishReason, and usageMetadata grows as it goes. There is
no end marker: the stream is complete when every candidate finished (or the prompt was blocked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.errors import UpstreamStatusError, UpstreamStreamError
from plugins.providers.gemini.translate import (
    block_message,
    error_from_object,
    error_payload,
    finish_reason,
    openai_usage,
    prompt_block,
    tool_call,
)

Json = dict[str, Any]
STREAM_ERROR_STATUS = 500
"""Assumed for an in-band error without a code."""


def stream_error(event: Json, secrets: tuple[str, ...] = ()) -> UpstreamStatusError:
    """The gateway error for an in-band `{"error": {...}}` event."""
    error = event.get("error")
    error = error if isinstance(error, dict) else {"message": str(error)}
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code < 600 else STREAM_ERROR_STATUS
    return error_from_object(error, status, secrets)


@dataclass(slots=True)
class _Choice:
    calls: int = 0
    finish: str | None = None


@dataclass(slots=True)
class StreamTranslator:
    """Feed each decoded Gemini event; get the OpenAI chunks it stands for."""

    model: str
    created: int
    include_usage: bool = False
    secrets: tuple[str, ...] = ()
    id: str = "chatcmpl-gemini"
    started: bool = False
    """Some chunk was produced."""
    failed: bool = False
    """An in-band error event ended the stream."""
    blocked: bool = False
    usage: Json = field(default_factory=dict)
    choices: dict[int, _Choice] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Nothing more will come: every candidate has its finish reason, the prompt was blocked, or it failed."""
        done = bool(self.choices) and all(c.finish is not None for c in self.choices.values())
        return self.failed or self.blocked or done

    def feed(self, event: Json) -> list[Json]:
        if "error" in event:
            self.failed = True
            return [error_payload(stream_error(event, self.secrets))]
        if event.get("responseId") and not self.started:
            self.id = "chatcmpl-" + str(event["responseId"])
        self.model = event.get("modelVersion") or self.model
        if isinstance(event.get("usageMetadata"), dict):
            self.usage = event["usageMetadata"]
        out: list[Json] = []
        for position, candidate in enumerate(event.get("candidates") or ()):
            if isinstance(candidate, dict):
                out.extend(self._candidate(int(candidate.get("index", position)), candidate))
        if not self.choices and (refusal := prompt_block(event)):
            self.blocked = True
            out.append(self.chunk(0, {"role": "assistant", "content": None, "refusal": refusal}, "content_filter"))
        self.started = self.started or bool(out)
        return out

    def close(self) -> list[Json]:
        """At the end of the upstream stream: the usage chunk, when asked for; an error when it was cut short."""
        if not self.finished:
            raise UpstreamStreamError("the upstream stream ended before a finish reason")
        if not self.include_usage or self.failed:
            return []
        usage = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        return [{**usage, "choices": [], "usage": openai_usage(self.usage)}]

    def chunk(self, index: int, delta: Json, finish: str | None = None) -> Json:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
        }

    def _candidate(self, index: int, candidate: Json) -> list[Json]:
        out: list[Json] = []
        state = self.choices.get(index)
        if state is None:
            state = self.choices[index] = _Choice()
            out.append(self.chunk(index, {"role": "assistant", "content": ""}))
        for part in (candidate.get("content") or {}).get("parts") or ():
            delta = self._part(state, part) if isinstance(part, dict) else None
            if delta:
                out.append(self.chunk(index, delta))
        reason = candidate.get("finishReason")
        if reason and state.finish is None:
            state.finish = finish_reason(reason, state.calls > 0)
            last: Json = {}
            if state.finish == "content_filter":
                ratings = candidate.get("safetyRatings")
                last = {"refusal": block_message(reason, ratings, candidate.get("finishMessage"))}
            out.append(self.chunk(index, last, state.finish))
        return out

    def _part(self, state: _Choice, part: Json) -> Json | None:
        if isinstance(part.get("functionCall"), dict):
            state.calls += 1
            return {"tool_calls": [tool_call(part, state.calls - 1)]}
        text = part.get("text")
        if not isinstance(text, str) or not text:
            return None
        return {"reasoning_content": text} if part.get("thought") else {"content": text}
