"""Runs queued jobs, one per device, and records how each really ended (SwanLab keeps showing "running" after a
kill: the record here is the truth). One process per data folder schedules (an exclusive file lock): a gateway,
or `switchyard trainer run` when no gateway does. On taking over it adopts jobs still running from a previous
scheduler (their process is alive) and settles those whose process is gone, from what they left on disk."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from trainer import llamafactory, process
from trainer.metrics import LogTail
from trainer.service import TrainerService
from trainer.store import FINAL, JobRecord

log = logging.getLogger("switchyard.trainer")

ADAPTER_FILES: Final = ("adapter_model.safetensors", "adapter_config.json")
LOG_TAIL_BYTES: Final = 4000
Report = Callable[[str, dict[str, Any]], None]


@dataclass
class Running:
    """A job this scheduler watches: its process (None when adopted from an earlier scheduler) and metrics."""

    name: str
    pid: int
    device: str
    tail: LogTail
    handle: process.Run | None = None
    cancelling: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)

    def exit_code(self) -> int | None:
        """The exit status once the process ended (-1 for an adopted one, whose status nobody can know)."""
        if self.handle is not None:
            return self.handle.returncode
        return None if process.alive(self.pid) else -1


class Scheduler:
    def __init__(self, service: TrainerService, poll: float = 1.0) -> None:
        self.service = service
        self.store = service.store
        self.poll = poll
        self.running: dict[str, Running] = {}
        self._lock: IO[str] | None = None

    # --- leadership ---------------------------------------------------------------------------------------------

    def try_lead(self) -> bool:
        """Take the scheduler lock of this data folder if no other process holds it."""
        if self._lock is not None:
            return True
        handle = (self.store.root / "scheduler.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock = handle
        self.reconcile()
        return True

    def release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    async def serve(self) -> None:
        """The gateway's loop: lead when possible, then schedule every `poll` seconds."""
        try:
            while True:
                if self.try_lead():
                    await self.step()
                await asyncio.sleep(self.poll if self._lock is not None else 5.0)
        finally:
            self.release()

    async def run_until_done(self, name: str, report: Report | None = None) -> JobRecord:
        """Schedule here until job `name` ends (another scheduler may run it instead); returns its final record."""
        try:
            while True:
                if self.try_lead():
                    for job_name, metric in await self.step():
                        if report is not None and job_name == name:
                            report(job_name, metric)
                job = self.store.job(name)
                if job.status in FINAL:
                    return job
                await asyncio.sleep(self.poll)
        finally:
            self.release()

    # --- one pass -----------------------------------------------------------------------------------------------

    async def step(self) -> list[tuple[str, dict[str, Any]]]:
        """Read new metrics, settle ended jobs, honour cancels, start queued jobs on free devices."""
        fresh: list[tuple[str, dict[str, Any]]] = []
        for run in list(self.running.values()):
            fresh.extend((run.name, m) for m in self._metrics(run))
            await self._check_cancel(run)
            code = run.exit_code()
            if code is not None:
                fresh.extend((run.name, m) for m in self._metrics(run))
                self._settle(run, code)
        await self._start_queued()
        return fresh

    def _metrics(self, run: Running) -> list[dict[str, Any]]:
        lines = [dict(m) for m in run.tail.read()]
        for line in lines:  # the last line (the run's summary) has no loss: keep the latest value of each
            run.metrics = run.metrics | {k: v for k, v in line.items() if v is not None}
        if lines:
            self.store.update_job(run.name, metrics=run.metrics)
        return lines

    async def _check_cancel(self, run: Running) -> None:
        if not run.cancelling and self.store.job(run.name).cancel_requested:
            run.cancelling = True
            if run.handle is not None:
                await run.handle.cancel()
            else:
                await process.stop_group(run.pid)

    async def _start_queued(self) -> None:
        busy = {run.device for run in self.running.values()}
        free = [d for d in self.service.config.devices if d not in busy]
        for job in (j for j in self.store.jobs() if j.status == "queued"):
            if not free:
                return
            if job.cancel_requested:
                self.store.update_job(job.name, status="cancelled", finished_at=time.time())
                continue
            await self._start(job, free.pop(0))

    async def _start(self, job: JobRecord, device: str) -> None:
        try:
            prepared = self.service.prepare(job)
        except (ValueError, KeyError, OSError) as exc:
            self.store.update_job(job.name, status="failed", error=f"could not prepare: {exc}", finished_at=time.time())
            return
        argv = llamafactory.argv(self.service.venv, prepared.yaml)
        folder = self.store.job_dir(job.name)
        home = folder / "home"
        home.mkdir(exist_ok=True)
        env = process.child_env(self.service.venv, home, cuda_devices="" if device == "cpu" else device)
        handle = await process.start(argv, log_path=prepared.log, cwd=folder, env=env)
        tail = LogTail(prepared.output_dir / "trainer_log.jsonl")
        self.running[job.name] = Running(job.name, handle.pid, device, tail, handle)
        self.store.update_job(job.name, status="running", pid=handle.pid, device=device, started_at=time.time())
        log.info("trainer: started %s on %s (pid %d)", job.name, device, handle.pid)

    def _settle(self, run: Running, code: int) -> None:
        del self.running[run.name]
        job = self.store.job(run.name)
        output = self.store.job_dir(run.name) / "output"
        if job.cancel_requested:
            status, error = "cancelled", None
        elif (code == 0 and all((output / f).is_file() for f in ADAPTER_FILES)) or (code == -1 and _finished(output)):
            status, error = "succeeded", None
        else:
            status, error = "failed", _failure(self.store.job_dir(run.name) / "train.log", code)
        adapter = _adapter(output, run.metrics) if status == "succeeded" else None
        self.store.update_job(
            run.name, status=status, error=error, exit_code=code, finished_at=time.time(), adapter=adapter
        )
        log.info("trainer: %s %s", run.name, status)

    # --- jobs left by an earlier scheduler ----------------------------------------------------------------------

    def reconcile(self) -> None:
        """Adopt running jobs whose process lives on; settle those whose process is gone."""
        for job in self.store.jobs():
            if job.status != "running" or job.name in self.running:
                continue
            output = self.store.job_dir(job.name) / "output"
            run = Running(job.name, job.pid or 0, job.device or "cpu", LogTail(output / "trainer_log.jsonl"))
            run.metrics = dict(job.metrics)
            if job.pid and process.alive(job.pid):
                self.running[job.name] = run
                log.info("trainer: adopted %s (pid %d)", job.name, job.pid)
            else:
                self.running[job.name] = run
                self._settle(run, -1)

    # --- cancel (any process) -----------------------------------------------------------------------------------

    async def cancel(self, name: str) -> JobRecord:
        """Cancel a job: a queued one at once; a running one's process group is stopped, the scheduler records it."""
        job = self.store.update_job(name, cancel_requested=True)
        if job.status == "queued":
            return self.store.update_job(name, status="cancelled", finished_at=time.time())
        if job.status == "running" and job.pid:
            await process.stop_group(job.pid)
        return self.store.job(name)


def _finished(output: Path) -> bool:
    """Whether a job that ended unwatched completed: its adapter is there and its log reached 100%."""
    if not all((output / f).is_file() for f in ADAPTER_FILES):
        return False
    last: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        for metric in LogTail(output / "trainer_log.jsonl").read():
            last = dict(metric)
    return float(last.get("percentage") or 0) >= 100


def _failure(log_path: Path, code: int) -> str:
    """Why a job failed: its exit status and the last meaningful line of its log."""
    lines: list[str] = []
    with contextlib.suppress(OSError), log_path.open("rb") as handle:
        handle.seek(max(0, log_path.stat().st_size - LOG_TAIL_BYTES))
        lines = [ln.strip() for ln in handle.read().decode(errors="replace").splitlines() if ln.strip()]
    reason = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
    status = "ended while no scheduler watched it" if code == -1 else f"exit status {code}"
    return f"{status}: {reason[:300]}" if reason else status


def _adapter(output: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The adapter's files and final metrics (LLaMA-Factory's all_results.json), for the registry."""
    results: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        results = json.loads((output / "all_results.json").read_text(encoding="utf-8"))
    files = sorted(p.name for p in output.iterdir() if p.is_file()) if output.is_dir() else []
    return {"path": str(output), "files": files, "results": results, "last": metrics}
