"""Retrieval quality of knowledge-base search on a bilingual (zh-CN / English) evaluation set, mode by mode.

    .venv/bin/python benchmarks/rag_eval.py                                # top-k 5, Markdown report on stdout
    .venv/bin/python benchmarks/rag_eval.py --json /tmp/rag_eval.json --top-k 5
    #   --rounds N (timed passes over the questions)  --threads N (the local embedder's torch threads)

The corpus (benchmarks/rag_eval/corpus: 24 documents of a fictional company, half English, half Chinese) goes
through the real pipeline: `gateway.rag.ingest.parse` and `chunk` (defaults), the bundled local embedder
(all-MiniLM-L6-v2 in .venv-embed, see `make embedder`), and `gateway.rag.store.repo` into a throwaway database:
a fresh database on $SWITCHYARD_DATABASE_URL's server when set (its role needs CREATEDB), else an embedded
PostgreSQL in a temp dir; either is migrated first and removed at the end.

Every question of benchmarks/rag_eval/questions.jsonl is searched with `gateway.rag.store.search.search` in four
modes: keyword only (no query embedding), dense only (keyword and CJK methods weighted 0), naive hybrid (the
embedder trusted on every language) and language-aware hybrid (the embedder's own `dense_weight`, the product's
default). A question's rank is that of the first passage from one of its documents. Reported per mode and per
group (en: English question, English document; zh: Chinese and Chinese; cross: the question's language differs
from its documents'): recall@k and MRR@10, then search latency (p50/p95, search only), query-embedding latency,
and ingestion (parse+chunk, embed, store; chunk count). Each search asks for max(k, 10) passages with the
candidate pool of a top-k search, so its first k passages are exactly what a top-k search returns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from gateway.rag.embed.local import LocalEmbedder, default_python  # noqa: E402
from gateway.rag.ingest import Chunk, ParsedDocument, chunk, detect, parse  # noqa: E402
from gateway.rag.store import ChunkInput, repo, vector_available  # noqa: E402
from gateway.rag.store.search import CANDIDATES_PER_RESULT, Hit, search  # noqa: E402
from gateway.store.engine import Database  # noqa: E402
from gateway.store.urls import URL_ENV, parse_url, safe_url  # noqa: E402

DATA = Path(__file__).resolve().parent / "rag_eval"
GROUPS = ("en", "zh", "cross", "all")
MRR_DEPTH = 10
DIMENSIONS = 384


@dataclass(frozen=True, slots=True)
class Question:
    """One evaluation question: the documents that answer it and the phrase the right passage contains."""

    id: str
    question: str
    language: str
    documents: tuple[str, ...]
    answer_contains: str
    group: str = ""


@dataclass(frozen=True, slots=True)
class Mode:
    """A way of calling `search`: with or without the query's embedding, trust per language, method weights."""

    name: str
    label: str
    embedding: bool
    dense_weight: dict[str, float] | None = None
    weights: dict[str, float] | None = None


@dataclass(slots=True)
class Corpus:
    """The parsed and chunked documents, in file-name order."""

    documents: list[ParsedDocument] = field(default_factory=list)
    chunks: list[list[Chunk]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def chunk_count(self) -> int:
        return sum(len(chunks) for chunks in self.chunks)


@dataclass(frozen=True, slots=True)
class Embedded:
    """What the embedder made: chunk vectors per document, question vectors, and how long it took."""

    chunks: list[list[list[float]]]
    queries: list[list[float]]
    query_ms: list[float]
    start_s: float
    embed_s: float
    dense_weight: dict[str, float]


# --- data ----------------------------------------------------------------------------------------------------


def read_corpus(folder: Path) -> tuple[Corpus, float]:
    """Parse and chunk every file of the folder; returns the corpus and the seconds that took."""
    corpus = Corpus()
    started = time.perf_counter()
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        document = parse(path.name, data)
        corpus.documents.append(document)
        corpus.chunks.append(chunk(document))
        corpus.sizes.append(len(data))
    return corpus, time.perf_counter() - started


def read_questions(path: Path, corpus: Corpus) -> list[Question]:
    """The questions, each checked against the corpus and given its group (en, zh or cross)."""
    languages = {document.name: document.language for document in corpus.documents}
    pairs = zip(corpus.documents, corpus.chunks, strict=True)
    texts = {document.name: [c.text for c in chunks] for document, chunks in pairs}
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            raw = json.loads(line) | {"group": ""}
            question = Question(**raw | {"documents": tuple(raw["documents"])})
            check_question(question, texts)
            questions.append(replace(question, group=group_of(question, languages)))
    return questions


def check_question(question: Question, texts: Mapping[str, list[str]]) -> None:
    """ValueError unless the question names known documents and one of their passages holds its answer."""
    missing = [name for name in question.documents if name not in texts]
    if missing:
        raise ValueError(f"{question.id}: unknown documents {missing}")
    if not any(question.answer_contains in passage for name in question.documents for passage in texts[name]):
        raise ValueError(f"{question.id}: no passage of {list(question.documents)} holds {question.answer_contains!r}")
    if detect(question.question) != question.language:
        raise ValueError(f"{question.id}: the question reads as {detect(question.question)}, not {question.language}")


def group_of(question: Question, languages: Mapping[str, str]) -> str:
    """The group: "cross" when the question's language is not that of its documents, else the question's language."""
    same = all(languages[name] == question.language for name in question.documents)
    return question.language if same else "cross"


# --- database ------------------------------------------------------------------------------------------------


@asynccontextmanager
async def throwaway_database() -> AsyncIterator[tuple[AsyncEngine, str]]:
    """A migrated, empty database and where it is: on $SWITCHYARD_DATABASE_URL's server, else embedded; dropped
    after."""
    server = os.environ.get(URL_ENV)
    if server:
        url = await create_database(server)
        try:
            async with Database(url, environ={}) as database:
                yield database.engine, f"new database on {safe_url(parse_url(server))}"
        finally:
            await drop_database(server, url)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="switchyard-rag-eval-"))
    try:
        async with Database(None, data_dir, environ={}) as database:
            yield database.engine, "embedded PostgreSQL in a temp dir"
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def create_database(server_url: str) -> str:
    """Create an empty database on the server; returns its URL."""
    server = parse_url(server_url)
    name = f"switchyard_rag_eval_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str, url: str) -> None:
    """Drop the database made by `create_database`, closing its connections."""
    admin = create_async_engine(parse_url(server_url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{parse_url(url).database}" WITH (FORCE)'))
    finally:
        await admin.dispose()


# --- ingestion -----------------------------------------------------------------------------------------------


async def embed_corpus(embedder: LocalEmbedder, corpus: Corpus) -> tuple[list[list[list[float]]], float]:
    """Each document's chunk vectors (one embed call for the whole corpus) and the seconds it took."""
    started = time.perf_counter()
    flat = await embedder.embed([c.text for chunks in corpus.chunks for c in chunks])
    elapsed = time.perf_counter() - started
    vectors, start = [], 0
    for chunks in corpus.chunks:
        vectors.append(flat[start : start + len(chunks)])
        start += len(chunks)
    return vectors, elapsed


async def store_corpus(
    engine: AsyncEngine, corpus: Corpus, vectors: Sequence[Sequence[list[float]]]
) -> tuple[int, float]:
    """Create the knowledge base and store every document with its chunks and vectors; its id and the seconds."""
    started = time.perf_counter()
    async with engine.begin() as conn:
        if not await vector_available(conn):
            raise SystemExit("pgvector is not installed on this PostgreSQL: dense retrieval cannot be measured")
        kb = await repo.create_knowledge_base(conn, "rag-eval", dimensions=DIMENSIONS)
        for document, chunks, size, document_vectors in zip(
            corpus.documents, corpus.chunks, corpus.sizes, vectors, strict=True
        ):
            await store_document(conn, kb.id, document, chunks, size, document_vectors)
    return kb.id, time.perf_counter() - started


async def store_document(
    conn: AsyncConnection,
    kb_id: int,
    document: ParsedDocument,
    chunks: list[Chunk],
    size: int,
    vectors: Sequence[list[float]],
) -> None:
    """One document through `upsert_document` and `store_chunks`, as the indexer does."""
    upserted = await repo.upsert_document(
        conn, kb_id, document.name, document.content_hash, size=size, language=document.language
    )
    inputs = [
        ChunkInput(c.text, c.language, c.token_count, c.heading_path, vector)
        for c, vector in zip(chunks, vectors, strict=True)
    ]
    if not await repo.store_chunks(conn, upserted.document.id, document.content_hash, inputs):
        raise RuntimeError(f"{document.name} was not stored")


# --- retrieval -----------------------------------------------------------------------------------------------


def modes(dense_weight: dict[str, float]) -> list[Mode]:
    """The four ways of searching that are compared; `dense_weight` is the embedder's."""
    return [
        Mode("keyword", "keyword only", embedding=False),
        Mode("dense", "dense only", embedding=True, weights={"keyword": 0.0, "cjk": 0.0}),
        Mode("naive", "naive hybrid", embedding=True),
        Mode("language_aware", "language-aware hybrid", embedding=True, dense_weight=dense_weight),
    ]


async def embed_questions(
    embedder: LocalEmbedder, questions: Sequence[Question]
) -> tuple[list[list[float]], list[float]]:
    """Each question's vector, embedded one at a time as a request would be, and the milliseconds each took."""
    vectors: list[list[float]] = []
    times: list[float] = []
    for question in questions:
        started = time.perf_counter()
        vectors.append((await embedder.embed([question.question]))[0])
        times.append((time.perf_counter() - started) * 1000)
    return vectors, times


async def timed_search(
    conn: AsyncConnection, kb_id: int, mode: Mode, question: Question, vector: list[float], top_k: int
) -> tuple[list[Hit], float]:
    """The passages of one search in its own transaction, and the milliseconds the search took."""
    async with conn.begin():
        started = time.perf_counter()
        hits = await search(
            conn,
            [kb_id],
            question.question,
            vector if mode.embedding else None,
            top_k=max(top_k, MRR_DEPTH),
            query_language=detect(question.question),
            dense_weight=mode.dense_weight,
            weights=mode.weights,
            candidates=CANDIDATES_PER_RESULT * top_k,
        )
        return hits, (time.perf_counter() - started) * 1000


def first_rank(hits: Sequence[Hit], documents: Sequence[str]) -> int | None:
    """The 1-based rank of the first passage from one of `documents`, or None."""
    return next((rank for rank, hit in enumerate(hits, 1) if hit.document_name in documents), None)


async def run_searches(
    engine: AsyncEngine,
    kb_id: int,
    all_modes: Sequence[Mode],
    questions: Sequence[Question],
    vectors: Sequence[list[float]],
    *,
    top_k: int,
    rounds: int,
) -> tuple[dict[str, dict[str, int | None]], dict[str, list[float]]]:
    """Ranks per mode and question, and search milliseconds per mode, over `rounds` interleaved passes."""
    ranks: dict[str, dict[str, int | None]] = {mode.name: {} for mode in all_modes}
    times: dict[str, list[float]] = {mode.name: [] for mode in all_modes}
    async with engine.connect() as conn:
        for mode in all_modes:  # warm-up: plans, caches, the HNSW index in memory
            await timed_search(conn, kb_id, mode, questions[0], vectors[0], top_k)
        for _ in range(rounds):
            for question, vector in zip(questions, vectors, strict=True):
                for mode in all_modes:
                    hits, elapsed = await timed_search(conn, kb_id, mode, question, vector, top_k)
                    ranks[mode.name][question.id] = first_rank(hits, question.documents)
                    times[mode.name].append(elapsed)
    return ranks, times


# --- figures -------------------------------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50 and p95 by nearest rank, rounded to 0.01."""
    ordered = sorted(values)
    return {f"p{q}": round(ordered[min(len(ordered), math.ceil(q * len(ordered) / 100)) - 1], 2) for q in (50, 95)}


def quality(ranks: Mapping[str, int | None], questions: Sequence[Question], top_k: int) -> dict[str, dict[str, float]]:
    """Recall@k and MRR@10 per group."""
    figures: dict[str, dict[str, float]] = {"recall": {}, "mrr": {}}
    for group in GROUPS:
        members = [ranks[q.id] for q in questions if group in ("all", q.group)]
        hits = [rank for rank in members if rank is not None]
        figures["recall"][group] = round(sum(rank <= top_k for rank in hits) / len(members), 3)
        figures["mrr"][group] = round(sum(1 / rank for rank in hits if rank <= MRR_DEPTH) / len(members), 3)
    return figures


def checks(report: Mapping[str, Any]) -> list[str]:
    """Whether the language-aware hybrid matches keyword-only on Chinese and dense-only on English."""
    found = report["modes"]
    lines = []
    for group, rival in (("zh", "keyword"), ("en", "dense")):
        for metric in ("recall", "mrr"):
            ours, theirs = found["language_aware"][metric][group], found[rival][metric][group]
            verdict = "ok" if ours >= theirs else "NOT MET"
            lines.append(f"- {verdict}: language-aware {metric} on {group} {ours:.3f} vs {rival} only {theirs:.3f}")
    return lines


def markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown tables."""
    k, counts, found = report["top_k"], report["questions"], report["modes"]
    heads = [f"{g} ({counts[g]})" for g in GROUPS]
    lines = [f"## Retrieval quality (top-k {k}; {report['database']})", ""]
    lines += [f"| mode | {' | '.join(f'R@{k} {h}' for h in heads)} | {' | '.join(f'MRR {h}' for h in heads)} |"]
    lines += ["|---" * (1 + 2 * len(GROUPS)) + "|"]
    for figures in found.values():
        cells = [f"{figures['recall'][g]:.3f}" for g in GROUPS] + [f"{figures['mrr'][g]:.3f}" for g in GROUPS]
        lines.append(f"| {figures['label']} | {' | '.join(cells)} |")
    lines += ["", "## Latency (ms)", "", "| step | p50 | p95 |", "|---|---|---|"]
    lines += [f"| search: {f['label']} | {f['search_ms']['p50']} | {f['search_ms']['p95']} |" for f in found.values()]
    embedding = report["query_embedding_ms"]
    lines += [f"| query embedding (one question) | {embedding['p50']} | {embedding['p95']} |", ""]
    ingest = report["ingestion"]
    lines += ["## Ingestion", "", "| documents | chunks | parse+chunk s | embedder start s | embed s | store s |"]
    lines += ["|---|---|---|---|---|---|"]
    cells = [ingest[key] for key in ("documents", "chunks", "parse_chunk_s", "embedder_start_s", "embed_s", "store_s")]
    lines += ["| " + " | ".join(str(cell) for cell in cells) + " |", "", "## Checks", "", *checks(report)]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------------------


async def embed_all(corpus: Corpus, questions: Sequence[Question], threads: int) -> Embedded:
    """The chunks' and the questions' vectors from a local embedder started (and timed) for the purpose."""
    embedder = LocalEmbedder(default_python(ROOT), batch_size=32, threads=threads)
    try:
        started = time.perf_counter()
        await embedder.embed(["warm-up"])
        start_s = time.perf_counter() - started
        chunk_vectors, embed_s = await embed_corpus(embedder, corpus)
        query_vectors, query_ms = await embed_questions(embedder, questions)
        return Embedded(chunk_vectors, query_vectors, query_ms, start_s, embed_s, dict(embedder.dense_weight))
    finally:
        await embedder.aclose()


async def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Ingest, search, measure; returns the report."""
    corpus, parse_s = read_corpus(DATA / "corpus")
    questions = read_questions(DATA / "questions.jsonl", corpus)
    embedded = await embed_all(corpus, questions, args.threads)
    all_modes = modes(embedded.dense_weight)
    async with throwaway_database() as (engine, where):
        kb_id, store_s = await store_corpus(engine, corpus, embedded.chunks)
        ranks, times = await run_searches(
            engine, kb_id, all_modes, questions, embedded.queries, top_k=args.top_k, rounds=args.rounds
        )
    ingestion = {"documents": len(corpus.documents), "chunks": corpus.chunk_count(), "parse_chunk_s": round(parse_s, 3)}
    ingestion |= {"embedder_start_s": round(embedded.start_s, 2), "embed_s": round(embedded.embed_s, 2)}
    ingestion |= {"store_s": round(store_s, 2)}
    return {
        "top_k": args.top_k,
        "database": where,
        "questions": {g: sum(g in ("all", q.group) for q in questions) for g in GROUPS},
        "ingestion": ingestion,
        "query_embedding_ms": percentiles(embedded.query_ms),
        "modes": {
            m.name: {"label": m.label, **quality(ranks[m.name], questions, args.top_k)}
            | {"search_ms": percentiles(times[m.name])}
            for m in all_modes
        },
        "ranks": {q.id: {m.name: ranks[m.name][q.id] for m in all_modes} for q in questions},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--top-k", type=int, default=5, help="passages per search for recall@k (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures (and each question's ranks) here")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the questions (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the local embedder (default 1)")
    args = parser.parse_args()
    if args.top_k < 1 or args.rounds < 1 or args.threads < 1:
        parser.error("--top-k, --rounds and --threads are at least 1")
    report = asyncio.run(evaluate(args))
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
