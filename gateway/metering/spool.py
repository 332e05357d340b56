"""The usage spool: append-only JSON-lines files in `data_dir/spool`, where usage waits while the database is down.

Each process appends to its own file, one fsync per batch, under an exclusive lock. A replayer claims a file by
renaming it, then takes the lock, so an append that opened the old name either finished before the claim or
notices the file moved (its inode is no longer at the path) and starts a new file: no row is written into a
file that is already being replayed. A file is removed only after every row in it was inserted, and inserts
are idempotent, so a crash at any point replays without double counting.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from gateway.store.embedded import pid_alive

PREFIX = "usage-"
ACTIVE = ".jsonl"
CLAIMED = ".claimed"


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in the spool")


def encode_row(row: Mapping[str, Any]) -> bytes:
    return orjson.dumps(row, default=_default) + b"\n"


def decode_row(line: bytes) -> dict[str, Any]:
    """A spooled row as the ledger takes it: `ts` back to a datetime, `cost` back to a Decimal."""
    row: dict[str, Any] = orjson.loads(line)
    row["ts"] = datetime.fromisoformat(row["ts"])
    row["cost"] = Decimal(row["cost"])
    return row


def _owner_pid(path: Path) -> int | None:
    parts = path.name.removeprefix(PREFIX).split("-")
    return int(parts[0]) if parts and parts[0].isdigit() else None


class Spool:
    """This process's spool file, and the claiming of files that are safe to replay."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.pid = os.getpid()
        self.path = self.directory / f"{PREFIX}{self.pid}-{uuid.uuid4().hex[:8]}{ACTIVE}"

    @property
    def rejected(self) -> Path:
        """Rows the ledger refused (malformed): kept for a person to look at, never replayed."""
        return self.directory / f"rejected-{self.pid}.jsonl"

    def append(self, rows: Sequence[Mapping[str, Any]], *, rejected: bool = False) -> None:
        """Write rows durably (blocking: run it in a thread from async code)."""
        data = b"".join(encode_row(row) for row in rows)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.rejected if rejected else self.path
        while True:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if rejected or self._still_at_path(fd):
                    os.write(fd, data)
                    os.fsync(fd)
                    return
            finally:
                os.close(fd)  # closing drops the lock

    def _still_at_path(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _replayable(self, path: Path) -> bool:
        """Our own claimed files, and any file of a process that is gone (or of an earlier process with our pid)."""
        if path == self.path:
            return False
        pid = _owner_pid(path)
        return pid is None or pid == self.pid or not pid_alive(pid)

    def pending(self) -> bool:
        return self.directory.is_dir() and any(self.directory.glob(PREFIX + "*"))

    def claim(self) -> list[Path]:
        """Files to replay, renamed so no process appends to them any more; our own active file included."""
        if not self.directory.is_dir():
            return []
        claimed = []
        for path in sorted(self.directory.glob(PREFIX + "*")):
            if path.name.endswith(CLAIMED) and self._replayable(path):
                claimed.append(path)
            elif path.name.endswith(ACTIVE) and (path == self.path or self._replayable(path)):
                target = self.directory / f"{PREFIX}{self.pid}-{uuid.uuid4().hex[:8]}{CLAIMED}"
                try:
                    path.rename(target)
                except FileNotFoundError:
                    continue
                claimed.append(target)
        return claimed

    @staticmethod
    def read(path: Path) -> Iterator[dict[str, Any]]:
        """The rows of a claimed file, waiting for an append still in progress; a torn last line is skipped."""
        with path.open("rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # a write cut short by a crash: its batch was never acknowledged
                yield decode_row(line)
