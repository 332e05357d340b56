"""OpenAI's rate-limit headers: Go-style reset durations, Retry-After in whole seconds, raw ASGI pairs."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.limits import ALLOW, Decision, Quota, duration, rate_headers, retry_after


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-1, "0s"),
        (0.000001, "1ms"),  # a microsecond, the limiters' resolution
        (0.02, "20ms"),
        (0.0201, "21ms"),
        (0.999, "999ms"),
        (0.9991, "1s"),
        (1, "1s"),
        (8.64, "8.64s"),
        (12.000001, "12.001s"),
        (59.9995, "1m0s"),
        (360, "6m0s"),
        (361.5, "6m1.5s"),
        (3600, "1h0m0s"),
        (3723.5, "1h2m3.5s"),
    ],
)
def test_reset_durations_read_like_openais(seconds: float, text: str) -> None:
    assert duration(seconds) == text


GO_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def parse(text: str) -> float:
    match = GO_DURATION.match(text)
    assert match, text
    hours, minutes, secs, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0) + int(millis or 0) / 1000


@given(st.floats(min_value=0, max_value=10_000_000, allow_nan=False))
def test_a_duration_never_understates_and_is_within_a_millisecond(seconds: float) -> None:
    shown = parse(duration(seconds))
    assert seconds - 1e-6 <= shown <= seconds + 0.001 + 1e-6


@pytest.mark.parametrize(("seconds", "header"), [(0, 1), (0.2, 1), (1.0, 1), (1.0000001, 1), (11.99, 12), (12.5, 13)])
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: int) -> None:
    assert retry_after(seconds) == header


def test_allowed_request_gets_both_trios_and_no_retry_after() -> None:
    decision = Decision(True, requests=Quota(60, 59, 1.0), tokens=Quota(150_000, 149_000, 0.4))
    assert rate_headers(decision) == [
        (b"x-ratelimit-limit-requests", b"60"),
        (b"x-ratelimit-remaining-requests", b"59"),
        (b"x-ratelimit-reset-requests", b"1s"),
        (b"x-ratelimit-limit-tokens", b"150000"),
        (b"x-ratelimit-remaining-tokens", b"149000"),
        (b"x-ratelimit-reset-tokens", b"400ms"),
    ]


def test_refusal_adds_retry_after_unless_waiting_cannot_help() -> None:
    refused = Decision(False, retry_after=2.3, requests=Quota(5, 0, 60.0))
    assert rate_headers(refused) == [
        (b"x-ratelimit-limit-requests", b"5"),
        (b"x-ratelimit-remaining-requests", b"0"),
        (b"x-ratelimit-reset-requests", b"1m0s"),
        (b"retry-after", b"3"),
    ]
    too_large = Decision(False, retry_after=30, tokens=Quota(1000, 1000, 0), oversized=True)
    assert (b"retry-after", b"30") not in rate_headers(too_large)
    assert rate_headers(too_large)[-1] == (b"x-ratelimit-reset-tokens", b"0s")


def test_no_limits_no_headers() -> None:
    assert rate_headers(ALLOW) == []
