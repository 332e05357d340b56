"""The overhead benchmark's readable report, and the notes it adds when a figure looks off."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

MODES = ("json", "stream")
MODE_LABEL = {"json": "non-stream", "stream": "stream"}
ADDED_P50_LIMIT_MS = 2.0
FOREIGN_CPU_LIMIT = 0.10
BARE_RATIO_TARGET = 0.90  # gateway throughput should be at least this fraction of the bare pass-through's
IDLE_PROXY_LIMIT = 0.05  # the proxy not under test should be idle during the other's rounds


def machine_info(loop_name: str) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "event_loop": loop_name,
    }


def _lat_rows(label: str, entry: dict[str, Any]) -> list[str]:
    """One row per target; the last two columns are gateway minus that target (median of per-round deltas)."""
    rows = []
    for name, added in (("direct", "added"), ("bare", "added_vs_bare"), ("gateway", None)):
        t = entry[name]
        delta = f"{entry[f'{added}_p50']:+10.3f} {entry[f'{added}_p99']:+10.3f}" if added else ""
        rows.append(f"  {label:20} {name:8} {t['p50']:8.3f} {t['p90']:8.3f} {t['p99']:8.3f} {delta}".rstrip())
        label = ""
    return rows


def _header(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    return [
        "",
        "Switchyard gateway overhead benchmark",
        f"  command : {result['command']}",
        f"  machine : nproc {m['nproc']}, {m['cpu_model'] or 'unknown CPU'}, Linux {m['kernel']}",
        f"  python  : {m['python']} ({m['event_loop']})",
        f"  pinning : {result['pinning']}",
        f"  gateway : {result['gateway_cmd']}",
        f"  bare    : {result['bare_cmd']}",
    ]


def _latency(result: dict[str, Any]) -> list[str]:
    a, lat = result["settings"], result["latency"]
    return [
        "",
        f"Latency, ms: sequential requests on 1 keep-alive connection, {a['requests']} per round "
        f"(+{a['warmup']} warm-up), {a['rounds']} interleaved rounds; medians across rounds",
        f"  {'':20} {'':8} {'':8} {'':8} {'':8} {'gateway - this':>21}",
        f"  {'':20} {'target':8} {'p50':>8} {'p90':>8} {'p99':>8} {'p50':>10} {'p99':>10}",
        *_lat_rows("non-stream", lat["json"]["total"]),
        *_lat_rows("stream, last byte", lat["stream"]["total"]),
        *_lat_rows("stream, first byte", lat["stream"]["ttfb"]),
        "  (gateway - direct is what the gateway adds; gateway - bare is what it adds over bare Litestar + aiohttp)",
    ]


def _throughput(result: dict[str, Any]) -> list[str]:
    a, tp = result["settings"], result["throughput"]
    lines = [
        "",
        f"Throughput: {a['concurrency']} connections, {a['duration']:g} s x {a['tp_rounds']} interleaved rounds; "
        "medians",
        f"  load generator: {result['loadgen']}",
        f"  {'':12} {'direct req/s':>13} {'bare req/s':>11} {'gateway req/s':>14} {'gw/direct':>10} "
        f"{'gw p50 ms':>10} {'gw p99 ms':>10} {'errors':>7}",
    ]
    for mode in MODES:
        d, b, g = (tp[mode][n] for n in ("direct", "bare", "gateway"))
        lines.append(
            f"  {MODE_LABEL[mode]:12} {d['rps']:13.0f} {b['rps']:11.0f} {g['rps']:14.0f} {tp[mode]['ratio']:10.2f} "
            f"{g['p50_ms']:10.2f} {g['p99_ms']:10.2f} {d['errors'] + b['errors'] + g['errors']:7d}"
        )
    ratios = []
    for mode in MODES:
        per_round = " ".join(f"{r:.2f}" for r in tp[mode]["ratio_vs_bare_per_round"])
        ratios.append(f"{MODE_LABEL[mode]} {tp[mode]['ratio_vs_bare']:.2f} ({per_round})")
    lines.append(
        f"  gateway / bare: {'; '.join(ratios)}; median of per-round ratios (per round in brackets), "
        f"target >= {BARE_RATIO_TARGET:.2f}"
    )
    return [*lines, *_processes(result)]


def _processes(result: dict[str, Any]) -> list[str]:
    tp = result["throughput"]
    lines = [
        "",
        "Proxy processes during their own throughput rounds (busy = fraction of one core; other proxy = the idle one)",
        f"  {'':12} {'':8} {'CPU/req us':>10} {'p50 ms':>8} {'p99 ms':>8} {'busy':>6} {'upstream':>9} "
        f"{'loadgen':>8} {'other proxy':>12}",
    ]
    for mode in MODES:
        label = MODE_LABEL[mode]
        for name, other in (("gateway", "bare"), ("bare", "gateway")):
            p = tp[mode][name]
            busy, idle = p[f"{name}_busy"], p[f"{other}_busy"]
            lines.append(
                f"  {label:12} {name:8} {p[f'{name}_cpu_us_per_req']:10.0f} {p['p50_ms']:8.2f} {p['p99_ms']:8.2f} "
                f"{busy:6.0%} {p['upstream_busy']:9.0%} {p['loadgen_busy']:8.0%} {idle:12.0%}"
            )
            label = ""
    rss, bare = result["rss_kib"], result["bare_rss_kib"]
    lines.append(
        f"  RSS: gateway idle {rss['idle'] / 1024:.1f} MiB after start-up; {rss['after'] / 1024:.1f} MiB after the "
        f"run (peak {rss['peak'] / 1024:.1f} MiB); bare idle {bare['idle'] / 1024:.1f} MiB (peak "
        f"{bare['peak'] / 1024:.1f} MiB)"
    )
    return lines


def render(result: dict[str, Any]) -> str:
    fg = result["foreign_cpu"]
    lines = [*_header(result), *_latency(result), *_throughput(result)]
    lines.append(
        f"  Other processes on the machine used up to {fg['latency_max']:.0%} (latency rounds) and "
        f"{fg['throughput_max']:.0%} (throughput rounds) of a core; hypervisor steal up to "
        f"{result['steal']['max']:.0%} of a core"
    )
    if result["notes"]:
        lines += ["", *(f"NOTE: {n}" for n in result["notes"])]
    return "\n".join(lines)


def _proxy_notes(label: str, name: str, other: str, p: dict[str, Any]) -> list[str]:
    notes = []
    if p[f"{name}_busy"] < 0.85:
        notes.append(
            f"{label}: the {name} proxy was only {p[f'{name}_busy']:.0%} busy under load, so it was not the "
            "bottleneck; the load generator or the upstream (sharing the other CPU) may have limited throughput"
        )
    load_side = p["upstream_busy"] + p["loadgen_busy"]
    if load_side > 0.9:
        notes.append(
            f"{label}: upstream + load generator were {load_side:.0%} busy during the {name} rounds; "
            f"{name} throughput may be understated"
        )
    if p[f"{other}_busy"] > IDLE_PROXY_LIMIT:
        notes.append(
            f"{label}: the idle {other} proxy used {p[f'{other}_busy']:.0%} of the shared CPU during the {name} "
            "rounds; they should not compete"
        )
    return notes


def _throughput_notes(tp: dict[str, Any]) -> list[str]:
    notes = []
    for mode in MODES:
        label = MODE_LABEL[mode]
        notes += _proxy_notes(label, "gateway", "bare", tp[mode]["gateway"])
        notes += _proxy_notes(label, "bare", "gateway", tp[mode]["bare"])
        if tp[mode]["ratio_vs_bare"] < BARE_RATIO_TARGET:
            notes.append(
                f"{label}: gateway / bare throughput is {tp[mode]['ratio_vs_bare']:.2f}, under the "
                f"{BARE_RATIO_TARGET:.2f} target: the gateway costs more than 10% over bare Litestar + aiohttp"
            )
        if tp[mode]["ratio"] > 0.5:
            notes.append(f"{label}: direct is under 2x the gateway; the fake upstream may not be fast enough")
    return notes


def findings(result: dict[str, Any]) -> list[str]:
    notes: list[str] = []
    lat, tp, fg = result["latency"], result["throughput"], result["foreign_cpu"]
    added = lat["json"]["total"]["added_p50"]
    if added > ADDED_P50_LIMIT_MS:
        notes.append(f"added non-stream p50 is {added:.2f} ms (> {ADDED_P50_LIMIT_MS:g} ms): slow per request")
    notes += _throughput_notes(tp)
    if lat["json"]["truncated_rounds"] or lat["stream"]["truncated_rounds"]:
        notes.append("some latency rounds hit --round-budget and have fewer samples than --requests")
    worst = max(fg["latency_max"], fg["throughput_max"], result["steal"]["max"])
    if worst > FOREIGN_CPU_LIMIT:
        notes.append(
            f"other processes or hypervisor steal took up to {worst:.0%} of a core during the rounds (see "
            "foreign_cpu and steal in the JSON); "
            "on a 2-core machine that inflates p90/p99 and lowers throughput: rerun on a quiet machine"
        )
    return notes
