"""Datasets and jobs on disk under `<data_dir>/trainer`: one folder each, named by a checked name, holding a JSON
record that is rewritten atomically (write, fsync, rename) under a per-record file lock, so the scheduler, the CLI
and the admin API of every gateway process on the machine agree. A file is never placed at a client-chosen path.

    trainer/datasets/<name>/{meta.json, data.jsonl}
    trainer/jobs/<name>/{job.json, train.yaml, dataset_info.json, train.log, output/, swanlab/}
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL: Final = frozenset({"succeeded", "failed", "cancelled"})
NAME: Final = re.compile(r"^[A-Za-z0-9][\w.-]{0,99}$")


class StoreError(Exception):
    """A name that is taken, unknown or malformed; the message is safe to show."""


class NameTaken(StoreError):
    pass


class Missing(StoreError, LookupError):
    pass


def checked(name: str) -> str:
    """The name itself, if it is a safe folder name (letters, digits, `_.-`, at most 100, no leading dot)."""
    if not NAME.fullmatch(name):
        raise StoreError(f"{name[:100]!r} is not a valid name (letters, digits, '_', '.', '-'; at most 100)")
    return name


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    name: str
    format: str
    preference: bool
    rows: int
    bytes: int
    created_at: float
    team_id: int | None = None
    created_by: str | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    name: str
    spec: dict[str, Any]
    status: JobStatus = "queued"
    created_at: float = 0.0
    team_id: int | None = None
    created_by: str | None = None
    device: str | None = None
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    cancel_requested: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    """The latest line of trainer_log.jsonl (step, loss, learning rate, eval loss, percentage, time left)."""
    adapter: dict[str, Any] | None = None
    """After success: the adapter's files and final metrics."""
    deployed: dict[str, Any] | None = None


def _write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        json.dump(data, out, ensure_ascii=False, indent=1)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class TrainerStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()  # child processes run in job folders: every path handed to them is absolute
        self.datasets_dir = self.root / "datasets"
        self.jobs_dir = self.root / "jobs"
        for folder in (self.datasets_dir, self.jobs_dir):
            folder.mkdir(parents=True, exist_ok=True)

    # --- datasets ---------------------------------------------------------------------------------------------

    def dataset_dir(self, name: str) -> Path:
        return self.datasets_dir / checked(name)

    def dataset_file(self, name: str) -> Path:
        return self.dataset_dir(name) / "data.jsonl"

    def add_dataset(self, record: DatasetRecord, write: Callable[[Path], None]) -> DatasetRecord:
        """Store a dataset: `write(folder)` puts its rows in `folder/data.jsonl`; NameTaken if the name exists.
        Nothing is left behind when writing fails."""
        folder = self.dataset_dir(record.name)
        try:
            folder.mkdir()
        except FileExistsError:
            raise NameTaken(f"a dataset named {record.name!r} already exists") from None
        try:
            write(folder)
            _write_atomic(folder / "meta.json", asdict(record))
        except BaseException:
            _remove_tree(folder)
            raise
        return record

    def dataset(self, name: str) -> DatasetRecord:
        meta = self.dataset_dir(name) / "meta.json"
        if not meta.is_file():
            raise Missing(f"no dataset named {name!r}")
        return DatasetRecord(**json.loads(meta.read_text(encoding="utf-8")))

    def datasets(self) -> list[DatasetRecord]:
        found = [self._maybe(self.dataset, p.name) for p in sorted(self.datasets_dir.iterdir()) if p.is_dir()]
        return [d for d in found if d is not None]

    def remove_dataset(self, name: str) -> None:
        self.dataset(name)
        _remove_tree(self.dataset_dir(name))

    # --- jobs -------------------------------------------------------------------------------------------------

    def job_dir(self, name: str) -> Path:
        return self.jobs_dir / checked(name)

    def add_job(self, record: JobRecord) -> JobRecord:
        folder = self.job_dir(record.name)
        try:
            folder.mkdir()
        except FileExistsError:
            raise NameTaken(f"a job named {record.name!r} already exists") from None
        record = replace(record, created_at=record.created_at or time.time())
        _write_atomic(folder / "job.json", asdict(record))
        return record

    def job(self, name: str) -> JobRecord:
        path = self.job_dir(name) / "job.json"
        if not path.is_file():
            raise Missing(f"no job named {name!r}")
        return JobRecord(**json.loads(path.read_text(encoding="utf-8")))

    def jobs(self) -> list[JobRecord]:
        found = [self._maybe(self.job, p.name) for p in self.jobs_dir.iterdir() if p.is_dir()]
        return sorted((j for j in found if j is not None), key=lambda j: (j.created_at, j.name))

    def update_job(self, name: str, **changes: Any) -> JobRecord:
        """Change fields of a job record under its lock; a final status is never changed again."""
        folder = self.job_dir(name)
        with _locked(folder):
            current = self.job(name)
            if current.status in FINAL and "status" in changes and changes["status"] != current.status:
                return current
            updated = replace(current, **changes)
            _write_atomic(folder / "job.json", asdict(updated))
            return updated

    def remove_job(self, name: str) -> None:
        job = self.job(name)
        if job.status not in FINAL:
            raise StoreError(f"job {name!r} is {job.status}: cancel it first")
        _remove_tree(self.job_dir(name))

    @staticmethod
    def _maybe(read: Any, name: str) -> Any:
        try:
            return read(name)
        except (StoreError, ValueError, TypeError, OSError):
            return None


def _remove_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    folder.rmdir()
