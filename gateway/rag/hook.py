"""The data plane's knowledge-base step: which knowledge bases a chat request reads (its alias's, and those it
names in `knowledge_bases`, only where the key's team may read them), the query (the last user message, optionally
rewritten with the conversation and translated), and the passages injected with their citations kept for the
answer. Runs after admission, so rate limits and budgets apply before any database or embedder work."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config.model import RetrievalConfig
from gateway.config.snapshot import Alias, ClientKey
from gateway.errors import GatewayError, InvalidRequest, NotFound, Unavailable
from gateway.rag import inject
from gateway.rag.embed.base import EmbedderError
from gateway.rag.ingest import detect, estimate_tokens
from gateway.rag.internal import InternalCalls
from gateway.rag.retrieve import Retriever, Scoped, named
from gateway.rag.store.search import Hit
from gateway.store.errors import DatabaseError

log = logging.getLogger("switchyard.rag")

FIELD: Final = "knowledge_bases"
MAX_REQUESTED: Final = 10
REWRITE_PROMPT: Final = (
    "Rewrite the user's last message as one standalone search query for a document search, using the "
    "conversation for context. Answer with the query only, in the language of the last message."
)
TRANSLATE_PROMPT: Final = "Translate this search query into {language}. Answer with the translation only."
FAILURES: Final = (EmbedderError, SQLAlchemyError, DatabaseError, OSError, TimeoutError, GatewayError)


class KnowledgeBaseNotFound(NotFound):
    code = "knowledge_base_not_found"


@dataclass(frozen=True, slots=True)
class RagPlan:
    """The knowledge bases a request asks for: its alias's and its own, and how to search them."""

    configured: tuple[str, ...]
    requested: tuple[str, ...]
    retrieval: RetrievalConfig


@dataclass(slots=True)
class RagResult:
    """What retrieval did: the citations for the answer and the usage ledger's `rag` entry."""

    citations: list[dict[str, Any]]
    ledger: dict[str, Any]
    tokens: int = 0
    """Tokens the injected passages add to the prompt (an estimate, for capacity checks)."""


def plan(alias: Alias, body: dict[str, Any], *, chat: bool) -> RagPlan | None:
    """Take `knowledge_bases` out of the body (it never goes upstream) and say what to search, if anything."""
    requested = body.pop(FIELD, None)
    if requested is not None and (
        not isinstance(requested, list)
        or len(requested) > MAX_REQUESTED
        or not all(isinstance(n, str) and 0 < len(n) <= 200 for n in requested)
    ):
        raise InvalidRequest(f"must be a list of at most {MAX_REQUESTED} knowledge base names", param=FIELD)
    if requested and not chat:
        raise InvalidRequest("knowledge bases apply to chat requests only", param=FIELD)
    if not chat or not (requested or alias.knowledge_bases):
        return None
    return RagPlan(alias.knowledge_bases, tuple(dict.fromkeys(requested or ())), alias.retrieval)


class RagHook:
    def __init__(
        self, engine_source: Callable[[], AsyncEngine | None], retriever: Retriever, calls: InternalCalls
    ) -> None:
        self.engine_source = engine_source
        self.retriever = retriever
        self.calls = calls

    async def apply(self, rag: RagPlan, key: ClientKey, body: dict[str, Any]) -> RagResult:
        """Retrieve and inject into `body`; KnowledgeBaseNotFound for a requested one the key may not read."""
        started = time.perf_counter()
        try:
            kbs = await self._readable(rag, key)
            hits, queries = await self._search(rag, kbs, body)
        except KnowledgeBaseNotFound:
            raise
        except FAILURES as exc:
            if rag.retrieval.on_error == "fail":
                log.warning("knowledge bases: retrieval failed (%s)", type(exc).__name__)
                failed = "knowledge base retrieval failed: try again"
                raise Unavailable(failed, code="knowledge_base_unavailable") from None
            return RagResult([], {"knowledge_bases": [*rag.configured, *rag.requested], "error": type(exc).__name__})
        system = inject.render(hits, rag.retrieval.template) if hits else ""
        if hits:
            inject.inject(body, system)
        ledger = {
            "knowledge_bases": [s.kb.name for s in kbs],
            "passages": len(hits),
            "queries": queries,
            "ms": round((time.perf_counter() - started) * 1000, 2),
        }
        return RagResult(inject.citations(hits), ledger, estimate_tokens(system))

    def _engine(self) -> AsyncEngine:
        engine = self.engine_source()
        if engine is None:
            raise DatabaseError("knowledge bases need the database")
        return engine

    async def _readable(self, rag: RagPlan, key: ClientKey) -> list[Scoped]:
        """The requested knowledge bases (each must exist and be readable) and the alias's readable ones."""
        found = await named(self._engine(), {*rag.configured, *rag.requested})
        for name in rag.requested:
            if name not in found or not found[name].readable_by(key.team):
                message = f"no knowledge base named {name[:200]!r} that this key may read"
                raise KnowledgeBaseNotFound(message, param=FIELD)
        missing = [n for n in rag.configured if n not in found]
        if missing:
            log.warning("knowledge bases: the alias names unknown knowledge bases %s", missing)
        names = dict.fromkeys((*rag.configured, *rag.requested))
        return [found[n] for n in names if n in found and found[n].readable_by(key.team)]

    async def _search(self, rag: RagPlan, kbs: Sequence[Scoped], body: dict[str, Any]) -> tuple[list[Hit], int]:
        query = inject.last_user_text(body.get("messages"))
        if not kbs or not query:
            return [], 0
        queries = await self._queries(rag.retrieval, body, query)
        settings = rag.retrieval
        hits = await self.retriever.retrieve(
            self._engine(), [s.kb for s in kbs], queries, top_k=settings.top_k, min_similarity=settings.min_similarity
        )
        return hits, len(queries)

    async def _queries(self, settings: RetrievalConfig, body: dict[str, Any], query: str) -> list[str]:
        """The query, rewritten with the conversation and translated where the alias asks for it."""
        turns = inject.conversation(body.get("messages"))
        if settings.rewrite_with and sum(1 for role, _ in turns if role == "user") > 1:
            transcript = "\n".join(f"{role}: {text[:2000]}" for role, text in turns)
            messages = [{"role": "system", "content": REWRITE_PROMPT}, {"role": "user", "content": transcript}]
            query = await self._ask(settings.rewrite_with, messages) or query
        queries = [query]
        if settings.translate_with:
            language = "English" if detect(query) in ("zh", "mixed") else "Simplified Chinese"
            prompt = TRANSLATE_PROMPT.format(language=language)
            messages = [{"role": "system", "content": prompt}, {"role": "user", "content": query}]
            translated = await self._ask(settings.translate_with, messages)
            if translated and translated != query:
                queries.append(translated)
        return queries

    async def _ask(self, alias: str, messages: list[dict[str, str]]) -> str:
        """A helper alias's short answer; '' when it fails (retrieval goes on with the original query)."""
        try:
            return (await self.calls.complete(alias, messages))[:1000]
        except (GatewayError, LookupError) as exc:
            log.warning("knowledge bases: the query helper %s failed (%s)", alias, type(exc).__name__)
            return ""
