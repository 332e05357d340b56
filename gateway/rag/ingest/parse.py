"""Uploaded documents to text with structure: sections under heading paths, a title and a language.

Pure and synchronous: bytes in, a `ParsedDocument` out, never the filesystem. The file name only gives the type
(its extension) and a display title. Anything that cannot be ingested raises `DocumentError`, whose message is
safe to show to the uploader. The document's text is its sections' normalized texts joined by a blank line,
and each section knows where its text starts in it, so a chunk's position maps back exactly.
"""

from __future__ import annotations

from gateway.rag.ingest.document import (
    DEFAULT_LIMITS,
    KINDS,
    MAX_TITLE_CHARS,
    SECTION_SEPARATOR,
    DocumentError,
    Extracted,
    Limits,
    ParsedDocument,
    Section,
    content_hash,
    decode_text,
    normalize,
    one_line,
    safe_filename,
)
from gateway.rag.ingest.formats import _csv, _docx, _html, _markdown, _pdf
from gateway.rag.ingest.lang import detect

__all__ = [
    "DEFAULT_LIMITS",
    "KINDS",
    "DocumentError",
    "Limits",
    "ParsedDocument",
    "Section",
    "content_hash",
    "decode_text",
    "kind_of",
    "normalize",
    "parse",
    "safe_filename",
]


def parse(filename: str, data: bytes, limits: Limits = DEFAULT_LIMITS) -> ParsedDocument:
    """Parse an uploaded .txt, .md, .html/.htm, .pdf, .docx or .csv; DocumentError says why one cannot be."""
    name = safe_filename(filename)
    kind = kind_of(name)
    if not data:
        raise DocumentError("the file is empty")
    if len(data) > limits.max_bytes:
        raise DocumentError(f"the file is {len(data)} bytes, over the limit of {limits.max_bytes}")
    extracted = _extract(kind, data, limits)
    return _build(name, kind, extracted, data, limits)


def kind_of(name: str) -> str:
    """The parser kind for a file name's extension; DocumentError for a type that is not supported."""
    _, dot, extension = name.rpartition(".")
    kind = KINDS.get(extension.lower()) if dot else None
    if kind is None:
        supported = ", ".join(f".{ext}" for ext in sorted(KINDS))
        shown = f"'.{extension[:16]}'" if dot else "(no extension)"
        raise DocumentError(f"unsupported file type {shown}; supported: {supported}")
    return kind


def _extract(kind: str, data: bytes, limits: Limits) -> Extracted:
    match kind:
        case "pdf":
            return _pdf(data, limits)
        case "docx":
            return _docx(data, limits)
        case "md":
            return _markdown(decode_text(data))
        case "html":
            return _html(decode_text(data))
        case "csv":
            return _csv(decode_text(data), limits.csv_rows_per_section)
        case _:
            return Extracted([((), decode_text(data))])


def _build(name: str, kind: str, extracted: Extracted, data: bytes, limits: Limits) -> ParsedDocument:
    sections: list[Section] = []
    start = 0
    for path, raw in extracted.parts:
        text = normalize(raw)
        if text:
            sections.append(Section(tuple(one_line(h) for h in path), text, start))
            start += len(text) + len(SECTION_SEPARATOR)
    if not sections:
        hint = " (a scanned PDF needs OCR first)" if kind == "pdf" else ""
        raise DocumentError(f"the document has no text{hint}")
    text = SECTION_SEPARATOR.join(section.text for section in sections)
    if len(text) > limits.max_chars:
        raise DocumentError(f"the document has {len(text)} characters of text, over the limit of {limits.max_chars}")
    title = one_line(extracted.title or "")[:MAX_TITLE_CHARS] or name.rpartition(".")[0] or name
    return ParsedDocument(name, kind, title, detect(text), text, tuple(sections), content_hash(data))
