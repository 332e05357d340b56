"""`switchyard kb create|add|list|docs|search|rm`: knowledge bases from the terminal.

The commands open the database as the other commands do. Embedding through an alias (creating, indexing, searching
a knowledge base that does not use the bundled `local` model) builds only what that needs: provider adapters over one
upstream client and a router, for the config file's aliases merged with those stored in the database, as the gateway
serves them. No metering, limits or background tasks run. `kb add` indexes the documents in this process unless
`--no-wait` leaves them to a running gateway. Errors are one line on stderr: exit status 2 for bad usage or an
unknown name, 1 for a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.admin.store import repo as admin_repo
from gateway.config.model import GatewayConfig
from gateway.errors import ClientError, GatewayError, InvalidRequest, redact
from gateway.rag.ingest import KINDS
from gateway.rag.inject import citations, snippet
from gateway.rag.service import KnowledgeService, check_name
from gateway.rag.store import repo
from gateway.rag.store.repo import Document, KnowledgeBase, NameTaken
from gateway.rag.store.search import Hit
from gateway.rag.store.tables import LOCAL_EMBEDDER, STATUSES
from gateway.rag.workspace import FAILED, USAGE, CliError, Workspace, usage_error
from gateway.store.errors import DatabaseError

INTERRUPTED: Final = 130
WAIT_SECONDS: Final = 300.0
"""How long `kb add` waits for documents a running gateway is indexing (its lease runs out after 120 s)."""
SEARCH_SNIPPET: Final = 200
FORMATS: Final = ("table", "json")


# --- output -------------------------------------------------------------------------------------------------------


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], empty: str) -> str:
    """Rows as aligned columns under a header; `empty` when there are none."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    if not cells:
        return empty + "\n"
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in lines) + "\n"


def as_json(data: Any) -> str:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"


# --- kb create ----------------------------------------------------------------------------------------------------


def chunking(args: argparse.Namespace) -> dict[str, int]:
    """The knowledge base's own chunk size and overlap, checked as the config's `rag` section checks them."""
    out: dict[str, int] = {}
    if args.chunk_tokens is not None:
        if not 32 <= args.chunk_tokens <= 4000:
            raise usage_error("--chunk-tokens must be from 32 to 4000")
        out["max_tokens"] = args.chunk_tokens
    if args.chunk_overlap is not None:
        if not 0 <= args.chunk_overlap <= 1000:
            raise usage_error("--chunk-overlap must be from 0 to 1000")
        out["overlap"] = args.chunk_overlap
    return out


async def create(ws: Workspace, args: argparse.Namespace) -> int:
    try:
        name = check_name(args.name)
    except InvalidRequest as exc:
        raise usage_error(exc.message) from None
    sizes = chunking(args)
    tokens, overlap = sizes.get("max_tokens", ws.cfg.rag.chunk_tokens), sizes.get("overlap", ws.cfg.rag.chunk_overlap)
    if overlap >= tokens:
        raise usage_error(f"the chunk overlap ({overlap}) must be smaller than the chunk size ({tokens})")
    await ws.route(args.embedding)
    if args.embedding != LOCAL_EMBEDDER and ws.calls.mode(args.embedding) != "embedding":
        raise usage_error(f"no embedding alias named {args.embedding!r} (or 'local' for the bundled model)")
    team_id = await team_id_of(ws, args.team)
    try:
        kb = await ws.service.create(
            name, embedding=args.embedding, team_id=team_id, description=args.description, chunking=sizes
        )
    except NameTaken:
        raise CliError(f"a knowledge base named {name!r} already exists") from None
    except InvalidRequest as exc:  # the embedder did not answer the dimension probe
        raise CliError(exc.message) from None
    print(f"created knowledge base {kb.name} (embedding {kb.embedding_alias}, {kb.dimensions} dimensions)")
    return 0


async def team_id_of(ws: Workspace, team: str | None) -> int | None:
    if team is None:
        return None
    try:
        row = await admin_repo.get_team(await ws.engine(), team)
    except admin_repo.NotFoundError:
        raise usage_error(f"no team named {team!r}") from None
    return int(row["id"])


# --- kb add -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Collected:
    """The files `kb add` uploads, and a note for each one it skips."""

    files: list[Path]
    skipped: list[str]


def supported(path: Path) -> bool:
    return path.suffix[1:].lower() in KINDS


def collect(paths: Sequence[str]) -> Collected:
    """The supported files among these paths (directories recursively, hidden entries left out), in order;
    a later file with the name of an earlier one is skipped (a document is known by its file name)."""
    files: list[Path] = []
    skipped: list[str] = []
    names: set[str] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise usage_error(f"{path}: no such file or directory")
        for file in walk(path) if path.is_dir() else [path]:
            if not supported(file):
                skipped.append(f"{file}: skipped (not a supported type: {', '.join(sorted(KINDS))})")
            elif file.name in names:
                skipped.append(f"{file}: skipped (another file in this upload is named {file.name})")
            else:
                names.add(file.name)
                files.append(file)
    return Collected(files, skipped)


def walk(root: Path) -> list[Path]:
    """The files under a directory, sorted, without hidden files or directories (symlinked directories not followed)."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder, f) for f in sorted(files) if not f.startswith(".")]
    return found


async def upload(service: KnowledgeService, kb: KnowledgeBase, file: Path) -> Document | str:
    """Queue one file: its document, or why it could not be (unreadable, not parseable, too large)."""
    limit = service.config.max_upload_bytes
    try:
        if (await asyncio.to_thread(file.stat)).st_size > limit:
            return f"the file is over the upload limit of {limit} bytes (rag.max_upload_bytes)"
        data = await asyncio.to_thread(file.read_bytes)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or type(exc).__name__})"
    try:
        upserted = await service.add(kb, file.name, data)
    except ClientError as exc:
        return exc.message
    return upserted.document


async def add(ws: Workspace, args: argparse.Namespace) -> int:
    collected = collect(args.paths)
    kb = await ws.kb(args.name)
    for note in collected.skipped:
        print(note)
    failed = False
    waiting: dict[int, str] = {}
    for file in collected.files:
        outcome = await upload(ws.service, kb, file)
        if isinstance(outcome, str):
            print(f"{file.name}: failed: {outcome}")
            failed = True
        elif outcome.status == "indexed":  # already indexed with this content
            print(f"{outcome.name}: unchanged")
        else:
            waiting[outcome.id] = outcome.name
    if args.no_wait:
        for name in waiting.values():
            print(f"{name}: queued (a running gateway indexes it)")
        return FAILED if failed else 0
    return FAILED if await index(ws, kb, waiting) or failed else 0


async def index(ws: Workspace, kb: KnowledgeBase, waiting: Mapping[int, str]) -> bool:
    """Index the queued documents here and print how each went; True when any failed."""
    if not waiting:
        return False
    await ws.route(kb.embedding_alias)
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        await ws.service.indexer.drain([kb.id])
        docs = await documents_by_id(await ws.engine(), kb.id, waiting)
        if not any(d.status == "pending" for d in docs.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)  # another process holds a claim on one of them
    return report(waiting, docs)


async def documents_by_id(engine: AsyncEngine, kb_id: int, ids: Iterable[int]) -> dict[int, Document]:
    async with engine.connect() as conn:
        docs = await repo.list_documents(conn, kb_id)
    wanted = set(ids)
    return {d.id: d for d in docs if d.id in wanted}


def report(waiting: Mapping[int, str], docs: Mapping[int, Document]) -> bool:
    """Print each queued document's outcome; True when any failed."""
    failed = False
    for doc_id, name in waiting.items():
        doc = docs.get(doc_id)
        if doc is None:
            line = "failed: it was removed while it was being indexed"
        elif doc.status == "indexed":
            line = f"indexed ({doc.chunk_count} chunk{'' if doc.chunk_count == 1 else 's'})"
        elif doc.status == "failed":
            line = f"failed: {doc.error or 'unknown reason'}"
        else:
            line = "still pending (another process is indexing it)"
        failed |= line.startswith("failed")
        print(f"{name}: {line}")
    return failed


# --- kb list, kb docs, kb search ----------------------------------------------------------------------------------


async def list_kbs(ws: Workspace, args: argparse.Namespace) -> int:
    async with (await ws.engine()).connect() as conn:
        kbs = await repo.list_knowledge_bases(conn)
        counts = await repo.document_counts(conn, [kb.id for kb in kbs])
        teams = {row["id"]: row["name"] for row in await admin_repo.list_teams(conn)}
    rows = [kb_row(kb, teams.get(kb.team_id), counts[kb.id]) for kb in kbs]
    if args.format == "json":
        print(as_json(rows), end="")
        return 0
    columns = ("name", "team", "embedding", "dimensions", *STATUSES, "chunks", "description")
    print(table(columns, ([r[c] for c in columns] for r in rows), "(no knowledge bases)"), end="")
    return 0


def kb_row(kb: KnowledgeBase, team: str | None, counts: Mapping[str, int]) -> dict[str, Any]:
    return {
        "name": kb.name,
        "team": team,
        "embedding": kb.embedding_alias,
        "dimensions": kb.dimensions,
        **{status: counts.get(status, 0) for status in STATUSES},
        "chunks": counts.get("chunks", 0),
        "description": kb.description,
        "chunking": kb.chunking,
        "created_at": kb.created_at.isoformat(),
    }


async def list_docs(ws: Workspace, args: argparse.Namespace) -> int:
    kb = await ws.kb(args.name)
    async with (await ws.engine()).connect() as conn:
        docs = await repo.list_documents(conn, kb.id)
    rows = [doc_row(d) for d in docs]
    if args.format == "json":
        print(as_json(rows), end="")
        return 0
    columns = ("id", "name", "status", "chunks", "bytes", "language", "updated_at", "error")
    shown = ([*(r[c] for c in columns[:-2]), r["updated_at"][:19], r["error"]] for r in rows)
    print(table(columns, shown, f"(no documents in {kb.name})"), end="")
    return 0


def doc_row(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id,
        "name": doc.name,
        "status": doc.status,
        "chunks": doc.chunk_count,
        "bytes": doc.bytes,
        "language": doc.language,
        "updated_at": doc.updated_at.isoformat(),
        "error": doc.error,
    }


async def search(ws: Workspace, args: argparse.Namespace) -> int:
    if not 1 <= args.top_k <= 50:
        raise usage_error("--top-k must be from 1 to 50")
    kb = await ws.kb(args.name)
    await ws.route(kb.embedding_alias)
    hits = await ws.service.search([kb], args.query, top_k=args.top_k)
    if args.format == "json":
        data = [
            {**cited, "text": hit.text, "ranks": hit.ranks} for cited, hit in zip(citations(hits), hits, strict=True)
        ]
        print(as_json({"knowledge_base": kb.name, "query": args.query, "data": data}), end="")
        return 0
    print(passages(hits) if hits else f"(nothing in {kb.name} matches)")
    return 0


def passages(hits: Sequence[Hit]) -> str:
    """Each hit as `[n] score  document > heading`, with the start of its text indented below."""
    blocks = [
        f"[{n}] {hit.score:.4f}  {' > '.join((hit.document_name, *hit.heading_path))}\n"
        f"    {snippet(hit.text, SEARCH_SNIPPET)}"
        for n, hit in enumerate(hits, 1)
    ]
    return "\n".join(blocks)


# --- kb rm --------------------------------------------------------------------------------------------------------


async def remove(ws: Workspace, args: argparse.Namespace) -> int:
    kb = await ws.kb(args.name)
    async with (await ws.engine()).begin() as conn:
        if args.document is not None:
            doc = await find_document(conn, kb, args.document)
            await repo.delete_document(conn, kb.id, doc.id)
            print(f"removed {doc.name} from {kb.name}")
            return 0
        if not args.yes:
            counts = (await repo.document_counts(conn, [kb.id]))[kb.id]
            count = sum(counts[status] for status in STATUSES)
            raise usage_error(f"this deletes {kb.name} with its {count} documents: add --yes to confirm")
        await repo.delete_knowledge_base(conn, kb.id)
    print(f"removed knowledge base {kb.name}")
    return 0


async def find_document(conn: AsyncConnection, kb: KnowledgeBase, document: str) -> Document:
    """The document by name, else by id; a usage error when there is none."""
    found = await repo.get_document(conn, kb.id, document)
    if found is None and document.isdigit():
        found = await repo.get_document(conn, kb.id, int(document))
    if found is None:
        raise usage_error(f"no document named {document!r} in {kb.name} (see `switchyard kb docs {kb.name}`)")
    return found


# --- running a command --------------------------------------------------------------------------------------------

Run = Callable[[Workspace, argparse.Namespace], Awaitable[int]]


async def _in_workspace(cfg: GatewayConfig, run: Run, args: argparse.Namespace) -> int:
    async with Workspace(cfg) as ws:
        return await run(ws, args)


def execute(cfg: GatewayConfig, run: Run, args: argparse.Namespace) -> int:
    """Run a command; every error becomes one line on stderr (never a traceback) and an exit status."""
    logging.disable(logging.WARNING)  # the outcome is printed; the gateway's log lines would repeat it
    where = f"kb {args.kb_command}"
    try:
        return asyncio.run(_in_workspace(cfg, run, args))
    except CliError as exc:
        return fail(f"{where}: {exc}", exc.status)
    except DatabaseError as exc:
        return fail(f"{where}: database: {exc}", FAILED)
    except GatewayError as exc:
        return fail(f"{where}: {exc.message}", USAGE if isinstance(exc, ClientError) else FAILED)
    except KeyboardInterrupt:
        return fail(f"{where}: interrupted", INTERRUPTED)
    except Exception as exc:
        return fail(f"{where}: unexpected {type(exc).__name__}: {safe_message(exc, cfg)}", FAILED)


def fail(line: str, status: int) -> int:
    print(line, file=sys.stderr)
    return status


def safe_message(exc: BaseException, cfg: GatewayConfig) -> str:
    """The first line of an exception's message, without the config's secrets or anything shaped like a key."""
    secrets = tuple(p.api_key for p in cfg.providers.values()) + tuple(k.key for k in cfg.keys)
    first = (str(exc).strip().splitlines() or [""])[0]
    return redact(first, secrets)[:300]


def add_commands(commands: Any, load: Callable[[str], GatewayConfig | None]) -> None:
    """Register `kb ...` on the CLI's subparsers; `load(path)` reads a config (None if invalid)."""

    def command(run: Run) -> Callable[[argparse.Namespace], int]:
        def go(args: argparse.Namespace) -> int:
            cfg = load(args.config)
            return FAILED if cfg is None else execute(cfg, run, args)

        return go

    kb = commands.add_parser("kb", help="knowledge bases: create, add documents, list, search, remove")
    sub = kb.add_subparsers(dest="kb_command", required=True)
    for name, (run, helptext, arguments) in SUBCOMMANDS.items():
        parser = sub.add_parser(name, help=helptext, description=helptext)
        parser.add_argument("--config", required=True, help="path to gateway.yaml")
        arguments(parser)
        parser.set_defaults(func=command(run))


def _create_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="1-100 letters, digits, '_', '.' or '-'")
    parser.add_argument(
        "--embedding", default=LOCAL_EMBEDDER, help="'local' (the bundled model, default) or an embedding alias"
    )
    parser.add_argument("--team", help="the team that owns it (default: every team may read it)")
    parser.add_argument("--description", default="", help="what it holds")
    parser.add_argument("--chunk-tokens", type=int, help="chunk size in tokens (default: rag.chunk_tokens)")
    parser.add_argument("--chunk-overlap", type=int, help="overlap of chunks in tokens (default: rag.chunk_overlap)")


def _add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the knowledge base")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files, or directories to read recursively")
    parser.add_argument("--no-wait", action="store_true", help="only queue the documents (a running gateway indexes)")


def _format_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table")


def _docs_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the knowledge base")
    _format_arg(parser)


def _search_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the knowledge base")
    parser.add_argument("query", help="what to look for")
    parser.add_argument("--top-k", type=int, default=5, help="how many passages (1-50, default 5)")
    _format_arg(parser)


def _rm_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the knowledge base")
    parser.add_argument("--document", help="remove only this document (its name or id)")
    parser.add_argument("--yes", action="store_true", help="confirm deleting the whole knowledge base")


SUBCOMMANDS: Final[Mapping[str, tuple[Run, str, Callable[[argparse.ArgumentParser], None]]]] = MappingProxyType(
    {
        "create": (create, "create a knowledge base", _create_args),
        "add": (add, "upload files (.txt .md .html .pdf .docx .csv) and index them", _add_args),
        "list": (list_kbs, "knowledge bases with their document counts", _format_arg),
        "docs": (list_docs, "a knowledge base's documents and their status", _docs_args),
        "search": (search, "the passages a query retrieves", _search_args),
        "rm": (remove, "delete a knowledge base (with --yes) or one document", _rm_args),
    }
)
