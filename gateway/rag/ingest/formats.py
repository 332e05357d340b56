"""The readers behind `parse`: Markdown, HTML, PDF, DOCX and CSV to heading-path sections (`Part`s)."""

from __future__ import annotations

import csv
import io
import re
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

from gateway.rag.ingest.document import (
    LINE_BREAKS,
    SECTION_SEPARATOR,
    DocumentError,
    Extracted,
    Limits,
    Part,
    one_line,
)

# Structure: headings -> sections.


@dataclass(slots=True)
class _Outline:
    """Collects text blocks under a stack of headings; each heading closes the section before it."""

    parts: list[Part] = field(default_factory=list)
    first_heading: str | None = None
    _stack: list[tuple[int, str]] = field(default_factory=list)
    _blocks: list[str] = field(default_factory=list)

    def heading(self, level: int, title: str) -> None:
        title = one_line(title)
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


def _markdown(text: str) -> Extracted:
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
    return Extracted(outline.parts, title or outline.first_heading)


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


def _html(text: str) -> Extracted:
    reader = _HtmlReader()
    reader.feed(text)
    reader.close()
    return Extracted(reader.outline.parts, reader.title or reader.outline.first_heading)


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
            self.title = self.title or one_line(text)
        else:
            self.outline.heading(HEADINGS[tag], text)

    def _end_paragraph(self) -> None:
        text = "".join(self._paragraph)
        self._paragraph = []
        text = text if self._pre else AROUND_BREAKS.sub("\n", text).strip()
        if text.strip():
            self.outline.text(text + "\n")


# PDF.


def _pdf(data: bytes, limits: Limits) -> Extracted:
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
    return Extracted(parts, _pdf_title(reader))


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


def _docx(data: bytes, limits: Limits) -> Extracted:
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
    return Extracted(outline.parts, title or outline.first_heading)


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


def _csv(text: str, rows_per_section: int) -> Extracted:
    """Rows as "column: value; ..." paragraphs (the header repeated on every row), grouped into sections."""
    rows = _csv_rows(text)
    if not rows:
        return Extracted([])
    header = [one_line(cell) or f"column {i}" for i, cell in enumerate(rows[0], 1)]
    lines = [(number, _csv_line(header, row)) for number, row in enumerate(rows[1:], 1)]
    lines = [(number, line) for number, line in lines if line]
    size = max(1, rows_per_section)
    return Extracted([_csv_section(lines[first : first + size]) for first in range(0, len(lines), size)])


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
    return "; ".join(f"{name}: {one_line(value)}" for name, value in zip(named, row, strict=True) if value.strip())
