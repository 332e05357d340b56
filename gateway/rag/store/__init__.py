"""Knowledge-base storage: tables (migration 0003), data access (`repo`) and hybrid retrieval (`search`).

Embeddings live in per-dimension pgvector tables with an HNSW cosine index; keywords in English and CJK-bigram
tsvectors. Without pgvector the tables still exist and retrieval is keyword-only.
"""

from gateway.rag.store import repo, search, tables
from gateway.rag.store.repo import (
    ChunkInput,
    Document,
    InvalidValue,
    KnowledgeBase,
    KnowledgeBaseError,
    NameTaken,
    NotFound,
    Upserted,
    vector_available,
)
from gateway.rag.store.search import Hit, rrf_fuse

__all__ = [
    "ChunkInput",
    "Document",
    "Hit",
    "InvalidValue",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "NameTaken",
    "NotFound",
    "Upserted",
    "repo",
    "rrf_fuse",
    "search",
    "tables",
    "vector_available",
]
