"""One data-plane request as the handlers pass it along, and how its answer is encoded for the client.

The canonical answer is OpenAI's; `Job.tap`, `closing` and `failure` turn it into the client's wire format
(OpenAI SSE, or Anthropic events for `/v1/messages`) after the after-hooks saw it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from gateway.api.access import AccessRecord
from gateway.api.caching import CachePlan, Recording
from gateway.api.ingress import EventEncoder, Ingress
from gateway.config.snapshot import Alias, ClientKey, Route, Snapshot
from gateway.errors import GatewayError, UpstreamStreamError
from gateway.limits.gate import Admission
from gateway.metering.usage import StreamTally, is_usage_only_chunk
from gateway.protocol.openai import Operation
from gateway.protocol.sse import DONE, DONE_EVENT, frame
from gateway.rag.hook import RagPlan
from gateway.routing.router import Trace
from plugins.hooks.reasoning import StreamSplitter


def is_error_event(payload: bytes) -> bool:
    """A cheap byte check for an in-band `{"error": ...}` event (OpenRouter, vLLM style)."""
    return payload[:24].lstrip(b"{ \t\r\n").startswith(b'"error"')


def encode_batch(batch: list[bytes]) -> tuple[bytes, bool, bool]:
    """SSE bytes for a batch of payloads; whether the stream is finished, and whether it ended in an error."""
    out: list[bytes] = []
    for payload in batch:
        if payload == DONE:
            return b"".join(out), True, False
        out.append(frame(payload))
        if is_error_event(payload):
            return b"".join(out), True, True
    return b"".join(out), False, False


@dataclass(slots=True)
class Job:
    """One data-plane request, as the handlers pass it along."""

    op: Operation
    body: dict[str, Any]
    snapshot: Snapshot
    alias: Alias
    record: AccessRecord
    affinity: str | None = None
    cache: CachePlan | None = None
    tokens: int = 0
    splitter: StreamSplitter | None = None
    """Moves <think> blocks to reasoning_content in a stream, when the alias asks for it."""
    recording: Recording | None = None
    """The stream's events, kept for the response cache."""
    ingress: Ingress | None = None
    """The client's API when it is not OpenAI's chat completions (`/v1/messages`, `/v1/responses`)."""
    original: dict[str, Any] | None = None
    """The client's request as it sent it, for answers that echo it."""
    encoder: EventEncoder | None = None
    """That API's stream events, for a stream."""
    key: ClientKey | None = None
    ts: datetime | None = None
    """When the request was admitted (the ledger's time)."""
    admission: Admission | None = None
    """Its place under the key's rate limits and budgets."""
    trace: Trace | None = None
    route: Route | None = None
    """The route that answered."""
    answer: bytes | None = None
    """The canonical answer of a non-stream request."""
    tally: StreamTally | None = None
    """A stream's usage, as it went by."""
    strip_usage: bool = False
    """The gateway asked upstream for the usage chunk; the client did not, so it never sees it."""
    rag: RagPlan | None = None
    """The knowledge bases the request reads."""
    citations: list[dict[str, Any]] | None = None
    """The injected passages, for the answer's `citations`."""
    rag_ledger: dict[str, Any] | None = None
    """What retrieval did, for the usage ledger."""

    def _encode(self, batch: list[bytes]) -> tuple[bytes, bool, bool]:
        assert self.encoder is not None
        out: list[bytes] = []
        for payload in batch:
            if payload == DONE:
                return b"".join(out), True, False
            if is_error_event(payload):
                message = str((orjson.loads(payload).get("error") or {}).get("message", "upstream error"))
                out.append(self.encoder.error(UpstreamStreamError(message)))
                return b"".join(out), True, True
            out.append(self.encoder.chunk(payload))
        return b"".join(out), False, False

    def tap(self, batch: list[bytes]) -> tuple[bytes, bool, bool]:
        """A batch of upstream events as SSE bytes for the client, after the after-hooks saw it."""
        if self.tally is not None:
            for payload in batch:
                self.tally.feed(payload)
            if self.strip_usage:
                batch = [payload for payload in batch if not is_usage_only_chunk(payload)]
        if self.splitter is not None:
            batch = [self.splitter.event(payload) for payload in batch]
        out, finished, failed = encode_batch(batch) if self.encoder is None else self._encode(batch)
        if self.recording is not None:
            self.recording.add(batch, failed=failed)
        return out, finished, failed

    def closing(self) -> bytes:
        """The end of a clean stream: events the after-hooks still held, then the format's end marker."""
        events = self.splitter.finish() if self.splitter is not None else []
        if self.recording is not None:
            self.recording.add(events, failed=False)
        if self.encoder is not None:
            return b"".join(self.encoder.chunk(e) for e in events) + self.encoder.end()
        if self.citations:
            events.append(self.citations_event())
        return b"".join(frame(e) for e in events) + DONE_EVENT

    def citations_event(self) -> bytes:
        """The last chunk of a stream that read knowledge bases: no choices, the passages it was given."""
        chunk = {
            "id": f"chatcmpl-{self.record.request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.alias.name,
            "choices": [],
            "citations": self.citations,
        }
        return orjson.dumps(chunk)

    def after_inband_error(self) -> bytes:
        """The end marker after an upstream's in-band error event was relayed."""
        return b"" if self.encoder is not None else DONE_EVENT

    def failure(self, exc: GatewayError) -> bytes:
        """The end of a stream that broke after it began: an in-band error, never a silent cut."""
        if self.encoder is not None:
            return self.encoder.error(exc)
        return frame(exc.body()) + DONE_EVENT
