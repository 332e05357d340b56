"""Language of a text by character classes: Chinese ideographs against Latin letters, no dictionaries.

Used per chunk and per query, so retrieval can skip or down-weight an embedder that cannot read the text.
"""

from __future__ import annotations

import re
from typing import Final, Literal

Language = Literal["zh", "en", "mixed", "other"]

HAN: Final = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
"""CJK Unified Ideographs (with extension A, B-H and the compatibility block)."""
LATIN: Final = re.compile("[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]")
"""Latin letters: ASCII, Latin-1, Latin Extended-A/B and Additional (English and its Latin-script neighbours)."""
LETTER: Final = re.compile(r"[^\W\d_]")
"""Any letter of any script (Unicode categories L*, and the ideographs, which are Lo)."""

SYLLABIC: Final = re.compile("[\u3040-\u30ff\u31f0-\u31ff\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
"""Kana and Hangul: a character weighs like an ideograph, and their presence says Japanese or Korean."""

LATIN_PER_UNIT: Final = 4
"""Alphabetic letters that weigh as much as one ideograph (about a word piece against a character)."""
MAJORITY: Final = 0.7
"""A script holding at least this share of the weighted letters names the language."""
FOREIGN: Final = 0.3
"""Below a majority, other scripts holding at least this share make the text "other" rather than "mixed"."""
SAMPLE_CHARS: Final = 20_000
"""Longer texts are judged on evenly spaced samples of this many characters in all, to stay fast."""
SAMPLES: Final = 10


def detect(text: str) -> Language:
    """The language: zh or en (that script holds 70% of the weighted letters), mixed, or other (other scripts)."""
    sample = _sample(text)
    han = len(HAN.findall(sample))
    latin_letters = len(LATIN.findall(sample))
    syllabic = len(SYLLABIC.findall(sample))
    alphabetic = max(0, len(LETTER.findall(sample)) - han - latin_letters - syllabic)
    latin = latin_letters / LATIN_PER_UNIT
    others = syllabic + alphabetic / LATIN_PER_UNIT
    total = han + latin + others
    if total == 0:
        return "other"
    if han / total >= MAJORITY:
        return "zh"
    if latin / total >= MAJORITY:
        return "en"
    return "other" if others / total >= FOREIGN else "mixed"


def _sample(text: str) -> str:
    """The text itself when short; else SAMPLES evenly spaced slices adding up to SAMPLE_CHARS."""
    if len(text) <= SAMPLE_CHARS:
        return text
    size = SAMPLE_CHARS // SAMPLES
    stride = (len(text) - size) // (SAMPLES - 1)
    return "\n".join(text[i * stride : i * stride + size] for i in range(SAMPLES))
