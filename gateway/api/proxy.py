"""The data plane: OpenAI-format POST endpoints as raw ASGI handlers, from auth to the relayed answer.

Raw ASGI keeps the hot path thin: one pass over headers, one bounded body read, one JSON parse, one
re-encode per attempt, stream chunks relayed as they arrive. Nothing here touches a disk or a database.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, TypeVar

import orjson

from gateway.api.access import RECORD, AccessRecord
from gateway.api.accounting import Accounting
from gateway.api.asgi import (
    ClientGone,
    DisconnectWatch,
    Receive,
    Scope,
    Send,
    check_json_content_type,
    read_body,
    send_error,
    send_json,
)
from gateway.api.caching import CachePlan, Recording, affinity, plan_cache
from gateway.api.ingress import Ingress
from gateway.api.job import Job
from gateway.api.passthrough import pinned, serves_responses
from gateway.api.stored import Owner, ResponseIndex, owned, response_id
from gateway.auth.keys import authenticate
from gateway.cache import ResponseCache, decode_events, encode_events
from gateway.config.snapshot import ClientKey, Route, Snapshot
from gateway.errors import (
    GatewayError,
    MethodNotAllowed,
    ModelNotFound,
    PermissionDenied,
    ServerError,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.metering.usage import StreamTally
from gateway.metrics import Metrics
from gateway.protocol.headers import read_headers
from gateway.protocol.openai import CHAT, RESPONSES, Operation, estimate_tokens, parse_body, validate
from gateway.protocol.responses_stream import RelayEncoder
from gateway.protocol.sse import DONE_EVENT, frame
from gateway.rag.hook import RagHook
from gateway.rag.hook import plan as rag_plan
from gateway.routing.router import Attempt, Outcome, Router, Trace
from gateway.upstream.client import Timeouts
from plugins.hooks.reasoning import StreamSplitter, split_message_body
from plugins.providers.base import CALLS, STREAM_CALLS, CallContext, EventBatches

T = TypeVar("T")

SSE_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


def with_citations(answer: bytes, citations: list[dict[str, Any]]) -> bytes:
    """The answer with its `citations`: the knowledge-base passages the model was given."""
    parsed: dict[str, Any] = orjson.loads(answer)
    parsed["citations"] = citations
    return orjson.dumps(parsed)


class SnapshotSource(Protocol):
    @property
    def snapshot(self) -> Snapshot: ...


class DataPlane:
    def __init__(
        self,
        source: SnapshotSource,
        router: Router,
        metrics: Metrics,
        cache: ResponseCache,
        responses: ResponseIndex,
        *,
        accounting: Accounting | None = None,
        rag: RagHook | None = None,
    ) -> None:
        self.source = source
        self.rag = rag
        self.accounting = accounting
        self.responses = responses
        self.router = router
        self.metrics = metrics
        self.cache = cache
        self.log = logging.getLogger("switchyard.upstream")

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, op: Operation, *, ingress: Ingress | None = None
    ) -> None:
        """Serve one request; `ingress` for the non-OpenAI formats (/v1/messages, /v1/responses)."""
        render = ingress.error if ingress is not None else None
        record: AccessRecord = scope[RECORD]  # record.status is set once the response has started
        job: Job | None = None
        try:
            job = await self._admit(scope, receive, op, record, ingress=ingress)
            await self._serve(job, receive, send)
        except ClientGone:
            record.client_closed = True
        except GatewayError as exc:
            record.error = exc.code
            if not record.status:
                await send_error(send, exc, render(exc) if render else None)
        except Exception:
            self.log.exception("unexpected error serving %s", record.request_id)
            record.error = "internal_error"
            if not record.status:
                failure = ServerError(f"internal error (request id {record.request_id})")
                await send_error(send, failure, render(failure) if render else None)
        finally:
            if job is not None and self.accounting is not None:
                await self._settle(job)

    async def _settle(self, job: Job) -> None:
        assert self.accounting is not None
        try:
            await self.accounting.settle(job)
        except Exception:
            self.log.exception("could not account for %s", job.record.request_id)

    async def _admit(
        self, scope: Scope, receive: Receive, op: Operation, record: AccessRecord, *, ingress: Ingress | None
    ) -> Job:
        """Everything before routing: method, key, body, checks, alias and what applies to the request."""
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"use POST for {scope['path']}")
        snapshot = self.source.snapshot
        headers = read_headers(scope["headers"])
        key = authenticate(snapshot.keys, headers)
        record.key = key.name
        check_json_content_type(headers.content_type)
        raw = await read_body(receive, snapshot.server.max_body_bytes, headers.content_length)
        original = parse_body(raw)
        if ingress is not None and ingress.native is not None and serves_responses(snapshot, original.get("model")):
            ingress = ingress.native
            op = ingress.native_op or op
        body = ingress.request(original) if ingress is not None else original
        validate(body, op)
        alias = snapshot.aliases.get(body["model"])
        if alias is None:
            raise ModelNotFound(f"the model '{body['model'][:200]}' does not exist", param="model")
        if not key.allows(alias.name):
            raise PermissionDenied(f"this API key may not use the model '{alias.name}'", param="model")
        record.alias = alias.name
        record.stream = op.streams and body.get("stream") is True
        job = Job(op, body, snapshot, alias, record, affinity(alias, body, scope["headers"]))
        job.tokens = estimate_tokens(len(raw), body)
        job.rag = rag_plan(alias, body, chat=op is CHAT)
        if alias.reasoning != "keep" and op is CHAT and record.stream:
            job.splitter = StreamSplitter(alias.reasoning)
        if ingress is not None:
            job.ingress, job.original = ingress, original
            job.encoder = ingress.encoder(original) if record.stream else None
        elif job.rag is None:  # the cache stores canonical answers; other formats get theirs translated fresh
            job.cache = plan_cache(alias, key, headers.cache_control, body, stream=record.stream)
        if op is RESPONSES and isinstance(body.get("previous_response_id"), str):
            owner = await owned(self.responses, body["previous_response_id"], key.name, param="previous_response_id")
            job.alias = pinned(snapshot, alias, owner.provider)
        if self.accounting is not None:
            job.tally = StreamTally() if record.stream else None
            await self.accounting.admit(job, key, len(raw))
        await self._retrieve(job, key)
        return job

    async def _retrieve(self, job: Job, key: ClientKey) -> None:
        """Inject the passages of the knowledge bases the request reads (after admission: limits apply first)."""
        if job.rag is None or self.rag is None:
            return
        found = await self.rag.apply(job.rag, key, job.body)
        job.citations, job.rag_ledger = found.citations or None, found.ledger
        job.tokens += found.tokens

    async def _serve(self, job: Job, receive: Receive, send: Send) -> None:
        if job.cache is not None and await self._replay(send, job, job.cache):
            return
        watch = DisconnectWatch(receive)
        try:
            await (self._stream(send, job) if job.record.stream else self._unary(send, job))
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            job.record.client_closed = True
        finally:
            watch.stop()

    async def _replay(self, send: Send, job: Job, plan: CachePlan) -> bool:
        """Answer from the cache when it holds this request; False on a miss."""
        stored = await self.cache.get(plan.key) if plan.lookup else None
        job.record.cache = "miss" if stored is None else "hit"
        if stored is None:
            return False
        job.record.mark_first_byte()
        if not job.record.stream:
            await send_json(send, 200, stored)
            return True
        events = b"".join(frame(e) for e in decode_events(stored))
        await send({"type": "http.response.start", "status": 200, "headers": list(SSE_HEADERS)})
        await send({"type": "http.response.body", "body": events + DONE_EVENT, "more_body": False})
        return True

    async def _route(self, job: Job, attempt: Attempt[T]) -> Outcome[T]:
        trace = job.trace = Trace(affinity=job.affinity, tokens=job.tokens)
        record = job.record
        try:
            return await self.router.run(job.snapshot, job.alias, attempt, trace)
        finally:
            record.attempts = trace.attempts
            record.route = trace.route.label if trace.route else None
            for number, (failed, exc) in enumerate(trace.errors, 1):
                self._log_failure(record, number, failed.label, exc)

    def _log_failure(self, record: AccessRecord, attempt: int | None, label: str, exc: UpstreamError) -> None:
        self.metrics.upstream_error(label, exc.code)
        entry = {
            "request_id": record.request_id,
            "attempt": attempt,
            "route": label,
            "error": exc.code,
            "status": getattr(exc, "upstream_status", None),
            "message": exc.message,
        }
        self.log.warning(orjson.dumps(entry).decode())

    async def _unary(self, send: Send, job: Job) -> None:
        call, body, request_id = CALLS[job.op.name], job.body, job.record.request_id

        async def attempt(route: Route, timeouts: Timeouts) -> bytes:
            return await call(route.adapter, body, CallContext(request_id, route.model, timeouts))

        outcome = await self._route(job, attempt)
        self.router.release(outcome.route)
        job.record.mark_first_byte()
        result = job.answer = outcome.result
        job.route = outcome.route
        if job.alias.reasoning != "keep" and job.op is CHAT:
            result = split_message_body(result, job.alias.reasoning)
        if job.ingress is not None:
            result = job.ingress.answer(result, job.original or {})
        await send_json(send, 200, with_citations(result, job.citations) if job.citations else result)
        if job.op is RESPONSES:
            await self._remember(job, outcome.route, response_id(result))
        if job.cache is not None and job.cache.store:
            await self.cache.set(job.cache.key, result, job.cache.ttl)

    async def _stream(self, send: Send, job: Job) -> None:
        call, body, request_id = STREAM_CALLS[job.op.name], job.body, job.record.request_id

        async def attempt(route: Route, timeouts: Timeouts) -> tuple[EventBatches, list[bytes]]:
            """Start the stream and wait for its first events, so a failure before any byte can fall back."""
            try:
                async with asyncio.timeout(timeouts.first_byte):
                    batches = await call(route.adapter, body, CallContext(request_id, route.model, timeouts))
                    try:
                        first: list[bytes] = await anext(batches, [])
                    except BaseException:
                        await batches.aclose()
                        raise
            except TimeoutError:
                raise UpstreamTimeout("upstream timed out (no first token)") from None
            return batches, first

        outcome = await self._route(job, attempt)
        job.record.mark_first_byte()
        job.route = outcome.route
        batches, first = outcome.result
        job.recording = Recording() if job.cache is not None and job.cache.store else None
        try:
            await self._relay(send, batches, first, route=outcome.route, job=job)
        finally:
            self.router.release(outcome.route)
        if job.op is RESPONSES and isinstance(job.encoder, RelayEncoder):
            await self._remember(job, outcome.route, job.encoder.response_id)
        keep = job.recording
        if keep is not None and keep.complete and job.cache is not None:
            await self.cache.set(job.cache.key, encode_events(keep.events), job.cache.ttl)

    async def _remember(self, job: Job, route: Route, rid: str | None) -> None:
        """Note which provider stores a passed-through response, for the calls that come back to it."""
        if rid and job.body.get("store") is not False and job.record.key:
            await self.responses.remember(rid, Owner(route.provider, job.record.key))

    async def _relay(self, send: Send, batches: EventBatches, batch: list[bytes], *, route: Route, job: Job) -> None:
        record = job.record
        await send({"type": "http.response.start", "status": 200, "headers": list(SSE_HEADERS)})
        tail = b""
        try:
            while True:
                out, finished, failed = job.tap(batch)
                if failed:
                    record.error = "upstream_stream_error"
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                if finished:
                    break
                more: list[bytes] | None = await anext(batches, None)
                if more is None:
                    break
                batch = more
            tail = job.closing() if not failed else job.after_inband_error()
        except UpstreamError as exc:
            record.error = exc.code
            self._log_failure(record, None, route.label, exc)
            tail = job.failure(exc)
            if job.recording is not None:
                job.recording.complete = False
        finally:
            await batches.aclose()
        await send({"type": "http.response.body", "body": tail, "more_body": False})
