"""The <think> splitter: any chunking of any text splits as the whole text does; message and stream forms."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.hooks.reasoning import StreamSplitter, ThinkSplitter, split_message_body

PIECES = st.lists(st.sampled_from(["<think>", "</think>", "<", "<th", "think>", "\n", "a", "é", "42", " ", "</"]))


def split_whole(text: str) -> tuple[str, str]:
    splitter = ThinkSplitter()
    content, reasoning = splitter.feed(text)
    more_content, more_reasoning = splitter.flush()
    return content + more_content, reasoning + more_reasoning


def split_chunked(text: str, cuts: list[int]) -> tuple[str, str]:
    splitter = ThinkSplitter()
    content, reasoning, start = [], [], 0
    for cut in [*sorted(set(cuts)), len(text)]:
        c, r = splitter.feed(text[start:cut])
        content.append(c)
        reasoning.append(r)
        start = cut
    c, r = splitter.flush()
    return "".join(content) + c, "".join(reasoning) + r


@settings(max_examples=400)
@given(pieces=PIECES, data=st.data())
def test_any_chunking_splits_like_the_whole_text(pieces: list[str], data: st.DataObject) -> None:
    text = "".join(pieces)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=12))
    assert split_chunked(text, cuts) == split_whole(text)


@given(st.text())
def test_text_without_tags_is_untouched(text: str) -> None:
    if "<think>" not in text and "</think>" not in text:
        assert split_whole(text) == (text, "")


def test_typical_r1_output() -> None:
    assert split_whole("<think>\nplan\n</think>\n\nAnswer <b>bold</b>") == ("Answer <b>bold</b>", "\nplan\n")


def test_unclosed_think_block_is_all_reasoning() -> None:
    assert split_whole("<think>still thinking") == ("", "still thinking")


def test_half_tag_at_the_end_is_text() -> None:
    assert split_whole("a <thi") == ("a <thi", "")


def test_message_body_split_and_drop() -> None:
    body = orjson.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "<think>r</think>c"}}]})
    split = orjson.loads(split_message_body(body, "split"))["choices"][0]["message"]
    assert (split["content"], split["reasoning_content"]) == ("c", "r")
    dropped = orjson.loads(split_message_body(body, "drop"))["choices"][0]["message"]
    assert dropped["content"] == "c" and "reasoning_content" not in dropped


def test_vendor_reasoning_field_is_normalised_or_dropped() -> None:
    body = orjson.dumps({"choices": [{"message": {"content": "c", "reasoning": "r"}}]})
    assert orjson.loads(split_message_body(body, "split"))["choices"][0]["message"]["reasoning_content"] == "r"
    native = orjson.dumps({"choices": [{"message": {"content": "c", "reasoning_content": "r"}}]})
    assert "reasoning_content" not in orjson.loads(split_message_body(native, "drop"))["choices"][0]["message"]


def _delta(content: str, index: int = 0) -> bytes:
    return orjson.dumps({"choices": [{"index": index, "delta": {"content": content}}]})


def test_stream_events_split_per_choice_and_flush_at_the_end() -> None:
    stream = StreamSplitter("split")
    deltas = []
    for payload in (_delta("<th"), _delta("ink>r", 1), _delta("ink>x</think>y"), _delta("</think>z <", 1)):
        deltas.append(orjson.loads(stream.event(payload))["choices"][0]["delta"])
    # Choice 0 opened a think block across two events; choice 1 never did, so its tags are plain text.
    assert [d.get("content") for d in deltas] == ["", "ink>r", "y", "</think>z "]
    assert [d.get("reasoning_content") for d in deltas] == [None, None, "x", None]
    tail = [orjson.loads(p)["choices"][0] for p in stream.finish()]
    assert tail == [{"index": 1, "delta": {"content": "<"}}]  # the half tag held back was text after all


def test_events_without_tags_pass_untouched() -> None:
    stream = StreamSplitter("split")
    payload = b'{"choices":[{"index":0,"delta":{"content":"plain"}}]}'
    assert stream.event(payload) is payload
    assert stream.event(b"[DONE]") == b"[DONE]"
    assert stream.finish() == []
