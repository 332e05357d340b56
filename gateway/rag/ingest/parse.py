"""Uploaded documents to text with structure: sections under heading paths, a title and a language.

Pure and synchronous: bytes in, a `ParsedDocument` out, never the filesystem. The file name only gives the type
(its extension) and a display title. Anything that cannot be ingested raises `DocumentError`, whose message is
safe to show to the uploader. The document's text is its sections' normalized texts joined by a blank line,
and each section knows where its text starts in it, so a chunk's position maps back exactly.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from types import MappingProxyType
from typing import Final

import docx
import pypdf
from docx.table import Table
from docx.text.paragraph import Paragraph

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
class _Extracted:
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


def _extract(kind: str, data: bytes, limits: Limits) -> _Extracted:
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
            return _Extracted([((), decode_text(data))])


def _build(name: str, kind: str, extracted: _Extracted, data: bytes, limits: Limits) -> ParsedDocument:
    sections: list[Section] = []
    start = 0
    for path, raw in extracted.parts:
        text = normalize(raw)
        if text:
            sections.append(Section(tuple(_one_line(h) for h in path), text, start))
            start += len(text) + len(SECTION_SEPARATOR)
    if not sections:
        hint = " (a scanned PDF needs OCR first)" if kind == "pdf" else ""
        raise DocumentError(f"the document has no text{hint}")
    text = SECTION_SEPARATOR.join(section.text for section in sections)
    if len(text) > limits.max_chars:
        raise DocumentError(f"the document has {len(text)} characters of text, over the limit of {limits.max_chars}")
    title = _one_line(extracted.title or "")[:MAX_TITLE_CHARS] or name.rpartition(".")[0] or name
    return ParsedDocument(name, kind, title, detect(text), text, tuple(sections), content_hash(data))


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


def _one_line(text: str) -> str:
    return " ".join(CONTROL.sub("", text).split())


# Structure: headings -> sections.


@dataclass(slots=True)
class _Outline:
    """Collects text blocks under a stack of headings; each heading closes the section before it."""

    parts: list[Part] = field(default_factory=list)
    first_heading: str | None = None
    _stack: list[tuple[int, str]] = field(default_factory=list)
    _blocks: list[str] = field(default_factory=list)

    def heading(self, level: int, title: str) -> None:
        title = _one_line(title)
        if not title:
            return
        self.flush()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self.first_heading = self.first_heading or title

    def text(self, block: str) -> None:
        self._blocks.append(block)

    def pop_text(self) -> str:
        return self._blocks.pop()

    def last_text(self, back: int = 1) -> str | None:
        return self._blocks[-back] if len(self._blocks) >= back else None

    def flush(self) -> None:
        if self._blocks:
            self.parts.append((tuple(title for _, title in self._stack), "\n".join(self._blocks)))
            self._blocks = []


# Markdown.

ATX: Final = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))??(?:[ \t]+#+)?[ \t]*")
SETEXT: Final = re.compile(r" {0,3}(=+|-+)[ \t]*")
FENCE: Final = re.compile(r" {0,3}(`{3,}|~{3,})")
FRONT_MATTER: Final = re.compile(r"---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
FRONT_TITLE: Final = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.MULTILINE)


def _markdown(text: str) -> _Extracted:
    text = LINE_BREAKS.sub("\n", text)
    title = None
    front = FRONT_MATTER.match(text)
    if front:
        found = FRONT_TITLE.search(front.group(1))
        title = found.group(1).strip("'\"") if found else None
        text = text[front.end() :]
    outline = _Outline()
    fence: str | None = None
    for line in text.split("\n"):
        fence = _markdown_line(outline, line, fence)
    outline.flush()
    return _Extracted(outline.parts, title or outline.first_heading)


def _markdown_line(outline: _Outline, line: str, fence: str | None) -> str | None:
    """Feed one line; returns the open code fence, if any (headings inside code are text)."""
    opening = FENCE.match(line)
    if fence is not None:
        outline.text(line)
        closes = opening is not None and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence)
        return None if closes else fence
    if opening:
        outline.text(line)
        return opening.group(1)
    atx = ATX.fullmatch(line)
    if atx:
        outline.heading(len(atx.group(1)), atx.group(2) or "")
    elif SETEXT.fullmatch(line) and _setext_title(outline):
        outline.heading(1 if line.strip()[0] == "=" else 2, outline.pop_text())
    else:
        outline.text(line)
    return None


def _setext_title(outline: _Outline) -> bool:
    """Whether the line before an `===`/`---` underline is a one-line paragraph, so the underline makes it a heading."""
    before, earlier = outline.last_text(), outline.last_text(2)
    return bool(before and before.strip()) and (earlier is None or not earlier.strip())


# HTML.

SKIPPED: Final = frozenset({"script", "style", "nav", "noscript", "template", "svg", "iframe", "object", "select"})
HEADINGS: Final = MappingProxyType({f"h{level}": level for level in range(1, 7)})
# fmt: off
BLOCKS: Final = frozenset({
    "address", "article", "aside", "blockquote", "body", "dd", "details", "div", "dl", "dt", "fieldset", "figcaption",
    "figure", "footer", "form", "header", "hr", "li", "main", "ol", "p", "section", "summary", "table", "tbody",
    "thead", "tfoot", "ul",
})
# fmt: on
CELLS: Final = frozenset({"td", "th"})
WHITESPACE: Final = re.compile(r"\s+")
AROUND_BREAKS: Final = re.compile(r" *\n *")


def _html(text: str) -> _Extracted:
    reader = _HtmlReader()
    reader.feed(text)
    reader.close()
    return _Extracted(reader.outline.parts, reader.title or reader.outline.first_heading)


class _HtmlReader(HTMLParser):
    """Visible text in paragraphs under h1-h6; script, style, nav and the like are dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.outline = _Outline()
        self.title = ""
        self._skipping = 0
        self._pre = 0
        self._paragraph: list[str] = []
        self._capture: list[str] | None = None
        self._capturing = ""
        self._cells = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIPPED:
            self._skipping += 1
        elif not self._skipping:
            self._open(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif self._skipping:
            return
        elif tag == self._capturing:
            self._end_capture()
        elif tag == "pre":
            self._end_paragraph()
            self._pre = max(0, self._pre - 1)
        elif tag in BLOCKS:
            self._end_paragraph()

    def _open(self, tag: str) -> None:
        if tag in HEADINGS or tag == "title":
            self._end_block()
            self._capture, self._capturing = [], tag
        elif tag in BLOCKS:
            self._end_block()
        elif tag == "pre":
            self._end_block()
            self._pre += 1
        elif tag == "tr":
            self._add("\n")
            self._cells = 0
        elif tag == "br":
            self._add("\n")
        elif tag in CELLS:
            self._add(" | " if self._cells else "")
            self._cells += 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self._add(data if self._pre else WHITESPACE.sub(" ", data))

    def close(self) -> None:
        super().close()
        self._end_block()
        self.outline.flush()

    def _end_block(self) -> None:
        self._end_capture()
        self._end_paragraph()

    def _add(self, text: str) -> None:
        (self._capture if self._capture is not None else self._paragraph).append(text)

    def _end_capture(self) -> None:
        if self._capture is None:
            return
        text, tag = "".join(self._capture), self._capturing
        self._capture, self._capturing = None, ""
        if tag == "title":
            self.title = self.title or _one_line(text)
        else:
            self.outline.heading(HEADINGS[tag], text)

    def _end_paragraph(self) -> None:
        text = "".join(self._paragraph)
        self._paragraph = []
        text = text if self._pre else AROUND_BREAKS.sub("\n", text).strip()
        if text.strip():
            self.outline.text(text + "\n")


# PDF.


def _pdf(data: bytes, limits: Limits) -> _Extracted:
    reader = _pdf_reader(data)
    try:
        count = len(reader.pages)
    except Exception as exc:
        raise DocumentError("the PDF is malformed: its page tree could not be read") from exc
    if count > limits.max_pages:
        raise DocumentError(f"the PDF has {count} pages, over the limit of {limits.max_pages}")
    parts: list[Part] = []
    total = 0
    for number in range(1, count + 1):
        text = _pdf_page_text(reader, number)
        total += len(text)
        if total > limits.max_chars:
            raise DocumentError(f"the PDF has more than {limits.max_chars} characters of text, over the limit")
        parts.append(((f"page {number}",), text))
    return _Extracted(parts, _pdf_title(reader))


def _pdf_reader(data: bytes) -> pypdf.PdfReader:
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
    except Exception as exc:
        raise DocumentError("the PDF is malformed and could not be read") from exc
    if reader.is_encrypted and not _pdf_decrypted(reader):
        raise DocumentError("the PDF is encrypted with a password; upload an unprotected copy")
    return reader


def _pdf_decrypted(reader: pypdf.PdfReader) -> bool:
    """Whether an encrypted PDF opens with the empty user password (only an owner password set)."""
    try:
        return reader.decrypt("") != pypdf.PasswordType.NOT_DECRYPTED
    except Exception:
        return False


def _pdf_page_text(reader: pypdf.PdfReader, number: int) -> str:
    try:
        return reader.pages[number - 1].extract_text()
    except Exception as exc:
        raise DocumentError(f"the PDF is malformed: the text of page {number} could not be read") from exc


def _pdf_title(reader: pypdf.PdfReader) -> str | None:
    try:
        metadata = reader.metadata
        return str(metadata.title) if metadata is not None and metadata.title else None
    except Exception:
        return None


# DOCX.

DOCX_HEADING: Final = re.compile(r"(?:heading|\u6807\u9898) ?(\d)", re.IGNORECASE)
"""Word's "Heading N" styles, and "标题 N" as Chinese editions and WPS name them."""
DOCX_TITLES: Final = frozenset({"title", "\u6807\u9898"})


def _docx(data: bytes, limits: Limits) -> _Extracted:
    _check_zip(data, limits.max_unpacked_bytes)
    try:
        document = docx.Document(io.BytesIO(data))
        outline = _Outline()
        for block in document.iter_inner_content():
            _docx_block(outline, block)
        outline.flush()
        title = document.core_properties.title
    except Exception as exc:
        raise DocumentError("the .docx file is malformed and could not be read") from exc
    return _Extracted(outline.parts, title or outline.first_heading)


def _check_zip(data: bytes, limit: int) -> None:
    """A .docx is a ZIP archive: refuse one that is not, or that would unpack to more than `limit` bytes."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DocumentError(
            "the file is not a valid .docx (a password-protected or old .doc file cannot be read; save it as .docx)"
        ) from exc
    if unpacked > limit:
        raise DocumentError(f"the .docx would unpack to {unpacked} bytes, over the limit of {limit}")


def _docx_block(outline: _Outline, block: Paragraph | Table) -> None:
    if isinstance(block, Table):
        outline.text(_docx_table(block) + "\n")
        return
    style = block.style.name if block.style is not None else None
    level = _docx_heading_level(style or "")
    if level is None:
        outline.text(block.text + "\n")
    else:
        outline.heading(level, block.text)


def _docx_heading_level(style: str) -> int | None:
    """0 for the Title style, N for "Heading N", None for body text."""
    if style.strip().lower() in DOCX_TITLES:
        return 0
    found = DOCX_HEADING.fullmatch(style.strip())
    return int(found.group(1)) if found else None


def _docx_table(table: Table) -> str:
    return "\n".join(" | ".join(_distinct(cell.text.strip() for cell in row.cells)) for row in table.rows)


def _distinct(cells: Iterable[str]) -> list[str]:
    """Cells of a row with a merged cell's repeats (the same text side by side) dropped."""
    kept: list[str] = []
    for cell in cells:
        if not kept or cell != kept[-1]:
            kept.append(cell)
    return kept


# CSV.

DELIMITERS: Final = ",;\t|"


def _csv(text: str, rows_per_section: int) -> _Extracted:
    """Rows as "column: value; ..." paragraphs (the header repeated on every row), grouped into sections."""
    rows = _csv_rows(text)
    if not rows:
        return _Extracted([])
    header = [_one_line(cell) or f"column {i}" for i, cell in enumerate(rows[0], 1)]
    lines = [(number, _csv_line(header, row)) for number, row in enumerate(rows[1:], 1)]
    lines = [(number, line) for number, line in lines if line]
    size = max(1, rows_per_section)
    return _Extracted([_csv_section(lines[first : first + size]) for first in range(0, len(lines), size)])


def _csv_section(group: list[tuple[int, str]]) -> Part:
    """Rows under the heading "rows a-b" (or "row a"), one paragraph each."""
    first, last = group[0][0], group[-1][0]
    return (f"rows {first}-{last}" if last > first else f"row {first}",), SECTION_SEPARATOR.join(t for _, t in group)


def _csv_rows(text: str) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_csv_delimiter(text))
    try:
        return [row for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise DocumentError(f"the CSV is malformed near line {reader.line_num}") from exc


def _csv_delimiter(text: str) -> str:
    """The delimiter the sniffer finds, else the one most frequent in the header line, else a comma."""
    try:
        return csv.Sniffer().sniff(text[:8192], delimiters=DELIMITERS).delimiter
    except csv.Error:
        header = text.split("\n", 1)[0]
        return max(DELIMITERS, key=header.count) if any(d in header for d in DELIMITERS) else ","


def _csv_line(header: list[str], row: list[str]) -> str:
    named = (header[i] if i < len(header) else f"column {i + 1}" for i in range(len(row)))
    return "; ".join(f"{name}: {_one_line(value)}" for name, value in zip(named, row, strict=True) if value.strip())
