"""What knowledge-base retrieval adds to a chat request's latency, end to end through the real gateway.

    .venv/bin/python benchmarks/rag_latency.py                              # 200 requests per alias
    .venv/bin/python benchmarks/rag_latency.py --requests 100 --json /tmp/rag_latency.json
    #   --warmup N (pairs sent first, not counted)  --keep-logs

Starts the overhead benchmark's fake upstream (benchmarks/fake_upstream.py: the same canned `chat.completion` for
every request, whatever its prompt) and one real gateway (`python -m gateway.cli serve`) with two chat aliases on
the same upstream route: `plain` (no knowledge bases) and `rag` (`knowledge_bases: [eval]`, top_k 4). The database
is a fresh one on $SWITCHYARD_DATABASE_URL's server when set (its role needs CREATEDB; dropped at the end), else
the embedded PostgreSQL the gateway starts in a temp data dir.

Through the admin API (the config's `admin_key` as an owner token) it creates the knowledge base `eval` on the
bundled local embedder (`embedding: local`, all-MiniLM-L6-v2 in .venv-embed, see `make embedder`), uploads
benchmarks/rag_eval/corpus (24 documents, English and Chinese) and polls until every document is indexed.

Then, on one keep-alive connection, one request at a time: a first `rag` request in Chinese and one in English
(reported on their own: the English one starts the local query worker), --warmup pairs, then --requests pairs.
A pair sends the same question of benchmarks/rag_eval/questions.jsonl to `plain` and to `rag` (which goes first
alternates), English and Chinese questions alternating. English questions use the dense side of the search (the
query is embedded by the local worker); Chinese ones skip it (the model cannot read Chinese) and use keywords and
CJK bigrams only. Reported: p50/p95/p99 per alias and question language, what `rag` adds (difference of the
percentiles, and the median of the per-pair differences), and the usage ledger's `rag.ms` (the retrieval step as
the gateway timed it) and passages per request. Every `rag` answer must carry citations; `plain` ones none.

Loopback only; every child process is stopped on exit, Ctrl-C or error (an embedded database with the gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import URL, NullPool, bindparam, text
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import log_stderr, signals_raise
from procs import CLIENT_KEY, HOST, PROVIDER_KEY, ROOT, UPSTREAM_MODEL, Children, ForeignCpu, free_port, http_status
from procs import start_fake as start_fake_upstream
from rag_eval import create_database, drop_database
from report import machine_info

from gateway.store.urls import URL_ENV, parse_url, safe_url

DATA = ROOT / "benchmarks" / "rag_eval"
KB = "eval"
ALIASES = ("plain", "rag")
LANGUAGES = ("en", "zh")
TOP_K = 4
ADMIN_KEY = "sk-bench-admin-" + secrets.token_hex(12)
READY_TIMEOUT = 120.0  # a first start of the embedded database runs initdb
INDEX_TIMEOUT = 600.0
REQUEST_TIMEOUT = 120.0  # the first English rag request starts the query worker
LEDGER_TIMEOUT = 30.0
UPLOAD_BATCH = 12  # the admin API takes at most 20 files a request
CONTENT_TYPES = {".md": "text/markdown", ".html": "text/html", ".txt": "text/plain"}


# --------------------------------------------------------------------------------------------- processes


def gateway_config(upstream_port: int, data_dir: Path, database_url: str | None) -> str:
    database = f'database_url: "{database_url}"\n' if database_url else ""
    route = f"routes: [{{provider: fake, model: {UPSTREAM_MODEL}}}]"
    return f"""{database}data_dir: "{data_dir}"
server: {{host: {HOST}, port: 8000}}
admin_key: "{ADMIN_KEY}"
metering: {{flush_interval: 0.2}}
providers:
  fake: {{type: openai, base_url: "http://{HOST}:{upstream_port}/v1", api_key: "{PROVIDER_KEY}"}}
models:
  plain: {{{route}}}
  rag: {{{route}, knowledge_bases: [{KB}], retrieval: {{top_k: {TOP_K}}}}}
keys:
  - {{name: bench, key: "{CLIENT_KEY}"}}
"""


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def start_gateway(children: Children, workdir: Path, config: str) -> Gateway:
    cfg = workdir / "gateway.yaml"
    cfg.write_text(config)
    port = free_port()
    log_path = workdir / "gateway.log"
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), "--port", str(port)]
    with log_path.open("wb") as log:
        proc = children.start(cmd, None, stdout=log, stderr=subprocess.STDOUT)
    gw = Gateway(proc, port, log_path)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gw.tail()}")
        if http_status(port, "/readyz") == 200:
            return gw
        time.sleep(0.1)  # polling a child's readiness: there is no event to await
    raise RuntimeError(f"gateway not ready after {READY_TIMEOUT:.0f} s:\n{gw.tail()}")


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def family(roots: set[int]) -> set[int]:
    """These processes and all their descendants (the gateway's embedder workers, database backends)."""
    parents = {int(e.name): _parent(int(e.name)) for e in os.scandir("/proc") if e.name.isdigit()}
    found = set(roots)
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found and pid not in found}
        found |= more
        grew = bool(more)
    return found


def postmaster(data_dir: Path) -> tuple[int, str] | None:
    """The embedded server's pid and socket dir (postmaster.pid lines 1 and 5), or None without one."""
    try:
        lines = (data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
        return int(lines[0]), lines[4]
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------------------------- knowledge base


def build_kb(port: int) -> dict[str, Any]:
    """Create `eval` on the local embedder, upload the corpus and wait until it is indexed; returns timings."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    base = f"http://{HOST}:{port}/admin/api"
    with httpx.Client(base_url=base, headers=headers, timeout=120) as admin:
        created = admin.post("/knowledge-bases", json={"name": KB, "embedding": "local"})
        if created.status_code != 201:
            raise RuntimeError(f"creating the knowledge base: {created.status_code} {created.text[:500]}")
        paths = sorted((DATA / "corpus").iterdir())
        files = [("file", (p.name, p.read_bytes(), CONTENT_TYPES.get(p.suffix, "text/plain"))) for p in paths]
        started = time.perf_counter()
        for i in range(0, len(files), UPLOAD_BATCH):
            uploaded = admin.post(f"/knowledge-bases/{KB}/documents", files=files[i : i + UPLOAD_BATCH])
            if uploaded.status_code != 202:
                raise RuntimeError(f"uploading the corpus: {uploaded.status_code} {uploaded.text[:500]}")
        upload_s = time.perf_counter() - started
        docs = wait_indexed(admin, len(paths), started)
        return {
            "documents": len(docs),
            "chunks": sum(d["chunk_count"] or 0 for d in docs),
            "bytes": sum(p.stat().st_size for p in paths),
            "upload_s": round(upload_s, 2),
            "indexed_s": round(time.perf_counter() - started, 2),
        }


def wait_indexed(admin: httpx.Client, count: int, started: float) -> list[dict[str, Any]]:
    while time.perf_counter() - started < INDEX_TIMEOUT:
        got = admin.get(f"/knowledge-bases/{KB}/documents")
        if got.status_code != 200:
            raise RuntimeError(f"listing the documents: {got.status_code} {got.text[:500]}")
        docs = got.json()["data"]
        failed = {d["name"]: d["error"] for d in docs if d["status"] == "failed"}
        if failed:
            raise RuntimeError(f"indexing failed: {failed}")
        if len(docs) == count and all(d["status"] == "indexed" for d in docs):
            return list(docs)
        time.sleep(0.25)  # the indexer runs in the gateway's background: poll its documents
    raise RuntimeError(f"the corpus was not indexed within {INDEX_TIMEOUT:.0f} s")


# --------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    text: str
    language: str


@dataclass(slots=True)
class Sample:
    alias: str
    question: Question
    ms: float
    status: int
    request_id: str
    citations: int
    pair: int


def questions() -> list[Question]:
    """The eval questions, English and Chinese alternating."""
    by_language: dict[str, list[Question]] = {lang: [] for lang in LANGUAGES}
    for line in (DATA / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            raw = json.loads(line)
            by_language[raw["language"]].append(Question(raw["id"], raw["question"], raw["language"]))
    en, zh = by_language["en"], by_language["zh"]
    longest = max(len(en), len(zh))
    return [q for i in range(longest) for q in (en[i % len(en)], zh[i % len(zh)])]


class Client:
    """One keep-alive connection to the gateway's chat endpoint, one request at a time."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
        self.headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}

    def ask(self, alias: str, question: Question, pair: int = -1) -> Sample:
        messages = [{"role": "user", "content": question.text}]
        body = json.dumps({"model": alias, "messages": messages, "max_tokens": 64}).encode()
        started = time.perf_counter()
        self.conn.request("POST", "/v1/chat/completions", body, self.headers)
        resp = self.conn.getresponse()
        data = resp.read()
        ms = (time.perf_counter() - started) * 1000
        citations = 0
        if resp.status == 200:
            citations = len(json.loads(data).get("citations") or [])
        else:
            log_stderr(f"  {alias} {question.id}: HTTP {resp.status} {data[:300]!r}")
        return Sample(alias, question, ms, resp.status, resp.headers.get("x-request-id", ""), citations, pair)

    def close(self) -> None:
        self.conn.close()


def send_pairs(client: Client, qs: Sequence[Question], count: int, offset: int = 0) -> list[Sample]:
    """`count` pairs: the same question to both aliases, which goes first alternating."""
    samples = []
    for i in range(count):
        question = qs[(offset + i) % len(qs)]
        order = ALIASES if i % 2 == 0 else tuple(reversed(ALIASES))
        samples += [client.ask(alias, question, i) for alias in order]
    return samples


# --------------------------------------------------------------------------------------------- ledger


async def ledger(url: str, request_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The `rag` column of the ledger rows of these requests, once all are written (or LEDGER_TIMEOUT passed)."""
    statement = text("SELECT request_id, rag FROM usage_ledger WHERE request_id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    engine = create_async_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + LEDGER_TIMEOUT
    try:
        while True:
            async with engine.connect() as conn:
                rows = (await conn.execute(statement, {"ids": list(request_ids)})).all()
            found = {r.request_id: r.rag for r in rows}
            if len(found) >= len(set(request_ids)) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.25)  # the writer flushes on its own schedule
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------------------------- figures


def pct(values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered) / 100))) - 1]


def latency(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    figures = {f"p{q}": round(pct(values, q), 2) for q in (50, 95, 99)}
    return {"n": len(values), **figures, "mean": round(statistics.fmean(values), 2)}


def summarize(samples: Sequence[Sample], rag_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ok = [s for s in samples if s.status == 200]
    out: dict[str, Any] = {"latency_ms": {}, "added_ms": {}, "ledger": {}}
    for group in ("all", *LANGUAGES):
        picked = [s for s in ok if group in ("all", s.question.language)]
        lat = {a: latency([s.ms for s in picked if s.alias == a]) for a in ALIASES}
        out["latency_ms"][group] = lat
        pairs: dict[int, dict[str, float]] = {}
        for s in picked:
            pairs.setdefault(s.pair, {})[s.alias] = s.ms
        deltas = [p["rag"] - p["plain"] for p in pairs.values() if len(p) == 2]
        added = {q: round(lat["rag"][q] - lat["plain"][q], 2) for q in ("p50", "p95") if lat["rag"]["n"]}
        out["added_ms"][group] = added | {"paired_median": round(statistics.median(deltas), 2) if deltas else None}
        rows = [rag_rows[s.request_id] for s in picked if s.alias == "rag" and rag_rows.get(s.request_id)]
        out["ledger"][group] = {
            "rows": len(rows),
            "rag_ms": latency([r["ms"] for r in rows if "ms" in r]),
            "passages_median": float(statistics.median(r.get("passages", 0) for r in rows)) if rows else None,
            "errors": sorted({r["error"] for r in rows if "error" in r}),
        }
    out["errors"] = {a: sum(1 for s in samples if s.alias == a and s.status != 200) for a in ALIASES}
    out["rag_without_citations"] = sum(1 for s in ok if s.alias == "rag" and not s.citations)
    out["plain_with_citations"] = sum(1 for s in ok if s.alias == "plain" and s.citations)
    out["ledger_rows_missing"] = sum(1 for s in ok if s.alias == "rag" and s.request_id not in rag_rows)
    return out


# --------------------------------------------------------------------------------------------- report


def render(result: dict[str, Any]) -> str:
    m, s, kb = result["machine"], result["summary"], result["knowledge_base"]
    lines = [
        "## RAG latency: `plain` vs `rag` (same fake upstream, one gateway, sequential, one connection)",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {m['nproc']} CPUs ({m['cpu_model'] or 'unknown CPU'}), Linux {m['kernel']}, {m['python']}",
        f"- database: {result['database']}",
        f"- knowledge base `{KB}`: {kb['documents']} documents ({kb['bytes'] / 1024:.0f} KiB), {kb['chunks']} chunks, "
        f"local embedder; upload {kb['upload_s']} s, indexed {kb['indexed_s']} s after the upload began",
        f"- first `rag` requests: Chinese {result['first']['zh']:.1f} ms, English {result['first']['en']:.1f} ms "
        "(the English one starts the local query worker)",
        f"- {result['settings']['warmup']} warm-up pairs, then {result['settings']['requests']} pairs; other "
        f"processes used {result['foreign_busy']:.0%} of a CPU meanwhile (steal {result['steal']:.0%})",
        "",
        "| alias | questions | n | p50 ms | p95 ms | p99 ms | mean ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for alias in ALIASES:
        for group in ("all", *LANGUAGES):
            f = s["latency_ms"][group][alias]
            if f["n"]:
                lines.append(f"| {alias} | {group} | {f['n']} | {f['p50']} | {f['p95']} | {f['p99']} | {f['mean']} |")
    lines += [
        "",
        "| questions | added p50 ms | added p95 ms | paired median ms | ledger rag.ms p50 | rag.ms p95 | passages |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for group in ("all", *LANGUAGES):
        a, led = s["added_ms"][group], s["ledger"][group]
        rag_ms = led["rag_ms"]
        cells = [a.get("p50"), a.get("p95"), a["paired_median"], rag_ms.get("p50"), rag_ms.get("p95")]
        cells.append(led["passages_median"])
        lines.append(f"| {group} | " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    lines += ["", *[f"- note: {n}" for n in notes(result)]]
    return "\n".join(lines)


def notes(result: dict[str, Any]) -> list[str]:
    s = result["summary"]
    found = [
        "English questions embed the query in the local worker; Chinese ones skip the embedder "
        "(keyword + CJK bigram search only)"
    ]
    if any(s["errors"].values()):
        found.append(f"errors: {s['errors']} (see the log lines above)")
    if s["rag_without_citations"]:
        found.append(f"{s['rag_without_citations']} `rag` answers carried no citations")
    if s["plain_with_citations"]:
        found.append(f"{s['plain_with_citations']} `plain` answers carried citations")
    if s["ledger_rows_missing"]:
        found.append(f"{s['ledger_rows_missing']} `rag` requests had no ledger row within {LEDGER_TIMEOUT:.0f} s")
    errors = sorted({e for g in s["ledger"].values() for e in g["errors"]})
    if errors:
        found.append(f"the ledger recorded retrieval errors: {errors}")
    if result["foreign_busy"] > 0.10:
        found.append("other processes were busy during the run: figures are noisy, rerun on a quiet machine")
    return found


# --------------------------------------------------------------------------------------------- main


@dataclass
class Resources:
    children: Children = field(default_factory=Children)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="switchyard-bench-rag-")))
    server: str | None = None
    database_url: str | None = None

    def close(self, keep_logs: bool) -> None:
        self.children.stop_all()  # the gateway stops the embedded database it started
        if self.server and self.database_url:
            asyncio.run(drop_database(self.server, self.database_url))
        if keep_logs:
            log_stderr(f"gateway config, log and data dir kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def database(res: Resources, gw: Gateway) -> tuple[str, str, set[int]]:
    """The ledger's URL, a description, and the embedded server's processes (empty with an external one)."""
    if res.database_url and res.server:
        return res.database_url, f"new database on {safe_url(parse_url(res.server))}", set()
    found = postmaster(res.workdir / "data")
    if found is None:
        raise RuntimeError(f"the embedded database's postmaster.pid is missing:\n{gw.tail()}")
    pid, socket_dir = found
    url = URL.create("postgresql+asyncpg", username="postgres", database="postgres", query={"host": socket_dir})
    return url.render_as_string(hide_password=False), "embedded PostgreSQL in a temp data dir", family({pid})


def run(args: argparse.Namespace, res: Resources) -> dict[str, Any]:
    res.server = os.environ.get(URL_ENV)
    if res.server:
        res.database_url = asyncio.run(create_database(res.server))
    fake, fake_port = start_fake_upstream(res.children, None)
    gw = start_gateway(res.children, res.workdir, gateway_config(fake_port, res.workdir / "data", res.database_url))
    ledger_url, described, db_pids = database(res, gw)
    log_stderr(f"gateway on port {gw.port}; database: {described}; building the knowledge base ...")
    kb = build_kb(gw.port)
    log_stderr(f"indexed {kb['documents']} documents ({kb['chunks']} chunks) in {kb['indexed_s']} s")
    qs = questions()
    client = Client(gw.port)
    try:
        first_zh = next(q for q in qs if q.language == "zh")
        first_en = next(q for q in qs if q.language == "en")
        first = {"zh": client.ask("rag", first_zh).ms, "en": client.ask("rag", first_en).ms}
        send_pairs(client, qs, args.warmup, offset=len(qs) // 2)
        log_stderr(f"first rag requests: zh {first['zh']:.1f} ms, en {first['en']:.1f} ms; measuring ...")
        foreign = ForeignCpu(family({os.getpid(), fake.pid, gw.proc.pid}) | db_pids)
        foreign.start()
        samples = send_pairs(client, qs, args.requests)
        busy, steal = foreign.stop()
    finally:
        client.close()
    rag_rows = asyncio.run(ledger(ledger_url, [s.request_id for s in samples if s.alias == "rag" and s.request_id]))
    return {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "settings": {"requests": args.requests, "warmup": args.warmup, "top_k": TOP_K},
        "machine": machine_info("asyncio"),
        "database": described,
        "knowledge_base": kb,
        "first": {k: round(v, 2) for k, v in first.items()},
        "foreign_busy": busy,
        "steal": steal,
        "summary": summarize(samples, rag_rows),
        "samples": [
            {"alias": s.alias, "question": s.question.id, "language": s.question.language, "ms": round(s.ms, 3)}
            | {"status": s.status, "citations": s.citations, "rag": rag_rows.get(s.request_id)}
            for s in samples
        ],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="What knowledge-base retrieval adds to a chat request's latency")
    p.add_argument("--requests", type=int, default=200, help="measured requests per alias (pairs)")
    p.add_argument("--warmup", type=int, default=20, help="pairs sent before measuring, not counted")
    p.add_argument("--json", metavar="OUT", help="also write the results (with every request) as JSON")
    p.add_argument("--keep-logs", action="store_true", help="keep the config, log and data dir (path printed)")
    args = p.parse_args(argv)
    if args.requests < 1 or args.warmup < 0:
        p.error("--requests must be positive and --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = Resources()
    try:
        with signals_raise():
            result = run(args, res)
    except KeyboardInterrupt:
        log_stderr("\ninterrupted; stopping child processes")
        return 130
    except (RuntimeError, OSError, TimeoutError, httpx.HTTPError, http.client.HTTPException) as exc:
        log_stderr(f"benchmark failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        res.close(args.keep_logs)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
