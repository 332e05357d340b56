"""Live progress of a run: LLaMA-Factory appends one JSON object per logged step to `trainer_log.jsonl`.

`LogTail` reads what was appended since its last call, keeping a partial last line until its newline arrives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, TypedDict

MAX_PENDING: Final = 1 << 20
"""A line longer than this (1 MiB) without a newline is not LLaMA-Factory's: it is dropped."""


class Metric(TypedDict):
    """One logged step; a field LLaMA-Factory did not write on that line is None (eval lines carry no loss)."""

    current_steps: int | None
    total_steps: int | None
    loss: float | None
    lr: float | None
    eval_loss: float | None
    epoch: float | None
    percentage: float | None
    elapsed_time: str | None
    remaining_time: str | None


def _number(value: object) -> float | None:
    """A JSON number as float; None for anything else (bool included)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: object) -> int | None:
    """A JSON integer; None for anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    """A JSON string; None for anything else."""
    return value if isinstance(value, str) else None


def to_metric(row: dict[str, Any]) -> Metric:
    """One trainer_log.jsonl object as a Metric (`lr` is also read from `learning_rate`)."""
    return Metric(
        current_steps=_integer(row.get("current_steps")),
        total_steps=_integer(row.get("total_steps")),
        loss=_number(row.get("loss")),
        lr=_number(row.get("lr", row.get("learning_rate"))),
        eval_loss=_number(row.get("eval_loss")),
        epoch=_number(row.get("epoch")),
        percentage=_number(row.get("percentage")),
        elapsed_time=_text(row.get("elapsed_time")),
        remaining_time=_text(row.get("remaining_time")),
    )


def parse_line(line: bytes) -> Metric | None:
    """A complete line as a Metric; None for a blank line or one that is not a JSON object."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return to_metric(row) if isinstance(row, dict) else None


class LogTail:
    """Follows one trainer_log.jsonl: each `read()` returns the metrics of the lines completed since the last."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._pending = b""

    def read(self) -> list[Metric]:
        """New complete lines as metrics; [] when the file does not exist yet or nothing new is complete."""
        data = self._new_bytes()
        if not data:
            return []
        *lines, self._pending = (self._pending + data).split(b"\n")
        if len(self._pending) > MAX_PENDING:
            self._pending = b""
        return [metric for line in lines if (metric := parse_line(line)) is not None]

    def _new_bytes(self) -> bytes:
        """The bytes appended since the last read; a file that shrank (rewritten) is read again from its start."""
        try:
            with self.path.open("rb") as handle:
                if handle.seek(0, 2) < self._offset:
                    self._offset, self._pending = 0, b""
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return b""
        self._offset += len(data)
        return data
