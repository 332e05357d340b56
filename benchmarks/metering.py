"""What usage metering costs: the gateway's throughput with metering on and off, measured in the same run.

    .venv/bin/python benchmarks/metering.py                                  # 5 s x 3 rounds per mode, C=64
    .venv/bin/python benchmarks/metering.py --duration 3 --rounds 2 --json /tmp/metering.json   # quicker
    #   --concurrency C  --loadgen auto|wrk|python  --flush-interval S  --batch-size N  --keep-logs

Starts the overhead benchmark's fake upstream (benchmarks/fake_upstream.py: a canned `chat.completion` with usage,
or 20 SSE events ending with a usage chunk) and two real gateways (`python -m gateway.cli serve`) in front of it:

  * `on`:  metering enabled with its defaults (or --flush-interval / --batch-size): every request becomes a
    ledger row on the writer's queue, batched into PostgreSQL. The database is $SWITCHYARD_DATABASE_URL when
    set, else the embedded server the gateway starts in its data dir (pinned here to the load generator's CPU,
    so its work is not charged to the gateway; its CPU per request is reported on its own line).
  * `off`: `metering: {enabled: false}`: no rows, no database.

Both gateways run on the first CPU; the fake upstream, this script and the load generator on the second (see
benchmarks/README.md for the placement and the load generators: `wrk` when installed, else a Python one).
Only one gateway is loaded at a time. Each round runs C keep-alive connections for --duration seconds against
`on` and `off` in turn, for non-stream and stream requests, the order alternating from round to round. The
report gives the median req/s of each, their p50/p99 under load, the gateway's CPU per request, and on/off (the
median of the per-round ratios, with the rounds' values). Last, it checks that the metered gateway recorded a
row for every request it served (from its /metrics: rows written or spooled vs requests answered).

Only loopback addresses are used; every child process is stopped on exit, Ctrl-C or error (an embedded
database is stopped with the gateway that started it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import LOOP_NAME, LoadGen, pick_loadgen
from overhead import Target, cpu_plan, log_stderr, signals_raise
from procs import (
    ALIAS,
    CLIENT_KEY,
    HOST,
    Children,
    ForeignCpu,
    Proxy,
    cpu_seconds,
    free_port,
    gateway_config,
    http_status,
    rss_kib,
    start_fake,
)
from report import MODE_LABEL, MODES, machine_info

NAMES = ("on", "off")
READY_TIMEOUT = 120.0  # a first start of the embedded database runs initdb
DB_ENV = "SWITCHYARD_DATABASE_URL"


# --------------------------------------------------------------------------------------------- processes


def metering_config(upstream_port: int, data_dir: Path, metering: str) -> str:
    """The overhead benchmark's gateway config, with its own data dir and metering settings."""
    return gateway_config(upstream_port) + f'data_dir: "{data_dir}"\nmetering: {metering}\n'


def start_gateway(children: Children, workdir: Path, name: str, config: str, cpu: int | None) -> Proxy:
    cfg = workdir / f"gateway-{name}.yaml"
    cfg.write_text(config)
    port = free_port()
    log_path = workdir / f"gateway-{name}.log"
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), "--port", str(port)]
    with log_path.open("wb") as log:
        proc = children.start(cmd, cpu, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway {name} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if http_status(port, "/readyz") == 200:
            return Proxy(proc, port, cmd, log_path)
        time.sleep(0.1)  # polling a child's readiness: there is no event to await
    raise RuntimeError(f"gateway {name} not ready after {READY_TIMEOUT:.0f} s:\n{log_path.read_text()[-3000:]}")


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


@dataclass
class EmbeddedDb:
    """The embedded PostgreSQL the metered gateway started in its data dir (absent with $SWITCHYARD_DATABASE_URL)."""

    pgdata: Path

    def postmaster(self) -> int | None:
        with_pid = self.pgdata / "postmaster.pid"
        try:
            return int(with_pid.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, writers)."""
        root = self.postmaster()
        if root is None:
            return []
        found = [root]
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and _ppid(int(entry.name)) == root:
                found.append(int(entry.name))
        return found

    def pin(self, cpu: int | None) -> None:
        """New backends inherit the postmaster's CPU set, so pinning it and today's children covers them all."""
        if cpu is None:
            return
        for pid in self.pids():
            try:
                os.sched_setaffinity(pid, {cpu})
            except OSError:
                continue

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                total += cpu_seconds(pid)
            except (OSError, ValueError):
                continue
        return total


# --------------------------------------------------------------------------------------------- /metrics


def metrics_text(port: int) -> str:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of every series of `name` whose labels include `labels`."""
    total = 0.0
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith("#") or not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        series, value = line.rsplit(" ", 1)
        if all(w in series for w in want):
            total += float(value)
    return total


def ledger_check(port: int, timeout: float = 20.0) -> dict[str, float]:
    """Rows written (or spooled) vs requests answered 200 by the metered gateway, once its queue is drained."""
    deadline = time.monotonic() + timeout
    while True:
        text = metrics_text(port)
        out = {
            "requests": metric_sum(text, "switchyard_requests_total", alias=ALIAS, status="200"),
            "written": metric_sum(text, "switchyard_usage_rows_total", outcome="written"),
            "spooled": metric_sum(text, "switchyard_usage_rows_total", outcome="spooled"),
            "queued": metric_sum(text, "switchyard_usage_queue"),
        }
        if out["written"] + out["spooled"] >= out["requests"] or time.monotonic() > deadline:
            return out
        time.sleep(0.2)  # the writer flushes on its own schedule: poll its counters


# --------------------------------------------------------------------------------------------- rounds


@dataclass
class Run:
    args: argparse.Namespace
    gen: LoadGen
    targets: dict[str, Target]
    gateways: dict[str, Proxy]
    db: EmbeddedDb | None
    foreign: ForeignCpu

    def order(self, round_index: int) -> list[str]:
        return list(NAMES) if round_index % 2 == 0 else list(reversed(NAMES))

    def measure(self, name: str, mode: str) -> dict[str, Any]:
        pids = {n: gw.proc.pid for n, gw in self.gateways.items()}
        before = {n: cpu_seconds(pid) for n, pid in pids.items()}
        db_before = self.db.cpu_seconds() if self.db else 0.0
        self.foreign.start()
        res = self.gen.run(self.targets[name], mode, self.args.duration)
        res["foreign_busy"], res["steal"] = self.foreign.stop()
        wall = res["elapsed_s"] or self.args.duration
        for n, pid in pids.items():
            res[f"{n}_busy"] = (cpu_seconds(pid) - before[n]) / wall
        served = res["requests"] or 1
        res["cpu_us_per_req"] = res[f"{name}_busy"] * wall / served * 1e6
        if self.db is not None and name == "on":
            res["db_cpu_us_per_req"] = (self.db.cpu_seconds() - db_before) / served * 1e6
        return res

    def rounds(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        for name in NAMES:  # a short warm-up at full concurrency, not counted
            for mode in MODES:
                self.gen.run(self.targets[name], mode, 1.0)
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {n: [] for n in NAMES} for m in MODES}
        for r in range(self.args.rounds):
            for mode in MODES:
                for name in self.order(r):
                    res = self.measure(name, mode)
                    runs[mode][name].append(res)
                    other = "off" if name == "on" else "on"
                    log_stderr(
                        f"  round {r + 1}/{self.args.rounds} {MODE_LABEL[mode]:10} metering {name:3} "
                        f"{res['rps']:8.0f} req/s  p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms  "
                        f"errors {res['errors']}  busy: this gateway {res[f'{name}_busy']:.0%}, "
                        f"other {res[f'{other}_busy']:.0%}, other processes {res['foreign_busy']:.0%}"
                    )
        return runs


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in NAMES:
        rs = runs[name]
        out[name] = {
            k: statistics.median(r[k] for r in rs)
            for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "foreign_busy")
        }
        out[name]["errors"] = sum(r["errors"] for r in rs)
        if name == "on" and all("db_cpu_us_per_req" in r for r in rs):
            out[name]["db_cpu_us_per_req"] = statistics.median(r["db_cpu_us_per_req"] for r in rs)
        out[name]["per_round"] = rs
    pairs = zip(runs["on"], runs["off"], strict=True)
    per_round = [on["rps"] / off["rps"] if off["rps"] else float("nan") for on, off in pairs]
    out["ratio"] = statistics.median(per_round)
    out["ratio_per_round"] = per_round
    return out


# --------------------------------------------------------------------------------------------- report


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "",
        "Switchyard metering benchmark: throughput with usage metering on vs off",
        f"  command  : {result['command']}",
        f"  machine  : nproc {m['nproc']}, {m['cpu_model'] or 'unknown CPU'}, Linux {m['kernel']}",
        f"  python   : {m['python']} ({m['event_loop']})",
        f"  pinning  : {result['pinning']}",
        f"  database : {result['database']}",
        f"  loadgen  : {result['loadgen']}",
        f"  settings : {result['settings']['rounds']} rounds x {result['settings']['duration']} s, "
        f"C={result['settings']['concurrency']}, metering {result['metering']}",
        "",
        f"  {'mode':11} {'metering':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11} {'errors':>7}",
    ]
    for mode in MODES:
        t = result["throughput"][mode]
        label = MODE_LABEL[mode]
        for name in NAMES:
            s = t[name]
            lines.append(
                f"  {label:11} {name:8} {s['rps']:9.0f} {s['p50_ms']:8.2f} {s['p99_ms']:8.2f} "
                f"{s['cpu_us_per_req']:11.0f} {s['errors']:7d}"
            )
            label = ""
        rounds = ", ".join(f"{v:.3f}" for v in t["ratio_per_round"])
        lines.append(f"  {'':11} on / off {t['ratio']:9.3f}   (per round: {rounds})")
        if "db_cpu_us_per_req" in t["on"]:
            lines.append(f"  {'':11} database CPU per metered request: {t['on']['db_cpu_us_per_req']:.0f} us")
    ledger = result["ledger"]
    lines += [
        "",
        f"  ledger   : {ledger['requests']:.0f} requests answered by the metered gateway, {ledger['written']:.0f} rows "
        f"written, {ledger['spooled']:.0f} spooled, {ledger['queued']:.0f} still queued",
        f"  RSS      : metered gateway {result['rss_kib']['on']} KiB, unmetered {result['rss_kib']['off']} KiB "
        "(after the run)",
    ]
    lines += [f"  note: {n}" for n in notes(result)]
    return "\n".join(lines)


def notes(result: dict[str, Any]) -> list[str]:
    found = []
    ledger = result["ledger"]
    if ledger["written"] + ledger["spooled"] < ledger["requests"]:
        found.append("the metered gateway recorded fewer rows than it answered requests (see its log)")
    if ledger["spooled"]:
        found.append("rows were spooled: the database did not keep up or failed (see the metered gateway's log)")
    for mode in MODES:
        for name in NAMES:
            s = result["throughput"][mode][name]
            if s["errors"]:
                found.append(f"{MODE_LABEL[mode]} metering {name}: {s['errors']} errors")
            if s["foreign_busy"] > 0.10:
                found.append(f"other processes used {s['foreign_busy']:.0%} of a core: rerun on a quiet machine")
    return found


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Throughput of the gateway with usage metering on vs off")
    p.add_argument("--concurrency", type=int, default=64, help="connections in each round")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per round and mode and gateway")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto", help="load generator")
    p.add_argument("--flush-interval", type=float, default=None, help="metering.flush_interval of the `on` gateway")
    p.add_argument("--batch-size", type=int, default=None, help="metering.batch_size of the `on` gateway")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to this file")
    p.add_argument("--keep-logs", action="store_true", help="keep the logs, configs and data dirs (path printed)")
    args = p.parse_args(argv)
    if min(args.concurrency, args.rounds) < 1 or args.duration <= 0:
        p.error("--concurrency, --rounds and --duration must be positive")
    return args


def metering_settings(args: argparse.Namespace) -> str:
    parts = ["enabled: true"]
    if args.flush_interval is not None:
        parts.append(f"flush_interval: {args.flush_interval}")
    if args.batch_size is not None:
        parts.append(f"batch_size: {args.batch_size}")
    return "{" + ", ".join(parts) + "}"


def run(args: argparse.Namespace, children: Children, workdir: Path) -> dict[str, Any]:
    gw_cpu, load_cpu, pinning = cpu_plan()
    pinning = pinning.replace("gateway, bare proxy", "both gateways")
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})  # this script and the load generator
    fake, fake_port = start_fake(children, load_cpu)
    metering = metering_settings(args)
    on_dir, off_dir = workdir / "data-on", workdir / "data-off"
    configs = {
        "on": metering_config(fake_port, on_dir, metering),
        "off": metering_config(fake_port, off_dir, "{enabled: false}"),
    }
    gateways = {name: start_gateway(children, workdir, name, configs[name], gw_cpu) for name in NAMES}
    external = os.environ.get(DB_ENV)
    db = None if external else EmbeddedDb(on_dir / "postgres")
    if db is not None:
        db.pin(load_cpu)
        database = f"embedded PostgreSQL in {db.pgdata} (pinned with the load generator)"
    else:
        database = f"${DB_ENV}"
    time.sleep(1.0)  # let start-up settle
    gen = pick_loadgen(args.loadgen, workdir, args.concurrency)
    targets = {name: Target(name, gw.port, ALIAS, CLIENT_KEY) for name, gw in gateways.items()}
    pids = {os.getpid(), fake.pid, *(gw.proc.pid for gw in gateways.values()), *(db.pids() if db else [])}
    bench = Run(args, gen, targets, gateways, db, ForeignCpu(pids))
    log_stderr(f"pinning: {pinning}\ndatabase: {database}\nload generator: {gen.describe()}\nrounds ...")
    runs = bench.rounds()
    return {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "keep_logs")},
        "machine": machine_info(LOOP_NAME),
        "pinning": pinning,
        "database": database,
        "metering": metering,
        "loadgen": gen.describe(),
        "throughput": {mode: summarize(runs[mode]) for mode in MODES},
        "ledger": ledger_check(gateways["on"].port),
        "rss_kib": {name: rss_kib(gw.proc.pid) for name, gw in gateways.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="switchyard-bench-metering-"))
    try:
        with signals_raise():
            result = run(args, children, workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping child processes", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, TimeoutError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        children.stop_all()  # a gateway stops the embedded database it started
        if args.keep_logs:
            print(f"gateway configs, logs and data dirs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
