"""A training run as a child process: its own process group, an argv list (never a shell), a minimal environment.

Async: `start` uses asyncio's subprocess support, so `Run.wait` and `Run.cancel` are awaited in the event loop
(its child watcher reaps the child: call them from the loop that started it). The child's environment is built
from scratch by `child_env`, never copied from the gateway's (which holds provider keys and the database URL).
The group id is the child's pid (a new session), so `stop_group`, `alive` and `group_alive` work from stored ids
alone, after a gateway restart too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Literal

Status = Literal["succeeded", "failed", "cancelled"]

SYSTEM_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
GRACE_S: Final = 10.0
"""Seconds between SIGTERM and SIGKILL."""
REAP_S: Final = 5.0
"""Seconds to wait for a killed group to disappear (orphans are reaped by init, which may take a second)."""
POLL_S: Final = 0.05


def child_env(
    venv: Path,
    home: Path,
    *,
    cuda_devices: str = "",
    threads: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of a training process: offline Hugging Face, local SwanLab, the slot's GPUs.

    `cuda_devices` is the slot's CUDA_VISIBLE_DEVICES ("" hides every GPU); `extra` is for variables the
    operator whitelisted explicitly. Nothing is inherited from the gateway's environment.
    """
    env = {
        "PATH": f"{venv / 'bin'}:{SYSTEM_PATH}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "SWANLAB_MODE": "local",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": cuda_devices,
    }
    if threads is not None:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return env | dict(extra or {})


def outcome(returncode: int, cancelled: bool) -> Status:
    """The job status for an exit code: a cancel that was asked while it ran wins over the code."""
    if cancelled:
        return "cancelled"
    return "succeeded" if returncode == 0 else "failed"


async def start(argv: Sequence[str], *, log_path: Path, cwd: Path, env: Mapping[str, str]) -> Run:
    """Start `argv` (argv[0] an absolute path) in a new session, stdout and stderr appended to `log_path`."""
    if not argv or not os.path.isabs(argv[0]):
        raise ValueError("argv[0] must be an absolute path to the program")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    return Run(process, log_path)


class Run:
    """A started training process: wait for it (optionally with a wall-clock limit) or cancel its whole group."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self._process = process
        self.log_path = log_path
        self.cancelled = False
        self.timed_out = False

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self._process.pid

    @property
    def pgid(self) -> int:
        """The child's process group (and session) id: its pid, since it leads a new session."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal); None while it runs."""
        return self._process.returncode

    def status(self) -> Status | None:
        """succeeded, failed or cancelled once it exited; None while it runs."""
        code = self._process.returncode
        return None if code is None else outcome(code, self.cancelled)

    async def wait(self, limit_s: float | None = None, grace: float = GRACE_S) -> Status:
        """Wait for the exit; past `limit_s` seconds (wall clock) the group is stopped and the run fails (timed_out)."""
        try:
            async with asyncio.timeout(limit_s):
                code = await self._process.wait()
        except TimeoutError:
            self.timed_out = True
            await stop_group(self.pgid, grace)
            code = await self._process.wait()
        return outcome(code, self.cancelled)

    async def cancel(self, grace: float = GRACE_S) -> Status:
        """SIGTERM the group, SIGKILL it after `grace` seconds, reap the child; a run already over keeps its status."""
        if self._process.returncode is None:
            self.cancelled = True
            await stop_group(self.pgid, grace)
        code = await self._process.wait()
        return outcome(code, self.cancelled)


def _signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


async def wait_group_gone(pgid: int, within_s: float) -> bool:
    """Poll until no process (zombies included) is left in the group; False after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while _signal_group(pgid, 0):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


async def stop_group(pgid: int, grace: float = GRACE_S) -> bool:
    """SIGTERM the group, SIGKILL what is left after `grace` seconds; True once the group is gone."""
    if not _signal_group(pgid, signal.SIGTERM) or await wait_group_gone(pgid, grace):
        return True
    _signal_group(pgid, signal.SIGKILL)
    return await wait_group_gone(pgid, REAP_S)


def _zombie(pid: int) -> bool:
    """True when /proc says the process has exited and waits to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def alive(pid: int) -> bool:
    """True while the process exists and has not exited (a zombie is not alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists (zombies included)."""
    return _signal_group(pgid, 0)
