"""Hybrid retrieval over knowledge bases: dense (pgvector, cosine), English full-text and CJK bigrams, fused by
weighted reciprocal rank fusion (k = 60), each method contributing 4 * top_k candidates.

Dense orders by `embedding <=> query`: the planner walks the HNSW index (with pgvector >= 0.8's iterative scan, so
rows of other knowledge bases in the same dimension table do not starve the result), or, for a knowledge base small
next to the table, its kb_id index and an exact sort. Keywords are OR-ed (a passage need not hold every word).

Language-aware: `dense_weight` maps a language to how far the knowledge base's embedder can be trusted on it
(1 = fully, 0 = not at all; languages not named: 1). A chunk's dense contribution is scaled by the smaller of the
query's and the chunk's weight; a weight of 0 for the query skips the dense search, for a chunk keeps it out of the
dense ranking. Only the given `kb_ids` are searched: the caller checks access first. Dense search covers the
knowledge bases whose dimension count is the query vector's length (pass knowledge bases sharing one embedder).
Run it inside a transaction: it sets `hnsw.ef_search` and `hnsw.iterative_scan` for that transaction only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from pgvector.sqlalchemy import VECTOR
from sqlalchemy import Row, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.rag.store.tables import CJK, MAX_DIMENSIONS, cjk_tsquery, embedding_table_name

DENSE: Final = "dense"
KEYWORD: Final = "keyword"
CJK_BIGRAMS: Final = "cjk"
METHODS: Final = (DENSE, KEYWORD, CJK_BIGRAMS)
RRF_K: Final = 60
CANDIDATES_PER_RESULT: Final = 4
MAX_QUERY_TERMS: Final = 64
WORD: Final = re.compile(r"[^\W_]+")
EF_SEARCH_RANGE: Final = (40, 1000)

PREPARE_DENSE: Final = text(
    """
    SELECT to_regclass(:table) IS NOT NULL,
           CASE WHEN string_to_array(split_part(e.extversion, '-', 1), '.')::int[] >= ARRAY[0, 8]
                THEN set_config('hnsw.iterative_scan', 'strict_order', true) END,
           set_config('hnsw.ef_search', :ef_search, true)
    FROM pg_extension e WHERE e.extname = 'vector'
    """
)
KEYWORD_SQL: Final = text(
    """
    SELECT c.id, ts_rank(c.keywords, q, 1) AS rank
    FROM kb_chunks c, websearch_to_tsquery('english', :query) AS q
    WHERE c.kb_id = ANY(:kb_ids) AND c.keywords @@ q
    ORDER BY rank DESC, c.id LIMIT :limit
    """
)
CJK_SQL: Final = text(
    """
    SELECT c.id, ts_rank(c.cjk, q, 1) AS rank
    FROM kb_chunks c, CAST(:query AS tsquery) AS q
    WHERE c.kb_id = ANY(:kb_ids) AND c.cjk @@ q
    ORDER BY rank DESC, c.id LIMIT :limit
    """
)
HITS_SQL: Final = text(
    """
    SELECT c.id, c.kb_id, k.name AS kb_name, c.document_id, d.name AS document_name, c.chunk_index,
           c.heading_path, c.text, c.language
    FROM kb_chunks c
    JOIN kb_documents d ON d.id = c.document_id
    JOIN knowledge_bases k ON k.id = c.kb_id
    WHERE c.id = ANY(:ids) AND c.kb_id = ANY(:kb_ids)
    """
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A chunk one method found, with that method's own score and this chunk's weight in it (1: full)."""

    chunk_id: int
    score: float
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Fused:
    """A chunk's fused score, with its 1-based rank and raw score in each method that found it."""

    chunk_id: int
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved passage: where it is from, its text, its fused score and its rank in each method."""

    chunk_id: int
    kb_id: int
    kb_name: str
    document_id: int
    document_name: str
    chunk_index: int
    heading_path: tuple[str, ...]
    text: str
    language: str
    score: float
    ranks: dict[str, int]
    scores: dict[str, float]


# --- fusion and query building (pure) ---------------------------------------------------------------------------


def rrf_fuse(
    rankings: Mapping[str, Sequence[Candidate]], weights: Mapping[str, float] | None = None, *, k: int = RRF_K
) -> list[Fused]:
    """Weighted reciprocal rank fusion: sum over methods of weight(method) * weight(chunk) / (k + rank), best first.

    Ties go to the chunk with the better best rank, then the lower id, so the order is deterministic.
    """
    totals: dict[int, float] = {}
    ranks: dict[int, dict[str, int]] = {}
    scores: dict[int, dict[str, float]] = {}
    for method, candidates in rankings.items():
        method_weight = 1.0 if weights is None else weights.get(method, 1.0)
        for rank, candidate in enumerate(candidates, start=1):
            chunk_id = candidate.chunk_id
            totals[chunk_id] = totals.get(chunk_id, 0.0) + method_weight * candidate.weight / (k + rank)
            ranks.setdefault(chunk_id, {})[method] = rank
            scores.setdefault(chunk_id, {})[method] = candidate.score
    fused = [Fused(chunk_id, total, ranks[chunk_id], scores[chunk_id]) for chunk_id, total in totals.items()]
    return sorted(fused, key=lambda f: (-f.score, min(f.ranks.values()), f.chunk_id))


def english_query(query_text: str) -> str | None:
    """The query's non-CJK words OR-ed in websearch syntax ("a or b"): a passage need not contain every word."""
    words = WORD.findall(CJK.sub(" ", query_text.lower()))
    terms = [w for w in dict.fromkeys(words) if w != "or"][:MAX_QUERY_TERMS]
    return " or ".join(terms) or None


def language_weight(dense_weight: Mapping[str, float] | None, language: str | None) -> float:
    """How far the embedder is trusted on a language: its entry in `dense_weight`, else 1."""
    if dense_weight is None or language is None:
        return 1.0
    return max(0.0, dense_weight.get(language, 1.0))


def _usable(embedding: Sequence[float] | None) -> TypeGuard[Sequence[float]]:
    if embedding is None or not 1 <= len(embedding) <= MAX_DIMENSIONS:
        return False
    return all(math.isfinite(v) for v in embedding) and any(embedding)


# --- the three searches -----------------------------------------------------------------------------------------


async def _prepare_dense(conn: AsyncConnection, table: str, limit: int) -> bool:
    """Whether the embedding table exists (pgvector installed); sets the HNSW scan options for this transaction."""
    ef_search = min(max(limit, EF_SEARCH_RANGE[0]), EF_SEARCH_RANGE[1])
    row = (await conn.execute(PREPARE_DENSE, {"table": table, "ef_search": str(ef_search)})).first()
    return row is not None and bool(row[0])


async def dense_candidates(
    conn: AsyncConnection,
    kb_ids: Sequence[int],
    embedding: Sequence[float],
    limit: int,
    *,
    query_weight: float,
    dense_weight: Mapping[str, float] | None,
) -> list[Candidate]:
    """Nearest chunks by cosine distance through the HNSW index, skipping languages the embedder cannot read."""
    table = embedding_table_name(len(embedding))
    if not await _prepare_dense(conn, table, limit):
        return []
    skipped = [language for language, weight in (dense_weight or {}).items() if weight <= 0]
    statement = text(
        f"SELECT chunk_id, language, embedding <=> :query AS distance FROM {table} "  # noqa: S608  (name from an int)
        "WHERE kb_id = ANY(:kb_ids) AND language <> ALL(:skipped) ORDER BY distance LIMIT :limit"
    ).bindparams(bindparam("query", type_=VECTOR(len(embedding))))
    params = {"query": list(embedding), "kb_ids": list(kb_ids), "skipped": skipped, "limit": limit}
    rows = await conn.execute(statement, params)
    return [
        Candidate(chunk_id, 1.0 - distance, min(query_weight, language_weight(dense_weight, language)))
        for chunk_id, language, distance in rows
    ]


async def keyword_candidates(
    conn: AsyncConnection, kb_ids: Sequence[int], query_text: str, limit: int
) -> list[Candidate]:
    """Chunks matching any English word of the query (stemmed, stop words dropped), by `ts_rank`.

    The words are OR-ed, so `ts_rank` (which rewards covering more of them) rather than `ts_rank_cd` (which scores
    each occurrence as a cover, so one word repeated ties with several different words).
    """
    query = english_query(query_text)
    if query is None:
        return []
    rows = await conn.execute(KEYWORD_SQL, {"query": query, "kb_ids": list(kb_ids), "limit": limit})
    return [Candidate(chunk_id, rank) for chunk_id, rank in rows]


async def cjk_candidates(conn: AsyncConnection, kb_ids: Sequence[int], query_text: str, limit: int) -> list[Candidate]:
    """Chunks sharing CJK bigrams with the query, by `ts_rank` (more distinct bigrams matched rank higher)."""
    query = cjk_tsquery(query_text)
    if query is None:
        return []
    rows = await conn.execute(CJK_SQL, {"query": query, "kb_ids": list(kb_ids), "limit": limit})
    return [Candidate(chunk_id, rank) for chunk_id, rank in rows]


async def _hits(conn: AsyncConnection, kb_ids: Sequence[int], fused: Sequence[Fused]) -> list[Hit]:
    if not fused:
        return []
    rows = await conn.execute(HITS_SQL, {"ids": [f.chunk_id for f in fused], "kb_ids": list(kb_ids)})
    found = {row.id: row for row in rows}
    return [_hit(found[f.chunk_id], f) for f in fused if f.chunk_id in found]


def _hit(row: Row[Any], fused: Fused) -> Hit:
    return Hit(
        chunk_id=fused.chunk_id,
        kb_id=row.kb_id,
        kb_name=row.kb_name,
        document_id=row.document_id,
        document_name=row.document_name,
        chunk_index=row.chunk_index,
        heading_path=tuple(row.heading_path),
        text=row.text,
        language=row.language,
        score=fused.score,
        ranks=fused.ranks,
        scores=fused.scores,
    )


async def search(
    conn: AsyncConnection,
    kb_ids: list[int],
    query_text: str,
    query_embedding: list[float] | None,
    *,
    top_k: int = 5,
    query_language: str,
    dense_weight: dict[str, float] | None = None,
    weights: Mapping[str, float] | None = None,
    candidates: int | None = None,
) -> list[Hit]:
    """The `top_k` best passages of the knowledge bases `kb_ids` for the query, by weighted RRF of the methods.

    `weights` scales whole methods (`dense`, `keyword`, `cjk`); `candidates` is how many each method contributes
    (default 4 * top_k). Without a usable embedding, or with pgvector absent, the search is keyword-only.
    """
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    if not kb_ids:
        return []
    limit = candidates or CANDIDATES_PER_RESULT * top_k
    rankings: dict[str, list[Candidate]] = {}
    query_weight = language_weight(dense_weight, query_language)
    if query_weight > 0 and _usable(query_embedding):
        rankings[DENSE] = await dense_candidates(
            conn, kb_ids, query_embedding, limit, query_weight=query_weight, dense_weight=dense_weight
        )
    rankings[KEYWORD] = await keyword_candidates(conn, kb_ids, query_text, limit)
    rankings[CJK_BIGRAMS] = await cjk_candidates(conn, kb_ids, query_text, limit)
    return await _hits(conn, kb_ids, rrf_fuse(rankings, weights)[:top_k])
