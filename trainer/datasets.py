"""Training datasets: validate an upload, preview it, split it and write it in LLaMA-Factory's formats.

Runs in the gateway process, so it needs nothing beyond orjson (no torch, no transformers). Formats follow
LLaMA-Factory's data/README.md: alpaca, sharegpt and OpenAI `messages` (which LLaMA-Factory reads as sharegpt
with role/content tags), each optionally as preference data (`chosen`/`rejected`, `ranking: true`).
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import orjson

FORMATS = ("alpaca", "sharegpt", "messages")
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ROWS = 200_000
MAX_ERRORS = 100
PREVIEW_ROWS = 5
PREVIEW_CHARS = 500

Row = dict[str, Any]
Problem = tuple[str, str]  # (field path, message)
T = TypeVar("T")

_BOM = b"\xef\xbb\xbf"
_LINE_SUFFIXES = (".jsonl", ".ndjson")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
_TEXT_LINE = re.compile(rb"\S[^\n]*")  # a line from its first non-blank byte
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ALPACA_KEYS = ("instruction", "input", "output", "chosen", "rejected")


class DatasetError(ValueError):
    """A programming error when writing a dataset: bad name, unknown format, or rows that fail validation."""


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem: `row` is the 1-based line (JSONL) or array index (JSON); 0 means the whole file."""

    row: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row else "file"
        return f"{where}, {self.field or '(row)'}: {self.message}"


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of the common preview shape; role is system, user, assistant, tool or function_call."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class PreviewRow:
    """A row normalized to turns, with the preferred and rejected answers of preference data."""

    row: int
    turns: tuple[Turn, ...]
    chosen: str | None = None
    rejected: str | None = None

    def chars(self) -> int:
        """Characters of text in the row."""
        answers = (self.chosen or "", self.rejected or "")
        return sum(len(t.content) for t in self.turns) + sum(map(len, answers))


@dataclass(frozen=True, slots=True)
class Stats:
    """Characters per valid row."""

    avg_chars: float = 0.0
    max_chars: int = 0


@dataclass(frozen=True, slots=True)
class Validated:
    """The outcome of `validate`; `rows` is empty unless the whole dataset is valid (`ok`)."""

    format: str | None
    preference: bool
    row_count: int
    errors: tuple[RowError, ...]
    more_errors: int
    preview: tuple[PreviewRow, ...]
    stats: Stats
    rows: tuple[Row, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the dataset has no problem at all."""
        return not self.errors and not self.more_errors

    def report(self) -> dict[str, Any]:
        """A JSON-ready summary without the rows."""
        return {
            "ok": self.ok,
            "format": self.format,
            "preference": self.preference,
            "row_count": self.row_count,
            "errors": [asdict(e) for e in self.errors],
            "more_errors": self.more_errors,
            "preview": [asdict(p) for p in self.preview],
            "stats": asdict(self.stats),
        }


@dataclass(frozen=True, slots=True)
class _Chat:
    """How one conversation format spells its turns."""

    column: str
    role_key: str
    content_key: str
    prompt_roles: tuple[str, ...]  # allowed at odd positions (1st, 3rd, ...) after an optional system turn
    answer_roles: tuple[str, ...]  # allowed at even positions, and as chosen/rejected roles
    common: Mapping[str, str]  # role -> role of the common preview shape


_SHAREGPT = _Chat(
    "conversations",
    "from",
    "value",
    ("human", "observation"),
    ("gpt", "function_call"),
    MappingProxyType(
        {
            "system": "system",
            "human": "user",
            "gpt": "assistant",
            "observation": "tool",
            "function_call": "function_call",
        }
    ),
)
_MESSAGES = _Chat(
    "messages",
    "role",
    "content",
    ("user", "tool"),
    ("assistant",),
    MappingProxyType({"system": "system", "user": "user", "assistant": "assistant", "tool": "tool"}),
)
_CHATS = MappingProxyType({"sharegpt": _SHAREGPT, "messages": _MESSAGES})


class _Errors:
    """Collects row errors, keeping the first `cap` and counting the rest."""

    def __init__(self, cap: int) -> None:
        self.kept: list[RowError] = []
        self.dropped = 0
        self.cap = cap

    def add(self, row: int, field: str, message: str) -> None:
        """Record one problem."""
        if len(self.kept) < self.cap:
            self.kept.append(RowError(row, field, message))
        else:
            self.dropped += 1

    def __bool__(self) -> bool:
        """True once any problem was recorded, kept or not."""
        return bool(self.kept) or self.dropped > 0


@dataclass(frozen=True, slots=True)
class _Unparsed:
    """A JSONL line that is not JSON, kept in place so errors come out in line order."""

    message: str


# --- parsing -------------------------------------------------------------------------------------------------


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _decode_problem(data: bytes, exc: ValueError) -> str:
    """Explain why `data` did not parse: invalid UTF-8 (with its line) or the JSON error."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = data.count(b"\n", 0, bad.start) + 1
        return f"invalid UTF-8 at byte {bad.start + 1}" + (f" (line {line})" if line > 1 else "")
    return f"invalid JSON: {exc}"


def _parse_whole(data: bytes, max_rows: int, errors: _Errors) -> list[tuple[int, object]] | None:
    """Parse the file as one JSON document; None when it is not one (then it is read as JSONL)."""
    try:
        value: object = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if data.lstrip()[:1] == b"[":
            errors.add(0, "", _decode_problem(data, exc))
            return []
        return None
    if not isinstance(value, list):
        return [(1, value)]
    if len(value) > max_rows:
        errors.add(0, "", f"the file has {len(value)} rows; the limit is {max_rows}")
        return []
    return list(enumerate(value, 1))


def _parse_lines(data: bytes, max_rows: int, errors: _Errors) -> list[tuple[int, object]]:
    """Parse JSONL: one JSON value per line, blank lines skipped."""
    rows: list[tuple[int, object]] = []
    number, start = 1, 0
    for match in _TEXT_LINE.finditer(data):
        number, start = number + data.count(b"\n", start, match.start()), match.start()
        if len(rows) == max_rows:
            errors.add(0, "", f"the file has more than {max_rows} rows")
            return []
        line = match.group()
        try:
            rows.append((number, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            rows.append((number, _Unparsed(_decode_problem(line, exc))))
    return rows


def _parse(data: bytes, filename: str, max_rows: int, errors: _Errors) -> list[tuple[int, object]]:
    """Rows with their numbers: a JSON array (or single object), else JSONL; `.jsonl` names are always JSONL."""
    data = data.removeprefix(_BOM)
    if not filename.lower().endswith(_LINE_SUFFIXES):
        whole = _parse_whole(data, max_rows, errors)
        if whole is not None:
            return whole
    return _parse_lines(data, max_rows, errors)


# --- format detection ----------------------------------------------------------------------------------------


def _row_format(value: object) -> str | None:
    """The format one row looks like, from its keys."""
    if not isinstance(value, dict):
        return None
    if "messages" in value:
        return "messages"
    if "conversations" in value:
        return "sharegpt"
    if any(key in value for key in _ALPACA_KEYS):
        return "alpaca"
    return None


def detect_format(rows: Sequence[object]) -> str | None:
    """The format most rows look like ("alpaca", "sharegpt" or "messages"); None when no row looks like any."""
    votes = Counter(fmt for fmt in map(_row_format, rows) if fmt)
    return votes.most_common(1)[0][0] if votes else None


def detect_preference(rows: Sequence[object]) -> bool:
    """True when most object rows carry `chosen` or `rejected` (preference data for DPO and friends)."""
    objects = [row for row in rows if isinstance(row, dict)]
    hits = sum(1 for row in objects if "chosen" in row or "rejected" in row)
    return hits * 2 > len(objects)


# --- row checks ----------------------------------------------------------------------------------------------


def _check_text(value: object, path: str) -> Iterator[Problem]:
    """A required, non-blank string."""
    if value is None:
        yield path, "required: a non-empty string"
    elif not isinstance(value, str):
        yield path, f"must be a string, not {_json_type(value)}"
    elif not value.strip():
        yield path, "must not be empty"


def _check_optional_text(value: object, path: str) -> Iterator[Problem]:
    """An optional string (absent, null or empty is fine)."""
    if value is not None and not isinstance(value, str):
        yield path, f"must be a string, not {_json_type(value)}"


def _check_differ(chosen: object, rejected: object, path: str) -> Iterator[Problem]:
    """Preferred and rejected answers must not be the same text."""
    if isinstance(chosen, str) and chosen.strip() and chosen == rejected:
        yield path, "must differ from chosen"


def _check_history(history: object) -> Iterator[Problem]:
    """Alpaca history: a list of [prompt, response] pairs of strings."""
    if history is None:
        return
    if not isinstance(history, list):
        yield "history", f"must be a list of [prompt, response] pairs, not {_json_type(history)}"
        return
    for i, pair in enumerate(history):
        if not isinstance(pair, list) or len(pair) != 2:
            yield f"history[{i}]", "must be a [prompt, response] pair"
            continue
        yield from _check_text(pair[0], f"history[{i}][0]")
        yield from _check_text(pair[1], f"history[{i}][1]")


def _check_alpaca(row: Row, preference: bool) -> Iterator[Problem]:
    """instruction, input?, system?, history?, then output (or chosen and rejected)."""
    yield from _check_text(row.get("instruction"), "instruction")
    yield from _check_optional_text(row.get("input"), "input")
    yield from _check_optional_text(row.get("system"), "system")
    yield from _check_history(row.get("history"))
    for key in ("chosen", "rejected") if preference else ("output",):
        yield from _check_text(row.get(key), key)
    if preference:
        yield from _check_differ(row.get("chosen"), row.get("rejected"), "rejected")


def _role_problem(role: object, allowed: tuple[str, ...], spec: _Chat) -> str:
    """Why a turn's role is not acceptable at its position."""
    expected = " or ".join(allowed)
    if not isinstance(role, str):
        return f"required: {expected}" if role is None else f"must be a string, not {_json_type(role)}"
    if role == "system":
        return "a system turn is only allowed first"
    if role in spec.common:
        return f"{role} is out of order: expected {expected} here (turns must alternate)"
    return f"unknown role {role[:40]!r}: expected {expected}"


def _check_order(turns: list[object], spec: _Chat, preference: bool) -> Iterator[Problem]:
    """After an optional system turn, prompt and answer roles alternate; the last turn depends on preference."""
    start = 1 if isinstance(turns[0], dict) and turns[0].get(spec.role_key) == "system" else 0
    body = turns[start:]
    for i, turn in enumerate(body):
        if not isinstance(turn, dict):
            return
        allowed = spec.prompt_roles if i % 2 == 0 else spec.answer_roles
        if turn.get(spec.role_key) not in allowed:
            yield f"{spec.column}[{start + i}].{spec.role_key}", _role_problem(turn.get(spec.role_key), allowed, spec)
            return
    answers, prompts = (" or ".join(roles) for roles in (spec.answer_roles, spec.prompt_roles))
    if not body:
        yield spec.column, "needs a turn after the system turn"
    elif preference and len(body) % 2 == 0:
        yield spec.column, f"the last turn must be {prompts}: chosen and rejected answer it"
    elif not preference and len(body) % 2 == 1:
        yield spec.column, f"the last turn must be {answers}"


def _check_turns(turns: object, spec: _Chat, preference: bool) -> Iterator[Problem]:
    """Every turn is an object with a non-blank text; then the order of roles."""
    if not isinstance(turns, list) or not turns:
        yield spec.column, "required: a non-empty list of turns"
        return
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            yield f"{spec.column}[{i}]", f"must be an object, not {_json_type(turn)}"
        else:
            yield from _check_text(turn.get(spec.content_key), f"{spec.column}[{i}].{spec.content_key}")
    yield from _check_order(turns, spec, preference)


def _check_answers(row: Row, spec: _Chat) -> Iterator[Problem]:
    """chosen and rejected: answer turns with different texts."""
    for key in ("chosen", "rejected"):
        turn = row.get(key)
        if not isinstance(turn, dict):
            yield key, f"required: an object with {spec.role_key} and {spec.content_key}"
            continue
        if turn.get(spec.role_key) not in spec.answer_roles:
            yield f"{key}.{spec.role_key}", f"must be {' or '.join(spec.answer_roles)}"
        yield from _check_text(turn.get(spec.content_key), f"{key}.{spec.content_key}")
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if isinstance(chosen, dict) and isinstance(rejected, dict):
        path = f"rejected.{spec.content_key}"
        yield from _check_differ(chosen.get(spec.content_key), rejected.get(spec.content_key), path)


def _check_chat(row: Row, spec: _Chat, preference: bool) -> Iterator[Problem]:
    """A sharegpt or messages row."""
    yield from _check_turns(row.get(spec.column), spec, preference)
    if preference:
        yield from _check_answers(row, spec)
    if spec is _SHAREGPT:
        yield from _check_optional_text(row.get("system"), "system")
        yield from _check_optional_text(row.get("tools"), "tools")


def check_row(row: object, fmt: str, preference: bool) -> Iterator[Problem]:
    """Every problem of one parsed row, as (field path, message)."""
    if not isinstance(row, dict):
        yield "", f"must be an object, not {_json_type(row)}"
    elif fmt == "alpaca":
        yield from _check_alpaca(row, preference)
    else:
        yield from _check_chat(row, _CHATS[fmt], preference)


# --- normalizing ---------------------------------------------------------------------------------------------


def _normalize_alpaca(number: int, row: Row, preference: bool) -> PreviewRow:
    """Alpaca row -> system, history pairs, the prompt (instruction, newline, input) and the answer."""
    turns = [Turn("system", row["system"])] if row.get("system") else []
    for prompt, response in row.get("history") or []:
        turns += [Turn("user", prompt), Turn("assistant", response)]
    turns.append(Turn("user", "\n".join(t for t in (row["instruction"], row.get("input")) if t)))
    if preference:
        return PreviewRow(number, tuple(turns), row["chosen"], row["rejected"])
    turns.append(Turn("assistant", row["output"]))
    return PreviewRow(number, tuple(turns))


def _normalize_chat(number: int, row: Row, spec: _Chat, preference: bool) -> PreviewRow:
    """Sharegpt or messages row -> turns with common roles."""
    turns = [Turn(spec.common[t[spec.role_key]], t[spec.content_key]) for t in row[spec.column]]
    system = row.get("system") if spec is _SHAREGPT else None
    if system and turns[0].role != "system":
        turns.insert(0, Turn("system", system))
    if not preference:
        return PreviewRow(number, tuple(turns))
    return PreviewRow(number, tuple(turns), row["chosen"][spec.content_key], row["rejected"][spec.content_key])


def normalize(number: int, row: Row, fmt: str, preference: bool) -> PreviewRow:
    """A valid row in the common shape (full texts)."""
    if fmt == "alpaca":
        return _normalize_alpaca(number, row, preference)
    return _normalize_chat(number, row, _CHATS[fmt], preference)


def _clip(text: str | None, limit: int) -> str | None:
    """Text cut to `limit` characters, marked with an ellipsis when cut."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + "…"


def _clip_row(row: PreviewRow, limit: int) -> PreviewRow:
    """A preview row with every text clipped."""
    turns = tuple(Turn(t.role, _clip(t.content, limit) or "") for t in row.turns)
    return PreviewRow(row.row, turns, _clip(row.chosen, limit), _clip(row.rejected, limit))


# --- validate ------------------------------------------------------------------------------------------------


def _refused(errors: _Errors, fmt: str | None, preference: bool, row_count: int) -> Validated:
    """A result with problems and nothing else."""
    return Validated(fmt, preference, row_count, tuple(errors.kept), errors.dropped, (), Stats())


def _precheck(data: bytes, fmt: str | None, max_bytes: int, errors: _Errors) -> None:
    """File-level checks made before parsing."""
    if len(data) > max_bytes:
        errors.add(0, "", f"the file is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
    if fmt is not None and fmt not in FORMATS:
        errors.add(0, "format", f"unknown format {fmt[:40]!r}: expected one of {', '.join(FORMATS)}")


def _summarize(parsed: list[tuple[int, object]], fmt: str, preference: bool, preview: tuple[int, int]) -> Validated:
    """The result for rows that all passed: preview, stats and the rows."""
    rows = tuple(row for _, row in parsed if isinstance(row, dict))
    normal = [normalize(number, row, fmt, preference) for number, row in parsed if isinstance(row, dict)]
    sizes = [n.chars() for n in normal]
    stats = Stats(sum(sizes) / len(sizes), max(sizes))
    shown = tuple(_clip_row(n, preview[1]) for n in normal[: preview[0]])
    return Validated(fmt, preference, len(rows), (), 0, shown, stats, rows)


def _check_rows(parsed: list[tuple[int, object]], fmt: str | None, preference: bool, errors: _Errors) -> None:
    """Record the problems of every row in line order (row contents only once the format is known)."""
    for number, value in parsed:
        if isinstance(value, _Unparsed):
            errors.add(number, "", value.message)
        elif not isinstance(value, dict):
            errors.add(number, "", f"must be an object, not {_json_type(value)}")
        elif fmt is not None:
            for path, message in check_row(value, fmt, preference):
                errors.add(number, path, message)


def validate(
    data: bytes,
    filename: str,
    fmt: str | None = None,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    preview_rows: int = PREVIEW_ROWS,
    preview_chars: int = PREVIEW_CHARS,
    max_errors: int = MAX_ERRORS,
) -> Validated:
    """Parse and check an uploaded dataset; never raises on bad input, and any problem refuses the whole file.

    `filename` only chooses the parser (`.jsonl`/`.ndjson` always JSONL); it is never used as a path.
    """
    errors = _Errors(max_errors)
    _precheck(data, fmt, max_bytes, errors)
    if errors:
        return _refused(errors, fmt, False, 0)
    parsed = _parse(data, filename, max_rows, errors)
    values = [value for _, value in parsed]
    fmt = fmt or detect_format(values)
    preference = detect_preference(values)
    if not parsed and not errors:
        errors.add(0, "", "the file has no rows")
    if fmt is None and any(isinstance(value, dict) for value in values):
        errors.add(0, "format", "unrecognized rows: expected messages, conversations or instruction/output keys")
    _check_rows(parsed, fmt, preference, errors)
    if errors or fmt is None:
        return _refused(errors, fmt, preference, len(parsed))
    return _summarize(parsed, fmt, preference, (preview_rows, preview_chars))


# --- split and write -----------------------------------------------------------------------------------------


def split(rows: Sequence[T], validation_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Deterministic (train, validation) split; both keep the original order, and neither is empty if 2+ rows."""
    if not 0 <= validation_fraction < 1:
        raise ValueError("validation_fraction must be in [0, 1)")
    count = round(len(rows) * validation_fraction)
    if validation_fraction > 0 and len(rows) >= 2:
        count = min(max(count, 1), len(rows) - 1)
    chosen = set(random.Random(seed).sample(range(len(rows)), count))
    train = [row for i, row in enumerate(rows) if i not in chosen]
    return train, [row for i, row in enumerate(rows) if i in chosen]


def _turn(turn: Mapping[str, Any], spec: _Chat) -> dict[str, Any]:
    """A turn with only its role and content keys."""
    return {spec.role_key: turn[spec.role_key], spec.content_key: turn[spec.content_key]}


def _canonical_alpaca(row: Mapping[str, Any], preference: bool) -> Row:
    """An alpaca row with every declared column present and nothing else."""
    out: Row = {
        "instruction": row["instruction"],
        "input": row.get("input") or "",
        "system": row.get("system") or "",
        "history": [list(pair) for pair in row.get("history") or []],
    }
    keys = ("chosen", "rejected") if preference else ("output",)
    return out | {key: row[key] for key in keys}


def _canonical_chat(row: Mapping[str, Any], spec: _Chat, preference: bool) -> Row:
    """A sharegpt or messages row with only the keys LLaMA-Factory reads."""
    out: Row = {spec.column: [_turn(t, spec) for t in row[spec.column]]}
    if spec is _SHAREGPT:
        out |= {"system": row.get("system") or "", "tools": row.get("tools") or ""}
    if preference:
        out |= {"chosen": _turn(row["chosen"], spec), "rejected": _turn(row["rejected"], spec)}
    return out


def canonical(row: Mapping[str, Any], fmt: str, preference: bool) -> Row:
    """A valid row as written for LLaMA-Factory: the same columns in every row, so they load as one table."""
    if fmt == "alpaca":
        return _canonical_alpaca(row, preference)
    return _canonical_chat(row, _CHATS[fmt], preference)


def _check_names(name: str, fmt: str) -> None:
    """Raise DatasetError for a name that is not a plain identifier or an unknown format."""
    if not _NAME.fullmatch(name):
        raise DatasetError(f"invalid dataset name {name[:40]!r}: letters, digits, _ and - only")
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt[:40]!r}")


def write_dataset(directory: Path, name: str, rows: Sequence[Mapping[str, Any]], fmt: str, *, preference: bool) -> Path:
    """Write `directory/<name>.jsonl` atomically in canonical form; rows are checked again first."""
    _check_names(name, fmt)
    for number, row in enumerate(rows, 1):
        problem = next(check_row(row, fmt, preference), None)
        if problem:
            raise DatasetError(f"row {number}, {problem[0]}: {problem[1]}")
    lines = b"".join(orjson.dumps(canonical(row, fmt, preference)) + b"\n" for row in rows)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.jsonl"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(lines)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _columns(fmt: str, preference: bool) -> dict[str, str]:
    """dataset_info.json `columns` for a canonical file."""
    if fmt == "alpaca":
        columns = {"prompt": "instruction", "query": "input", "system": "system", "history": "history"}
    else:
        columns = {"messages": _CHATS[fmt].column}
        columns |= {"system": "system", "tools": "tools"} if fmt == "sharegpt" else {}
    answers = {"chosen": "chosen", "rejected": "rejected"} if preference else {}
    return columns | (answers or ({"response": "output"} if fmt == "alpaca" else {}))


def _tags(fmt: str) -> dict[str, str]:
    """dataset_info.json `tags` for the chat formats (messages' `tool` role is LLaMA-Factory's observation)."""
    if fmt == "sharegpt":
        return {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            "observation_tag": "observation",
            "function_tag": "function_call",
            "system_tag": "system",
        }
    return {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "observation_tag": "tool",
        "system_tag": "system",
    }


def dataset_info_entry(name: str, file_name: str, fmt: str, *, preference: bool) -> dict[str, Any]:
    """`{name: entry}` for dataset_info.json, describing a file written by `write_dataset`."""
    _check_names(name, fmt)
    if not _FILE_NAME.fullmatch(file_name) or ".." in file_name:
        raise DatasetError(f"invalid file name {file_name[:40]!r}")
    entry: dict[str, Any] = {"file_name": file_name, "formatting": "alpaca" if fmt == "alpaca" else "sharegpt"}
    if preference:
        entry["ranking"] = True
    entry["columns"] = _columns(fmt, preference)
    if fmt != "alpaca":
        entry["tags"] = _tags(fmt)
    return {name: entry}
