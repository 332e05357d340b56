"""Metering and limits for one gateway process: the database, the usage writer, the limit backends, assembled
from the config and started and stopped with the app.

The database may be down when the gateway starts: with `on_db_down: serve` it starts anyway, usage goes to the
spool, and the writer connects (and migrates) on its next attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.admin.store import repo
from gateway.api.accounting import Accounting
from gateway.config.model import GatewayConfig
from gateway.config.snapshot import ClientKey, build_key
from gateway.limits.budget import MemoryBudgets
from gateway.limits.gate import Gate
from gateway.limits.policy import FailPolicy, LimitsUnavailable
from gateway.limits.rate import MemoryRateLimiter
from gateway.limits.redis_budget import RedisBudgets
from gateway.limits.redis_rate import RedisRateLimiter
from gateway.metering.meter import Pricer
from gateway.metering.reports import spent_since
from gateway.metering.spool import Spool
from gateway.metering.tokens import TokenCounter
from gateway.metering.writer import UsageWriter
from gateway.metrics import Metrics, header, series
from gateway.store.engine import Database, check_connection
from gateway.store.errors import DatabaseError
from gateway.store.ledger import PartitionCache, drop_partitions_before, ensure_partitions, insert_usage

log = logging.getLogger("switchyard.metering")

START_TIMEOUT = 30.0
MAINTENANCE_INTERVAL = 6 * 3600.0


class MeteringService:
    def __init__(self, config: GatewayConfig, metrics: Metrics) -> None:
        self.config = config
        metering = config.metering
        self.database = Database(config.database_url, config.data_dir) if metering.enabled else None
        self.partitions = PartitionCache()
        self.writer = (
            UsageWriter(
                self._insert,
                Spool(Path(config.data_dir) / "spool"),
                queue_size=metering.queue_size,
                batch_size=metering.batch_size,
                flush_interval=metering.flush_interval,
                probe=self._probe,
            )
            if self.database is not None
            else None
        )
        if config.redis_url:
            self.limiter: MemoryRateLimiter | RedisRateLimiter = RedisRateLimiter(config.redis_url, config.redis_prefix)
            self.budgets: MemoryBudgets | RedisBudgets = RedisBudgets(config.redis_url, config.redis_prefix)
        else:
            self.limiter, self.budgets = MemoryRateLimiter(), MemoryBudgets()
        self.policy = FailPolicy(config.on_redis_down)
        self.accounting = Accounting(
            Gate(self.limiter, self.budgets, self.policy),
            Pricer(config),
            TokenCounter(),
            self.writer,
            metrics,
            reject_when_db_down=metering.on_db_down == "reject",
        )
        self._maintenance: asyncio.Task[None] | None = None
        metrics.sections.append(self.metric_lines)

    def metric_lines(self) -> list[str]:
        """The ledger writer's and the limits' state for /metrics."""
        out = header("switchyard_limits_unavailable_total", "counter", "Limit checks Redis did not answer.")
        out.append(series("switchyard_limits_unavailable_total", self.policy.failures))
        writer = self.writer
        if writer is None:
            return out
        out += header("switchyard_usage_rows_total", "counter", "Usage ledger rows, by where they went.")
        for outcome, n in (("written", writer.written), ("spooled", writer.spooled), ("replayed", writer.replayed)):
            out.append(series("switchyard_usage_rows_total", n, outcome=outcome))
        out += header("switchyard_usage_queue", "gauge", "Usage rows waiting for the writer.")
        out.append(series("switchyard_usage_queue", writer.queue.qsize()))
        out += header("switchyard_usage_ledger_up", "gauge", "1 while the ledger database takes writes.")
        out.append(series("switchyard_usage_ledger_up", int(writer.healthy)))
        return out

    async def _insert(self, rows: Sequence[Mapping[str, Any]]) -> int:
        assert self.database is not None
        await self.database.start()  # a no-op once connected; connects and migrates after a failed start
        inserted = await insert_usage(self.database.engine, rows, self.partitions)
        await self._touch_keys(rows)
        return inserted

    async def _touch_keys(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Managed keys' `last_used_at`, once per batch (never on the request path)."""
        assert self.database is not None
        last: dict[str, datetime] = {}
        for row in rows:
            name, ts = row.get("key_name"), row["ts"]
            if name and (name not in last or ts > last[name]):
                last[name] = ts
        if last:
            await repo.touch_keys_used(self.database.engine, last)

    def reprice(self, config: GatewayConfig) -> None:
        """Prices of a new config (aliases and `prices:` may change live)."""
        self.accounting.pricer = Pricer(config)

    async def _probe(self) -> None:
        assert self.database is not None
        await self.database.start()
        await check_connection(self.database.engine)

    async def start(self) -> None:
        await self._start_limits()
        if self.database is None or self.writer is None:
            return
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await self.database.start()
            await self._reconcile()
        except (DatabaseError, OSError, TimeoutError) as exc:
            log.warning("usage ledger: database unavailable at start (%s); usage is spooled until it is back", exc)
            self.writer.healthy = False
        self.writer.start()
        self._maintenance = asyncio.create_task(self._maintain(), name="ledger-maintenance")

    async def _start_limits(self) -> None:
        for backend in (self.limiter, self.budgets):
            if isinstance(backend, RedisRateLimiter | RedisBudgets):
                try:
                    await backend.start()
                except LimitsUnavailable as exc:
                    log.warning("limits: Redis unavailable at start (%s); on_redis_down applies", exc)

    async def _reconcile(self) -> None:
        """In-process budgets start from what the ledger says was spent this period (Redis keeps its own)."""
        if not isinstance(self.budgets, MemoryBudgets) or self.database is None:
            return
        scopes = {s.name: s for key in self._keys() for s in key.budgets}
        for scope in scopes.values():
            await self.budgets.reconcile(scope, await spent_since(self.database.engine, scope, datetime.now(UTC)))

    def _keys(self) -> list[ClientKey]:
        return [build_key(k, self.config) for k in self.config.keys]

    async def _maintain(self) -> None:
        """Partitions for the coming months, and retention, a few times a day."""
        assert self.database is not None
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                now = datetime.now(UTC)
                await ensure_partitions(self.database.engine, now)
                months = self.config.metering.retention_months
                if months:
                    cutoff = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
                    for _ in range(months):
                        cutoff = (cutoff - timedelta(days=1)).replace(day=1)
                    dropped = await drop_partitions_before(self.database.engine, cutoff)
                    if dropped:
                        log.info("usage ledger: dropped partitions %s (retention)", ", ".join(dropped))
            except Exception as exc:
                log.warning("usage ledger maintenance failed: %s", type(exc).__name__)

    async def stop(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
        if self.writer is not None:
            await self.writer.stop()
        if self.database is not None:
            await self.database.close()
        for backend in (self.limiter, self.budgets):
            if isinstance(backend, RedisRateLimiter | RedisBudgets):
                await backend.aclose()
