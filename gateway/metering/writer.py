"""Write-behind for the usage ledger: never on the request path, and nothing lost.

Requests put rows on a bounded queue (`submit` never awaits). A background task flushes them in batches
(every `flush_interval` seconds or `batch_size` rows) with an idempotent insert. When the database fails, the
batch goes to the spool on disk (fsync'd) and the writer is `healthy = False` until an insert succeeds again;
then the spool is replayed. `stop` drains the queue. A full queue spools the row at once (blocking, rare).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.metering.spool import Spool

Insert = Callable[[Sequence[Mapping[str, Any]]], Awaitable[int]]
"""Rows -> how many were new; idempotent on (request_id, attempt, ts)."""
Probe = Callable[[], Awaitable[None]]

PROBE_INTERVAL = 2.0
"""Seconds between attempts to reach a database that is down, when no new rows force one."""


def _read_all(path: Path) -> list[dict[str, Any]]:
    return list(Spool.read(path))


class UsageWriter:
    def __init__(
        self,
        insert: Insert,
        spool: Spool,
        *,
        queue_size: int = 100_000,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        insert_timeout: float = 10.0,
        probe: Probe | None = None,
    ) -> None:
        self.insert = insert
        self.probe = probe
        """Checks the database while nothing else would (down, no rows, no spool); raises when it is down."""
        self._held: list[Mapping[str, Any]] = []
        """The batch being collected or flushed: written out by `stop` if the loop is stopped midway."""
        self.spool = spool
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.insert_timeout = insert_timeout
        self.queue: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue(queue_size)
        self.healthy = True
        """False from a failed insert until the next successful one."""
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self._task: asyncio.Task[None] | None = None
        self._last_probe = 0.0
        self._idle = asyncio.Event()
        self.log = logging.getLogger("switchyard.metering")

    # --- the request path ---------------------------------------------------------------------------------
    def submit(self, row: Mapping[str, Any]) -> None:
        try:
            self.queue.put_nowait(row)
        except asyncio.QueueFull:
            self.spool.append([row])
            self.spooled += 1
        self._idle.clear()

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def stop(self) -> None:
        """Stop the loop, then write out what is queued (to the database, else to the spool)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        held, self._held = self._held, []
        if held:  # taken off the queue but not yet written when the loop stopped (inserts are idempotent)
            await self._flush(held)
        while not self.queue.empty():
            await self._flush(self._take(self.batch_size))

    async def drained(self) -> None:
        """Wait until everything submitted so far is in the database or the spool (for tests and shutdown)."""
        await self._idle.wait()

    # --- the loop -----------------------------------------------------------------------------------------
    async def _run(self) -> None:
        await self._replay()
        while True:
            batch = await self._collect()
            if batch:
                await self._flush(batch)
            elif not self.healthy and self._probe_due():
                await self._check()
            self._held = []
            if self.queue.empty() and await self._replay_if_due() and self.queue.empty():
                self._idle.set()

    async def _check(self) -> None:
        """Is the database back? Asked when no rows and no spool would find out (e.g. `on_db_down: reject`)."""
        if self.probe is None or await asyncio.to_thread(self.spool.pending):
            return
        try:
            async with asyncio.timeout(self.insert_timeout):
                await self.probe()
        except Exception as exc:
            self._down(exc)
            return
        self.log.warning("usage ledger: database is back")
        self.healthy = True

    async def _collect(self) -> list[Mapping[str, Any]]:
        """Up to batch_size rows: waits for the first one (at most flush_interval), then for more until then."""
        deadline = time.monotonic() + self.flush_interval
        batch = self._held = []
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
            batch.extend(self._take(self.batch_size - len(batch)))
        return batch

    def _take(self, limit: int) -> list[Mapping[str, Any]]:
        out: list[Mapping[str, Any]] = []
        while len(out) < limit and not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    async def _flush(self, batch: list[Mapping[str, Any]]) -> None:
        if self.healthy or self._probe_due():
            try:
                await self._insert(batch)
                self.written += len(batch)
                return
            except ValueError as exc:  # rows the ledger refuses: kept aside for a person, never retried
                self.log.error("usage ledger refused a batch (%s); kept in %s", exc, self.spool.rejected)
                await asyncio.to_thread(self.spool.append, batch, rejected=True)
                return
            except Exception as exc:  # any database failure: the rows go to disk instead
                self._down(exc)
        await asyncio.to_thread(self.spool.append, batch)
        self.spooled += len(batch)

    async def _insert(self, rows: Sequence[Mapping[str, Any]]) -> int:
        async with asyncio.timeout(self.insert_timeout):
            inserted = await self.insert(rows)
        if not self.healthy:
            self.log.warning("usage ledger: database is back; replaying the spool")
        self.healthy = True
        return inserted

    def _down(self, exc: BaseException) -> None:
        self._last_probe = time.monotonic()
        if self.healthy:
            self.log.warning("usage ledger: database unavailable (%s); spooling usage to disk", type(exc).__name__)
        self.healthy = False

    def _probe_due(self) -> bool:
        return time.monotonic() - self._last_probe >= PROBE_INTERVAL

    async def _replay_if_due(self) -> bool:
        """Replay the spool when there is one and the database may be reachable; True when nothing is left."""
        if not await asyncio.to_thread(self.spool.pending):
            return True
        if not self.healthy and not self._probe_due():
            return False
        return await self._replay()

    async def _replay(self) -> bool:
        """Insert every spooled row, then remove its file; False (files kept) when the database fails."""
        for path in await asyncio.to_thread(self.spool.claim):
            rows = await asyncio.to_thread(_read_all, path)
            try:
                for start in range(0, len(rows), self.batch_size):
                    await self._insert(rows[start : start + self.batch_size])
            except ValueError as exc:
                self.log.error("usage ledger refused spooled rows (%s); kept in %s", exc, self.spool.rejected)
                await asyncio.to_thread(self.spool.append, rows, rejected=True)
            except Exception as exc:
                self._down(exc)
                return False
            await asyncio.to_thread(path.unlink, True)
            self.replayed += len(rows)
        return True
