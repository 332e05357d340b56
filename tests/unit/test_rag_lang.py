"""Language detection by character classes: Chinese ideographs against Latin letters, per chunk and per query."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.rag.ingest.lang import detect

COMMA = "\uff0c"  # full-width comma, as Chinese text writes it


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("公司的差旅报销制度是什么", "zh"),
        (f"你好{COMMA}世界。", "zh"),
        ("我喜欢用Python编程", "zh"),  # a Chinese sentence with one English word is still Chinese
        ("How do I rotate an API key?", "en"),
        ("The 北京 office handles sales for the north", "en"),
        ("Café au lait, s'il vous plaît", "en"),  # Latin script with accents counts as Latin
        ("使用 Kubernetes 部署服务 and monitor it with Prometheus dashboards", "mixed"),
        ("报销 policy 规定 travel 标准", "mixed"),
        ("私は東京大学の学生です", "other"),  # kana: Japanese, not Chinese
        ("안녕하세요 여러분", "other"),
        ("Привет, как дела?", "other"),
        ("12345 + 678 = ???", "other"),
        ("", "other"),
        ("   \n\t", "other"),
    ],
)
def test_detect(text: str, expected: str) -> None:
    assert detect(text) == expected


def test_shares_are_weighted_four_latin_letters_to_one_ideograph() -> None:
    # 7 ideographs against 12 letters (3 units): 70% Chinese exactly; one more letter tips it into "mixed".
    assert detect("一二三四五六七" + "a" * 12) == "zh"
    assert detect("一二三四五六七" + "a" * 13) == "mixed"
    assert detect("一" * 3 + "a" * 28) == "en"
    assert detect("一" * 4 + "a" * 28) == "mixed"


def test_long_text_is_sampled_across_its_length() -> None:
    # 80% English characters, then 20% Chinese: about even once weighted; the beginning alone would say "en".
    text = "policy " * 40_000 + "报销制度" * 17_500
    assert detect(text) == "mixed"
    assert detect("报销制度" * 100_000) == "zh"


def test_fast_on_a_large_text() -> None:
    text = "The travel policy applies to everyone. 差旅制度适用于全体员工。" * 50_000  # about 3 MB
    began = time.perf_counter()
    detect(text)
    assert time.perf_counter() - began < 0.5


@given(st.text())
def test_any_text_gets_one_of_the_four_labels(text: str) -> None:
    assert detect(text) in ("zh", "en", "mixed", "other")


@given(st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1))
def test_ideographs_alone_are_chinese(text: str) -> None:
    assert detect(text) == "zh"


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABCXYZ.,!?0123456789", min_size=1).filter(str.strip))
def test_ascii_letters_alone_are_english(text: str) -> None:
    assert detect(text) == ("en" if any(ch.isalpha() for ch in text) else "other")
