"""Limits before the upstream call, usage and cost after it: the data plane's link to metering and limits.

`admit` runs after the request was checked and its alias resolved (rate limits, budget hold, the ledger's
health under `on_db_down: reject`); `settle` runs once the answer is over, however it ended, and puts one
ledger row per attempt on the writer's queue. Nothing here waits on a database.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gateway.api.job import Job
from gateway.config.snapshot import ClientKey, Route
from gateway.errors import Unavailable
from gateway.limits.gate import Gate
from gateway.metering.meter import ZERO, Attempt, Pricer, RequestFacts, ledger_row
from gateway.metering.tokens import TokenCounter
from gateway.metering.usage import Usage, estimate_usage, usage_for_body, usage_from_body
from gateway.metering.writer import UsageWriter
from gateway.metrics import Metrics
from gateway.protocol.openai import RESPONSES


class Accounting:
    def __init__(
        self,
        gate: Gate,
        pricer: Pricer,
        counter: TokenCounter,
        writer: UsageWriter | None,
        metrics: Metrics,
        *,
        reject_when_db_down: bool = False,
    ) -> None:
        self.metrics = metrics
        self.gate = gate
        self.pricer = pricer
        self.counter = counter
        self.writer = writer
        self.reject_when_db_down = reject_when_db_down

    # --- before --------------------------------------------------------------------------------------------
    async def admit(self, job: Job, key: ClientKey, body_bytes: int) -> None:
        if self.reject_when_db_down and self.writer is not None and not self.writer.healthy:
            raise Unavailable(
                "usage cannot be recorded right now (the database is down); try again later",
                code="usage_ledger_unavailable",
            )
        job.key = key
        job.ts = datetime.now(UTC)
        if job.record.stream and job.op is not RESPONSES and job.encoder is None:
            options = job.body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                job.body["stream_options"] = {**(options or {}), "include_usage": True}
                job.strip_usage = True  # asked for metering; the client did not ask for it
        worst, currency = ZERO, "USD"
        if key.budgets:  # the worst case matters only to a budget
            prompt = body_bytes // 4
            worst, currency = self.pricer.worst_case(job.alias.name, prompt, max(job.tokens - prompt, 0))
        job.admission = await self.gate.admit(key, job.alias.name, job.tokens, worst, currency)
        if job.admission is not None:
            job.record.headers = job.admission.headers

    # --- after ---------------------------------------------------------------------------------------------
    async def settle(self, job: Job) -> None:
        if job.key is None:
            return
        attempts = await self._attempts(job)
        total_tokens, total_cost = 0, ZERO
        facts = self._facts(job, job.key)
        for attempt in attempts:
            amount, currency = self.pricer.charge(job.alias.name, attempt)
            if self.writer is not None:
                self.writer.submit(ledger_row(facts, attempt, amount, currency))
            u = attempt.usage
            kinds = (("prompt", u.prompt_tokens), ("cached", u.cached_tokens), ("completion", u.completion_tokens))
            self.metrics.usage(job.alias.name, (*kinds, ("reasoning", u.reasoning_tokens)), float(amount), currency)
            total_tokens += u.total_tokens
            total_cost += amount
        if job.admission is not None:
            await self.gate.settle(job.admission, total_tokens, total_cost)

    def _facts(self, job: Job, key: ClientKey) -> RequestFacts:
        record = job.record
        return RequestFacts(
            request_id=record.request_id,
            ts=job.ts or datetime.now(UTC),
            key=key,
            alias=job.alias.name,
            stream=record.stream,
            latency_ms=round(record.elapsed() * 1000, 3),
            ttfb_ms=round(record.ttfb * 1000, 3) if record.ttfb is not None else None,
            cache_hit=record.cache == "hit",
            request_log=self._log(job),
            rag=job.rag_ledger,
        )

    @staticmethod
    def _log(job: Job) -> dict[str, object] | None:
        if not job.alias.log_requests:
            return None
        answer = job.answer.decode(errors="replace") if job.answer is not None else None
        return {"request": job.original or job.body, "response": answer}

    async def _attempts(self, job: Job) -> list[Attempt]:
        """Every attempt that reached an upstream: the failed ones, then the one that answered (or was cut)."""
        if job.record.cache == "hit":
            return [Attempt(0, None, Usage(), "ok", 200)]
        trace = job.trace
        if trace is None:
            return []
        attempts = [
            Attempt(n, route, Usage(), exc.code, getattr(exc, "upstream_status", None))
            for n, (route, exc) in enumerate(trace.errors, 1)
        ]
        last: Route | None = job.route or (trace.route if trace.attempts > len(trace.errors) else None)
        if last is not None:
            usage = await self._usage(job, last)
            attempts.append(Attempt(trace.attempts, last, usage, self._status(job), 200 if job.route else None))
        return attempts

    @staticmethod
    def _status(job: Job) -> str:
        if job.record.client_closed:
            return "client_closed"
        return job.record.error or "ok"

    async def _usage(self, job: Job, route: Route) -> Usage:
        """The upstream's usage when it gave a sane one, else counted here (off the event loop)."""
        if job.answer is not None:
            reported = usage_from_body(job.answer)
            if reported is not None and reported.billable:
                return reported
            return await asyncio.to_thread(usage_for_body, self.counter, route.model, job.body, job.answer)
        if job.tally is not None:
            reported = job.tally.usage
            if reported is not None and reported.billable:
                return reported
            return await asyncio.to_thread(job.tally.result, self.counter, route.model, job.body)
        return await asyncio.to_thread(estimate_usage, self.counter, route.model, job.body, "", "")
