"""Training datasets: formats, row errors with their row and field, parsing edge cases, split and write."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.datasets import (
    DatasetError,
    RowError,
    Validated,
    dataset_info_entry,
    detect_format,
    split,
    validate,
    write_dataset,
)

ALPACA = {"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "Be terse."}
ALPACA_HISTORY = {"instruction": "And again?", "output": "hello", "history": [["Say hi", "hi"]]}
SHAREGPT = {
    "conversations": [
        {"from": "human", "value": "weather?"},
        {"from": "function_call", "value": '{"name": "weather"}'},
        {"from": "observation", "value": "sunny"},
        {"from": "gpt", "value": "It is sunny."},
    ],
    "system": "You are a bot.",
    "tools": "[]",
}
MESSAGES = {
    "messages": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "goodbye"},
    ]
}
ALPACA_PREF = {"instruction": "Capital of France?", "input": "", "chosen": "Paris", "rejected": "Lyon"}
SHAREGPT_PREF = {
    "conversations": [{"from": "human", "value": "Capital of France?"}],
    "chosen": {"from": "gpt", "value": "Paris"},
    "rejected": {"from": "gpt", "value": "Lyon"},
}
MESSAGES_PREF = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
    "chosen": {"role": "assistant", "content": "Paris"},
    "rejected": {"role": "assistant", "content": "Lyon"},
}


def jsonl(*rows: Any) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def errors_of(result: Validated) -> set[tuple[int, str]]:
    return {(e.row, e.field) for e in result.errors}


def with_turn(row: dict[str, Any], column: str, index: int, **changes: Any) -> dict[str, Any]:
    turns = [dict(t) for t in row[column]]
    turns[index] |= changes
    return row | {column: turns}


# --- each format is accepted ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "fmt", "preference"),
    [
        (ALPACA, "alpaca", False),
        (ALPACA_HISTORY, "alpaca", False),
        (SHAREGPT, "sharegpt", False),
        (MESSAGES, "messages", False),
        (ALPACA_PREF, "alpaca", True),
        (SHAREGPT_PREF, "sharegpt", True),
        (MESSAGES_PREF, "messages", True),
    ],
)
def test_each_format_is_valid_and_detected(row: dict[str, Any], fmt: str, preference: bool) -> None:
    result = validate(jsonl(row, row), "data.jsonl")
    assert result.ok, result.errors
    assert (result.format, result.preference, result.row_count) == (fmt, preference, 2)
    assert list(result.rows) == [row, row]
    assert validate(jsonl(row), "data.jsonl", fmt).ok


def test_preview_normalizes_to_turns() -> None:
    alpaca = validate(jsonl(ALPACA_HISTORY, ALPACA), "a.jsonl").preview
    assert [(t.role, t.content) for t in alpaca[0].turns] == [
        ("user", "Say hi"),
        ("assistant", "hi"),
        ("user", "And again?"),
        ("assistant", "hello"),
    ]
    assert [(t.role, t.content) for t in alpaca[1].turns][:2] == [
        ("system", "Be terse."),
        ("user", "Translate\nbonjour"),
    ]
    sharegpt = validate(jsonl(SHAREGPT), "s.jsonl").preview[0]
    assert [t.role for t in sharegpt.turns] == ["system", "user", "function_call", "tool", "assistant"]
    pref = validate(jsonl(MESSAGES_PREF), "m.jsonl").preview[0]
    assert [t.role for t in pref.turns] == ["system", "user"]
    assert (pref.chosen, pref.rejected) == ("Paris", "Lyon")


def test_preview_is_limited_and_clipped_and_stats_count_characters() -> None:
    long = {"instruction": "x" * 1000, "output": "y"}
    result = validate(jsonl(*[long] * 10), "a.jsonl", preview_rows=3, preview_chars=20)
    assert [p.row for p in result.preview] == [1, 2, 3]
    assert result.preview[0].turns[0].content == "x" * 20 + "…"
    assert result.rows[0]["instruction"] == "x" * 1000  # rows keep full texts
    assert (result.stats.avg_chars, result.stats.max_chars) == (1001.0, 1001)


def test_report_is_json_ready_and_leaves_rows_out() -> None:
    report = validate(jsonl(ALPACA, {"instruction": "q"}), "a.jsonl").report()
    assert json.loads(json.dumps(report))["errors"] == [
        {"row": 2, "field": "output", "message": report["errors"][0]["message"]}
    ]
    assert report["ok"] is False
    assert "rows" not in report


# --- each kind of problem names its row and field ------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"input": "x", "output": "y"}, "instruction"),
        ({"instruction": "", "output": "y"}, "instruction"),
        ({"instruction": "   ", "output": "y"}, "instruction"),
        ({"instruction": 3, "output": "y"}, "instruction"),
        ({"instruction": "q"}, "output"),
        ({"instruction": "q", "output": ["y"]}, "output"),
        ({"instruction": "q", "output": "y", "input": 5}, "input"),
        ({"instruction": "q", "output": "y", "system": {}}, "system"),
        ({"instruction": "q", "output": "y", "history": "no"}, "history"),
        ({"instruction": "q", "output": "y", "history": [["only one"]]}, "history[0]"),
        ({"instruction": "q", "output": "y", "history": [["a", "b"], ["c", ""]]}, "history[1][1]"),
    ],
)
def test_alpaca_errors(bad: dict[str, Any], field: str) -> None:
    result = validate(jsonl(ALPACA, ALPACA, bad), "a.jsonl")
    assert not result.ok
    assert errors_of(result) == {(3, field)}
    assert result.rows == ()  # refused as a whole


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"conversations": []}, "conversations"),
        ({"conversations": "hi"}, "conversations"),
        ({"conversations": ["hi", {"from": "gpt", "value": "a"}]}, "conversations[0]"),
        (with_turn(SHAREGPT, "conversations", 0, value=""), "conversations[0].value"),
        (with_turn(SHAREGPT, "conversations", 3, value=None), "conversations[3].value"),
        (with_turn(SHAREGPT, "conversations", 0, **{"from": "gpt"}), "conversations[0].from"),
        (with_turn(SHAREGPT, "conversations", 1, **{"from": "human"}), "conversations[1].from"),
        (with_turn(SHAREGPT, "conversations", 2, **{"from": "bot"}), "conversations[2].from"),
        (with_turn(SHAREGPT, "conversations", 2, **{"from": "system"}), "conversations[2].from"),
        (with_turn(SHAREGPT, "conversations", 2, **{"from": 7}), "conversations[2].from"),
        ({"conversations": SHAREGPT["conversations"][:3]}, "conversations"),  # ends on observation
        ({"conversations": [{"from": "system", "value": "s"}]}, "conversations"),
        (SHAREGPT | {"tools": [{"name": "f"}]}, "tools"),
    ],
)
def test_sharegpt_errors(bad: dict[str, Any], field: str) -> None:
    result = validate(jsonl(SHAREGPT, bad), "s.jsonl")
    assert errors_of(result) == {(2, field)}, result.errors


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"messages": None}, "messages"),
        (with_turn(MESSAGES, "messages", 2, content=""), "messages[2].content"),
        (with_turn(MESSAGES, "messages", 2, content=[{"type": "text", "text": "x"}]), "messages[2].content"),
        (with_turn(MESSAGES, "messages", 1, role="assistant"), "messages[1].role"),
        (with_turn(MESSAGES, "messages", 3, role="system"), "messages[3].role"),
        (with_turn(MESSAGES, "messages", 2, role="developer"), "messages[2].role"),
        ({"messages": MESSAGES["messages"][:4]}, "messages"),  # ends on user
        ({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}]}, "messages[1].role"),
    ],
)
def test_messages_errors(bad: dict[str, Any], field: str) -> None:
    result = validate(jsonl(MESSAGES, bad), "m.jsonl")
    assert errors_of(result) == {(2, field)}, result.errors


def test_messages_with_tool_turns_are_valid() -> None:
    row = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "Let me check."},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "It is sunny."},
        ]
    }
    assert validate(jsonl(row), "m.jsonl").ok


@pytest.mark.parametrize(
    ("bad", "fields"),
    [
        (ALPACA_PREF | {"rejected": "Paris"}, {"rejected"}),
        ({"instruction": "q", "chosen": "a"}, {"rejected"}),
        (ALPACA_PREF | {"chosen": ""}, {"chosen"}),
        (SHAREGPT_PREF | {"rejected": {"from": "gpt", "value": "Paris"}}, {"rejected.value"}),
        (SHAREGPT_PREF | {"chosen": {"from": "human", "value": "x"}}, {"chosen.from"}),
        (SHAREGPT_PREF | {"chosen": "Paris"}, {"chosen"}),
        (MESSAGES_PREF | {"rejected": {"role": "assistant", "content": "Paris"}}, {"rejected.content"}),
        (MESSAGES_PREF | {"rejected": {"role": "user", "content": ""}}, {"rejected.role", "rejected.content"}),
        ({k: v for k, v in MESSAGES_PREF.items() if k != "chosen"}, {"chosen"}),
        (MESSAGES_PREF | {"messages": MESSAGES["messages"]}, {"messages"}),  # prompt ends on assistant
    ],
)
def test_preference_errors(bad: dict[str, Any], fields: set[str]) -> None:
    good = {"instruction": ALPACA_PREF, "conversations": SHAREGPT_PREF, "messages": MESSAGES_PREF}
    first = next(row for key, row in good.items() if key in bad)
    result = validate(jsonl(first, first, bad), "p.jsonl")
    assert result.preference
    assert errors_of(result) == {(3, f) for f in fields}, result.errors


def test_sft_rows_in_preference_data_are_errors() -> None:
    result = validate(jsonl(ALPACA_PREF, ALPACA_PREF, ALPACA), "p.jsonl")
    assert result.preference
    assert errors_of(result) == {(3, "chosen"), (3, "rejected")}


def test_rows_of_another_format_are_errors() -> None:
    result = validate(jsonl(MESSAGES, MESSAGES, ALPACA), "m.jsonl")
    assert result.format == "messages"
    assert errors_of(result) == {(3, "messages")}


def test_declared_format_wins_over_detection() -> None:
    result = validate(jsonl(MESSAGES), "m.jsonl", "alpaca")
    assert result.format == "alpaca"
    assert errors_of(result) == {(1, "instruction"), (1, "output")}


def test_unknown_format_and_unrecognized_rows() -> None:
    assert errors_of(validate(jsonl(ALPACA), "a.jsonl", "csv")) == {(0, "format")}
    result = validate(jsonl({"prompt": "p", "completion": "c"}), "a.jsonl")
    assert (result.format, errors_of(result)) == (None, {(0, "format")})


def test_detect_format_takes_the_majority() -> None:
    assert detect_format([ALPACA, MESSAGES, MESSAGES, 3]) == "messages"
    assert detect_format([SHAREGPT, "x", None]) == "sharegpt"
    assert detect_format([1, [], {"x": 1}]) is None
    assert detect_format([]) is None


def test_errors_are_capped_and_counted() -> None:
    result = validate(jsonl(*[{"instruction": "q"}] * 250), "a.jsonl", max_errors=100)
    assert len(result.errors) == 100
    assert result.more_errors == 150
    assert [e.row for e in result.errors] == list(range(1, 101))
    silent = validate(jsonl({"instruction": "q"}), "a.jsonl", max_errors=0)
    assert (silent.ok, silent.errors, silent.more_errors, silent.rows) == (False, (), 1, ())


def test_row_error_reads_well() -> None:
    assert (
        str(RowError(3, "messages[2].content", "must not be empty")) == "row 3, messages[2].content: must not be empty"
    )
    assert str(RowError(0, "", "the file has no rows")) == "file, (row): the file has no rows"


# --- parsing -------------------------------------------------------------------------------------------------


def test_json_array_rows_are_numbered_by_index() -> None:
    data = json.dumps([ALPACA, {"instruction": "q"}, ALPACA], indent=2).encode()
    result = validate(data, "data.json")
    assert result.row_count == 3
    assert errors_of(result) == {(2, "output")}


def test_jsonl_rows_are_numbered_by_line_and_blank_lines_are_skipped() -> None:
    data = b"\n" + jsonl(ALPACA) + b"   \r\n" + jsonl({"instruction": "q"}) + b"\n\n"
    result = validate(data, "data.jsonl")
    assert result.row_count == 2
    assert errors_of(result) == {(4, "output")}


def test_a_json_file_may_hold_jsonl_or_one_object() -> None:
    assert validate(jsonl(ALPACA, ALPACA), "data.json").row_count == 2
    assert validate(json.dumps(ALPACA, indent=2).encode(), "data.json").row_count == 1
    assert validate(b"\xef\xbb\xbf" + jsonl(ALPACA), "bom.jsonl").ok


def test_a_jsonl_file_is_read_by_lines_even_if_it_starts_with_a_bracket() -> None:
    result = validate(json.dumps([ALPACA]).encode(), "data.jsonl")
    assert errors_of(result) == {(1, "")}


def test_broken_json_array_is_one_file_error() -> None:
    result = validate(b'[{"instruction": "q", "output": "a"},\n  {"instruction": ]', "data.json")
    assert errors_of(result) == {(0, "")}
    assert "line 2" in result.errors[0].message


def test_invalid_json_lines_and_non_objects_are_row_errors_in_line_order() -> None:
    data = jsonl(ALPACA) + b"{nope\n" + jsonl([1, 2], "text", None) + jsonl({"instruction": "q"})
    result = validate(data, "data.jsonl")
    assert [(e.row, e.field) for e in result.errors] == [(2, ""), (3, ""), (4, ""), (5, ""), (6, "output")]
    assert result.errors[0].message.startswith("invalid JSON")
    assert "an array" in result.errors[1].message


def test_invalid_utf8() -> None:
    line = jsonl(ALPACA) + b'{"instruction": "\xff\xfe", "output": "a"}\n'
    result = validate(line, "data.jsonl")
    assert errors_of(result) == {(2, "")}
    assert "UTF-8" in result.errors[0].message
    whole = validate(b'[\n{"instruction": "ok", "output": "a"},\n{"instruction": "\xc3\x28"}]', "data.json")
    assert errors_of(whole) == {(0, "")}
    assert "UTF-8" in whole.errors[0].message and "line 3" in whole.errors[0].message


def test_lone_surrogates_and_deep_nesting_are_errors_not_crashes() -> None:
    assert errors_of(validate(b'{"instruction": "\\ud800", "output": "a"}\n', "a.jsonl")) == {(1, "")}
    deep = b"[" * 100_000 + b"]" * 100_000
    assert errors_of(validate(deep, "deep.json")) == {(0, "")}
    assert errors_of(validate(deep + b"\n", "deep.jsonl")) == {(1, "")}


def test_empty_files() -> None:
    for data in (b"", b"\n\n  \n", b"[]"):
        result = validate(data, "empty.jsonl" if data != b"[]" else "empty.json")
        assert errors_of(result) == {(0, "")}, data
        assert result.errors[0].message == "the file has no rows"


def test_size_limits() -> None:
    data = jsonl(*[ALPACA] * 10)
    too_big = validate(data, "a.jsonl", max_bytes=len(data) - 1)
    assert errors_of(too_big) == {(0, "")}
    assert "limit" in too_big.errors[0].message
    assert validate(data, "a.jsonl", max_bytes=len(data)).ok
    assert errors_of(validate(data, "a.jsonl", max_rows=9)) == {(0, "")}
    assert validate(data, "a.jsonl", max_rows=10).ok
    as_array = json.dumps([ALPACA] * 10).encode()
    assert errors_of(validate(as_array, "a.json", max_rows=9)) == {(0, "")}


def test_huge_line() -> None:
    row = {"instruction": "q", "output": "z" * 5_000_000}
    result = validate(jsonl(ALPACA, row), "big.jsonl")
    assert result.ok
    assert result.stats.max_chars == 5_000_001
    assert len(result.preview[1].turns[1].content) == 501
    assert errors_of(validate(jsonl(row), "big.jsonl", max_bytes=1_000_000)) == {(0, "")}


def test_file_names_are_never_paths() -> None:
    assert validate(jsonl(ALPACA), "../../etc/passwd").ok
    assert validate(jsonl(ALPACA), "").ok


def test_ten_thousand_rows() -> None:
    rows = [MESSAGES | {"id": i} for i in range(10_000)]
    result = validate(jsonl(*rows), "big.jsonl")
    assert result.ok
    assert result.row_count == 10_000
    train, val = split(result.rows, 0.1, seed=1)
    assert (len(train), len(val)) == (9_000, 1_000)


# --- split ---------------------------------------------------------------------------------------------------


def test_split_is_deterministic_and_keeps_order() -> None:
    rows = list(range(100))
    train, val = split(rows, 0.2, seed=7)
    assert (train, val) == split(rows, 0.2, seed=7)
    assert split(rows, 0.2, seed=8) != (train, val)
    assert (len(train), len(val)) == (80, 20)
    assert train == sorted(train) and val == sorted(val)
    assert sorted(train + val) == rows


def test_split_edges() -> None:
    assert split([1, 2, 3], 0.0, seed=0) == ([1, 2, 3], [])
    assert split([1], 0.5, seed=0) == ([1], [])
    assert split([], 0.5, seed=0) == ([], [])
    assert [len(part) for part in split([1, 2], 0.01, seed=0)] == [1, 1]  # a tiny fraction still validates on one
    assert [len(part) for part in split([1, 2], 0.99, seed=0)] == [1, 1]  # and never trains on nothing
    for fraction in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match="validation_fraction"):
            split([1, 2], fraction, seed=0)


@given(st.lists(st.integers(), max_size=300), st.floats(min_value=0, max_value=0.99), st.integers())
def test_split_partitions(rows: list[int], fraction: float, seed: int) -> None:
    indexed = list(enumerate(rows))
    train, val = split(indexed, fraction, seed)
    assert sorted(train + val) == indexed
    assert split(indexed, fraction, seed) == (train, val)
    if len(rows) >= 2 and fraction > 0:
        assert train and val
        assert abs(len(val) - len(rows) * fraction) <= 1


# --- write_dataset and dataset_info_entry --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "fmt", "preference", "written"),
    [
        (
            ALPACA_HISTORY | {"extra": 1},
            "alpaca",
            False,
            {"instruction": "And again?", "input": "", "system": "", "history": [["Say hi", "hi"]], "output": "hello"},
        ),
        (
            ALPACA_PREF,
            "alpaca",
            True,
            {"instruction": "Capital of France?", "input": "", "system": "", "history": [], "chosen": "Paris"}
            | {"rejected": "Lyon"},
        ),
        (SHAREGPT_PREF, "sharegpt", True, SHAREGPT_PREF | {"system": "", "tools": ""}),
        (
            with_turn(MESSAGES, "messages", 2, name="bot", tool_calls=[]) | {"id": "x"},
            "messages",
            False,
            MESSAGES,
        ),
        (MESSAGES_PREF, "messages", True, MESSAGES_PREF),
    ],
)
def test_write_dataset_writes_canonical_jsonl(
    tmp_path: Path, row: dict[str, Any], fmt: str, preference: bool, written: dict[str, Any]
) -> None:
    path = write_dataset(tmp_path / "data", "train-1", [row, row], fmt, preference=preference)
    assert path == tmp_path / "data" / "train-1.jsonl"
    lines = path.read_bytes().splitlines()
    assert [json.loads(line) for line in lines] == [written, written]
    assert [p.name for p in path.parent.iterdir()] == ["train-1.jsonl"]  # no temporary file left
    assert validate(path.read_bytes(), path.name, fmt).ok


def test_write_dataset_refuses_bad_names_formats_and_rows(tmp_path: Path) -> None:
    for name in ("../x", "a/b", ".hidden", "", "a.b", "x" * 101):
        with pytest.raises(DatasetError, match="name"):
            write_dataset(tmp_path, name, [ALPACA], "alpaca", preference=False)
    with pytest.raises(DatasetError, match="format"):
        write_dataset(tmp_path, "ok", [ALPACA], "csv", preference=False)
    with pytest.raises(DatasetError, match=r"row 2, output"):
        write_dataset(tmp_path, "ok", [ALPACA, {"instruction": "q"}], "alpaca", preference=False)
    assert list(tmp_path.iterdir()) == []


def test_dataset_info_entries() -> None:
    assert dataset_info_entry("sft", "sft.jsonl", "alpaca", preference=False) == {
        "sft": {
            "file_name": "sft.jsonl",
            "formatting": "alpaca",
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "system": "system",
                "history": "history",
                "response": "output",
            },
        }
    }
    dpo = dataset_info_entry("dpo", "dpo.jsonl", "alpaca", preference=True)["dpo"]
    assert dpo["ranking"] is True
    assert dpo["columns"]["chosen"] == "chosen" and dpo["columns"]["rejected"] == "rejected"
    assert "response" not in dpo["columns"]
    share = dataset_info_entry("s", "s.jsonl", "sharegpt", preference=False)["s"]
    assert share["formatting"] == "sharegpt"
    assert share["columns"] == {"messages": "conversations", "system": "system", "tools": "tools"}
    assert share["tags"]["role_tag"] == "from" and share["tags"]["content_tag"] == "value"
    chat = dataset_info_entry("m", "m.jsonl", "messages", preference=True)["m"]
    assert chat["formatting"] == "sharegpt" and chat["ranking"] is True
    assert chat["columns"] == {"messages": "messages", "chosen": "chosen", "rejected": "rejected"}
    assert chat["tags"] == {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "observation_tag": "tool",
        "system_tag": "system",
    }


def test_dataset_info_entry_refuses_path_like_file_names() -> None:
    for file_name in ("../x.jsonl", "/etc/passwd", "a/b.jsonl", "..jsonl", ""):
        with pytest.raises(DatasetError):
            dataset_info_entry("ok", file_name, "alpaca", preference=False)


# --- properties: anything in, a result out -------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        *("instruction", "input", "output", "system", "history", "conversations", "messages", "chosen", "rejected"),
        *("from", "value", "role", "content", "tools"),
    ]
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
ROLES = st.sampled_from(["human", "gpt", "system", "user", "assistant", "tool", "observation", "function_call"])
JSON_VALUES = st.recursive(
    SCALARS | ROLES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=4), inner, max_size=5),
    max_leaves=20,
)


def check_result(result: Validated) -> None:
    assert result.ok == (not result.errors)
    assert not result.ok or (result.rows and result.format)
    assert all(e.row >= 0 and isinstance(e.field, str) and e.message for e in result.errors)


@settings(max_examples=300, deadline=None)
@given(st.lists(JSON_VALUES, max_size=6), st.sampled_from([None, "alpaca", "sharegpt", "messages"]))
def test_arbitrary_json_rows_never_raise(rows: list[Any], fmt: str | None) -> None:
    for data, name in ((jsonl(*rows), "x.jsonl"), (json.dumps(rows).encode(), "x.json")):
        result = validate(data, name, fmt)
        check_result(result)
        if result.ok:
            assert result.format is not None
            write_dataset_round_trip(result)


def write_dataset_round_trip(result: Validated) -> None:
    assert result.format is not None
    with tempfile.TemporaryDirectory() as tmp:
        path = write_dataset(Path(tmp), "d", result.rows, result.format, preference=result.preference)
        again = validate(path.read_bytes(), path.name, result.format)
    assert (again.ok, again.row_count, again.preference) == (True, result.row_count, result.preference)
    assert again.preview == result.preview


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["x.json", "x.jsonl"]))
def test_arbitrary_bytes_never_raise(data: bytes, name: str) -> None:
    check_result(validate(data, name))


TEXT = st.text(min_size=1, max_size=30).filter(str.strip)


@st.composite
def valid_rows(draw: st.DrawFn) -> tuple[str, bool, list[dict[str, Any]]]:
    fmt, preference = draw(st.sampled_from(["alpaca", "sharegpt", "messages"])), draw(st.booleans())
    return fmt, preference, draw(st.lists(valid_row(fmt, preference), min_size=1, max_size=5))


@st.composite
def valid_row(draw: st.DrawFn, fmt: str, preference: bool) -> dict[str, Any]:
    pairs = draw(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=3))
    answers = draw(st.lists(TEXT, min_size=2, max_size=2, unique=True))
    if fmt == "alpaca":
        row = {"instruction": pairs[-1][0], "history": [list(p) for p in pairs[:-1]]}
        return row | ({"chosen": answers[0], "rejected": answers[1]} if preference else {"output": pairs[-1][1]})
    role, content, user, bot = (
        ("from", "value", "human", "gpt") if fmt == "sharegpt" else ("role", "content", "user", "assistant")
    )
    turns = [{role: who, content: text} for pair in pairs for who, text in zip((user, bot), pair, strict=True)]
    column = "conversations" if fmt == "sharegpt" else "messages"
    if not preference:
        return {column: turns}
    return {
        column: turns[:-1],
        "chosen": {role: bot, content: answers[0]},
        "rejected": {role: bot, content: answers[1]},
    }


@settings(max_examples=200, deadline=None)
@given(valid_rows())
def test_valid_rows_are_accepted_and_survive_a_round_trip(case: tuple[str, bool, list[dict[str, Any]]]) -> None:
    fmt, preference, rows = case
    result = validate(jsonl(*rows), "x.jsonl")
    assert (result.ok, result.format, result.preference) == (True, fmt, preference), result.errors
    write_dataset_round_trip(result)
