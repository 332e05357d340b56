"""Document ingestion for knowledge bases: parse uploads into sectioned text, detect language, chunk by tokens.

Pure and synchronous (run it in a worker thread): bytes in, `ParsedDocument` and `Chunk`s out, no I/O.
"""

from gateway.rag.ingest.chunk import Chunk, Count, chunk, estimate_tokens, split
from gateway.rag.ingest.lang import Language, detect
from gateway.rag.ingest.parse import (
    DEFAULT_LIMITS,
    KINDS,
    DocumentError,
    Limits,
    ParsedDocument,
    Section,
    content_hash,
    kind_of,
    normalize,
    parse,
    safe_filename,
)

__all__ = [
    "DEFAULT_LIMITS",
    "KINDS",
    "Chunk",
    "Count",
    "DocumentError",
    "Language",
    "Limits",
    "ParsedDocument",
    "Section",
    "chunk",
    "content_hash",
    "detect",
    "estimate_tokens",
    "kind_of",
    "normalize",
    "parse",
    "safe_filename",
    "split",
]
