"""A parsed document and the text rules every reader shares: types, limits, errors, decoding, normalization."""

from __future__ import annotations

import codecs
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from gateway.rag.ingest.lang import Language, detect

KINDS: Final = MappingProxyType(
    {"txt": "txt", "text": "txt", "md": "md", "markdown": "md", "html": "html", "htm": "html"}
    | {"pdf": "pdf", "docx": "docx", "csv": "csv"}
)
"""File extension (lower case) -> the kind of parser that reads it."""
SECTION_SEPARATOR: Final = "\n\n"
MAX_NAME_CHARS: Final = 160
MAX_TITLE_CHARS: Final = 200
FALLBACK_NAME: Final = "document"

Part = tuple[tuple[str, ...], str]
"""A heading path and the raw text under it, before normalization."""


class DocumentError(ValueError):
    """A document that cannot be ingested; the message says why and is safe to show to the uploader."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one document may cost: upload size, PDF pages, extracted text, unpacked .docx size, CSV grouping."""

    max_bytes: int = 32 * 1024 * 1024
    max_pages: int = 2_000
    max_chars: int = 10_000_000
    max_unpacked_bytes: int = 256 * 1024 * 1024
    csv_rows_per_section: int = 50


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True, slots=True)
class Section:
    """Text under one heading path (Markdown/HTML/docx headings, "page N" of a PDF, "rows a-b" of a CSV)."""

    heading_path: tuple[str, ...]
    text: str
    start: int = 0
    """Where `text` starts in the document's text."""


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A parsed document: `text` is the sections' texts joined by a blank line; `name` is the safe file name."""

    name: str
    kind: str
    title: str
    language: Language
    text: str
    sections: tuple[Section, ...]
    content_hash: str = ""

    def __post_init__(self) -> None:
        for section in self.sections:
            if self.text[section.start : section.start + len(section.text)] != section.text:
                raise ValueError(f"section {section.heading_path!r} is not at {section.start} in the text")


@dataclass(slots=True)
class Extracted:
    parts: list[Part]
    title: str | None = None


def content_hash(data: bytes) -> str:
    """The SHA-256 of a document's bytes, hex: an unchanged upload has the same hash and need not be re-indexed."""
    return hashlib.sha256(data).hexdigest()


def safe_filename(filename: str) -> str:
    """The last path component, without control or format characters, at most MAX_NAME_CHARS long."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = " ".join("".join(ch for ch in name if unicodedata.category(ch)[0] != "C").split())
    if not name.strip("."):
        return FALLBACK_NAME
    if len(name) <= MAX_NAME_CHARS:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > 10:
        return name[:MAX_NAME_CHARS]
    return f"{stem[: MAX_NAME_CHARS - len(extension) - 1]}.{extension}"


# Text: decoding and normalization.

BOMS: Final = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
CONTROL: Final = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\u200b\u00ad\ufeff]")
LINE_BREAKS: Final = re.compile("\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028]")
TRAILING_SPACE: Final = re.compile(r"[ \t]+$", re.MULTILINE)
BLANK_LINES: Final = re.compile(r"\n{3,}")


def decode_text(data: bytes) -> str:
    """Text from bytes: a UTF-8 or UTF-16 byte-order mark, else UTF-8, else GB18030 when it reads as Chinese."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return _checked(_decode(data, encoding))
    try:
        return _checked(data.decode("utf-8"))
    except UnicodeDecodeError:
        return _checked(_decode(data, "gb18030"))


def _decode(data: bytes, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        text = None
    if text is None or (encoding == "gb18030" and detect(text) not in ("zh", "mixed")):
        raise DocumentError("the file is not valid text: it is not UTF-8, UTF-16 (with a byte-order mark) or GB18030")
    return text


def _checked(text: str) -> str:
    if "\x00" in text:
        raise DocumentError("the file looks binary (it contains NUL characters), not text")
    return text


def normalize(text: str) -> str:
    """NFC; line breaks as \\n; no control, zero-width or trailing spaces; at most one blank line in a row; stripped."""
    text = LINE_BREAKS.sub("\n", unicodedata.normalize("NFC", text)).replace("\u2029", "\n\n")
    text = TRAILING_SPACE.sub("", CONTROL.sub("", text))
    return BLANK_LINES.sub("\n\n", text).strip()


def one_line(text: str) -> str:
    return " ".join(CONTROL.sub("", text).split())
