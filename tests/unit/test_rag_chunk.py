"""Chunking: token budgets, overlap, sections never crossed, exact positions, Chinese and English boundaries."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.metering.tokens import TokenCounter
from gateway.rag.ingest.chunk import Chunk, chunk, estimate_tokens, split
from gateway.rag.ingest.parse import ParsedDocument, Section, parse

FIXTURES = Path(__file__).parent.parent / "fixtures" / "rag"
BANG, QUESTION, SEMI, COMMA, COLON = "\uff01", "\uff1f", "\uff1b", "\uff0c", "\uff1a"  # full-width ! ? ; , :
CHINESE_ENDERS = ("。", BANG, QUESTION, SEMI)
CHINESE_CLAUSES = (COMMA, "、", COLON)


def english(sentences: int, first: int = 0) -> str:
    """`sentences` numbered English sentences of about 16 estimated tokens each."""
    return " ".join(
        f"Rule {i} says the gateway routes traffic to healthy upstreams only." for i in range(first, first + sentences)
    )


def doc_of(*sections: tuple[tuple[str, ...], str]) -> ParsedDocument:
    """A document from (heading path, text) pairs, laid out as `parse` lays them out."""
    built, start = [], 0
    for path, text in sections:
        built.append(Section(path, text, start))
        start += len(text) + 2
    return ParsedDocument("d.md", "md", "d", "en", "\n\n".join(text for _, text in sections), tuple(built))


def section_of(doc: ParsedDocument, piece: Chunk) -> Section:
    return next(s for s in doc.sections if s.start <= piece.char_start and piece.char_end <= s.start + len(s.text))


def rebuild(doc: ParsedDocument, pieces: list[Chunk]) -> str:
    """The section text again from its chunks: each chunk minus what it repeats, gaps being whitespace only."""
    text = pieces[0].text
    for before, after in pairwise(pieces):
        gap = doc.text[before.char_end : after.char_start]
        assert not gap.strip(), f"text lost between chunks: {gap!r}"
        text += gap + doc.text[max(before.char_end, after.char_start) : after.char_end]
    return text


def check(doc: ParsedDocument, pieces: list[Chunk], max_tokens: int, overlap: int, count: Callable[[str], int]) -> None:
    """Every invariant: positions, budget, one section each, overlap bounded, nothing lost."""
    assert [p.index for p in pieces] == list(range(len(pieces)))
    for piece in pieces:
        assert doc.text[piece.char_start : piece.char_end] == piece.text
        assert piece.text and piece.text == piece.text.strip()
        assert piece.token_count == count(piece.text) <= max_tokens
        assert piece.heading_path == section_of(doc, piece).heading_path
    for s in doc.sections:
        mine = [p for p in pieces if section_of(doc, p) is s]
        assert mine, f"section {s.heading_path} has no chunk"
        assert rebuild(doc, mine) == s.text
        for before, after in pairwise(mine):
            assert before.char_start < after.char_start and before.char_end < after.char_end
            repeated = doc.text[after.char_start : before.char_end]
            assert count(repeated) <= overlap if after.char_start < before.char_end else True


# The estimate.


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("abcd", 1), ("abcde", 2), ("你好", 2), ("你好abcd", 3), (f"你好{COMMA}世界。", 6), ("こんにちは", 5)],
)
def test_estimate(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_estimate_is_near_tiktoken_for_english_and_above_it_for_chinese() -> None:
    real = functools.partial(TokenCounter().count_text, "gpt-4o")
    text = english(40)
    assert 0.8 < estimate_tokens(text) / real(text) < 1.6
    zh = (FIXTURES / "handbook_zh.txt").read_text(encoding="utf-8")
    assert real(zh) <= estimate_tokens(zh) <= 2 * real(zh)


# Budget, overlap, sections.


def test_english_chunks_fit_overlap_and_end_at_sentences() -> None:
    doc = doc_of((("Policy",), english(60)))
    pieces = chunk(doc, max_tokens=100, overlap=20)
    check(doc, pieces, 100, 20, estimate_tokens)
    assert len(pieces) > 5
    assert all(p.text.endswith(".") for p in pieces)
    assert all(p.text.startswith("Rule ") for p in pieces)  # the overlap starts at a sentence too
    for before, after in pairwise(pieces):
        assert after.char_start < before.char_end  # overlap present
        assert estimate_tokens(doc.text[after.char_start : before.char_end]) >= 10


def test_no_overlap_when_zero() -> None:
    doc = doc_of(((), english(60)))
    pieces = chunk(doc, max_tokens=100, overlap=0)
    check(doc, pieces, 100, 0, estimate_tokens)
    assert all(after.char_start > before.char_end for before, after in pairwise(pieces))


def test_sections_are_never_merged_or_crossed() -> None:
    doc = parse("g.md", (FIXTURES / "guide.md").read_bytes())
    pieces = chunk(doc, max_tokens=400, overlap=60)
    assert [p.heading_path for p in pieces] == [s.heading_path for s in doc.sections]  # small: one chunk each
    check(doc, pieces, 400, 60, estimate_tokens)
    long = doc_of((("A",), english(30)), (("A", "B"), english(30, 30)), (("C",), "short"))
    pieces = chunk(long, max_tokens=80, overlap=15)
    check(long, pieces, 80, 15, estimate_tokens)
    assert pieces[-1].heading_path == ("C",) and pieces[-1].text == "short"


def test_paragraph_breaks_are_preferred_to_sentence_ends() -> None:
    paragraphs = [english(4, 10 * i) for i in range(4)]  # about 64 tokens each
    doc = doc_of(((), "\n\n".join(paragraphs)))
    pieces = chunk(doc, max_tokens=150, overlap=0)
    check(doc, pieces, 150, 0, estimate_tokens)
    assert [p.text for p in pieces] == ["\n\n".join(paragraphs[:2]), "\n\n".join(paragraphs[2:])]


def test_long_chinese_paragraph_is_split_at_sentence_ends() -> None:
    doc = parse("handbook_zh.txt", (FIXTURES / "handbook_zh.txt").read_bytes())
    long = max(doc.text.split("\n\n"), key=len)
    assert len(long) > 300 and " " not in long
    pieces = chunk(doc, max_tokens=100, overlap=30)
    check(doc, pieces, 100, 30, estimate_tokens)
    inside = [p for p in pieces if p.text in long]
    assert len(inside) >= 4
    assert all(p.text.endswith(CHINESE_ENDERS) for p in inside[:-1])
    assert all(p.language == "zh" for p in pieces)
    for before, after in pairwise(inside):
        assert after.char_start < before.char_end  # overlap present
        assert doc.text[after.char_start - 1] in CHINESE_ENDERS + CHINESE_CLAUSES  # ... from a sentence or clause


def test_chinese_without_punctuation_is_cut_hard_but_nothing_is_lost() -> None:
    doc = doc_of(((), "的" * 1000))
    pieces = chunk(doc, max_tokens=64, overlap=8)
    check(doc, pieces, 64, 8, estimate_tokens)
    assert all(p.token_count == 64 for p in pieces[:-1])


def test_english_without_punctuation_breaks_between_words() -> None:
    words = " ".join(f"word{i:04d}" for i in range(600))
    doc = doc_of(((), words))
    pieces = chunk(doc, max_tokens=50, overlap=10)
    check(doc, pieces, 50, 10, estimate_tokens)
    assert all(p.text.startswith("word") and len(p.text.split()[-1]) == 8 for p in pieces)


def test_one_endless_word_is_cut_anywhere() -> None:
    doc = doc_of(((), "x" * 5000))
    pieces = chunk(doc, max_tokens=100, overlap=0)
    check(doc, pieces, 100, 0, estimate_tokens)
    assert [len(p.text) for p in pieces] == [400] * 12 + [200]


def test_mixed_document_gets_a_language_per_chunk() -> None:
    zh = "网关负责路由和计费。" * 30
    doc = doc_of((("zh",), zh), (("en",), english(20)))
    languages = {p.heading_path: p.language for p in chunk(doc, max_tokens=200, overlap=20)}
    assert languages == {("zh",): "zh", ("en",): "en"}


def test_a_tokenizer_can_be_passed_in() -> None:
    real = functools.partial(TokenCounter().count_text, "gpt-4o")
    doc = parse("handbook_zh.txt", (FIXTURES / "handbook_zh.txt").read_bytes())
    pieces = chunk(doc, max_tokens=60, overlap=10, count=real)
    check(doc, pieces, 60, 10, real)
    assert max(p.token_count for p in pieces) > 45  # the budget is used, by real tokens
    by_chars = chunk(doc_of(((), english(10))), max_tokens=120, overlap=0, count=len)
    assert all(len(p.text) <= 120 for p in by_chars)


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (100, 100), (100, -1), (10, 20)])
def test_bad_settings(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        split("text", max_tokens=max_tokens, overlap=overlap)


def test_a_large_document_is_quick() -> None:
    text = "\n\n".join(english(8, i) + "网关负责路由和计费。" * 20 for i in range(0, 4000, 8))  # about 400 KB
    doc = parse("big.txt", text.encode())
    began = time.perf_counter()
    pieces = chunk(doc)
    assert time.perf_counter() - began < 2.0
    assert len(pieces) > 200


# Nothing lost, for any text.

WORDS = ["The", "gateway", "routes", "traffic", "网关", "负责", "路由", "x" * 50, "的" * 40, "3.14", "e.g."]
MARKS = ["。", BANG, QUESTION, SEMI, COMMA, COLON, "、", ".", "!", "?", ",", ":", " ", " ", " ", "\n", "\n\n", "\t"]
pieces_of_text = st.sampled_from(WORDS + MARKS)


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(pieces_of_text, min_size=1, max_size=300),
    max_tokens=st.integers(min_value=1, max_value=120),
    overlap_share=st.floats(min_value=0, max_value=0.9),
)
def test_chunking_never_loses_text(parts: list[str], max_tokens: int, overlap_share: float) -> None:
    text = "".join(parts).strip()
    if not text:
        return
    overlap = min(max_tokens - 1, int(max_tokens * overlap_share))
    doc = doc_of((("one",), text), (("two",), "Tail section."))
    check(doc, chunk(doc, max_tokens=max_tokens, overlap=overlap), max_tokens, overlap, estimate_tokens)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=600), max_tokens=st.integers(min_value=1, max_value=60), overlap=st.integers(0, 59))
def test_split_covers_any_text(text: str, max_tokens: int, overlap: int) -> None:
    overlap = min(overlap, max_tokens - 1)
    spans = split(text, max_tokens=max_tokens, overlap=overlap)
    covered: set[int] = set()
    for start, end in spans:
        assert estimate_tokens(text[start:end]) <= max_tokens or end - start == 1
        covered.update(range(start, end))
    assert all(i in covered or ch.isspace() for i, ch in enumerate(text))
