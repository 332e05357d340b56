"""The stream relay's pure parts: in-band error detection and batch encoding."""

from __future__ import annotations

import pytest

from gateway.api.job import encode_batch, is_error_event


@pytest.mark.parametrize(
    "payload",
    [b'{"error": {"message": "x"}}', b'{"error":{"message":"x"}}', b'{ "error" : {}}', b'\n{"error": 1}'],
)
def test_error_events_are_recognised(payload: bytes) -> None:
    assert is_error_event(payload)


@pytest.mark.parametrize(
    "payload",
    [b'{"id": "chatcmpl-1", "choices": [{"delta": {"content": "\\"error\\""}}]}', b"[DONE]", b'{"errors": 1}', b""],
)
def test_ordinary_events_are_not_errors(payload: bytes) -> None:
    assert not is_error_event(payload)


def test_batch_is_framed_until_done() -> None:
    out, finished, failed = encode_batch([b'{"a":1}', b'{"b":2}', b"[DONE]", b'{"late":3}'])
    assert out == b'data: {"a":1}\n\ndata: {"b":2}\n\n'
    assert (finished, failed) == (True, False)


def test_batch_stops_after_an_error_event() -> None:
    out, finished, failed = encode_batch([b'{"a":1}', b'{"error":{"message":"boom"}}', b'{"b":2}'])
    assert out == b'data: {"a":1}\n\ndata: {"error":{"message":"boom"}}\n\n'
    assert (finished, failed) == (True, True)


def test_batch_without_end_continues() -> None:
    assert encode_batch([b'{"a":1}']) == (b'data: {"a":1}\n\n', False, False)
    assert encode_batch([]) == (b"", False, False)
