"""Which embedder a knowledge base uses: the bundled local model (`local`) or one of the gateway's embedding
aliases; and how far its vectors are trusted per language (the knowledge base's `settings.dense_weight` wins).

The local model runs in worker processes started on first use: one for queries and one for ingestion, so a large
upload never makes a chat request wait behind its batches.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from gateway.config.model import RagConfig
from gateway.rag.embed.base import Embedder, EmbedderError
from gateway.rag.embed.local import LocalEmbedder, default_python
from gateway.rag.internal import AliasEmbedder, InternalCalls
from gateway.rag.store.repo import KnowledgeBase
from gateway.rag.store.tables import LOCAL_EMBEDDER

Purpose = Literal["query", "ingest"]
PROBE_TEXT = "dimension probe"


def install_root() -> Path:
    """The checkout the gateway runs from: the folder holding its virtual environment (`.venv-embed` sits beside)."""
    return Path(sys.prefix).parent


class Embedders:
    def __init__(self, calls: InternalCalls, config: RagConfig, root: Path | None = None) -> None:
        self.calls = calls
        self.config = config
        self.python = config.local_embedder_python or default_python(root or install_root())
        self._local: dict[str, LocalEmbedder] = {}

    def local(self, purpose: Purpose) -> LocalEmbedder:
        """The local model's worker for this purpose (created on first use)."""
        if purpose not in self._local:
            self._local[purpose] = LocalEmbedder(self.python, batch_size=self.config.embed_batch)
        return self._local[purpose]

    def of(self, embedding: str, purpose: Purpose, weights: Mapping[str, float] | None = None) -> Embedder:
        """The embedder named `local` or by an embedding alias."""
        if embedding == LOCAL_EMBEDDER:
            return self.local(purpose)
        return AliasEmbedder(self.calls, embedding, batch_size=self.config.embed_batch, dense_weight=weights)

    def for_kb(self, kb: KnowledgeBase, purpose: Purpose) -> Embedder:
        return self.of(kb.embedding_alias, purpose, kb.settings.get("dense_weight"))

    def dense_weight(self, kb: KnowledgeBase) -> dict[str, float]:
        """Per language, how far the knowledge base's vectors can be trusted (0: not used at all)."""
        weights = dict(self.for_kb(kb, "query").dense_weight)
        return weights | dict(kb.settings.get("dense_weight") or {})

    async def dimensions(self, embedding: str) -> int:
        """The dimension count of an embedder's vectors (an alias is asked once)."""
        if embedding == LOCAL_EMBEDDER:
            return LocalEmbedder.dimensions
        if self.calls.mode(embedding) != "embedding":
            raise EmbedderError(f"no embedding alias named {embedding!r} (or 'local' for the bundled model)")
        (vector,) = await self.of(embedding, "query").embed([PROBE_TEXT])
        return len(vector)

    async def aclose(self) -> None:
        for embedder in self._local.values():
            await embedder.aclose()
