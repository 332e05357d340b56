"""Budgets per API key and per team: what may be spent per day, per month or in total, in-process or in Redis.

Before the upstream call a request reserves its worst-case cost on every scope that applies (key, team) at
once, or on none; after it, settle() swaps the reservation for the real cost, or release() drops it. Every
reservation has a deadline (`hold` seconds, longer than any request may last): one left behind by a process
that died mid-request stops counting once it passes, swept by the next operation on that scope, so a crash
never shrinks a budget for good. A period's counters are named after the UTC time (`2026-11-29`, `2026-11`,
`all`), so a new period starts from zero by itself. Money is counted in integer units of 1e-10 (exact for
prices per 1M tokens to 4 decimals) and is a Decimal at the edges.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import Literal, Protocol

Period = Literal["daily", "monthly", "total"]
UNIT = Decimal("1e-10")
DEFAULT_HOLD = 900.0
"""Seconds a reservation counts at most: beyond the longest request (upstream total timeout 600 s)."""


@dataclass(frozen=True, slots=True)
class BudgetScope:
    """A budget: `name` is unique across scopes (`key:crm-app`, `team:ml`); `limit` is per period."""

    name: str
    limit: Decimal
    period: Period = "monthly"
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class Hold:
    """One scope's part of a reservation: the period it was taken in, and when that period's counters go."""

    name: str
    period: str
    ends: float | None


@dataclass(frozen=True, slots=True)
class Reservation:
    """A request's worst-case cost held on every scope; settle or release it exactly once."""

    id: str
    amount: Decimal
    holds: tuple[Hold, ...]


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    spent: Decimal
    reserved: Decimal


class BudgetExceeded(Exception):
    """The request's worst-case cost does not fit a scope's budget: the caller answers 429 insufficient_quota."""

    def __init__(self, scope: BudgetScope, spent: Decimal, reserved: Decimal, amount: Decimal) -> None:
        super().__init__(
            f"budget {scope.name} exhausted: {spent} {scope.currency} spent and {reserved} reserved "
            f"of {scope.limit} this period ({scope.period}); the request may cost up to {amount}"
        )
        self.scope = scope
        self.spent = spent
        self.reserved = reserved


def to_units(amount: Decimal, rounding: str = ROUND_HALF_EVEN) -> int:
    return int((amount / UNIT).to_integral_value(rounding=rounding))


def from_units(units: int) -> Decimal:
    return (Decimal(units) * UNIT).normalize()


def period_key(period: Period, now: float) -> str:
    """The name of the period `now` (epoch seconds) falls in, in UTC."""
    if period == "total":
        return "all"
    day = datetime.fromtimestamp(now, UTC)
    return day.strftime("%Y-%m-%d" if period == "daily" else "%Y-%m")


def period_end(period: Period, now: float) -> float | None:
    """When the period `now` falls in ends (epoch seconds); None for a total budget."""
    if period == "total":
        return None
    start = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return start.timestamp() + 86_400
    month = start.replace(day=1)
    following = (
        month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)
    )
    return following.timestamp()


def check_amount(amount: Decimal) -> None:
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"a cost must be a finite amount of at least 0, not {amount}")


class BudgetStore(Protocol):
    async def reserve(self, scopes: Sequence[BudgetScope], amount: Decimal) -> Reservation:
        """Hold `amount` on every scope, or raise BudgetExceeded (nothing held) when any would overrun."""
        ...

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        """Drop the reservation and add the real cost (lower or higher than reserved) to each scope."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """Drop the reservation; nothing was spent."""
        ...

    async def reconcile(self, scope: BudgetScope, spent: Decimal) -> None:
        """Set the current period's spend (from the ledger at start-up); reservations are kept."""
        ...

    async def usage(self, scope: BudgetScope) -> BudgetUsage:
        """The current period's spend and live reservations."""
        ...


@dataclass(slots=True)
class Ledger:
    """One scope's current period in memory; reservations in deadline order (a constant hold keeps it)."""

    period: str
    spent: int = 0
    reserved: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)

    def sweep(self, now: float) -> None:
        while self.holds:
            first = next(iter(self.holds))
            if self.holds[first][1] > now:
                return
            self.drop(first)

    def drop(self, rid: str) -> None:
        units, _ = self.holds.pop(rid, (0, 0.0))
        self.reserved -= units


class MemoryBudgets:
    """Budgets of this process alone (no Redis configured); `clock` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.time, hold: float = DEFAULT_HOLD) -> None:
        self.clock = clock
        self.hold = hold
        self.ledgers: dict[str, Ledger] = {}
        self.serial = 0

    def ledger(self, scope: BudgetScope, now: float) -> Ledger:
        """The scope's ledger for the current period; a new period replaces the old one."""
        key = period_key(scope.period, now)
        found = self.ledgers.get(scope.name)
        if found is None or found.period != key:
            found = self.ledgers[scope.name] = Ledger(key)
        found.sweep(now)
        return found

    async def reserve(self, scopes: Sequence[BudgetScope], amount: Decimal) -> Reservation:
        check_amount(amount)
        now, units = self.clock(), to_units(amount, ROUND_CEILING)
        ledgers = [self.ledger(scope, now) for scope in scopes]
        for scope, led in zip(scopes, ledgers, strict=True):
            if led.spent + led.reserved + units > to_units(scope.limit, ROUND_HALF_EVEN):
                raise BudgetExceeded(scope, from_units(led.spent), from_units(led.reserved), amount)
        self.serial += 1
        rid = f"m{self.serial}"
        for led in ledgers:
            led.holds[rid] = (units, now + self.hold)
            led.reserved += units
        holds = tuple(
            Hold(s.name, led.period, period_end(s.period, now)) for s, led in zip(scopes, ledgers, strict=True)
        )
        return Reservation(rid, from_units(units), holds)

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        check_amount(actual)
        units = to_units(actual)
        for hold in reservation.holds:
            led = self.ledgers.get(hold.name)
            if led is not None and led.period == hold.period:  # else the period is over: nothing left to count
                led.drop(reservation.id)
                led.spent += units

    async def release(self, reservation: Reservation) -> None:
        await self.settle(reservation, Decimal(0))

    async def reconcile(self, scope: BudgetScope, spent: Decimal) -> None:
        check_amount(spent)
        self.ledger(scope, self.clock()).spent = to_units(spent)

    async def usage(self, scope: BudgetScope) -> BudgetUsage:
        led = self.ledger(scope, self.clock())
        return BudgetUsage(from_units(led.spent), from_units(led.reserved))
