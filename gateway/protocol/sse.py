"""Server-Sent Events: an incremental decoder with a bounded buffer, and the framing the gateway sends."""

from __future__ import annotations

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


class SSEError(ValueError):
    """The upstream's event stream cannot be decoded (an event over the size bound).

    `events` holds the complete events that preceded the fault in the same feed, so none is lost.
    """

    def __init__(self, message: str, events: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.events = events or []


def frame(data: bytes) -> bytes:
    """One `data:` event; multi-line payloads get one `data:` line each, as the SSE spec requires."""
    if b"\n" in data:
        return b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"
    return b"data: " + data + b"\n\n"


def _event_data(block: bytes) -> bytes | None:
    """The data of one event block (lines without their terminators); None when it has no data field."""
    if block.startswith(b"data:") and b"\n" not in block:
        value = block[5:]
        return value[1:] if value.startswith(b" ") else value
    datas = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            datas.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(datas) if datas else None


class SSEDecoder:
    """Feed raw bytes in any chunking; get back the data payload of every complete event, in order.

    Comments, `event:`, `id:` and `retry:` fields are dropped: the OpenAI wire format uses data only.
    """

    __slots__ = ("_buf", "_max")

    def __init__(self, max_event_bytes: int = 8 * 1024 * 1024) -> None:
        self._buf = b""
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        tail = b""
        if b"\r" in buf:
            if buf.endswith(b"\r") and not buf.endswith(b"\r\r"):  # may be half of a CRLF split across reads
                buf, tail = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[bytes] = []
        start = 0
        while (end := buf.find(b"\n\n", start)) >= 0:
            data = _event_data(buf[start:end])
            if data is not None:
                events.append(data)
            start = end + 2
        self._buf = buf[start:] + tail if start else buf + tail
        if len(self._buf) > self._max:
            self._buf = b""
            raise SSEError(f"an upstream event exceeds {self._max} bytes", events)
        return events

    def close(self) -> list[bytes]:
        """At a clean end of stream: the last event, when the upstream left out the final blank line."""
        rest, self._buf = self._buf.replace(b"\r", b"\n").strip(b"\n"), b""
        data = _event_data(rest) if rest else None
        return [data] if data is not None else []
