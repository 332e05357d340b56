"""Pure parts of the storage layer: URL resolution and parsing, partition naming, row validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.store.errors import DatabaseError
from gateway.store.ledger import _columns, month_of, partition_name
from gateway.store.urls import URL_ENV, parse_url, resolve_url, safe_url

SECRET = "pw-7f3a9c1e5b2d"


def test_explicit_url_beats_env_which_beats_embedded() -> None:
    env = {URL_ENV: "postgresql://env@db/x"}
    assert resolve_url("postgresql://cfg@db/x", env) == "postgresql://cfg@db/x"
    assert resolve_url(None, env) == "postgresql://env@db/x"
    assert resolve_url(None, {}) is None
    assert resolve_url("", {URL_ENV: ""}) is None


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg", "postgresql+asyncpg"])
def test_postgres_urls_are_switched_to_asyncpg(scheme: str) -> None:
    url = parse_url(f"{scheme}://app:{SECRET}@db.internal:6543/ledger")
    assert url.drivername == "postgresql+asyncpg"
    assert (url.host, url.port, url.database, url.password) == ("db.internal", 6543, "ledger", SECRET)
    assert SECRET not in safe_url(url)
    assert safe_url(url) == "postgresql+asyncpg://app:***@db.internal:6543/ledger"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"mysql://app:{SECRET}@db/x", "must be a PostgreSQL URL"),
        (f"sqlite:///{SECRET}.db", "must be a PostgreSQL URL"),
        (f"postgresql://app:{SECRET}@db:notaport/x", "not a valid URL"),
        (f"app:{SECRET} at db", "not a valid URL"),
    ],
)
def test_bad_urls_are_refused_without_repeating_the_password(raw: str, expected: str) -> None:
    with pytest.raises(DatabaseError, match=expected) as info:
        parse_url(raw)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None


def test_month_of_uses_utc_and_refuses_naive_times() -> None:
    assert month_of(datetime(2025, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)) == (2025, 1)
    assert month_of(datetime(2025, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))) == (2025, 2)
    assert month_of(datetime(2025, 2, 28, 23, 30, tzinfo=timezone(timedelta(hours=-1)))) == (2025, 3)
    with pytest.raises(ValueError, match="timezone-aware"):
        month_of(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        month_of("2025-01-01T00:00:00Z")  # type: ignore[arg-type]
    assert partition_name((2025, 3)) == "usage_ledger_2025_03"


def _row(**fields: object) -> dict[str, object]:
    return {"request_id": "r", "attempt": 0, "ts": datetime(2025, 1, 1, tzinfo=UTC), "status": "ok", **fields}


def test_rows_get_defaults_and_json_logs() -> None:
    columns = _columns([_row(request_log={"prompt": "hi"}, cost=0.5), _row()])
    assert columns["currency"] == ["USD", "USD"]
    assert columns["prompt_tokens"] == [0, 0]
    assert columns["stream"] == [False, False]
    assert columns["provider"] == [None, None]
    assert columns["request_log"] == ['{"prompt":"hi"}', None]
    assert [str(c) for c in columns["cost"]] == ["0.5", "0"]
    assert _columns([_row(prompt_tokens=None, currency=None)])["prompt_tokens"] == [0]


def test_rows_with_unknown_or_missing_fields_are_refused() -> None:
    with pytest.raises(ValueError, match=r"usage row 1: unknown fields \['tokens'\]"):
        _columns([_row(), _row(tokens=3)])
    row = _row()
    del row["status"]
    with pytest.raises(ValueError, match=r"missing fields \['status'\]"):
        _columns([row])
