"""Child processes of the overhead benchmark (fake upstream, gateway, bare proxy) and what /proc says about them.

Every child is pinned to a CPU and gets PR_SET_PDEATHSIG, so it dies with the benchmark even if the
benchmark itself is killed; `Children.stop_all` terminates (then kills) them in the normal case.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ALIAS = "bench"
UPSTREAM_MODEL = "bench-upstream"
PROVIDER_KEY = "sk-bench-provider-" + secrets.token_hex(8)
CLIENT_KEY = "sk-bench-client-" + secrets.token_hex(8)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _child_setup(cpu: int | None) -> Callable[[], None]:
    """Runs in the child between fork and exec: pin it, and have it die with this script."""

    def setup() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return setup


class Children:
    """Every child process started here; `stop_all` terminates them (then kills), in reverse order."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], cpu: int | None, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, preexec_fn=_child_setup(cpu), cwd=ROOT, **kwargs)  # noqa: PLW1509
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """One line of the child's stdout within `timeout` seconds (the READY line of the fake or the bare proxy)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        chunk = None
        with contextlib.suppress(BlockingIOError):
            chunk = os.read(fd, 4096)
        if chunk:
            data += chunk
        else:
            time.sleep(0.02)
    return data.decode(errors="replace").split("\n", 1)[0]


def start_fake(children: Children, cpu: int | None) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fake_upstream.py"), "--host", HOST, "--port", "0"]
    proc = children.start(cmd, cpu, stdout=subprocess.PIPE)
    line = _read_line(proc, 15)
    if not line.startswith("READY "):
        raise RuntimeError(f"fake upstream did not start (got {line!r}, exit code {proc.poll()})")
    return proc, int(line.split()[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def gateway_config(upstream_port: int) -> str:
    return f"""
server: {{host: {HOST}, port: 8000}}
providers:
  fake: {{type: openai, base_url: "http://{HOST}:{upstream_port}/v1", api_key: "{PROVIDER_KEY}"}}
models:
  {ALIAS}: {{routes: [{{provider: fake, model: {UPSTREAM_MODEL}}}]}}
keys:
  - {{name: bench, key: "{CLIENT_KEY}"}}
"""


def http_status(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection(HOST, port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


@dataclass
class Proxy:
    """A started gateway or bare proxy."""

    proc: subprocess.Popen[bytes]
    port: int
    cmd: list[str]
    log_path: Path


def start_gateway(children: Children, workdir: Path, upstream_port: int, cpu: int | None) -> Proxy:
    cfg = workdir / "gateway.yaml"
    cfg.write_text(gateway_config(upstream_port))
    port = free_port()
    log_path = workdir / "gateway.log"
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), "--port", str(port)]
    with log_path.open("wb") as log:
        proc = children.start(cmd, cpu, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if http_status(port, "/readyz") == 200:
            return Proxy(proc, port, cmd, log_path)
        time.sleep(0.05)  # polling a child's readiness: there is no event to await
    raise RuntimeError(f"gateway not ready after 30 s:\n{log_path.read_text()[-3000:]}")


def start_bare(children: Children, workdir: Path, upstream_port: int, cpu: int | None) -> Proxy:
    """benchmarks/bare_proxy.py (Litestar + uvicorn + aiohttp, nothing else) in front of the fake upstream."""
    upstream = f"http://{HOST}:{upstream_port}/v1/chat/completions"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bare_proxy.py"), "--upstream", upstream, "--host", HOST]
    log_path = workdir / "bare.log"
    with log_path.open("wb") as log:
        proc = children.start(cmd, cpu, stdout=subprocess.PIPE, stderr=log)
    line = _read_line(proc, 30)
    if not line.startswith("READY "):
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"bare proxy did not start (got {line!r}, exit code {proc.poll()}):\n{tail}")
    return Proxy(proc, int(line.split()[1]), cmd, log_path)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ForeignCpu:
    """CPU time used by every process on the machine except the benchmark's own, between two snapshots.

    Other work on a 2-core machine (a test suite, a build) distorts the figures; this measures how much
    there was. utime+stime+cutime+cstime per pid, so short-lived processes reaped meanwhile count too.
    """

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self._before: dict[int, float] = {}
        self._steal_before = 0.0
        self._t0 = 0.0

    def _snapshot(self) -> dict[int, float]:
        snap: dict[int, float] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in self.exclude:
                continue
            try:
                text = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            snap[int(entry.name)] = sum(int(x) for x in fields[11:15]) / CLK_TCK
        return snap

    def start(self) -> None:
        self._before = self._snapshot()
        self._steal_before = steal_seconds()
        self._t0 = time.monotonic()

    def stop(self) -> tuple[float, float]:
        """Busy fraction of one CPU used by other processes since `start`, and the hypervisor's steal."""
        after = self._snapshot()
        steal = steal_seconds() - self._steal_before
        wall = time.monotonic() - self._t0
        used = sum(max(0.0, v - self._before.get(pid, 0.0)) for pid, v in after.items())
        return (used / wall, steal / wall) if wall > 0 else (0.0, 0.0)


def steal_seconds() -> float:
    """Time the hypervisor ran something else while this VM's CPUs wanted to run, all CPUs together."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / CLK_TCK
    return 0.0
