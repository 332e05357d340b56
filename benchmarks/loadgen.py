"""Throughput load generators of the overhead benchmark: wrk with a Lua POST script, or a Python fallback.

Also home to the event loop choice (uvloop when installed) and the nearest-rank percentile both use.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import subprocess
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from procs import HOST
from rawclient import LoadResult, closed_loop_load

PATH = "/v1/chat/completions"

try:
    import uvloop

    arun: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run
    LOOP_NAME = f"uvloop {getattr(uvloop, '__version__', '?')}"
except ImportError:  # pragma: no cover - uvloop is a gateway dependency
    arun = asyncio.run
    LOOP_NAME = "asyncio"


class Endpoint(Protocol):
    """What a load generator needs of a target (overhead.Target)."""

    @property
    def name(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def key(self) -> str: ...
    def body(self, mode: str) -> bytes: ...
    def raw(self, mode: str) -> bytes: ...


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


WRK_LUA = """wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS_MS[m.group(2)] if m else float("nan")


def parse_wrk(out: str) -> dict[str, Any]:
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not m:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    res: dict[str, Any] = {"requests": int(m.group(1)), "elapsed_s": _wrk_ms(m.group(2) + m.group(3)) / 1e3}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    for q in ("50", "90", "99"):
        lat = re.search(rf"^\s+{q}%\s+(\S+)", out, re.MULTILINE)
        res[f"p{q}_ms"] = _wrk_ms(lat.group(1)) if lat else float("nan")
    res["rps"] = res["requests"] / res["elapsed_s"] if res["elapsed_s"] else 0.0
    return res


@dataclass
class LoadGen:
    kind: str  # "wrk" or "python"
    workdir: Path
    concurrency: int
    version: str = ""
    scripts: dict[tuple[str, str], Path] = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "wrk":
            return f"{self.version} (1 thread, Lua POST script), {self.concurrency} connections"
        return (
            f"Python raw-asyncio generator ({LOOP_NAME}, wrk not used), {self.concurrency} keep-alive connections; "
            "a Python load generator sharing one core with the upstream may itself be the bottleneck"
        )

    def run(self, target: Endpoint, mode: str, duration: float) -> dict[str, Any]:
        return self._wrk(target, mode, duration) if self.kind == "wrk" else self._python(target, mode, duration)

    def _wrk(self, target: Endpoint, mode: str, duration: float) -> dict[str, Any]:
        script = self.scripts.get((target.name, mode))
        if script is None:
            script = self.workdir / f"{target.name}-{mode}.lua"
            script.write_text(WRK_LUA.format(body=target.body(mode).decode(), key=target.key))
            self.scripts[(target.name, mode)] = script
        secs = max(1, round(duration))  # wrk takes whole seconds
        cmd = ["wrk", "-t1", f"-c{self.concurrency}", f"-d{secs}s", "--timeout", "10s", "--latency"]
        cmd += ["-s", str(script), f"http://{HOST}:{target.port}{PATH}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
        return parse_wrk(out.stdout)

    def _python(self, target: Endpoint, mode: str, duration: float) -> dict[str, Any]:
        res: LoadResult = arun(
            closed_loop_load(
                HOST, target.port, target.raw(mode), self.concurrency, duration, max_requests=int(duration * 200_000)
            )
        )
        lat = sorted(v / 1e6 for v in res.latencies_ns)
        out: dict[str, Any] = {"requests": res.requests, "elapsed_s": res.elapsed_s, "errors": res.errors}
        out.update({f"p{q}_ms": pct(lat, q / 100) for q in (50, 90, 99)})
        out["rps"] = res.rps
        if res.first_error:
            out["first_error"] = res.first_error
        return out


def pick_loadgen(choice: str, workdir: Path, concurrency: int) -> LoadGen:
    wrk = shutil.which("wrk")
    if choice == "wrk" and not wrk:
        raise SystemExit("--loadgen wrk: wrk is not installed")
    if choice != "python" and wrk:
        probe = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
        first = (probe.stdout + probe.stderr).strip().splitlines()[:1] or ["wrk"]
        return LoadGen("wrk", workdir, concurrency, first[0].split(" Copyright")[0])
    return LoadGen("python", workdir, concurrency)
