"""Document parsing for knowledge bases: each file type to sectioned text, and clear errors for bad uploads."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.rag.ingest.parse import (
    DocumentError,
    Limits,
    ParsedDocument,
    Section,
    content_hash,
    normalize,
    parse,
    safe_filename,
)
from tests.fixtures.rag.documents import docx_bytes, pdf_bytes

FIXTURES = Path(__file__).parent.parent / "fixtures" / "rag"
COMMA = "\uff0c"  # full-width comma, as Chinese text writes it


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def headings(doc: ParsedDocument) -> list[tuple[str, ...]]:
    return [section.heading_path for section in doc.sections]


def section(doc: ParsedDocument, *path: str) -> str:
    return next(s.text for s in doc.sections if s.heading_path == path)


def assert_consistent(doc: ParsedDocument) -> None:
    assert doc.text == "\n\n".join(s.text for s in doc.sections)
    for s in doc.sections:
        assert doc.text[s.start : s.start + len(s.text)] == s.text
        assert s.text == s.text.strip() and s.text


# Plain text and encodings.


def test_chinese_text_in_utf8() -> None:
    doc = parse("handbook_zh.txt", fixture("handbook_zh.txt"))
    assert doc.kind == "txt" and doc.language == "zh" and doc.title == "handbook_zh"
    assert headings(doc) == [()]
    assert doc.text.startswith("员工手册\n\n第一章 总则\n\n本手册适用于公司全体正式员工")
    assert_consistent(doc)


def test_chinese_text_in_gb18030_reads_the_same_as_utf8() -> None:
    data = fixture("handbook_zh.gb18030.txt")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert parse("handbook_zh.txt", data).text == parse("handbook_zh.txt", fixture("handbook_zh.txt")).text


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_byte_order_marks(encoding: str) -> None:
    text = "差旅报销 travel policy"
    data = text.encode(encoding)
    if encoding in ("utf-16-le", "utf-16-be"):  # these codecs write no BOM: add the one a Windows editor would
        data = ("\ufeff" + text).encode(encoding)
    doc = parse("note.txt", data)
    assert doc.text == text


def test_latin1_is_not_mistaken_for_chinese() -> None:
    with pytest.raises(DocumentError, match=r"not valid text: it is not UTF-8, UTF-16 .* or GB18030"):
        parse("menu.txt", "Crème brûlée, café au lait, déjà vu".encode("latin-1"))


def test_binary_content_under_a_text_name_is_refused() -> None:
    with pytest.raises(DocumentError, match="looks binary"):
        parse("photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")


def test_text_is_normalized() -> None:
    raw = "Caf\u0065\u0301 menu  \r\nline two\t \r\n\r\n\r\n\r\nzero\u200bwidth\x07 end\u00ad\n\n"
    doc = parse("menu.txt", raw.encode())
    assert doc.text == "Caf\u00e9 menu\nline two\n\nzerowidth end"
    assert normalize(raw) == doc.text


# Markdown.


def test_markdown_heading_paths() -> None:
    doc = parse("guide.md", fixture("guide.md"))
    top = "Switchyard Operations Guide"
    assert doc.kind == "md" and doc.title == top
    assert headings(doc) == [
        (top,),
        (top, "Deployment"),
        (top, "Deployment", "Docker"),
        (top, "Deployment", "Bare metal"),
        (top, "故障排查"),
        ("Appendix",),
    ]
    assert "# this is a comment in code, not a heading" in section(doc, top, "Deployment", "Docker")
    assert section(doc, top, "故障排查") == f"网关启动失败时{COMMA}请先检查配置文件。"
    assert doc.language == "en"
    assert_consistent(doc)


def test_markdown_front_matter_setext_and_closing_hashes() -> None:
    text = (
        "---\ntitle: 'Runbook'\nowner: ops\n---\nBefore.\n\n"
        "First\n=====\n\nOne.\n\nSecond\n---\n\nTwo.\n\n### Third ###\nThree.\n"
    )
    doc = parse("runbook.markdown", text.encode())
    assert doc.title == "Runbook"
    assert headings(doc) == [(), ("First",), ("First", "Second"), ("First", "Second", "Third")]
    assert [s.text for s in doc.sections] == ["Before.", "One.", "Two.", "Three."]
    assert "owner: ops" not in doc.text


def test_markdown_without_headings_is_one_section_titled_by_its_name() -> None:
    doc = parse("notes.md", b"Just a line.\n#hashtag is not a heading\n")
    assert headings(doc) == [()]
    assert doc.title == "notes"


# HTML.


def test_html_nested_headings_without_script_style_or_nav() -> None:
    doc = parse("policy.html", fixture("page.html"))
    assert doc.kind == "html" and doc.title == "Expense Policy"
    assert headings(doc) == [
        ("Expense Policy",),
        ("Expense Policy", "Travel"),
        ("Expense Policy", "Travel", "Hotels"),
        ("Expense Policy", "Meals"),
    ]
    for dropped in ("script-body-text", "tracking-pixel-secret", "Injected heading", "nav-link-text", "color: red"):
        assert dropped not in doc.text
    assert section(doc, "Expense Policy") == "Employees are reimbursed for reasonable business expenses."
    assert section(doc, "Expense Policy", "Travel") == "Book flights at least 14 days ahead."
    hotels = section(doc, "Expense Policy", "Travel", "Hotels")
    assert hotels == "Up to 150 EUR per night.\nBreakfast included where possible.\n\nCity | Limit\nParis | 180"
    assert section(doc, "Expense Policy", "Meals") == "Lunch: 25 EUR\n\nDinner: 40 EUR"
    assert_consistent(doc)


def test_html_keeps_preformatted_text_and_survives_broken_markup() -> None:
    html = "<h2>Code<p>unclosed heading ends at a block</p><pre>a  =  1\n    b</pre><div>tail &amp; more<h1></h1>"
    doc = parse("x.htm", html.encode())
    assert headings(doc) == [("Code",)]
    assert doc.text == "unclosed heading ends at a block\n\na  =  1\n    b\n\ntail & more"


def test_html_that_is_all_script_has_no_text() -> None:
    with pytest.raises(DocumentError, match="no text"):
        parse("app.html", b"<html><script>render()</script><style>p{}</style><nav>Menu</nav></html>")


# PDF.


def test_pdf_pages_are_sections() -> None:
    data = pdf_bytes([["Travel policy.", "Book early (14 days)."], ["Hotels up to 150 EUR."]], title="Handbook")
    doc = parse("handbook.pdf", data)
    assert doc.kind == "pdf" and doc.title == "Handbook" and doc.language == "en"
    assert headings(doc) == [("page 1",), ("page 2",)]
    assert doc.sections[0].text == "Travel policy.\nBook early (14 days)."
    assert doc.sections[1].text == "Hotels up to 150 EUR."
    assert_consistent(doc)


def test_pdf_without_a_title_is_titled_by_its_name_and_blank_pages_are_skipped() -> None:
    doc = parse("scan-2024.pdf", pdf_bytes([["Only page with text."], []]))
    assert doc.title == "scan-2024"
    assert headings(doc) == [("page 1",)]


def test_pdf_without_text_needs_ocr() -> None:
    with pytest.raises(DocumentError, match=r"no text \(a scanned PDF needs OCR first\)"):
        parse("scan.pdf", pdf_bytes([[], []]))


def test_malformed_pdf() -> None:
    with pytest.raises(DocumentError, match=r"^the PDF is malformed and could not be read$"):
        parse("broken.pdf", fixture("malformed.pdf"))


def test_truncated_pdf() -> None:
    data = pdf_bytes([["Some text."]])
    with pytest.raises(DocumentError, match="PDF is malformed"):
        parse("cut.pdf", data[: len(data) // 2])


def test_encrypted_pdf_is_refused_but_an_owner_password_alone_is_not_a_lock() -> None:
    with pytest.raises(DocumentError, match="encrypted with a password"):
        parse("secret.pdf", pdf_bytes([["Salaries."]], user_password="hunter2"))
    doc = parse("locked-for-editing.pdf", pdf_bytes([["Readable."]], user_password="", owner_password="owner"))
    assert doc.text == "Readable."


def test_pdf_page_limit() -> None:
    data = pdf_bytes([["one"], ["two"], ["three"]])
    with pytest.raises(DocumentError, match="the PDF has 3 pages, over the limit of 2"):
        parse("long.pdf", data, Limits(max_pages=2))
    assert len(parse("long.pdf", data, Limits(max_pages=3)).sections) == 3


# DOCX.


def test_docx_heading_styles_tables_and_title() -> None:
    data = docx_bytes(
        [
            ("Title", "Staff Handbook"),
            ("", "Preface."),
            ("Heading 1", "Leave"),
            ("", "Annual leave is 25 days."),
            ("Heading 2", "Sick leave"),
            ("", "Tell your manager."),
            ("Heading 1", "差旅"),
            ("", "出差前提交申请。"),
        ],
        title="Handbook 2024",
        table=[["City", "Limit"], ["Paris", "180"]],
    )
    doc = parse("handbook.docx", data)
    assert doc.kind == "docx" and doc.title == "Handbook 2024"
    assert headings(doc) == [
        ("Staff Handbook",),
        ("Staff Handbook", "Leave"),
        ("Staff Handbook", "Leave", "Sick leave"),
        ("Staff Handbook", "差旅"),
    ]
    assert section(doc, "Staff Handbook", "差旅") == "出差前提交申请。\n\nCity | Limit\nParis | 180"
    assert_consistent(doc)


def test_docx_title_falls_back_to_the_first_heading() -> None:
    doc = parse("x.docx", docx_bytes([("Heading 1", "Onboarding"), ("", "Welcome.")]))
    assert doc.title == "Onboarding"


def test_docx_chinese_heading_style_names() -> None:
    blocks = [
        ("标题", "员工手册"),
        ("标题 1", "总则"),
        ("", "适用于全体员工。"),
        ("标题 2", "考勤"),
        ("", "九点上班。"),
    ]
    doc = parse("手册.docx", docx_bytes(blocks))
    assert doc.title == "员工手册" and doc.language == "zh"
    assert headings(doc) == [("员工手册", "总则"), ("员工手册", "总则", "考勤")]


@pytest.mark.parametrize("data", [b"not a zip at all", b"PK\x03\x04 truncated", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"])
def test_docx_that_is_not_a_zip(data: bytes) -> None:
    with pytest.raises(DocumentError, match=r"not a valid \.docx \(a password-protected or old \.doc file"):
        parse("old.docx", data)


def test_docx_zip_without_a_document_part() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "not word")
    with pytest.raises(DocumentError, match=r"^the \.docx file is malformed and could not be read$"):
        parse("fake.docx", buffer.getvalue())


def test_docx_that_would_unpack_too_far_is_refused_before_parsing() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"\0" * 2_000_000)
    assert len(buffer.getvalue()) < 10_000
    with pytest.raises(DocumentError, match="would unpack to 2000000 bytes, over the limit of 1000000"):
        parse("bomb.docx", buffer.getvalue(), Limits(max_unpacked_bytes=1_000_000))


# CSV.


def test_csv_rows_with_the_header_repeated_in_sections() -> None:
    doc = parse("staff.csv", fixture("staff.csv"), Limits(csv_rows_per_section=2))
    assert doc.kind == "csv"
    assert headings(doc) == [("rows 1-2",), ("rows 3-4",), ("row 5",)]
    rows = [row for s in doc.sections for row in s.text.split("\n\n")]
    assert rows[0] == "name: Alice Martin; department: Finance; city: Paris; phone: +33 1 23 45 67 89"
    assert rows[2] == "name: 张伟; department: 销售部; city: 北京; phone: +86 10 8765 4321"
    assert rows[3] == "name: Dana Kim; department: Legal, Compliance; city: Seoul"  # empty cell left out
    assert len(rows) == 5
    assert all(row.startswith("name: ") and "; department: " in row for row in rows)


def test_csv_delimiters_and_ragged_rows() -> None:
    doc = parse("t.csv", b"id;label\n1;first;extra\n2\n;\n")
    assert doc.text == "id: 1; label: first; column 3: extra\n\nid: 2"


def test_csv_with_only_a_header_has_no_text() -> None:
    with pytest.raises(DocumentError, match="the document has no text"):
        parse("header.csv", b"name,email\n")


# Errors, limits and names.


def test_empty_file() -> None:
    with pytest.raises(DocumentError, match=r"^the file is empty$"):
        parse("empty.txt", fixture("empty.txt"))


@pytest.mark.parametrize("name", ["blank.txt", "blank.md", "blank.html", "blank.csv"])
def test_whitespace_only_documents_have_no_text(name: str) -> None:
    with pytest.raises(DocumentError, match=r"^the document has no text$"):
        parse(name, b" \r\n\t\n\n  ")


@pytest.mark.parametrize(
    ("name", "shown"), [("setup.exe", "'.exe'"), ("Makefile", "(no extension)"), ("old.doc", "'.doc'")]
)
def test_unsupported_types(name: str, shown: str) -> None:
    with pytest.raises(DocumentError, match="unsupported file type") as caught:
        parse(name, b"data")
    assert str(caught.value).startswith(f"unsupported file type {shown}; supported: .csv, .docx, .htm, .html")


def test_size_limits() -> None:
    with pytest.raises(DocumentError, match="the file is 11 bytes, over the limit of 10"):
        parse("a.txt", b"hello world", Limits(max_bytes=10))
    assert parse("a.txt", b"hello worl", Limits(max_bytes=10)).text == "hello worl"
    with pytest.raises(DocumentError, match="11 characters of text, over the limit of 10"):
        parse("a.txt", b"hello world", Limits(max_chars=10))
    with pytest.raises(DocumentError, match="more than 10 characters"):
        parse("a.pdf", pdf_bytes([["hello world"]]), Limits(max_chars=10))


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("/etc/hostname.txt", "hostname.txt"),
        ("..\\..\\Windows\\win.ini.txt", "win.ini.txt"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("..", "document"),
        ("", "document"),
        ("dir/", "document"),
        ("evil\x00name\r\n.md", "evilname.md"),
        ("invoice\u202egpj.exe.txt", "invoicegpj.exe.txt"),  # a right-to-left override would disguise the name
        ("  spaced   out  .md", "spaced out .md"),
    ],
)
def test_safe_filename(given_name: str, expected: str) -> None:
    assert safe_filename(given_name) == expected


def test_long_names_are_capped_keeping_the_extension() -> None:
    assert safe_filename("a" * 500 + ".docx") == "a" * 155 + ".docx"
    assert safe_filename("b" * 500) == "b" * 160


def test_traversal_names_only_name_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_files(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"parse touched the filesystem: {args!r}")

    pdf, docx = pdf_bytes([["From the upload."]]), docx_bytes([("", "From the upload.")])
    monkeypatch.setattr(builtins, "open", no_files)
    monkeypatch.setattr(io, "open", no_files)
    monkeypatch.setattr(os, "open", no_files)
    monkeypatch.setattr(os, "stat", no_files)
    for name, data in [("../../etc/passwd.txt", b"From the upload."), ("/etc/x.pdf", pdf), ("../x.docx", docx)]:
        doc = parse(name, data)
        assert doc.text == "From the upload."
        assert "/" not in doc.name and ".." not in doc.title


def test_content_hash_is_sha256_of_the_bytes() -> None:
    data = fixture("guide.md")
    assert content_hash(data) == hashlib.sha256(data).hexdigest()
    assert parse("guide.md", data).content_hash == content_hash(data)
    assert content_hash(data + b"\n") != content_hash(data)


def test_sections_must_sit_where_they_say() -> None:
    with pytest.raises(ValueError, match="is not at 3"):
        ParsedDocument("a.txt", "txt", "a", "en", "one\n\ntwo", (Section((), "two", 3),))


# Any input: a parsed document or a DocumentError, never another exception.


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["txt", "md", "html", "csv", "pdf", "docx"]), data=st.binary(max_size=2_000))
def test_arbitrary_bytes_never_escape_as_another_error(kind: str, data: bytes) -> None:
    try:
        doc = parse(f"fuzz.{kind}", data)
    except DocumentError:
        return
    assert_consistent(doc)


@given(st.text(max_size=500))
def test_arbitrary_text_parses_to_consistent_normalized_sections(text: str) -> None:
    for name in ("t.txt", "t.md", "t.html", "t.csv"):
        try:
            doc = parse(name, text.encode())
        except DocumentError:
            continue
        assert_consistent(doc)
        assert "\r" not in doc.text and "\n\n\n" not in doc.text
