"""Chain of thought made uniform: `<think>...</think>` in content moves to `reasoning_content`.

Per alias `reasoning: split | keep | drop`. The splitter is stateful so tags cut across stream chunks at
any character still split the same way as the whole text. Stream events are parsed only when needed:
outside a think block, an event without `<` (and without a reasoning field to drop) passes untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

OPEN, CLOSE = "<think>", "</think>"


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `tag`."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


@dataclass(slots=True)
class ThinkSplitter:
    """Feed content in any pieces; get (content, reasoning) back, as the whole text would split."""

    inside: bool = False
    pending: str = ""
    after_close: bool = False
    """Just left a think block: newlines before the answer are dropped."""

    def feed(self, text: str) -> tuple[str, str]:
        text, self.pending = self.pending + text, ""
        content: list[str] = []
        reasoning: list[str] = []
        while text:
            tag = CLOSE if self.inside else OPEN
            index = text.find(tag)
            if index < 0:
                keep = _partial_suffix(text, tag)
                text, self.pending = (text[: len(text) - keep], text[len(text) - keep :]) if keep else (text, "")
                self._emit(text, content, reasoning)
                break
            self._emit(text[:index], content, reasoning)
            text = text[index + len(tag) :]
            self.after_close = self.inside
            self.inside = not self.inside
        return "".join(content), "".join(reasoning)

    def flush(self) -> tuple[str, str]:
        """The end of the text: a half tag left pending is plain text after all."""
        rest, self.pending = self.pending, ""
        content: list[str] = []
        reasoning: list[str] = []
        self._emit(rest, content, reasoning)
        return "".join(content), "".join(reasoning)

    def _emit(self, text: str, content: list[str], reasoning: list[str]) -> None:
        if not text:
            return
        if self.inside:
            reasoning.append(text)
            return
        if self.after_close:
            text = text.lstrip("\n")
            if not text:
                return
            self.after_close = False
        content.append(text)


def _move(target: dict[str, Any], splitter: ThinkSplitter, text: str, mode: str, *, final: bool) -> None:
    """Split `text` into target's content and reasoning_content per mode."""
    content, reasoning = splitter.feed(text)
    if final:
        more_content, more_reasoning = splitter.flush()
        content, reasoning = content + more_content, reasoning + more_reasoning
    target["content"] = content
    if reasoning and mode == "split":
        target["reasoning_content"] = (target.get("reasoning_content") or "") + reasoning


def _normalise(target: dict[str, Any], mode: str) -> None:
    if mode == "drop":
        target.pop("reasoning_content", None)
        target.pop("reasoning", None)
    elif "reasoning" in target and "reasoning_content" not in target:
        target["reasoning_content"] = target.pop("reasoning")


def split_message_body(body: bytes, mode: str) -> bytes:
    """A non-stream chat.completion with every choice's think blocks moved (or dropped)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    for choice in data.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        _normalise(message, mode)
        if isinstance(message.get("content"), str):
            _move(message, ThinkSplitter(), message["content"], mode, final=True)
    return orjson.dumps(data)


@dataclass(slots=True)
class StreamSplitter:
    """One stream's state: a splitter per choice index."""

    mode: str
    splitters: dict[int, ThinkSplitter] = field(default_factory=dict)

    def event(self, payload: bytes) -> bytes:
        if not self._needs_parse(payload):
            return payload
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload
        for choice in data.get("choices") or []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            _normalise(delta, self.mode)
            if isinstance(delta.get("content"), str):
                splitter = self.splitters.setdefault(int(choice.get("index") or 0), ThinkSplitter())
                _move(delta, splitter, delta["content"], self.mode, final=False)
        return orjson.dumps(data)

    def _needs_parse(self, payload: bytes) -> bool:
        if any(s.inside or s.pending or s.after_close for s in self.splitters.values()):
            return True
        if b"<" in payload:
            return True
        return b'"reasoning' in payload and (self.mode == "drop" or b'"reasoning"' in payload)

    def finish(self) -> list[bytes]:
        """Events for text still held back (a half tag) when the stream ended."""
        out = []
        for index, splitter in sorted(self.splitters.items()):
            content, reasoning = splitter.flush()
            delta: dict[str, Any] = {}
            if content:
                delta["content"] = content
            if reasoning and self.mode == "split":
                delta["reasoning_content"] = reasoning
            if delta:
                chunk = {"object": "chat.completion.chunk", "choices": [{"index": index, "delta": delta}]}
                out.append(orjson.dumps(chunk))
        return out
