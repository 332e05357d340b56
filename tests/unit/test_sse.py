"""SSE decoding and framing: line endings, fields, chunk boundaries, the size bound, and a chunking property."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol.sse import DONE, DONE_EVENT, SSEDecoder, SSEError, frame


def decode(*chunks: bytes, max_event_bytes: int = 8 * 1024 * 1024) -> list[bytes]:
    decoder = SSEDecoder(max_event_bytes)
    out = [event for chunk in chunks for event in decoder.feed(chunk)]
    return out + decoder.close()


def test_single_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":1}\n\n') == [b'{"a":1}']
    assert decoder.close() == []


def test_several_events_in_one_feed() -> None:
    assert SSEDecoder().feed(b"data: a\n\ndata: b\n\ndata: c\n\n") == [b"a", b"b", b"c"]


def test_incomplete_event_is_held_until_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [b"a"]


def test_multi_line_data_joined_with_newline() -> None:
    assert SSEDecoder().feed(b"data: one\ndata: two\ndata:three\n\n") == [b"one\ntwo\nthree"]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_line_endings(eol: bytes) -> None:
    stream = b"data: a" + eol + eol + b"data: b" + eol + b"data: c" + eol + eol + b"data: d" + eol + eol
    assert decode(stream) == [b"a", b"b\nc", b"d"]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_line_endings_emit_without_close(eol: bytes) -> None:
    assert SSEDecoder().feed(b"data: a" + eol + eol + b"data: b" + eol + eol) == [b"a", b"b"]


def test_cr_only_event_is_emitted_without_waiting_for_more_bytes() -> None:
    """A `\\r\\r` ending completes the event at once (only a lone trailing `\\r` may be half a CRLF)."""
    assert SSEDecoder().feed(b"data: a\r\r") == [b"a"]


def test_comments_and_other_fields_ignored() -> None:
    stream = b": keep-alive\n\nevent: message\nid: 7\nretry: 1000\ndata: x\n: note\n\n:\n\nid: 8\n\n"
    assert decode(stream) == [b"x"]


def test_data_without_space_and_extra_space_kept() -> None:
    assert decode(b"data:x\n\ndata:  two spaces\n\ndata:\n\n") == [b"x", b" two spaces", b""]


def test_data_field_must_start_the_line() -> None:
    assert decode(b" data: x\n\nxdata: y\n\ndata: z\n\n") == [b"z"]


def test_extra_blank_lines_between_events() -> None:
    assert decode(b"\n\ndata: a\n\n\n\n\ndata: b\n\n\n") == [b"a", b"b"]


def test_done_marker() -> None:
    events = decode(b'data: {"x":1}\n\n' + DONE_EVENT)
    assert events == [b'{"x":1}', DONE]
    assert DONE_EVENT == b"data: [DONE]\n\n"


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_split_at_every_byte_position(eol: bytes) -> None:
    lines = [b": ping", b"", b'data: {"k": "\xc3\xa9"}', b"", b"data: l1", b"data: l2", b"", b"data: [DONE]", b""]
    stream = b"".join(line + eol for line in lines)
    expected = [b'{"k": "\xc3\xa9"}', b"l1\nl2", DONE]
    for i in range(len(stream) + 1):
        assert decode(stream[:i], stream[i:]) == expected, i
    for i in range(len(stream) + 1):
        for j in range(i, min(i + 4, len(stream) + 1)):
            assert decode(stream[:i], stream[i:j], stream[j:]) == expected, (i, j)


def test_crlf_split_between_feeds() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [b"a", b"b"]
    assert decoder.close() == []


def test_crlf_split_does_not_make_two_line_breaks() -> None:
    # "\r" + "\n" across feeds is one line ending, so "data: a" and "data: b" belong to one event
    assert decode(b"data: a\r", b"\ndata: b\r\n\r\n") == [b"a\nb"]


def test_byte_at_a_time() -> None:
    stream = b"data: a\r\n\r\ndata: b\r\ndata: c\r\n\r\n"
    assert decode(*(stream[i : i + 1] for i in range(len(stream)))) == [b"a", b"b\nc"]


def test_size_bound_raises() -> None:
    decoder = SSEDecoder(max_event_bytes=64)
    decoder.feed(b"data: " + b"x" * 40)
    with pytest.raises(SSEError):
        decoder.feed(b"x" * 40)


def test_size_bound_allows_many_small_events_in_one_chunk() -> None:
    stream = b"data: abcdefgh\n\n" * 100
    assert SSEDecoder(max_event_bytes=64).feed(stream) == [b"abcdefgh"] * 100


def test_size_bound_is_an_error_type_value_error() -> None:
    with pytest.raises(ValueError, match="64"):
        SSEDecoder(max_event_bytes=64).feed(b"data: " + b"y" * 100)


@pytest.mark.parametrize("tail", [b"data: last", b"data: last\n", b"data: last\r\n", b"data: last\r"])
def test_close_flushes_final_event_without_blank_line(tail: bytes) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: first\n\n" + tail) == [b"first"]
    assert decoder.close() == [b"last"]
    assert decoder.close() == []


def test_close_with_only_a_comment_or_nothing() -> None:
    decoder = SSEDecoder()
    decoder.feed(b": bye")
    assert decoder.close() == []
    assert SSEDecoder().close() == []


def test_close_multi_line_tail() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\ndata: b") == []
    assert decoder.close() == [b"a\nb"]


def test_frame_single_line() -> None:
    assert frame(b'{"a":1}') == b'data: {"a":1}\n\n'


def test_frame_multi_line() -> None:
    assert frame(b"a\nb\n") == b"data: a\ndata: b\ndata: \n\n"


@pytest.mark.parametrize("payload", [b"x", b"", b"a\nb", b"\n", b"a\n\nb", b" lead", b"\xe4\xbd\xa0\n\xe5\xa5\xbd"])
def test_frame_round_trips(payload: bytes) -> None:
    assert decode(frame(payload)) == [payload]
    assert SSEDecoder().feed(frame(payload)) == [payload]


@given(
    st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=30), max_size=8)
)
def test_frame_round_trip_property(lines: list[str]) -> None:
    payload = "\n".join(lines).encode()
    assert decode(frame(payload) + frame(b"next")) == [payload, b"next"]


payloads = st.lists(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40), max_size=12
)


@st.composite
def framed_streams(draw: st.DrawFn, endings: tuple[bytes, ...]) -> tuple[list[bytes], list[bytes]]:
    events = [p.encode() for p in draw(payloads)]
    eol = draw(st.sampled_from(endings))
    stream = b"".join(b"data: " + e + eol + eol for e in events)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    bounds = [0, *cuts, len(stream)]
    return events, [stream[a:b] for a, b in pairwise(bounds)]


@settings(max_examples=300)
@given(framed_streams((b"\n", b"\r\n", b"\r")))
def test_any_chunking_yields_payloads_in_order(case: tuple[list[bytes], list[bytes]]) -> None:
    events, chunks = case
    assert decode(*chunks) == events


@settings(max_examples=300)
@given(framed_streams((b"\n", b"\r\n")))
def test_any_chunking_yields_every_event_before_close(case: tuple[list[bytes], list[bytes]]) -> None:
    events, chunks = case
    decoder = SSEDecoder()
    assert [e for chunk in chunks for e in decoder.feed(chunk)] == events
    assert decoder.close() == []
