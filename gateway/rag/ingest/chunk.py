"""Parsed documents to overlapping chunks of at most `max_tokens` tokens, within one section each.

A cut prefers a paragraph break, then a sentence end (the Chinese full stop, full-width ! ? and ;, and English
. ! ?), then a line break, a clause mark (Chinese and English commas, the enumeration comma, colons), a space or
a CJK character border, and only then falls anywhere. The next chunk repeats up to `overlap` tokens of the
previous one, from a boundary where one is near. Chunks never cross a section, so each keeps its heading path.
A chunk's text is exactly `document.text[char_start:char_end]`: the span with surrounding whitespace stripped,
nothing rewritten (normalization happens once, in `parse`).
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.rag.ingest.lang import Language, detect
from gateway.rag.ingest.parse import ParsedDocument

Count = Callable[[str], int]
"""Tokens in a text: `estimate_tokens`, or e.g. `functools.partial(TokenCounter().count_text, "gpt-4o")`."""

CJK_RUNS: Final = re.compile("[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f]+")
"""CJK characters (ideographs, kana, Hangul, CJK and full-width punctuation): about one token each."""
CHARS_PER_TOKEN: Final = 4
"""Other text: about four characters a token."""

PARAGRAPH: Final = re.compile(r"\n\n\s*")
SENTENCE: Final = re.compile(
    "(?:[\u3002\uff01\uff1f\uff1b\uff0e!?]+|\u2026+|\\.+(?=[\\s\"'\u201d\u2019)\\]]|$))"
    "[\"'\u201d\u2019\u300d\u300f\uff09)\\]]*\\s*"
)
LINE: Final = re.compile(r"\n\s*")
CLAUSE: Final = re.compile("(?:[\uff0c\u3001\uff1a]|[,;:](?=\\s))\\s*")
LEVELS: Final = (PARAGRAPH, SENTENCE, LINE, CLAUSE)
"""Boundaries in order of preference; each marks where the next piece of text starts."""
MIN_FILL: Final = 3
"""A boundary is used only if the chunk keeps at least 1/MIN_FILL of the new text that would fit."""


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: one token per CJK character, one per four other characters (rounded up)."""
    cjk = sum(len(run) for run in CJK_RUNS.findall(text))
    return cjk + -(-(len(text) - cjk) // CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A passage of a document: `text == document.text[char_start:char_end]`, under `heading_path`."""

    index: int
    text: str
    heading_path: tuple[str, ...]
    language: Language
    token_count: int
    char_start: int
    char_end: int


def chunk(doc: ParsedDocument, *, max_tokens: int = 400, overlap: int = 60, count: Count | None = None) -> list[Chunk]:
    """The document's chunks in order, each at most `max_tokens` tokens (by `count`, else `estimate_tokens`)."""
    counter = count or estimate_tokens
    chunks: list[Chunk] = []
    for section in doc.sections:
        for start, end in split(section.text, max_tokens=max_tokens, overlap=overlap, count=counter):
            text = section.text[start:end]
            position = (section.start + start, section.start + end)
            chunks.append(Chunk(len(chunks), text, section.heading_path, detect(text), counter(text), *position))
    return chunks


def split(text: str, *, max_tokens: int = 400, overlap: int = 60, count: Count | None = None) -> list[tuple[int, int]]:
    """(start, end) spans of one section's chunks in `text`, stripped of surrounding whitespace.

    A span holds at least one character, so one that alone counts over `max_tokens` still makes progress.
    """
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError(f"need max_tokens >= 1 and 0 <= overlap < max_tokens, not {max_tokens} and {overlap}")
    return _Splitter(text, count or estimate_tokens, max_tokens, overlap).spans()


class _Splitter:
    """One section's text, its boundaries found once, and the token budget."""

    def __init__(self, text: str, count: Count, max_tokens: int, overlap: int) -> None:
        self.text = text
        self.count = count
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.levels = [[match.end() for match in level.finditer(text)] for level in LEVELS]

    def spans(self) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        start = fresh = 0
        while fresh < len(self.text):
            end = self._fit(start)
            if end <= fresh:  # the overlap left no room for new text
                start = fresh
                end = max(self._fit(start), start + 1)
            cut = end if end == len(self.text) else self._cut(fresh, end)
            span = _stripped(self.text, start, cut)
            if span[0] < span[1]:
                spans.append(span)
            start, fresh = self._overlap_start(start, cut), cut
        return spans

    def _fits(self, start: int, end: int) -> bool:
        return self.count(self.text[start:end]) <= self.max_tokens

    def _fit(self, start: int) -> int:
        """The furthest end whose text from `start` fits in max_tokens (by doubling, then bisection)."""
        fitting, step = start, max(1, self.max_tokens)
        probe = min(len(self.text), start + step)
        while self._fits(start, probe):
            fitting = probe
            if probe == len(self.text):
                return probe
            step *= 2
            probe = min(len(self.text), start + step)
        while probe - fitting > 1:
            middle = (fitting + probe) // 2
            fitting, probe = (middle, probe) if self._fits(start, middle) else (fitting, middle)
        return fitting

    def _cut(self, fresh: int, end: int) -> int:
        """Where a chunk ending at most at `end` ends: the best boundary well past `fresh`, else a hard cut."""
        floor = fresh + (end - fresh) // MIN_FILL
        for positions in self.levels:
            i = bisect_right(positions, end) - 1
            if i >= 0 and positions[i] > floor:
                return positions[i]
        return self._word_break(floor, end) or self._hard_cut(fresh, end)

    def _word_break(self, floor: int, end: int) -> int | None:
        """The last space or CJK character border in (floor, end], if any."""
        for i in range(end, floor, -1):
            if _is_word_break(self.text, i):
                return i
        return None

    def _hard_cut(self, fresh: int, end: int) -> int:
        """`end`, moved back so that a combining mark stays with its base character."""
        while end - 1 > fresh and end < len(self.text) and unicodedata.combining(self.text[end]):
            end -= 1
        return end

    def _overlap_start(self, start: int, cut: int) -> int:
        """Where the next chunk starts: up to `overlap` tokens before `cut`, never before the chunk's middle."""
        if self.overlap == 0 or cut >= len(self.text):
            return cut
        low, high = start + (cut - start + 1) // 2, cut
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if self.count(self.text[middle:cut]) <= self.overlap else (middle + 1, high)
        return self._snap(low, cut)

    def _snap(self, earliest: int, cut: int) -> int:
        """The first boundary at or after `earliest` that keeps half the overlap, by preference; else `earliest`."""
        keep = max(1, self.overlap // 2)
        for positions in self.levels:
            i = bisect_left(positions, earliest)
            if i < len(positions) and positions[i] < cut and self.count(self.text[positions[i] : cut]) >= keep:
                return positions[i]
        for i in range(earliest, cut):
            if _is_word_break(self.text, i):
                return i if self.count(self.text[i:cut]) >= keep else earliest
        return earliest


def _is_word_break(text: str, i: int) -> bool:
    """Whether a cut at `i` falls after a space or beside a CJK character (and so not inside a word)."""
    if i <= 0 or i >= len(text):
        return False
    return text[i - 1].isspace() or bool(CJK_RUNS.match(text[i - 1]) or CJK_RUNS.match(text[i]))


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    """`start`/`end` moved inwards past whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
