"""Reading the usage ledger back: totals grouped by day, hour, alias, provider, key, team or model, and what a
budget scope spent in its current period. SQLAlchemy Core with bound parameters only; group columns come from a
fixed table, never from the caller's text."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.limits.budget import BudgetScope
from gateway.store.schema import usage_ledger as L

GROUPS: Mapping[str, ColumnElement[Any]] = MappingProxyType(
    {
        "alias": L.c.alias,
        "provider": L.c.provider,
        "model": L.c.upstream_model,
        "key": L.c.key_name,
        "team": L.c.team,
        "user": L.c.user_name,
        "status": L.c.status,
        "day": func.to_char(func.date_trunc("day", func.timezone("UTC", L.c.ts)), "YYYY-MM-DD"),
        "hour": func.to_char(func.date_trunc("hour", func.timezone("UTC", L.c.ts)), 'YYYY-MM-DD"T"HH24:00'),
    }
)
DURATION = re.compile(r"^(\d{1,6})([mhdw])$")
UNITS = MappingProxyType({"m": "minutes", "h": "hours", "d": "days", "w": "weeks"})


def parse_since(value: str, now: datetime) -> datetime:
    """`7d`, `24h`, `30m`, `2w` before now, or an ISO date/time (UTC when it names no zone)."""
    match = DURATION.match(value.strip())
    if match:
        return now - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"'{value}' is neither a duration like 7d/24h/30m nor an ISO date") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def period_start(scope: BudgetScope, now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if scope.period == "daily":
        return day
    if scope.period == "monthly":
        return day.replace(day=1)
    return datetime(1970, 1, 1, tzinfo=UTC)


async def spent_since(engine: AsyncEngine, scope: BudgetScope, now: datetime) -> Decimal:
    """What a budget scope (`key:NAME` or `team:NAME`) spent in its currency since its period began."""
    kind, _, name = scope.name.partition(":")
    column = L.c.key_name if kind == "key" else L.c.team
    query = select(func.coalesce(func.sum(L.c.cost), 0)).where(
        column == name, L.c.currency == scope.currency, L.c.ts >= period_start(scope, now)
    )
    async with engine.connect() as conn:
        return Decimal((await conn.execute(query)).scalar_one())


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose usage a report may show: everything, one team's, or some keys' (a member's own)."""

    team: str | None = None
    keys: tuple[str, ...] | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        out = [L.c.team == self.team] if self.team is not None else []
        if self.keys is not None:
            out.append(L.c.key_name.in_(self.keys) if self.keys else literal(False))
        return out


async def usage_report(
    engine: AsyncEngine, since: datetime, by: list[str], until: datetime | None = None, scope: Scope | None = None
) -> list[dict[str, Any]]:
    """Requests, errors, tokens, cost and latency percentiles per group (and currency), largest cost first."""
    unknown = [name for name in by if name not in GROUPS]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    groups = [GROUPS[name].label(name) for name in by]
    conditions = [L.c.ts >= since] + ([L.c.ts < until] if until is not None else [])
    conditions += (scope or Scope()).conditions()
    query = (
        select(
            *groups,
            L.c.currency.label("currency"),
            func.count(func.distinct(L.c.request_id)).label("requests"),
            func.count().label("attempts"),
            func.sum(case((L.c.status != literal("ok"), 1), else_=0)).label("errors"),
            func.sum(L.c.prompt_tokens).label("prompt_tokens"),
            func.sum(L.c.cached_tokens).label("cached_tokens"),
            func.sum(L.c.completion_tokens).label("completion_tokens"),
            func.sum(L.c.reasoning_tokens).label("reasoning_tokens"),
            func.sum(case((L.c.estimated, 1), else_=0)).label("estimated_rows"),
            func.sum(L.c.cost).label("cost"),
            func.percentile_cont(0.5).within_group(L.c.latency_ms).label("latency_p50_ms"),
            func.percentile_cont(0.95).within_group(L.c.latency_ms).label("latency_p95_ms"),
        )
        .where(and_(*conditions))
        .group_by(*groups, L.c.currency)
        .order_by(func.sum(L.c.cost).desc(), *groups)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [_clean(dict(row)) for row in rows]


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    for name in ("requests", "attempts", "errors", "prompt_tokens", "cached_tokens", "completion_tokens"):
        row[name] = int(row[name] or 0)
    row["reasoning_tokens"] = int(row["reasoning_tokens"] or 0)
    row["estimated_rows"] = int(row["estimated_rows"] or 0)
    row["cost"] = str(Decimal(row["cost"] or 0).normalize() if row["cost"] else Decimal(0))
    for name in ("latency_p50_ms", "latency_p95_ms"):
        row[name] = round(float(row[name]), 2) if row[name] is not None else None
    row["currency"] = (row["currency"] or "").strip()
    return row
