"""Knowledge bases for client keys: `GET /v1/knowledge-bases` (those the key's team may read) and
`POST /v1/knowledge-bases/{name}/search` (the passages a request would be given, with their scores)."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

import orjson
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import PathParameter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.api.access import RECORD, AccessRecord
from gateway.auth.keys import authenticate
from gateway.config.snapshot import ClientKey, Snapshot
from gateway.errors import InvalidRequest
from gateway.protocol.headers import read_headers
from gateway.rag.hook import KnowledgeBaseNotFound
from gateway.rag.inject import citations
from gateway.rag.retrieve import Scoped, named
from gateway.rag.service import KnowledgeService
from gateway.rag.store import repo

JSON = "application/json"
KbName = Annotated[str, PathParameter(min_length=1, max_length=200)]


class Source(Protocol):
    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def knowledge(self) -> KnowledgeService: ...


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=8000)
    top_k: int = Field(default=5, ge=1, le=50)
    min_similarity: float = Field(default=0.25, ge=-1, le=1)


def _key(source: Source, request: Request[Any, Any, Any]) -> ClientKey:
    key = authenticate(source.snapshot.keys, read_headers(request.scope["headers"]))
    record: AccessRecord = request.scope[RECORD]  # type: ignore[literal-required]
    record.key = key.name
    return key


def _body(raw: bytes) -> SearchBody:
    try:
        return SearchBody.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body must be JSON") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"{where}: {first['msg']}", param=where) from None


def _json(data: Any) -> Response[bytes]:
    return Response(orjson.dumps(data), media_type=JSON)


def knowledge_routes(source: Source) -> list[HTTPRouteHandler]:
    @get("/v1/knowledge-bases", include_in_schema=False)
    async def list_readable(request: Request[Any, Any, Any]) -> Response[bytes]:
        key = _key(source, request)
        service = source.knowledge
        async with service.engine.connect() as conn:
            kbs = await repo.list_knowledge_bases(conn)
        found = await named(service.engine, [kb.name for kb in kbs])
        data = [
            {"object": "knowledge_base", "name": s.kb.name, "description": s.kb.description, "team": s.team}
            for s in found.values()
            if s.readable_by(key.team)
        ]
        return _json({"object": "list", "data": sorted(data, key=lambda d: str(d["name"]))})

    @post("/v1/knowledge-bases/{name:str}/search", include_in_schema=False, status_code=200)
    async def search(request: Request[Any, Any, Any], name: KbName) -> Response[bytes]:
        key = _key(source, request)
        body = _body(await request.body())
        service = source.knowledge
        scoped: Scoped | None = (await named(service.engine, [name])).get(name)
        if scoped is None or not scoped.readable_by(key.team):
            raise KnowledgeBaseNotFound(f"no knowledge base named {name[:200]!r} that this key may read")
        hits = await service.search([scoped.kb], body.query, top_k=body.top_k, min_similarity=body.min_similarity)
        data = [
            {**cited, "object": "knowledge_base.passage", "text": hit.text, "ranks": hit.ranks}
            for cited, hit in zip(citations(hits), hits, strict=True)
        ]
        return _json({"object": "list", "knowledge_base": name, "query": body.query, "data": data})

    return [list_readable, search]
