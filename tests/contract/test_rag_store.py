# ruff: noqa: RUF001  (the Chinese texts use full-width punctuation, as Chinese does)
"""Knowledge-base storage against a real PostgreSQL: migration 0003 (with and without pgvector), knowledge bases,
documents and chunks, and hybrid retrieval (dense, English keywords, CJK bigrams, RRF) on small crafted corpora.

Embeddings are synthetic and deterministic (words and CJK bigrams hashed into 384 dimensions), so no model is needed.
Tests that need pgvector skip on a server without it; there the keyword-only path is what is checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, NullPool, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway.admin.store import repo as admin_repo
from gateway.rag.store import repo
from gateway.rag.store.repo import ChunkInput, Document, KnowledgeBase
from gateway.rag.store.search import (
    CJK_BIGRAMS,
    DENSE,
    KEYWORD,
    Candidate,
    Hit,
    cjk_candidates,
    dense_candidates,
    english_query,
    keyword_candidates,
    language_weight,
    rrf_fuse,
    search,
)
from gateway.rag.store.tables import (
    cjk_terms,
    cjk_tsquery,
    cjk_tsvector,
    embedding_table,
    embedding_table_name,
    is_embedding_table,
)
from gateway.store.engine import create_engine
from gateway.store.migrate import alembic_config, upgrade
from gateway.store.schema import metadata
from gateway.store.urls import parse_url
from tests.store_fixtures import create_database, drop_database

DIMS = 384
KB_TABLES = {"knowledge_bases", "kb_documents", "kb_chunks"}
WORD = re.compile(r"[^\W_]+")
NO_CHINESE = {"zh": 0.0, "mixed": 0.5, "en": 1.0}

# (heading path, text) per chunk: an English and a Chinese staff handbook on the same four topics.
EN_HANDBOOK = [
    (
        ["Handbook", "Leave"],
        "Employees receive 25 days of paid vacation per year. Unused vacation carries over to March.",
    ),
    (
        ["Handbook", "Expenses"],
        "Submit expense reports within 30 days through the finance portal with receipts attached.",
    ),
    (["Handbook", "Security"], "Passwords must be rotated every 90 days and never shared with colleagues."),
    (["Handbook", "Remote work"], "Staff may work remotely two days a week with the approval of their manager."),
]
ZH_HANDBOOK = [
    (["员工手册", "休假"], "员工每年享有十五天带薪年假，未使用的年假可以顺延到次年三月。"),
    (["员工手册", "报销"], "报销单须在三十天内通过财务系统提交，并附上发票。"),
    (["员工手册", "安全"], "密码每九十天必须更换一次，不得与同事共享。"),
    (["员工手册", "远程办公"], "经经理批准，员工每周可以远程办公两天。"),
]


def embed(content: str) -> list[float]:
    """A deterministic bag-of-words vector: each word and CJK bigram hashed to a signed unit in one dimension."""
    vector = [0.0] * DIMS
    for token in WORD.findall(content.lower()) + cjk_terms(content):
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        vector[int.from_bytes(digest[:4], "big") % DIMS] += 1.0 if digest[4] & 1 else -1.0
    return normalized(vector)


def normalized(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def axis(*weights: tuple[int, float]) -> list[float]:
    """A unit vector from (dimension, weight) pairs: hand-placed embeddings for a blind embedder."""
    vector = [0.0] * DIMS
    for dimension, weight in weights:
        vector[dimension] = weight
    return normalized(vector)


@dataclass(frozen=True)
class KbDatabase:
    url: str
    vector: bool


async def _server_has_vector(url: str) -> bool:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            sql = "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            return (await conn.execute(text(sql))).first() is not None
    finally:
        await engine.dispose()


async def _create_migrated(server_url: str) -> KbDatabase:
    url = await create_database(server_url)
    await upgrade(url)
    return KbDatabase(url, await _server_has_vector(url))


@pytest.fixture(scope="module")
def kb_database(database_url: str) -> Iterator[KbDatabase]:
    """A database of this module's own, migrated to head (other modules compare the shared one with the metadata)."""
    database = asyncio.run(_create_migrated(database_url))
    try:
        yield database
    finally:
        asyncio.run(drop_database(database_url, database.url))


@pytest.fixture
async def engine(kb_database: KbDatabase) -> AsyncIterator[AsyncEngine]:
    """The module's database with no knowledge bases, documents, chunks, embeddings or teams."""
    engine = create_engine(kb_database.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("TRUNCATE knowledge_bases, kb_documents, kb_chunks, teams RESTART IDENTITY CASCADE")
            )
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def needs_vector(kb_database: KbDatabase) -> None:
    if not kb_database.vector:
        pytest.skip("the test server has no pgvector")


async def scalar(conn: AsyncConnection, sql: str, **params: Any) -> Any:
    return (await conn.execute(text(sql), params)).scalar()


async def table_names(conn: AsyncConnection) -> set[str]:
    result = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))
    return {r[0] for r in result}


def chunks_of(corpus: Sequence[tuple[list[str], str]], language: str, with_embeddings: bool = True) -> list[ChunkInput]:
    return [
        ChunkInput(body, language, len(body), headings, embed(" ".join([*headings, body])) if with_embeddings else None)
        for headings, body in corpus
    ]


async def add_document(
    conn: AsyncConnection, kb: KnowledgeBase, name: str, chunks: Sequence[ChunkInput], content_hash: str | None = None
) -> Document:
    """Upsert a document and store its chunks, as ingestion does; returns the indexed document."""
    digest = content_hash or hashlib.sha256("".join(c.text for c in chunks).encode()).hexdigest()
    upserted = await repo.upsert_document(conn, kb.id, name, digest, size=100, language=chunks[0].language)
    assert await repo.store_chunks(conn, upserted.document.id, digest, chunks)
    document = await repo.get_document(conn, kb.id, name)
    assert document is not None
    return document


async def handbooks(conn: AsyncConnection, name: str = "hr") -> KnowledgeBase:
    kb = await repo.create_knowledge_base(conn, name, dimensions=DIMS)
    await add_document(conn, kb, "handbook.md", chunks_of(EN_HANDBOOK, "en"))
    await add_document(conn, kb, "手册.md", chunks_of(ZH_HANDBOOK, "zh"))
    return kb


def first(hits: Sequence[Hit]) -> tuple[str, int]:
    assert hits, "no hits"
    return hits[0].document_name, hits[0].chunk_index


# --- migration ------------------------------------------------------------------------------------------------


async def downgrade_to(engine: AsyncEngine, revision: str) -> None:
    def run(conn: Connection) -> None:
        command.downgrade(alembic_config(conn), revision)

    async with engine.connect() as conn:
        await conn.run_sync(run)
        await conn.commit()


async def test_0003_applies_after_0002_downgrades_with_the_embedding_tables_and_reapplies(
    empty_database_url: str,
) -> None:
    assert await upgrade(empty_database_url, "0002") == "0002"
    assert await upgrade(empty_database_url) == "0004"
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as conn:
            assert await table_names(conn) >= KB_TABLES
            vector = await repo.vector_available(conn)
            assert vector == await _server_has_vector(empty_database_url)
            await repo.create_knowledge_base(conn, "hr", dimensions=DIMS)
            assert (embedding_table_name(DIMS) in await table_names(conn)) == vector
        await downgrade_to(engine, "0002")
        async with engine.connect() as conn:
            assert not {n for n in await table_names(conn) if n.startswith(("kb_", "knowledge_"))}
            assert await scalar(conn, "SELECT version_num FROM alembic_version") == "0002"
        assert await upgrade(engine) == "0004"
    finally:
        await engine.dispose()


async def test_tables_module_matches_the_migration_skipping_the_embedding_tables(empty_database_url: str) -> None:
    await upgrade(empty_database_url)

    def differences(conn: Connection) -> list[Any]:
        def include_name(name: str | None, kind: str, parents: Any) -> bool:
            return not (kind == "table" and is_embedding_table(name))

        context = MigrationContext.configure(conn, opts={"include_name": include_name})
        return list(compare_metadata(context, metadata))

    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as conn:
            await repo.create_knowledge_base(conn, "hr", dimensions=DIMS)  # an embedding table, where pgvector is
            assert await conn.run_sync(differences) == []
    finally:
        await engine.dispose()


async def test_a_role_that_may_not_create_pgvector_still_gets_the_tables(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """pgvector is not a trusted extension: a database owner who is not a superuser cannot create it."""
    if not await _server_has_vector(database_url):
        pytest.skip("the test server has no pgvector: the savepoint path needs one that offers it")
    role = f"switchyard_kb_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(parse_url(database_url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER'))
            await conn.execute(text(f'CREATE DATABASE "{role}" OWNER "{role}"'))
        url = parse_url(database_url).set(username=role, password=None, database=role)
        assert await upgrade(url) == "0004"
        assert "cannot create the pgvector extension" in caplog.text
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                assert not await repo.vector_available(conn)
                assert await table_names(conn) >= KB_TABLES
        finally:
            await engine.dispose()
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{role}" WITH (FORCE)'))
            await conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        await admin.dispose()


async def test_without_the_extension_installed_search_is_keyword_only(empty_database_url: str) -> None:
    await upgrade(empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP EXTENSION IF EXISTS vector"))  # as on a server that lacks it
            assert not await repo.vector_available(conn)
            kb = await handbooks(conn)  # embeddings given, and ignored
            assert not {n for n in await table_names(conn) if is_embedding_table(n)}
            hits = await search(conn, [kb.id], "expense receipts", embed("expense receipts"), query_language="en")
            assert first(hits) == ("handbook.md", 1)
            assert all(DENSE not in hit.ranks for hit in hits)
            zh = await search(conn, [kb.id], "密码多久更换", embed("密码多久更换"), query_language="zh")
            assert first(zh) == ("手册.md", 2)
    finally:
        await engine.dispose()


async def test_the_embedding_table_has_an_hnsw_cosine_index_the_planner_can_use(
    engine: AsyncEngine, needs_vector: None
) -> None:
    async with engine.begin() as conn:
        kb = await handbooks(conn)
        sql = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t"
        indexes = {r.indexname: r.indexdef for r in await conn.execute(text(sql), {"t": embedding_table_name(DIMS)})}
        assert indexes[f"ix_kb_embeddings_{DIMS}_embedding"].endswith("USING hnsw (embedding vector_cosine_ops)")
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        await conn.execute(text("SET LOCAL enable_bitmapscan = off"))
        await conn.execute(text("SET LOCAL enable_sort = off"))  # else, on 8 rows, the kb_id index and a sort win
        plan = await conn.execute(
            text(
                f"EXPLAIN SELECT chunk_id FROM kb_embeddings_{DIMS} WHERE kb_id = ANY(:kb_ids) "
                "ORDER BY embedding <=> CAST(:q AS vector) LIMIT 5"
            ),
            {"kb_ids": [kb.id], "q": str(embed("vacation"))},
        )
        assert f"ix_kb_embeddings_{DIMS}_embedding" in "\n".join(r[0] for r in plan)


# --- knowledge bases and documents ------------------------------------------------------------------------------


async def test_knowledge_base_crud_and_refusals(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        team = await admin_repo.create_team(conn, "support")
        kb = await repo.create_knowledge_base(
            conn, "policies", dimensions=1024, embedding_alias="bge-m3", team_id=team["id"], chunking={"tokens": 400}
        )
        assert (kb.name, kb.dimensions, kb.embedding_alias, kb.team_id) == ("policies", 1024, "bge-m3", team["id"])
        assert kb.chunking == {"tokens": 400}
        other = await repo.create_knowledge_base(conn, "faq", dimensions=DIMS)
        assert other.embedding_alias == "local"
        assert await repo.get_knowledge_base(conn, "policies") == kb
        assert await repo.get_knowledge_base(conn, kb.id) == kb
        assert await repo.get_knowledge_base(conn, "nope") is None
        assert [k.name for k in await repo.list_knowledge_bases(conn)] == ["faq", "policies"]
        assert [k.name for k in await repo.list_knowledge_bases(conn, team_ids=[team["id"]])] == ["policies"]
        with pytest.raises(repo.NameTaken):
            await repo.create_knowledge_base(conn, "policies", dimensions=DIMS)
        with pytest.raises(repo.NotFound):
            await repo.create_knowledge_base(conn, "orphan", dimensions=DIMS, team_id=999)
        for bad in (0, 2001, True, 3.0):
            with pytest.raises(ValueError, match="dimensions"):
                await repo.create_knowledge_base(conn, "bad", dimensions=bad)  # type: ignore[arg-type]
        assert await repo.delete_knowledge_base(conn, "faq")
        assert not await repo.delete_knowledge_base(conn, "faq")
        assert [k.name for k in await repo.list_knowledge_bases(conn)] == ["policies"]


async def test_a_team_that_owns_knowledge_bases_cannot_be_deleted(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        team = await admin_repo.create_team(conn, "support")
        await repo.create_knowledge_base(conn, "policies", dimensions=DIMS, team_id=team["id"])
        with pytest.raises(admin_repo.Conflict, match="still owns knowledge bases"):  # RESTRICT, said plainly
            await admin_repo.delete_team(conn, team["id"])
        assert await repo.get_knowledge_base(conn, "policies") is not None


async def test_upsert_is_a_no_op_for_the_same_content_and_pending_on_a_change(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        kb = await repo.create_knowledge_base(conn, "hr", dimensions=DIMS)
        created = await repo.upsert_document(conn, kb.id, "a.md", "h1", size=10, language="en")
        assert created.changed
        assert (created.document.status, created.document.chunk_count) == ("pending", 0)
        assert await repo.store_chunks(conn, created.document.id, "h1", chunks_of(EN_HANDBOOK[:2], "en"))
        same = await repo.upsert_document(conn, kb.id, "a.md", "h1", size=10, language="en")
        assert not same.changed
        assert (same.document.id, same.document.status, same.document.chunk_count) == (
            created.document.id,
            "indexed",
            2,
        )
        changed = await repo.upsert_document(conn, kb.id, "a.md", "h2", size=20, language="en")
        assert changed.changed
        assert changed.document.id == created.document.id
        assert (changed.document.status, changed.document.content_hash, changed.document.bytes) == ("pending", "h2", 20)
        # until the new chunks are stored, the previous ones are still searchable
        hits = await search(conn, [kb.id], "vacation", None, query_language="en")
        assert first(hits) == ("a.md", 0)


async def test_store_chunks_replaces_them_at_once_and_refuses_a_superseded_version(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        kb = await repo.create_knowledge_base(conn, "hr", dimensions=DIMS)
        doc = await add_document(conn, kb, "a.md", chunks_of(EN_HANDBOOK, "en"), content_hash="h1")
        assert doc.chunk_count == 4
        await repo.upsert_document(conn, kb.id, "a.md", "h2", size=10)
        await repo.upsert_document(conn, kb.id, "a.md", "h3", size=10)
        assert not await repo.store_chunks(conn, doc.id, "h2", chunks_of(EN_HANDBOOK[:1], "en"))  # a stale worker
        assert await scalar(conn, "SELECT count(*) FROM kb_chunks WHERE document_id = :d", d=doc.id) == 4
        assert await repo.store_chunks(conn, doc.id, "h3", chunks_of(EN_HANDBOOK[2:], "en"))
        rows = (await conn.execute(text("SELECT chunk_index, text FROM kb_chunks ORDER BY chunk_index"))).all()
        assert [tuple(r) for r in rows] == [(0, EN_HANDBOOK[2][1]), (1, EN_HANDBOOK[3][1])]
        stored = await repo.get_document(conn, kb.id, doc.id)
        assert stored is not None
        assert (stored.status, stored.chunk_count, stored.error) == ("indexed", 2, None)
        if await repo.vector_available(conn):
            assert await scalar(conn, f"SELECT count(*) FROM kb_embeddings_{DIMS}") == 2
        assert not await repo.store_chunks(conn, 999, "h3", [])


async def test_a_wrong_embedding_is_refused_before_anything_changes(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        kb = await repo.create_knowledge_base(conn, "hr", dimensions=DIMS)
        doc = await add_document(conn, kb, "a.md", chunks_of(EN_HANDBOOK, "en"), content_hash="h1")
        await repo.upsert_document(conn, kb.id, "a.md", "h2", size=10)
        for bad in ([0.1] * (DIMS - 1), [0.0] * DIMS, [math.nan] * DIMS):
            with pytest.raises(repo.InvalidValue, match="embedding"):
                await repo.store_chunks(conn, doc.id, "h2", [ChunkInput("x", "en", 1, (), bad)])
        assert await scalar(conn, "SELECT count(*) FROM kb_chunks") == 4
        assert await scalar(conn, "SELECT status FROM kb_documents") == "pending"


async def test_nul_characters_from_extracted_text_are_dropped(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        kb = await repo.create_knowledge_base(conn, "hr", dimensions=DIMS)
        await add_document(conn, kb, "scan.pdf", [ChunkInput("pay\x00slip 工资\x00单", "mixed", 4, ("Pay\x00",), None)])
        hits = await search(conn, [kb.id], "资单", None, query_language="zh")  # a bigram across the NUL
        assert [(hit.text, hit.heading_path) for hit in hits] == [("payslip 工资单", ("Pay",))]


async def test_failure_drops_the_chunks_and_the_same_content_may_be_retried(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        kb = await repo.create_knowledge_base(conn, "hr", dimensions=DIMS)
        doc = await add_document(conn, kb, "a.md", chunks_of(EN_HANDBOOK, "en"), content_hash="h1")
        assert not await repo.set_document_status(conn, doc.id, "failed", "late", content_hash="old")
        assert await repo.set_document_status(conn, doc.id, "failed", "PDF is encrypted")
        failed = await repo.list_documents(conn, kb.id, status="failed")
        assert [(d.name, d.error, d.chunk_count) for d in failed] == [("a.md", "PDF is encrypted", 0)]
        assert await scalar(conn, "SELECT count(*) FROM kb_chunks") == 0
        retried = await repo.upsert_document(conn, kb.id, "a.md", "h1", size=10)
        assert retried.changed
        assert (retried.document.status, retried.document.error) == ("pending", None)
        with pytest.raises(repo.InvalidValue):
            await repo.set_document_status(conn, doc.id, "done")


async def test_listing_documents_shows_each_status(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        kb = await repo.create_knowledge_base(conn, "hr", dimensions=DIMS)
        await add_document(conn, kb, "b.md", chunks_of(EN_HANDBOOK, "en"))
        await repo.upsert_document(conn, kb.id, "a.md", "h", size=1)
        broken = await repo.upsert_document(conn, kb.id, "c.pdf", "h", size=1)
        await repo.set_document_status(conn, broken.document.id, "failed", "malformed PDF")
        listed = await repo.list_documents(conn, kb.id)
        assert [(d.name, d.status, d.chunk_count) for d in listed] == [
            ("a.md", "pending", 0),
            ("b.md", "indexed", 4),
            ("c.pdf", "failed", 0),
        ]


async def test_deleting_a_document_or_a_knowledge_base_removes_chunks_and_embeddings(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        kb = await handbooks(conn)
        other = await handbooks(conn, "other")
        vector = await repo.vector_available(conn)
        assert await repo.delete_document(conn, kb.id, "handbook.md")
        assert not await repo.delete_document(conn, kb.id, "handbook.md")
        assert not await repo.delete_document(conn, other.id + 1000, "手册.md")
        assert await scalar(conn, "SELECT count(*) FROM kb_chunks WHERE kb_id = :k", k=kb.id) == 4
        if vector:
            assert await scalar(conn, f"SELECT count(*) FROM kb_embeddings_{DIMS} WHERE kb_id = :k", k=kb.id) == 4
        assert await repo.delete_knowledge_base(conn, kb.id)
        assert await scalar(conn, "SELECT count(*) FROM kb_documents WHERE kb_id = :k", k=kb.id) == 0
        assert await scalar(conn, "SELECT count(*) FROM kb_chunks WHERE kb_id = :k", k=kb.id) == 0
        assert await scalar(conn, "SELECT count(*) FROM kb_chunks") == 8  # the other KB's
        if vector:
            assert await scalar(conn, f"SELECT count(*) FROM kb_embeddings_{DIMS}") == 8


# --- search -----------------------------------------------------------------------------------------------------


async def test_dense_search_finds_the_nearest_chunk(engine: AsyncEngine, needs_vector: None) -> None:
    async with engine.begin() as conn:
        kb = await handbooks(conn)
        query = "how many paid vacation days per year"
        hits = await search(conn, [kb.id], "", embed(query), query_language="en", top_k=3)
        assert first(hits) == ("handbook.md", 0)
        assert hits[0].ranks == {DENSE: 1}
        assert hits[0].scores[DENSE] == pytest.approx(
            sum(
                a * b
                for a, b in zip(embed(query), embed(" ".join([*EN_HANDBOOK[0][0], EN_HANDBOOK[0][1]])), strict=True)
            )
        )


async def test_english_keyword_search_finds_stemmed_words_in_any_order(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        kb = await handbooks(conn)
        hits = await search(conn, [kb.id], "Which password rotation rules apply?", None, query_language="en")
        assert first(hits) == ("handbook.md", 2)
        assert hits[0].ranks == {KEYWORD: 1}
        assert hits[0].heading_path == ("Handbook", "Security")
        assert hits[0].text == EN_HANDBOOK[2][1]
        assert hits[0].kb_name == "hr"
        headings = await search(conn, [kb.id], "expenses", None, query_language="en")  # the heading, too
        assert first(headings) == ("handbook.md", 1)


async def test_keyword_rank_rewards_covering_more_words_over_repeating_one(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        kb = await repo.create_knowledge_base(conn, "hr", dimensions=DIMS)
        repeated = "Days, days, days: the office is closed on public holidays, and these days are listed every year."
        await add_document(conn, kb, "a-holidays.md", [ChunkInput(repeated, "en", 20, (), None)])
        await add_document(conn, kb, "b-leave.md", [ChunkInput(EN_HANDBOOK[0][1], "en", 20, (), None)])
        hits = await search(conn, [kb.id], "How many vacation days do employees get?", None, query_language="en")
        assert [hit.document_name for hit in hits] == ["b-leave.md", "a-holidays.md"]


async def test_chinese_bigram_search_needs_no_segmenter(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        kb = await handbooks(conn)
        hits = await search(conn, [kb.id], "年假可以顺延吗？", None, query_language="zh")
        assert first(hits) == ("手册.md", 0)
        assert hits[0].ranks == {CJK_BIGRAMS: 1}
        remote = await search(conn, [kb.id], "每周能远程办公几天", None, query_language="zh")
        assert first(remote) == ("手册.md", 3)
        fullwidth = await search(conn, [kb.id], "發票", None, query_language="zh")  # traditional: no match, no error
        assert all(hit.document_name != "handbook.md" for hit in fullwidth)


@pytest.mark.parametrize(
    ("query", "language", "expected"),
    [
        ("deadline for expense receipts", "en", ("handbook.md", 1)),
        ("can I share my password with a colleague", "en", ("handbook.md", 2)),
        ("报销需要发票吗", "zh", ("手册.md", 1)),
        ("员工一年有几天带薪年假", "zh", ("手册.md", 0)),
    ],
)
async def test_hybrid_search_puts_the_answer_first(
    engine: AsyncEngine, needs_vector: None, query: str, language: str, expected: tuple[str, int]
) -> None:
    async with engine.begin() as conn:
        kb = await handbooks(conn)
        hits = await search(conn, [kb.id], query, embed(query), query_language=language, top_k=3)
        assert first(hits) == expected
        assert DENSE in hits[0].ranks
        assert len(hits) == 3
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_fusion_prefers_a_chunk_both_methods_rank_well(engine: AsyncEngine, needs_vector: None) -> None:
    """Dense says A, keywords say B, both rank C second: RRF puts C first (2/62 beats 1/61 + 1/67)."""
    async with engine.begin() as conn:
        kb = await repo.create_knowledge_base(conn, "kb", dimensions=DIMS)
        fillers = [ChunkInput(f"filler {i}", "en", 2, (), axis((0, 1.0), (10 + i, 1.0 + i))) for i in range(4)]
        chunks = [
            ChunkInput("alpha", "en", 1, (), axis((0, 1.0))),  # A: the query's own direction
            ChunkInput("zebra stripes", "en", 2, (), axis((0, 0.01), (5, 1.0))),  # B: far from it
            ChunkInput("zebra", "en", 1, (), axis((0, 1.0), (6, 0.5))),  # C: near
            *fillers,
        ]
        await add_document(conn, kb, "d.md", chunks)
        hits = await search(conn, [kb.id], "zebra stripes", axis((0, 1.0)), query_language="en", top_k=3)
        assert [h.text for h in hits] == ["zebra", "zebra stripes", "alpha"]
        assert hits[0].ranks == {DENSE: 2, KEYWORD: 2}
        assert hits[1].ranks == {DENSE: 7, KEYWORD: 1}


async def test_dense_is_skipped_for_chinese_when_the_embedder_cannot_read_it(
    engine: AsyncEngine, needs_vector: None
) -> None:
    """A blind embedder maps the question onto a wrong passage; with zh weighted 0 the bigrams decide."""
    async with engine.begin() as conn:
        kb = await repo.create_knowledge_base(conn, "kb", dimensions=DIMS)
        noise = [ChunkInput(f"无关内容第{i}条", "zh", 6, (), axis((0, 1.0), (20 + i, 0.1 * (i + 1)))) for i in range(6)]
        chunks = [
            ChunkInput("员工每年享有十五天带薪年假。", "zh", 14, (), axis((0, 0.1), (9, 1.0))),  # the answer
            ChunkInput("请假需要填写年假申请表。", "zh", 12, (), axis((0, 1.0))),  # shares 年假 only
            *noise,
        ]
        await add_document(conn, kb, "zh.md", chunks)
        query, blind = "员工带薪年假有几天", axis((0, 1.0))
        fused = await search(conn, [kb.id], query, blind, query_language="zh", top_k=2)
        assert fused[0].text == chunks[1].text  # equal weights: the noise wins
        aware = await search(conn, [kb.id], query, blind, query_language="zh", top_k=2, dense_weight=NO_CHINESE)
        assert aware[0].text == chunks[0].text
        assert all(DENSE not in hit.ranks for hit in aware)


async def test_an_english_query_keeps_chinese_chunks_out_of_the_dense_ranking(
    engine: AsyncEngine, needs_vector: None
) -> None:
    async with engine.begin() as conn:
        kb = await handbooks(conn)
        hits = await search(
            conn, [kb.id], "vacation 年假", embed("vacation"), query_language="en", top_k=8, dense_weight=NO_CHINESE
        )
        assert {hit.language for hit in hits} == {"en", "zh"}  # zh chunks come through their bigrams, not dense
        assert all((DENSE in hit.ranks) == (hit.language == "en") for hit in hits)
        half = await search(
            conn, [kb.id], "", embed("vacation"), query_language="mixed", top_k=1, dense_weight=NO_CHINESE
        )
        assert half[0].score == pytest.approx(0.5 / 61)


async def test_only_the_given_knowledge_bases_are_searched(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        mine = await handbooks(conn, "mine")
        theirs = await handbooks(conn, "theirs")
        vector = await repo.vector_available(conn)
        theirs_ids = set(await conn.scalars(text("SELECT id FROM kb_chunks WHERE kb_id = :k"), {"k": theirs.id}))
        queries = [("vacation days", "en"), ("年假", "zh"), *([("", "en")] if vector else [])]
        for query, language in queries:
            embedding = embed(query or "vacation") if vector else None
            hits = await search(conn, [mine.id], query, embedding, query_language=language, top_k=20)
            assert hits
            assert {(hit.kb_id, hit.kb_name) for hit in hits} == {(mine.id, "mine")}
        # each method on its own, too: another KB's chunk never even takes a rank
        found = [
            *await keyword_candidates(conn, [mine.id], "vacation days", 50),
            *await cjk_candidates(conn, [mine.id], "年假", 50),
        ]
        if vector:
            found += await dense_candidates(conn, [mine.id], embed("vacation"), 50, query_weight=1.0, dense_weight=None)
        assert found
        assert not {c.chunk_id for c in found} & theirs_ids
        both = await search(conn, [mine.id, theirs.id], "vacation days", None, query_language="en", top_k=20)
        assert {hit.kb_id for hit in both} == {mine.id, theirs.id}
        assert await search(conn, [], "vacation", None, query_language="en") == []
        assert await search(conn, [theirs.id + 1000], "vacation", None, query_language="en") == []


async def test_a_query_vector_of_another_dimension_or_no_direction_falls_back_to_keywords(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        kb = await handbooks(conn)
        for vector in ([1.0] * 8, [0.0] * DIMS, [math.inf] * DIMS, [1.0] * 3000):
            hits = await search(conn, [kb.id], "vacation", vector, query_language="en")
            assert first(hits) == ("handbook.md", 0)
            assert all(DENSE not in hit.ranks for hit in hits)
        with pytest.raises(ValueError, match="top_k"):
            await search(conn, [kb.id], "vacation", None, query_language="en", top_k=0)


async def test_method_weights_scale_their_contribution(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        kb = await handbooks(conn)
        hits = await search(conn, [kb.id], "password", None, query_language="en", weights={KEYWORD: 0.5})
        assert hits[0].score == pytest.approx(0.5 / 61)


# --- pure parts: fusion, CJK encoding, query building -----------------------------------------------------------


def test_rrf_sums_weighted_reciprocal_ranks() -> None:
    rankings = {
        DENSE: [Candidate(1, 0.9), Candidate(2, 0.8), Candidate(3, 0.1, weight=0.5)],
        KEYWORD: [Candidate(2, 4.0), Candidate(3, 2.0)],
    }
    fused = rrf_fuse(rankings)
    assert [f.chunk_id for f in fused] == [2, 3, 1]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1].score == pytest.approx(0.5 / 63 + 1 / 62)
    assert fused[2].score == pytest.approx(1 / 61)
    assert fused[0].ranks == {DENSE: 2, KEYWORD: 1}
    assert fused[0].scores == {DENSE: 0.8, KEYWORD: 4.0}
    weighted = rrf_fuse(rankings, {KEYWORD: 0.0})
    assert [f.chunk_id for f in weighted] == [1, 2, 3]
    assert weighted[0].score == pytest.approx(1 / 61)
    assert rrf_fuse(rankings, k=0)[0].score == pytest.approx(1 / 2 + 1 / 1)


def test_rrf_breaks_ties_by_best_rank_then_id() -> None:
    fused = rrf_fuse({DENSE: [Candidate(7, 1.0), Candidate(5, 0.5)], KEYWORD: [Candidate(5, 1.0), Candidate(7, 0.5)]})
    assert [f.chunk_id for f in fused] == [5, 7]
    assert rrf_fuse({}) == []


def test_cjk_terms_are_bigrams_of_each_run_after_nfkc() -> None:
    assert cjk_terms("年假政策") == ["年假", "假政", "政策"]
    assert cjk_terms("A猫, 年假 and カタカナ 한국어") == ["猫", "年假", "カタ", "タカ", "カナ", "한국", "국어"]
    assert cjk_terms("ｶﾀｶﾅ") == ["カタ", "タカ", "カナ"]  # half-width kana normalized
    assert cjk_terms("no cjk at all 123") == []


def test_cjk_tsvector_has_positions_and_weights_and_the_tsquery_ors_distinct_bigrams() -> None:
    assert cjk_tsvector("年假年假", ["休假"]) == "'休假':1B '年假':2,4 '假年':3"
    assert cjk_tsvector("") == ""
    assert cjk_tsquery("年假？年假政策") == "'年假' | '假政' | '政策'"
    assert cjk_tsquery("vacation") is None


async def test_the_database_reads_the_cjk_encoding_as_built(engine: AsyncEngine) -> None:
    samples = [
        "年假" * 300,
        "字" * 20000 + "尾巴",
        "引号'与\\反斜杠",
        "한국어와 日本語のテキスト",
        "",
        "𠀀𠀁 compat 﨑",
    ]
    async with engine.connect() as conn:
        for sample in samples:
            lexemes = await scalar(conn, "SELECT tsvector_to_array(CAST(:v AS tsvector))", v=cjk_tsvector(sample))
            assert sorted(lexemes) == sorted(set(cjk_terms(sample)))
            query = cjk_tsquery(sample)
            if query is not None:
                assert await scalar(
                    conn, "SELECT CAST(:v AS tsvector) @@ CAST(:q AS tsquery)", v=cjk_tsvector(sample), q=query
                )
        positions = await scalar(conn, "SELECT length(CAST(:v AS tsvector))", v=cjk_tsvector("字" * 20000 + "尾巴"))
        assert positions == 3  # 字字, 字尾, 尾巴: positions past 16383 are clamped, not an error


def test_english_query_ors_the_words_and_drops_cjk_and_operators() -> None:
    assert english_query("How many vacation days?") == "how or many or vacation or days"
    assert english_query('"quoted" -minus or OR or') == "quoted or minus"
    assert english_query("配置 Kubernetes 的 ingress") == "kubernetes or ingress"
    assert english_query("年假？") is None


def test_language_weight_defaults_to_full_trust() -> None:
    assert language_weight(None, "zh") == 1.0
    assert language_weight(NO_CHINESE, "zh") == 0.0
    assert language_weight(NO_CHINESE, "other") == 1.0
    assert language_weight({"zh": -3.0}, "zh") == 0.0


def test_embedding_tables_are_named_only_from_a_checked_integer() -> None:
    assert embedding_table_name(384) == "kb_embeddings_384"
    for bad in ["384; DROP TABLE kb_chunks", 0, -1, 2001, 384.0, True]:
        with pytest.raises(ValueError, match="dimensions"):
            embedding_table_name(bad)  # type: ignore[arg-type]
    assert is_embedding_table("kb_embeddings_1536")
    assert not is_embedding_table("kb_embeddings_")
    assert not is_embedding_table("kb_embeddings_01")
    assert not is_embedding_table("kb_chunks")
    table = embedding_table(768)
    assert table.name == "kb_embeddings_768"
    assert {i.name for i in table.indexes} == {"ix_kb_embeddings_768_kb_id", "ix_kb_embeddings_768_embedding"}
