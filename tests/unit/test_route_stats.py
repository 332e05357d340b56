"""RouteStats: requests in flight, EWMA of time to first byte, requests per minute."""

from __future__ import annotations

from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routing.stats import EWMA_ALPHA, RouteStats
from tests.fakes.clock import FakeClock


def stats() -> tuple[RouteStats, FakeClock]:
    clock = FakeClock()
    return RouteStats(clock=clock), clock


# --- in flight ------------------------------------------------------------------------------------------------
def test_inflight_counts_starts_and_ends() -> None:
    s, _ = stats()
    assert s.inflight("p/m") == 0
    s.start("p/m", None)
    s.start("p/m", None)
    s.start("q/m", None)
    assert s.inflight("p/m") == 2
    assert s.inflight("q/m") == 1
    s.end("p/m")
    assert s.inflight("p/m") == 1
    assert s.inflight("q/m") == 1


def test_inflight_never_goes_negative() -> None:
    s, _ = stats()
    s.end("p/m")  # never started
    assert s.inflight("p/m") == 0
    s.start("p/m", None)
    s.end("p/m")
    s.end("p/m")
    s.end("p/m")
    assert s.inflight("p/m") == 0
    s.start("p/m", None)
    assert s.inflight("p/m") == 1  # an extra end earlier does not swallow a later start


@given(ops=st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=200))
@settings(max_examples=100, deadline=None)
def test_inflight_matches_a_clamped_counter(ops: list[tuple[bool, str]]) -> None:
    s, _ = stats()
    model = {"a": 0, "b": 0, "c": 0}
    for is_start, route in ops:
        if is_start:
            s.start(route, None)
            model[route] += 1
        else:
            s.end(route)
            model[route] = max(0, model[route] - 1)
        assert all(s.inflight(r) == n >= 0 for r, n in model.items())


# --- EWMA of time to first byte -------------------------------------------------------------------------------
def test_ttfb_of_an_unmeasured_route_is_zero() -> None:
    s, _ = stats()
    assert s.ttfb("p/m") == 0.0
    s.start("p/m", None)
    assert s.ttfb("p/m") == 0.0


def test_ewma_first_sample_is_taken_as_is_then_smoothed_with_alpha_03() -> None:
    assert EWMA_ALPHA == 0.3
    s, _ = stats()
    s.first_byte("p/m", 1.0)
    assert s.ttfb("p/m") == pytest.approx(1.0)
    s.first_byte("p/m", 2.0)
    assert s.ttfb("p/m") == pytest.approx(1.3)  # 1.0 + 0.3 * (2.0 - 1.0)
    s.first_byte("p/m", 0.0)
    assert s.ttfb("p/m") == pytest.approx(0.91)  # 1.3 + 0.3 * (0.0 - 1.3)
    assert s.ttfb("q/m") == 0.0


def test_ewma_converges_to_a_steady_value() -> None:
    s, _ = stats()
    s.first_byte("p/m", 10.0)
    for _ in range(60):
        s.first_byte("p/m", 0.5)
    assert s.ttfb("p/m") == pytest.approx(0.5, abs=1e-6)


@given(samples=st.lists(st.floats(min_value=0.0, max_value=600.0, allow_nan=False), min_size=1, max_size=50))
@settings(max_examples=100, deadline=None)
def test_ewma_matches_the_reference_fold(samples: list[float]) -> None:
    s, _ = stats()
    for x in samples:
        s.first_byte("p/m", x)
    expected = reduce(lambda acc, x: 0.7 * acc + 0.3 * x, samples[1:], samples[0])
    assert s.ttfb("p/m") == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert min(samples) - 1e-9 <= s.ttfb("p/m") <= max(samples) + 1e-9


# --- requests per minute --------------------------------------------------------------------------------------
def test_no_rpm_means_always_capacity() -> None:
    s, _ = stats()
    for _ in range(1000):
        s.start("p/m", None)
    assert s.has_capacity("p/m", None)


def test_unknown_route_has_capacity() -> None:
    s, _ = stats()
    assert s.has_capacity("p/m", 1)


def test_rpm_capacity_within_a_sliding_minute() -> None:
    s, clock = stats()
    s.start("p/m", 2)
    clock.advance(30)
    assert s.has_capacity("p/m", 2)
    s.start("p/m", 2)
    assert not s.has_capacity("p/m", 2)
    clock.advance(29.5)  # 59.5 s after the first start
    assert not s.has_capacity("p/m", 2)
    clock.advance(1.0)  # the first start left the window
    assert s.has_capacity("p/m", 2)
    s.start("p/m", 2)
    assert not s.has_capacity("p/m", 2)
    clock.advance(30)  # the second start left too
    assert s.has_capacity("p/m", 2)


def test_rpm_capacity_counts_starts_not_inflight() -> None:
    s, _ = stats()
    s.start("p/m", 2)
    s.end("p/m")
    s.start("p/m", 2)
    s.end("p/m")
    assert s.inflight("p/m") == 0
    assert not s.has_capacity("p/m", 2)


def test_rpm_is_per_route() -> None:
    s, _ = stats()
    s.start("p/m", 1)
    assert not s.has_capacity("p/m", 1)
    assert s.has_capacity("q/m", 1)


@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=40.0, allow_nan=False), min_size=1, max_size=40),
    rpm=st.integers(1, 5),
)
@settings(max_examples=100, deadline=None)
def test_rpm_matches_a_sliding_window_count(gaps: list[float], rpm: int) -> None:
    s, clock = stats()
    starts: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        recent = [t for t in starts if t > clock() - 60.0]
        assert s.has_capacity("p/m", rpm) == (len(recent) < rpm)
        if len(recent) < rpm:
            s.start("p/m", rpm)
            starts.append(clock())


def test_tpm_window_counts_estimated_tokens() -> None:
    clock = FakeClock()
    stats = RouteStats(clock)
    assert stats.has_capacity("r", None, tpm=1000, tokens=600)
    stats.start("r", None, tpm=1000, tokens=600)
    assert stats.has_capacity("r", None, tpm=1000, tokens=400)
    assert not stats.has_capacity("r", None, tpm=1000, tokens=401)
    clock.now += 60.5  # the first request left the window
    assert stats.has_capacity("r", None, tpm=1000, tokens=1000)
    assert stats.routes["r"].token_sum == 0


def test_a_request_larger_than_the_tpm_still_reaches_an_idle_route() -> None:
    stats = RouteStats(FakeClock())
    assert stats.has_capacity("r", None, tpm=100, tokens=5000)
    stats.start("r", None, tpm=100, tokens=5000)
    assert not stats.has_capacity("r", None, tpm=100, tokens=1)
