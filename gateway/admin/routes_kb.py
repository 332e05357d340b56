"""Knowledge bases (RAG) under `/admin/api/knowledge-bases`: list with document counts, create, describe, delete;
documents uploaded as multipart `file` parts or as a raw body with `?name=`, listed, reindexed, deleted; a test
search. Everyone reads their team's knowledge bases and the global ones (owners all); admins change their team's,
owners any. Another team's knowledge base is a 404, as if it did not exist.

An upload's file name is only a display name: the parser keeps its sanitized last component, and nothing is
written under it (Litestar spools multipart parts to anonymous temporary files)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from litestar import Request, Response, delete, get, patch, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromQuery, JSONBody
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.admin.context import AdminContext, Ctx, Name, Principal, as_id, caller, client_ip
from gateway.admin.respond import Conflict, json_response, listing, read_bounded
from gateway.admin.store import repo as admin_repo
from gateway.errors import InvalidRequest, NotFound, PayloadTooLarge, PermissionDenied
from gateway.rag.indexer import chunking_of
from gateway.rag.ingest import DocumentError, kind_of, safe_filename
from gateway.rag.inject import citations
from gateway.rag.store import repo
from gateway.rag.store.repo import Document, KnowledgeBase, Upserted
from gateway.rag.store.tables import LOCAL_EMBEDDER, STATUSES, knowledge_bases

BASE: Final = "/admin/api/knowledge-bases"
MAX_FILES: Final = 20
MULTIPART_SLACK: Final = 64 * 1024
"""Room for the multipart framing (boundaries, part headers) over MAX_FILES files at the upload limit."""
Status = Literal["pending", "indexed", "failed"]


class KbBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=2000)
    embedding: str = Field(default=LOCAL_EMBEDDER, min_length=1, max_length=200)
    team_id: int | None = None
    chunk_tokens: int | None = Field(default=None, ge=32, le=4000)
    chunk_overlap: int | None = Field(default=None, ge=0, le=1000)
    dense_weight: dict[str, float] | None = None


class KbPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = Field(max_length=2000)


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=8000)
    top_k: int = Field(default=5, ge=1, le=50)
    min_similarity: float = Field(default=0.25, ge=-1, le=1)


@dataclass(frozen=True, slots=True)
class Upload:
    """One uploaded file: the name the client gave (sanitized by the parser) and its bytes."""

    filename: str
    data: bytes


# --- who sees and changes what --------------------------------------------------------------------------------


def sees_kb(who: Principal, kb: KnowledgeBase) -> bool:
    """Owners see every knowledge base; everyone else their team's and the global ones."""
    return who.role == "owner" or kb.team_id is None or kb.team_id == who.team_id


def manages_kb(who: Principal, kb: KnowledgeBase) -> bool:
    """Owners change any knowledge base; admins their own team's (a global one is the owners')."""
    return who.role == "owner" or (who.role == "admin" and who.team_id is not None and kb.team_id == who.team_id)


async def _visible_kb(ctx: AdminContext, who: Principal, ref: str, *, manage: bool = False) -> KnowledgeBase:
    """The knowledge base by id or name; 404 unless the caller sees it, 403 if they may not change it."""
    number = as_id(ref)
    async with ctx.engine.connect() as conn:
        kb = await repo.get_knowledge_base(conn, number if number is not None else ref)
    if kb is None or not sees_kb(who, kb):
        raise NotFound("no such knowledge base")
    if manage and not manages_kb(who, kb):
        raise PermissionDenied("you may not change this knowledge base")
    return kb


async def _document(ctx: AdminContext, kb: KnowledgeBase, ref: str) -> Document:
    number = as_id(ref)
    async with ctx.engine.connect() as conn:
        document = await repo.get_document(conn, kb.id, number if number is not None else ref)
    if document is None:
        raise NotFound("no such document in this knowledge base")
    return document


def _team_for(who: Principal, body: KbBody) -> int | None:
    """The new knowledge base's team: owners choose (none: global); admins create in their own team only."""
    if who.role == "owner":
        return body.team_id
    if who.team_id is None:
        raise PermissionDenied("an admin without a team cannot create knowledge bases")
    if "team_id" in body.model_fields_set and body.team_id != who.team_id:
        raise PermissionDenied("you may create knowledge bases only in your own team")
    return who.team_id


async def _check_team(ctx: AdminContext, team_id: int | None) -> None:
    if team_id is None:
        return
    try:
        await admin_repo.get_team(ctx.engine, team_id)
    except admin_repo.NotFoundError:
        raise InvalidRequest("no such team", param="team_id") from None


# --- shapes and plumbing --------------------------------------------------------------------------------------


def kb_out(ctx: AdminContext, kb: KnowledgeBase, counts: Mapping[str, int] | None = None) -> dict[str, Any]:
    counted = counts or {}
    return {
        "id": kb.id,
        "name": kb.name,
        "description": kb.description,
        "team_id": kb.team_id,
        "embedding": kb.embedding_alias,
        "dimensions": kb.dimensions,
        "chunking": chunking_of(kb, ctx.knowledge.config),
        "dense_weight": kb.settings.get("dense_weight") or {},
        "documents": {status: counted.get(status, 0) for status in STATUSES},
        "chunks": counted.get("chunks", 0),
        "created_at": kb.created_at,
        "updated_at": kb.updated_at,
    }


def document_out(document: Document) -> dict[str, Any]:
    fields = ("id", "name", "status", "error", "chunk_count", "bytes", "language", "created_at", "updated_at")
    return {name: getattr(document, name) for name in fields}


async def _kb_out(ctx: AdminContext, kb: KnowledgeBase) -> dict[str, Any]:
    async with ctx.engine.connect() as conn:
        counts = await repo.document_counts(conn, [kb.id])
    return kb_out(ctx, kb, counts.get(kb.id))


@asynccontextmanager
async def kb_errors() -> AsyncIterator[None]:
    """The knowledge-base store's refusals as API errors (409, 404, 400)."""
    try:
        yield
    except repo.NameTaken as exc:
        raise Conflict(str(exc), param="name") from None
    except repo.NotFound as exc:
        raise NotFound(str(exc)) from None
    except repo.InvalidValue as exc:
        raise InvalidRequest(str(exc)) from None


async def _audit(  # noqa: PLR0917 - an audit entry's fields, in order
    conn: AsyncConnection,
    request: Request[Any, Any, Any],
    action: str,
    what: tuple[str, int],
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> None:
    """Record a change; knowledge bases are not config, so no new config version is announced."""
    who = caller(request).username
    await admin_repo.append_audit(conn, who, action, what[0], what[1], before, after, client_ip(request))


# --- knowledge bases ------------------------------------------------------------------------------------------


@get(BASE, opt={"role": "viewer"})
async def list_kbs(ctx: Ctx, request: Request[Any, Any, Any]) -> Response[bytes]:
    who = caller(request)
    async with ctx.engine.connect() as conn:
        kbs = [kb for kb in await repo.list_knowledge_bases(conn) if sees_kb(who, kb)]
        counts = await repo.document_counts(conn, [kb.id for kb in kbs])
    return listing([kb_out(ctx, kb, counts.get(kb.id)) for kb in kbs])


@post(BASE, opt={"role": "admin"})
async def create_kb(ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[KbBody]) -> Response[bytes]:
    body = data
    team_id = _team_for(caller(request), body)
    await _check_team(ctx, team_id)
    chunking = _chunking(ctx, body)
    async with kb_errors():
        kb = await ctx.knowledge.create(
            body.name,
            embedding=body.embedding,
            team_id=team_id,
            description=body.description,
            chunking=chunking,
            dense_weight=body.dense_weight,
        )
    async with ctx.engine.begin() as conn:
        await _audit(conn, request, "create", ("knowledge_base", kb.id), None, asdict(kb))
    return json_response(kb_out(ctx, kb), 201)


def _chunking(ctx: AdminContext, body: KbBody) -> dict[str, int]:
    """The knowledge base's own chunk settings (only those given); the overlap must stay below the size."""
    config = ctx.knowledge.config
    tokens = body.chunk_tokens or config.chunk_tokens
    overlap = config.chunk_overlap if body.chunk_overlap is None else body.chunk_overlap
    if overlap >= tokens:
        raise InvalidRequest(f"chunk_overlap ({overlap}) must be below chunk_tokens ({tokens})", param="chunk_overlap")
    given = {"max_tokens": body.chunk_tokens, "overlap": body.chunk_overlap}
    return {key: value for key, value in given.items() if value is not None}


@get(BASE + "/{kb_ref:str}", opt={"role": "viewer"})
async def get_kb(ctx: Ctx, request: Request[Any, Any, Any], kb_ref: Name) -> Response[bytes]:
    kb = await _visible_kb(ctx, caller(request), kb_ref)
    return json_response(await _kb_out(ctx, kb))


@patch(BASE + "/{kb_ref:str}", opt={"role": "admin"})
async def update_kb(
    ctx: Ctx, request: Request[Any, Any, Any], kb_ref: Name, data: JSONBody[KbPatch]
) -> Response[bytes]:
    """Only the description changes: the embedder and chunking are fixed once documents are indexed with them."""
    kb = await _visible_kb(ctx, caller(request), kb_ref, manage=True)
    statement = update(knowledge_bases).where(knowledge_bases.c.id == kb.id)
    async with ctx.engine.begin() as conn:
        await conn.execute(statement.values(description=data.description, updated_at=func.now()))
        after = await repo.get_knowledge_base(conn, kb.id)
        if after is None:
            raise NotFound("no such knowledge base")
        await _audit(conn, request, "update", ("knowledge_base", kb.id), asdict(kb), asdict(after))
    return json_response(await _kb_out(ctx, after))


@delete(BASE + "/{kb_ref:str}", opt={"role": "admin"}, status_code=200)
async def delete_kb(ctx: Ctx, request: Request[Any, Any, Any], kb_ref: Name) -> Response[bytes]:
    kb = await _visible_kb(ctx, caller(request), kb_ref, manage=True)
    async with kb_errors(), ctx.engine.begin() as conn:
        if not await repo.delete_knowledge_base(conn, kb.id):
            raise NotFound("no such knowledge base")
        await _audit(conn, request, "delete", ("knowledge_base", kb.id), asdict(kb), None)
    return json_response({"id": kb.id, "name": kb.name, "deleted": True})


@post(BASE + "/{kb_ref:str}/search", opt={"role": "viewer"}, status_code=200)
async def search_kb(
    ctx: Ctx, request: Request[Any, Any, Any], kb_ref: Name, data: JSONBody[SearchBody]
) -> Response[bytes]:
    """The passages a chat request would be given for this query ("test a query" in the UI)."""
    kb = await _visible_kb(ctx, caller(request), kb_ref)
    body = data
    hits = await ctx.knowledge.search([kb], body.query, top_k=body.top_k, min_similarity=body.min_similarity)
    passages = [
        {**cited, "text": hit.text, "language": hit.language, "ranks": hit.ranks}
        for cited, hit in zip(citations(hits), hits, strict=True)
    ]
    return json_response({"object": "list", "knowledge_base": kb.name, "query": body.query, "data": passages})


# --- documents ------------------------------------------------------------------------------------------------


@get(BASE + "/{kb_ref:str}/documents", opt={"role": "viewer"})
async def list_documents(
    ctx: Ctx, request: Request[Any, Any, Any], kb_ref: Name, status: FromQuery[Status | None] = None
) -> Response[bytes]:
    kb = await _visible_kb(ctx, caller(request), kb_ref)
    async with ctx.engine.connect() as conn:
        documents = await repo.list_documents(conn, kb.id, status=status)
    return listing([document_out(d) for d in documents])


@post(BASE + "/{kb_ref:str}/documents", opt={"role": "admin"}, status_code=202)
async def upload_documents(
    ctx: Ctx, request: Request[Any, Any, Any], kb_ref: Name, name: FromQuery[str | None] = None
) -> Response[bytes]:
    """Multipart `file` parts, or the raw file with `?name=`; each is parsed now and indexed in the background.

    Answers 202 with each document's status: "pending" when queued, its old status when the content is unchanged.
    """
    kb = await _visible_kb(ctx, caller(request), kb_ref, manage=True)
    uploads = await read_uploads(request, ctx.knowledge.config.max_upload_bytes, name)
    added = await _add_all(ctx, kb, uploads)
    changed = [entry.document for entry in added if entry.changed]
    if changed:
        async with ctx.engine.begin() as conn:
            for document in changed:
                after = {**document_out(document), "knowledge_base": kb.name}
                await _audit(conn, request, "upload", ("kb_document", document.id), None, after)
    data = [{**document_out(entry.document), "changed": entry.changed} for entry in added]
    return json_response({"object": "list", "knowledge_base": kb.name, "data": data}, 202)


@get(BASE + "/{kb_ref:str}/documents/{doc_ref:str}", opt={"role": "viewer"})
async def get_document(ctx: Ctx, request: Request[Any, Any, Any], kb_ref: Name, doc_ref: Name) -> Response[bytes]:
    kb = await _visible_kb(ctx, caller(request), kb_ref)
    return json_response(document_out(await _document(ctx, kb, doc_ref)))


@delete(BASE + "/{kb_ref:str}/documents/{doc_ref:str}", opt={"role": "admin"}, status_code=200)
async def delete_document(ctx: Ctx, request: Request[Any, Any, Any], kb_ref: Name, doc_ref: Name) -> Response[bytes]:
    kb = await _visible_kb(ctx, caller(request), kb_ref, manage=True)
    document = await _document(ctx, kb, doc_ref)
    async with ctx.engine.begin() as conn:
        if not await repo.delete_document(conn, kb.id, document.id):
            raise NotFound("no such document in this knowledge base")
        before = {**document_out(document), "knowledge_base": kb.name}
        await _audit(conn, request, "delete", ("kb_document", document.id), before, None)
    return json_response({"id": document.id, "name": document.name, "deleted": True})


@post(BASE + "/{kb_ref:str}/documents/{doc_ref:str}/reindex", opt={"role": "admin"}, status_code=202)
async def reindex_document(ctx: Ctx, request: Request[Any, Any, Any], kb_ref: Name, doc_ref: Name) -> Response[bytes]:
    """Queue the document to be chunked and embedded again (after a change of embedder, say)."""
    kb = await _visible_kb(ctx, caller(request), kb_ref, manage=True)
    document = await _document(ctx, kb, doc_ref)
    async with kb_errors(), ctx.engine.begin() as conn:
        if not await repo.set_document_status(conn, document.id, "pending"):
            raise NotFound("no such document in this knowledge base")
        after = document_out(await repo.get_document(conn, kb.id, document.id) or document)
        await _audit(conn, request, "reindex", ("kb_document", document.id), document_out(document), after)
    ctx.knowledge.indexer.kick()
    return json_response(after, 202)


KB_ROUTES: list[HTTPRouteHandler] = [
    list_kbs,
    create_kb,
    get_kb,
    update_kb,
    delete_kb,
    search_kb,
    list_documents,
    upload_documents,
    get_document,
    delete_document,
    reindex_document,
]


# --- uploads --------------------------------------------------------------------------------------------------


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the document is over the upload limit of {limit} bytes")


async def read_uploads(request: Request[Any, Any, Any], limit: int, name: str | None) -> list[Upload]:
    """The uploaded files, each at most `limit` bytes, refused as soon as the size is known to be over."""
    content_type, _ = request.content_type
    if content_type == RequestEncodingType.MULTI_PART:
        uploads = await _multipart(request, limit)
    elif name:
        uploads = [Upload(name, await read_bounded(request, limit, _too_large(limit)))]
    else:
        message = "send multipart/form-data with one or more 'file' parts, or the raw file with ?name=<filename>"
        raise InvalidRequest(message, param="name")
    for upload in uploads:
        _check_type(upload.filename)
    return uploads


def _check_type(filename: str) -> None:
    """Refuse an unsupported file type before anything of the request is stored."""
    try:
        kind_of(safe_filename(filename))
    except DocumentError as exc:
        raise InvalidRequest(f"{safe_filename(filename)}: {exc}", param="file", code="invalid_document") from None


async def _multipart(request: Request[Any, Any, Any], limit: int) -> list[Upload]:
    """The `file` parts of a multipart body (spooled by Litestar within the app's body limit)."""
    if (request.content_length or 0) > limit * MAX_FILES + MULTIPART_SLACK:
        raise _too_large(limit)
    form = await request.form()
    try:
        parts = form.getall("file", [])
        if not parts or len(parts) > MAX_FILES:
            raise InvalidRequest(f"send 1 to {MAX_FILES} 'file' parts", param="file")
        return [await _read_part(part, limit) for part in parts]
    finally:
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                await value.close()


async def _read_part(part: object, limit: int) -> Upload:
    """One part's bytes, its size checked first (seek to the end of the spooled file, no read)."""
    if not isinstance(part, UploadFile):
        raise InvalidRequest("each 'file' part must be a file, with a filename", param="file")
    size = part.file.seek(0, os.SEEK_END)
    part.file.seek(0)
    if size > limit:
        raise _too_large(limit)
    return Upload(part.filename, await part.read())


async def _add_all(ctx: AdminContext, kb: KnowledgeBase, uploads: Sequence[Upload]) -> list[Upserted]:
    """Store each upload in turn; an error names the file it is about (the files before it stay stored)."""
    added: list[Upserted] = []
    for upload in uploads:
        try:
            added.append(await ctx.knowledge.add(kb, upload.filename, upload.data))
        except (InvalidRequest, PayloadTooLarge) as exc:
            named = type(exc)(f"{safe_filename(upload.filename)}: {exc.message}", param=exc.param, code=exc.code)
            raise named from None
    return added
