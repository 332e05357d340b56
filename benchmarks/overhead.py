"""Switchyard overhead benchmark: the gateway's added latency, throughput and CPU against a fast fake upstream.

    python benchmarks/overhead.py [--requests N] [--rounds R] [--concurrency C] [--json OUT]

Starts benchmarks/fake_upstream.py (pinned to the second CPU, with this script and its load generator), the
real gateway via `python -m gateway.cli serve` and benchmarks/bare_proxy.py (a bare Litestar + aiohttp
pass-through, the reference) both pinned to the first CPU, then measures, in interleaved direct / bare /
via-gateway rounds (only one target is loaded at a time; the others sit idle):
  * latency: N sequential requests per round on one keep-alive connection (non-stream, and stream with time
    to first and last byte), p50/p90/p99 per round, medians across rounds;
  * throughput: C concurrent keep-alive connections for --duration seconds per round (wrk when installed,
    else a Python generator), requests/s, medians across rounds;
  * gateway and bare CPU per request (utime+stime from /proc over their throughput rounds), idle RSS, and
    the gateway / bare throughput ratio (median of per-round ratios; the target is >= 0.90).
Only loopback addresses are used; every child process is stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import LOOP_NAME, PATH, LoadGen, arun, pct, pick_loadgen
from procs import (
    ALIAS,
    CLIENT_KEY,
    HOST,
    PROVIDER_KEY,
    ROOT,
    UPSTREAM_MODEL,
    Children,
    ForeignCpu,
    children_cpu,
    cpu_seconds,
    rss_kib,
    self_cpu,
    start_bare,
    start_fake,
    start_gateway,
)
from rawclient import ProtocolError, RawConnection, Reply, build_request
from report import MODE_LABEL, MODES, findings, machine_info, render

REQUEST_TIMEOUT = 10.0
PROXIES = ("gateway", "bare")  # targets that are processes of their own on the first CPU

Log = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    name: str  # "direct", "bare" or "gateway"
    port: int
    model: str
    key: str

    def body(self, mode: str) -> bytes:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Say hello in one short sentence."},
            ],
            "max_tokens": 32,
            "temperature": 0.2,
        }
        if mode == "stream":
            payload["stream"] = True
        return json.dumps(payload, separators=(",", ":")).encode()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Accept": "application/json", "User-Agent": "bench/1"}

    def raw(self, mode: str) -> bytes:
        return build_request(HOST, self.port, PATH, self.body(mode), self.headers())


def check_reply(reply: Reply, mode: str) -> str | None:
    """Why the reply is not the canned answer, or None when it is."""
    if reply.status != 200:
        return f"HTTP {reply.status}: {reply.body[:300]!r}"
    if mode == "stream":
        if not reply.body.endswith(b"data: [DONE]\n\n") or b'"error"' in reply.body:
            return f"stream did not end cleanly: ...{reply.body[-300:]!r}"
        if reply.body.count(b"data: ") < 20:
            return f"stream has {reply.body.count(b'data: ')} events, expected >= 20"
    elif b'"chat.completion"' not in reply.body:
        return f"not a chat.completion: {reply.body[:300]!r}"
    return None


@dataclass
class Context:
    args: argparse.Namespace
    targets: list[Target]
    pids: dict[str, int]  # "gateway", "bare", "upstream"
    foreign: ForeignCpu
    log: Log
    foreign_busy: dict[str, list[float]] = field(default_factory=lambda: {"latency": [], "throughput": []})
    steal: dict[str, list[float]] = field(default_factory=lambda: {"latency": [], "throughput": []})

    def order(self, round_index: int) -> list[Target]:
        """Rotate the order by one each round, and reverse its direction every len(targets) rounds.

        With 3 targets, 6 rounds go through all 6 orders, so each target runs before and after each other
        one equally often (with fewer rounds, as evenly as the count allows).
        """
        n = len(self.targets)
        base = self.targets if (round_index // n) % 2 == 0 else self.targets[::-1]
        k = round_index % n
        return base[k:] + base[:k]


# --------------------------------------------------------------------------------------------- latency


def summarize(values_ms: list[float]) -> dict[str, float]:
    s = sorted(values_ms)
    return {"p50": pct(s, 0.50), "p90": pct(s, 0.90), "p99": pct(s, 0.99), "n": len(s)}


@dataclass
class LatencyRound:
    total: dict[str, float]
    ttfb: dict[str, float]
    truncated: bool
    foreign_busy: float = 0.0
    steal: float = 0.0


async def latency_round(target: Target, mode: str, n: int, warmup: int, budget_s: float) -> LatencyRound:
    raw = target.raw(mode)
    conn = await RawConnection.open(HOST, target.port)
    totals: list[float] = []
    ttfbs: list[float] = []
    deadline = time.monotonic() + budget_s
    truncated = False
    try:
        for i in range(warmup + n):
            if time.monotonic() > deadline:
                truncated = True
                break
            reply = await conn.request(raw, REQUEST_TIMEOUT)
            problem = check_reply(reply, mode)
            if problem:
                raise RuntimeError(f"{target.name} {mode}: {problem}")
            if i >= warmup:
                totals.append(reply.total_ns / 1e6)
                ttfbs.append(reply.ttfb_ns / 1e6)
    finally:
        conn.close()
    return LatencyRound(summarize(totals), summarize(ttfbs), truncated)


async def latency_phase(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    rounds: dict[str, dict[str, list[LatencyRound]]] = {m: {t.name: [] for t in ctx.targets} for m in MODES}
    for r in range(a.rounds):
        for mode in MODES:
            for target in ctx.order(r):
                ctx.foreign.start()
                res = await latency_round(target, mode, a.requests, a.warmup, a.round_budget)
                res.foreign_busy, res.steal = ctx.foreign.stop()
                ctx.foreign_busy["latency"].append(res.foreign_busy)
                ctx.steal["latency"].append(res.steal)
                rounds[mode][target.name].append(res)
                note = " (TRUNCATED by --round-budget)" if res.truncated else ""
                ctx.log(
                    f"  latency round {r + 1}/{a.rounds} {MODE_LABEL[mode]:10} {target.name:7} "
                    f"p50 {res.total['p50']:.3f} ms  p90 {res.total['p90']:.3f} ms  p99 {res.total['p99']:.3f} ms  "
                    f"other processes {res.foreign_busy:.0%} steal {res.steal:.0%}{note}"
                )
    return {mode: latency_summary(rounds[mode]) for mode in MODES}


def latency_summary(by_target: dict[str, list[LatencyRound]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("total", "ttfb"):
        entry: dict[str, Any] = {}
        for name, rs in by_target.items():
            entry[name] = {k: statistics.median(getattr(r, kind)[k] for r in rs) for k in ("p50", "p90", "p99")}
            entry[name]["per_round"] = [getattr(r, kind) for r in rs]
        gw = by_target["gateway"]
        # gateway - direct ("added") and gateway - bare: the difference within each round, then their median
        for prefix, ref in (("added", by_target["direct"]), ("added_vs_bare", by_target["bare"])):
            for k in ("p50", "p99"):
                entry[f"{prefix}_{k}"] = statistics.median(
                    getattr(g, kind)[k] - getattr(d, kind)[k] for d, g in zip(ref, gw, strict=True)
                )
        out[kind] = entry
    out["truncated_rounds"] = sum(r.truncated for rs in by_target.values() for r in rs)
    return out


# --------------------------------------------------------------------------------------------- throughput


def measured_run(ctx: Context, gen: LoadGen, target: Target, mode: str) -> dict[str, Any]:
    before = {name: cpu_seconds(pid) for name, pid in ctx.pids.items()}
    gen_before = children_cpu() + self_cpu()
    ctx.foreign.start()
    res = gen.run(target, mode, ctx.args.duration)
    res["foreign_busy"], res["steal"] = ctx.foreign.stop()
    gen_cpu = children_cpu() + self_cpu() - gen_before
    wall = res["elapsed_s"] or ctx.args.duration
    for name, pid in ctx.pids.items():
        used = cpu_seconds(pid) - before[name]
        res[f"{name}_cpu_s"] = used
        res[f"{name}_busy"] = used / wall
    res["loadgen_busy"] = gen_cpu / wall
    if target.name in PROXIES and res["requests"]:
        res[f"{target.name}_cpu_us_per_req"] = res[f"{target.name}_cpu_s"] / res["requests"] * 1e6
    return res


def throughput_phase(ctx: Context, gen: LoadGen) -> dict[str, Any]:
    for target in ctx.targets:  # a short warm-up at full concurrency, not counted
        for mode in MODES:
            gen.run(target, mode, 1.0)
    a = ctx.args
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {t.name: [] for t in ctx.targets} for m in MODES}
    for r in range(a.tp_rounds):
        for mode in MODES:
            for target in ctx.order(r):
                res = measured_run(ctx, gen, target, mode)
                ctx.foreign_busy["throughput"].append(res["foreign_busy"])
                ctx.steal["throughput"].append(res["steal"])
                runs[mode][target.name].append(res)
                ctx.log(
                    f"  throughput round {r + 1}/{a.tp_rounds} {MODE_LABEL[mode]:10} {target.name:7} "
                    f"{res['rps']:8.0f} req/s  errors {res['errors']}  busy: gateway {res['gateway_busy']:.0%} "
                    f"bare {res['bare_busy']:.0%} upstream {res['upstream_busy']:.0%} "
                    f"loadgen {res['loadgen_busy']:.0%} other processes {res['foreign_busy']:.0%} "
                    f"steal {res['steal']:.0%}"
                )
                if res["errors"]:
                    ctx.log(f"    first error: {res.get('first_error', 'see wrk (non-2xx or socket errors)')}")
    return {mode: throughput_summary(runs[mode]) for mode in MODES}


def throughput_summary(by_target: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rs in by_target.items():
        keys = ["rps", "p50_ms", "p99_ms", "gateway_busy", "bare_busy", "upstream_busy", "loadgen_busy"]
        if name in PROXIES:
            keys.append(f"{name}_cpu_us_per_req")
        med: dict[str, Any] = {k: statistics.median(r.get(k, 0.0) for r in rs) for k in keys}
        med["errors"] = sum(r["errors"] for r in rs)
        med["per_round"] = rs
        out[name] = med
    out["ratio"] = out["gateway"]["rps"] / out["direct"]["rps"] if out["direct"]["rps"] else float("nan")
    # gateway / bare within each round (both ran minutes apart at most), then the median of those
    per_round = [
        g["rps"] / b["rps"] if b["rps"] else float("nan")
        for g, b in zip(by_target["gateway"], by_target["bare"], strict=True)
    ]
    out["ratio_vs_bare"] = statistics.median(per_round)
    out["ratio_vs_bare_per_round"] = per_round
    return out


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Measure the gateway's added latency/throughput/CPU vs a fake upstream")
    p.add_argument("--requests", type=int, default=2000, help="timed sequential requests per latency round")
    p.add_argument("--warmup", type=int, default=None, help="untimed requests before each round (default N/10)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    p.add_argument("--concurrency", type=int, default=64, help="connections in the throughput rounds")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per throughput round")
    p.add_argument("--tp-rounds", type=int, default=3, help="interleaved throughput rounds")
    p.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto", help="throughput load generator")
    p.add_argument("--round-budget", type=float, default=120.0, help="max seconds per latency round")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to this file")
    p.add_argument("--keep-logs", action="store_true", help="keep the logs and config (path printed)")
    args = p.parse_args(argv)
    if min(args.requests, args.rounds, args.concurrency, args.tp_rounds) < 1 or args.duration <= 0:
        p.error("--requests, --rounds, --concurrency, --tp-rounds and --duration must be positive")
    if args.warmup is None:
        args.warmup = max(20, args.requests // 10)
    return args


def cpu_plan() -> tuple[int | None, int | None, str]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        plan = f"gateway, bare proxy -> CPU {cpus[0]}; fake upstream + load generator -> CPU {cpus[1]}"
        return cpus[0], cpus[1], plan
    return None, None, f"only CPU {cpus[0]} usable: nothing pinned, all processes share it (figures are rough)"


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM/SIGHUP behave like Ctrl-C, so the `finally` that stops the children always runs.

    They are turned into a SIGINT, which the event loop runner (while one runs) handles by cancelling
    the main task and raising KeyboardInterrupt cleanly; SIGINT is handled even in a background job.
    """

    def handler(_signum: int, _frame: object) -> None:
        signal.raise_signal(signal.SIGINT)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def log_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, children: Children, workdir: Path) -> dict[str, Any]:
    gw_cpu, load_cpu, pinning = cpu_plan()
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})  # this script (latency client, Python load generator) and wrk
    fake, fake_port = start_fake(children, load_cpu)
    gw = start_gateway(children, workdir, fake_port, gw_cpu)
    # Up for the whole run on the gateway's CPU, but idle unless its own rounds run: one target at a time.
    bare = start_bare(children, workdir, fake_port, gw_cpu)
    time.sleep(1.0)  # let start-up settle before reading the idle RSS
    rss_idle = {"gateway": rss_kib(gw.proc.pid), "bare": rss_kib(bare.proc.pid)}
    pinning += f" (actual: gateway {sorted(os.sched_getaffinity(gw.proc.pid))}, "
    pinning += f"bare {sorted(os.sched_getaffinity(bare.proc.pid))}, "
    pinning += f"upstream {sorted(os.sched_getaffinity(fake.pid))}, this script {sorted(os.sched_getaffinity(0))})"
    ctx = Context(
        args,
        [
            Target("direct", fake_port, UPSTREAM_MODEL, PROVIDER_KEY),
            Target("bare", bare.port, UPSTREAM_MODEL, PROVIDER_KEY),
            Target("gateway", gw.port, ALIAS, CLIENT_KEY),
        ],
        {"gateway": gw.proc.pid, "bare": bare.proc.pid, "upstream": fake.pid},
        ForeignCpu({os.getpid(), gw.proc.pid, bare.proc.pid, fake.pid}),
        log_stderr,
    )
    gen = pick_loadgen(args.loadgen, workdir, args.concurrency)
    ctx.log(f"pinning: {pinning}\nload generator: {gen.describe()}\nlatency phase ...")
    latency = arun(latency_phase(ctx))
    ctx.log("throughput phase ...")
    throughput = throughput_phase(ctx, gen)
    fb = ctx.foreign_busy
    result: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "keep_logs")},
        "machine": machine_info(LOOP_NAME),
        "pinning": pinning,
        "gateway_cmd": shlex.join(["python", *gw.cmd[1:]]),
        "bare_cmd": shlex.join(["python", str(Path(bare.cmd[1]).relative_to(ROOT)), *bare.cmd[2:]]),
        "loadgen": gen.describe(),
        "loadgen_kind": gen.kind,
        "latency": latency,
        "throughput": throughput,
        "rss_kib": {"idle": rss_idle["gateway"], "after": rss_kib(gw.proc.pid), "peak": rss_kib(gw.proc.pid, "VmHWM")},
        "bare_rss_kib": {"idle": rss_idle["bare"], "peak": rss_kib(bare.proc.pid, "VmHWM")},
        "foreign_cpu": {"latency_max": max(fb["latency"]), "throughput_max": max(fb["throughput"]), **fb},
        "steal": {"max": max(ctx.steal["latency"] + ctx.steal["throughput"]), **ctx.steal},
    }
    result["notes"] = findings(result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    try:
        with signals_raise():
            result = run(args, children, workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping child processes", file=sys.stderr)
        return 130
    except (RuntimeError, ProtocolError, TimeoutError, OSError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        children.stop_all()
        if args.keep_logs:
            print(f"gateway config and log, bare proxy log kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
