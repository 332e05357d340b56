"""MemoryHealth, the per-route circuit breaker: healthy -> cooling -> half-open -> healthy (or cooling again)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.model import CooldownConfig
from gateway.routing.health import Health, HealthStore, MemoryHealth
from tests.fakes.clock import FakeClock

CFG = CooldownConfig(failures=3, window=60.0, duration=30.0)


def store() -> tuple[MemoryHealth, FakeClock]:
    clock = FakeClock()
    return MemoryHealth(clock=clock), clock


async def cool(health: MemoryHealth, route: str = "p/m") -> None:
    await health.failure(route, CFG, hard=True)


def test_memory_health_is_a_health_store() -> None:
    health: HealthStore = MemoryHealth()
    assert health.health("never/seen") is Health.HEALTHY


def test_unknown_route_is_healthy_and_available() -> None:
    health, _ = store()
    assert health.health("p/m") is Health.HEALTHY
    assert health.available("p/m")
    assert health.cooling_for("p/m") == 0.0
    assert health.snapshot() == {}


async def test_n_failures_within_the_window_trip_the_cooldown() -> None:
    health, clock = store()
    for _ in range(CFG.failures - 1):
        await health.failure("p/m", CFG, hard=False)
        clock.advance(20)
        assert health.health("p/m") is Health.HEALTHY
        assert health.available("p/m")
    await health.failure("p/m", CFG, hard=False)  # the third, 40 s after the first
    assert health.health("p/m") is Health.COOLING
    assert not health.available("p/m")
    assert health.cooling_for("p/m") == CFG.duration


async def test_failures_spread_beyond_the_window_do_not_trip() -> None:
    health, clock = store()
    for _ in range(10):
        await health.failure("p/m", CFG, hard=False)
        clock.advance(CFG.window / 2 + 0.5)  # never three within 60 s
    assert health.health("p/m") is Health.HEALTHY
    assert health.available("p/m")


async def test_failures_count_per_route() -> None:
    health, _ = store()
    await health.failure("a/m", CFG, hard=False)
    await health.failure("b/m", CFG, hard=False)
    await health.failure("c/m", CFG, hard=False)
    assert all(health.health(r) is Health.HEALTHY for r in ("a/m", "b/m", "c/m"))


async def test_window_edge() -> None:
    health, clock = store()
    await health.failure("p/m", CFG, hard=False)
    clock.advance(30)
    await health.failure("p/m", CFG, hard=False)
    clock.advance(30.5)  # the first is now out of the window
    await health.failure("p/m", CFG, hard=False)
    assert health.health("p/m") is Health.HEALTHY
    clock.advance(29)  # the last three (30, 60.5, 89.5) fit in 60 s
    await health.failure("p/m", CFG, hard=False)
    assert health.health("p/m") is Health.COOLING


async def test_a_hard_failure_trips_at_once() -> None:
    health, _ = store()
    await health.failure("p/m", CFG, hard=True)
    assert health.health("p/m") is Health.COOLING
    assert not health.available("p/m")
    assert health.cooling_for("p/m") == CFG.duration


async def test_cooling_becomes_half_open_after_the_duration() -> None:
    health, clock = store()
    await cool(health)
    clock.advance(CFG.duration - 0.1)
    assert health.health("p/m") is Health.COOLING
    assert not health.available("p/m")
    assert health.cooling_for("p/m") > 0
    clock.advance(0.1)
    assert health.health("p/m") is Health.HALF_OPEN
    assert health.available("p/m")
    assert health.cooling_for("p/m") == 0.0


async def test_half_open_allows_exactly_one_probe_in_flight() -> None:
    health, clock = store()
    await cool(health)
    clock.advance(CFG.duration)
    assert health.available("p/m")
    health.begin("p/m")
    assert health.health("p/m") is Health.HALF_OPEN
    assert not health.available("p/m")
    clock.advance(3600)  # however long the probe takes
    assert not health.available("p/m")


def test_begin_on_a_healthy_route_does_not_block_it() -> None:
    health, _ = store()
    health.begin("p/m")
    health.begin("p/m")
    assert health.available("p/m")
    assert health.health("p/m") is Health.HEALTHY


async def test_begin_on_a_healthy_route_with_counted_failures_does_not_block_it() -> None:
    health, _ = store()
    await health.failure("p/m", CFG, hard=False)
    health.begin("p/m")
    assert health.available("p/m")


async def test_probe_success_restores_healthy() -> None:
    health, clock = store()
    await cool(health)
    clock.advance(CFG.duration)
    health.begin("p/m")
    await health.success("p/m")
    assert health.health("p/m") is Health.HEALTHY
    assert health.available("p/m")
    assert health.cooling_for("p/m") == 0.0
    assert "p/m" not in health.snapshot()
    # and it needs the full count again to trip
    await health.failure("p/m", CFG, hard=False)
    assert health.health("p/m") is Health.HEALTHY


async def test_probe_failure_cools_again_at_once() -> None:
    health, clock = store()
    await cool(health)
    clock.advance(CFG.duration)
    health.begin("p/m")
    await health.failure("p/m", CFG, hard=False)  # one soft failure is enough in half-open
    assert health.health("p/m") is Health.COOLING
    assert not health.available("p/m")
    assert health.cooling_for("p/m") == CFG.duration
    clock.advance(CFG.duration)
    assert health.health("p/m") is Health.HALF_OPEN
    assert health.available("p/m")  # the probe slot was freed by the new cooldown


async def test_cooling_for_counts_down() -> None:
    health, clock = store()
    await cool(health)
    assert health.cooling_for("p/m") == 30.0
    clock.advance(12.5)
    assert health.cooling_for("p/m") == 17.5
    clock.advance(100)
    assert health.cooling_for("p/m") == 0.0


async def test_cooling_for_a_route_with_failures_but_no_cooldown_is_zero() -> None:
    health, _ = store()
    await health.failure("p/m", CFG, hard=False)
    assert health.cooling_for("p/m") == 0.0


async def test_snapshot_shows_routes_that_are_not_healthy() -> None:
    health, clock = store()
    await cool(health, "a/m")
    clock.advance(20)
    await cool(health, "b/m")
    clock.advance(15)  # a: half-open (35 s > 30 s); b: cooling for 15 s more
    snap = health.snapshot()
    assert snap["a/m"] is Health.HALF_OPEN
    assert snap["b/m"] is Health.COOLING
    assert "c/m" not in snap
    await health.success("a/m")
    assert "a/m" not in health.snapshot()


async def test_custom_cooldown_config() -> None:
    health, clock = store()
    cfg = CooldownConfig(failures=1, window=5.0, duration=2.0)
    await health.failure("p/m", cfg, hard=False)
    assert health.health("p/m") is Health.COOLING
    assert health.cooling_for("p/m") == 2.0
    clock.advance(2.0)
    assert health.health("p/m") is Health.HALF_OPEN


@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=100.0, allow_nan=False), min_size=1, max_size=30),
    failures=st.integers(1, 5),
    window=st.floats(min_value=1.0, max_value=120.0, allow_nan=False),
)
@settings(max_examples=200, deadline=None)
async def test_first_trip_matches_a_sliding_window_count(gaps: list[float], failures: int, window: float) -> None:
    """Until the first trip, the route cools exactly when `failures` failures fall within `window` seconds."""
    health, clock = store()
    cfg = CooldownConfig(failures=failures, window=window, duration=1e9)
    times: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        times.append(clock())
        await health.failure("p/m", cfg, hard=False)
        recent = [t for t in times if t >= clock() - window]
        expected = Health.COOLING if len(recent) >= failures else Health.HEALTHY
        assert health.health("p/m") is expected
        if expected is Health.COOLING:
            break
