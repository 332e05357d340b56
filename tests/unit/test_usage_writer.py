"""The usage write-behind: batches, the spool while the database is down, replay without duplicates."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.metering.spool import Spool, encode_row
from gateway.metering.writer import UsageWriter


def row(n: int, attempt: int = 1) -> dict[str, Any]:
    ts = datetime(2026, 11, 29, 12, 0, n % 60, tzinfo=UTC)
    return {"request_id": f"req-{n}", "attempt": attempt, "ts": ts, "cost": Decimal("0.0000012"), "status": "ok"}


class FakeLedger:
    """An idempotent insert, like the real one, that can be switched off like a stopped database."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int, datetime], Mapping[str, Any]] = {}
        self.down = False
        self.calls = 0

    async def insert(self, rows: Sequence[Mapping[str, Any]]) -> int:
        self.calls += 1
        if self.down:
            raise ConnectionRefusedError("database is down")
        before = len(self.rows)
        for r in rows:
            self.rows.setdefault((r["request_id"], r["attempt"], r["ts"]), r)
        return len(self.rows) - before


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


def writer_for(ledger: FakeLedger, tmp_path: Path, **kw: Any) -> UsageWriter:
    return UsageWriter(ledger.insert, Spool(tmp_path / "spool"), flush_interval=0.05, **kw)


async def test_rows_are_flushed_in_batches(ledger: FakeLedger, tmp_path: Path) -> None:
    writer = writer_for(ledger, tmp_path, batch_size=100)
    writer.start()
    for n in range(250):
        writer.submit(row(n))
    await asyncio.wait_for(writer.drained(), 5)
    await writer.stop()
    assert len(ledger.rows) == 250
    assert ledger.calls <= 5  # batches, not one insert per row
    assert writer.written == 250 and writer.spooled == 0


async def test_database_down_spools_then_replays_without_duplicates(ledger: FakeLedger, tmp_path: Path) -> None:
    writer = writer_for(ledger, tmp_path)
    writer.start()
    ledger.down = True
    for n in range(40):
        writer.submit(row(n))
    while writer.spooled < 40:
        await asyncio.sleep(0.01)  # polling the writer's counters: a spool write has no event to await
    assert not writer.healthy and ledger.rows == {}
    ledger.down = False
    writer.submit(row(40))
    await asyncio.wait_for(writer.drained(), 10)
    await writer.stop()
    assert writer.healthy
    assert sorted(r["request_id"] for r in ledger.rows.values()) == sorted(f"req-{n}" for n in range(41))
    assert not writer.spool.pending()
    replayed = next(r for r in ledger.rows.values() if r["request_id"] == "req-3")
    assert replayed["cost"] == Decimal("0.0000012") and replayed["ts"] == row(3)["ts"]


async def test_stop_drains_the_queue(ledger: FakeLedger, tmp_path: Path) -> None:
    writer = writer_for(ledger, tmp_path, batch_size=10)
    writer.flush_interval = 60  # the loop would wait a minute: only stop() can write these
    writer.start()
    for n in range(25):
        writer.submit(row(n))
    await writer.stop()
    assert len(ledger.rows) == 25


async def test_stop_with_the_database_down_leaves_rows_in_the_spool(ledger: FakeLedger, tmp_path: Path) -> None:
    writer = writer_for(ledger, tmp_path)
    ledger.down = True
    writer.submit(row(1))
    await writer.stop()
    rows = [r for path in writer.spool.claim() for r in Spool.read(path)]
    assert [r["request_id"] for r in rows] == ["req-1"]


async def test_a_dead_process_spool_is_replayed_at_start(ledger: FakeLedger, tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    left = spool_dir / f"usage-{dead.stdout.strip()}-deadbeef.jsonl"
    left.write_bytes(encode_row(row(1)) + encode_row(row(2)) + b'{"request_id": "torn')  # killed mid-write
    writer = writer_for(ledger, tmp_path)
    writer.start()
    await asyncio.wait_for(writer.drained(), 5)
    await writer.stop()
    assert sorted(r["request_id"] for r in ledger.rows.values()) == ["req-1", "req-2"]
    assert not left.exists() and not writer.spool.pending()


async def test_a_crash_after_insert_before_removal_does_not_double_count(ledger: FakeLedger, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append([row(1), row(2)])
    await ledger.insert([row(1), row(2)])  # inserted, but the process died before removing the file
    writer = writer_for(ledger, tmp_path)
    writer.start()
    await asyncio.wait_for(writer.drained(), 5)
    await writer.stop()
    assert len(ledger.rows) == 2


def test_a_live_processes_active_file_is_not_claimed(tmp_path: Path) -> None:
    other = Spool(tmp_path)
    other.pid = os.getppid()  # a live process that is not us
    other.path = tmp_path / f"usage-{other.pid}-cafebabe.jsonl"
    other.append([row(1)])
    mine = Spool(tmp_path)
    assert mine.claim() == []
    mine.append([row(2)])
    claimed = mine.claim()
    assert [r["request_id"] for path in claimed for r in Spool.read(path)] == ["req-2"]
    assert other.path.exists()


def test_an_append_racing_a_claim_starts_a_new_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([row(1)])
    claimed = spool.claim()
    spool.append([row(2)])  # the old name is gone: a new file, never the claimed one
    assert [r["request_id"] for r in Spool.read(claimed[0])] == ["req-1"]
    assert [r["request_id"] for r in Spool.read(spool.path)] == ["req-2"]


async def test_a_full_queue_spools_at_once(ledger: FakeLedger, tmp_path: Path) -> None:
    writer = UsageWriter(ledger.insert, Spool(tmp_path), queue_size=2)
    for n in range(5):
        writer.submit(row(n))
    assert writer.queue.qsize() == 2 and writer.spooled == 3


async def test_rows_the_ledger_refuses_are_kept_aside_not_retried(tmp_path: Path) -> None:
    calls: list[int] = []

    async def refuse(rows: Sequence[Mapping[str, Any]]) -> int:
        calls.append(len(rows))
        raise ValueError("unknown column 'x'")

    writer = UsageWriter(refuse, Spool(tmp_path), flush_interval=0.05)
    writer.start()
    writer.submit(row(1))
    await asyncio.wait_for(writer.drained(), 5)
    await writer.stop()
    assert writer.healthy and calls == [1]
    assert [r["request_id"] for r in Spool.read(writer.spool.rejected)] == ["req-1"]
    assert not writer.spool.pending()  # a rejected file is never replayed
