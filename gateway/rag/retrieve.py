"""Retrieval for a request: the query embedded once per embedder, hybrid search over the knowledge bases, hits of
several searches merged, and passages found only by meaning kept only when they are similar enough."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.admin.store.tables import teams
from gateway.rag.embedders import Embedders
from gateway.rag.ingest import detect
from gateway.rag.store.repo import KnowledgeBase
from gateway.rag.store.search import CJK_BIGRAMS, DENSE, KEYWORD, Hit, language_weight, search
from gateway.rag.store.tables import knowledge_bases


@dataclass(frozen=True, slots=True)
class Scoped:
    """A knowledge base with the name of the team that owns it (None: readable by every team)."""

    kb: KnowledgeBase
    team: str | None

    def readable_by(self, team: str | None, *, everything: bool = False) -> bool:
        return everything or self.team is None or self.team == team


async def named(engine: AsyncEngine, names: Collection[str]) -> dict[str, Scoped]:
    """The knowledge bases of these names that exist, with their team's name."""
    statement = (
        select(knowledge_bases, teams.c.name.label("team_name"))
        .outerjoin(teams, teams.c.id == knowledge_bases.c.team_id)
        .where(knowledge_bases.c.name.in_(list(names)))
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).mappings().all()
    found: dict[str, Scoped] = {}
    for row in rows:
        values = {k: v for k, v in row.items() if k != "team_name"}
        found[row["name"]] = Scoped(KnowledgeBase(**values), row["team_name"])
    return found


def relevant(hit: Hit, min_similarity: float) -> bool:
    """Found by a keyword, or similar enough in meaning."""
    if KEYWORD in hit.ranks or CJK_BIGRAMS in hit.ranks:
        return True
    return hit.scores.get(DENSE, -1.0) >= min_similarity


class Retriever:
    def __init__(self, embedders: Embedders) -> None:
        self.embedders = embedders

    async def retrieve(
        self,
        engine: AsyncEngine,
        kbs: Sequence[KnowledgeBase],
        queries: Sequence[str],
        *,
        top_k: int,
        min_similarity: float,
    ) -> list[Hit]:
        """The best `top_k` passages of the knowledge bases for any of the queries (best score per passage)."""
        groups: dict[tuple[str, int], list[KnowledgeBase]] = {}
        for kb in kbs:
            groups.setdefault((kb.embedding_alias, kb.dimensions), []).append(kb)
        plans = [(group, query, await self._embed(group[0], query)) for group in groups.values() for query in queries]
        best: dict[int, Hit] = {}
        async with engine.begin() as conn:
            for group, query, embedding in plans:
                weights = self.embedders.dense_weight(group[0])
                ids = [kb.id for kb in group]
                found = await search(
                    conn, ids, query, embedding, top_k=top_k, query_language=detect(query), dense_weight=weights
                )
                for hit in filter(lambda h: relevant(h, min_similarity), found):
                    kept = best.get(hit.chunk_id)
                    if kept is None or hit.score > kept.score:
                        best[hit.chunk_id] = hit
        return sorted(best.values(), key=lambda h: (-h.score, h.chunk_id))[:top_k]

    async def _embed(self, kb: KnowledgeBase, query: str) -> list[float] | None:
        """The query's vector, unless the embedder cannot read the query's language."""
        if language_weight(self.embedders.dense_weight(kb), detect(query)) <= 0:
            return None
        (vector,) = await self.embedders.for_kb(kb, "query").embed([query])
        return vector
