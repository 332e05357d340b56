"""Login throttling with an injected clock (no sleeps): per-user and per-IP lockouts, windows, bounds."""

from __future__ import annotations

import types
from collections.abc import Callable

import pytest

from gateway.admin.security import passwords, throttle, tokens
from gateway.admin.security.throttle import LoginThrottle, ip_key, user_key

IP = "198.51.100.7"


class Clock:
    """A settable monotonic clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(clock: Clock) -> LoginThrottle:
    return LoginThrottle(max_failures=5, window=300, lockout=900, clock=clock)


def fail(guard: LoginThrottle, times: int, username: str = "admin", ip: str = IP) -> None:
    for _ in range(times):
        guard.failure(username, ip)


def test_fresh_identity_is_allowed(guard: LoginThrottle) -> None:
    assert guard.check("admin", IP) == 0.0


def test_fifth_failure_locks_the_user_for_the_lockout(guard: LoginThrottle, clock: Clock) -> None:
    fail(guard, 4)
    assert guard.check("admin", IP) == 0.0
    fail(guard, 1)
    assert guard.check("admin", IP) == 900.0
    clock.now += 899
    assert guard.check("admin", IP) == pytest.approx(1.0)
    clock.now += 1
    assert guard.check("admin", IP) == 0.0


def test_a_user_lockout_applies_from_every_ip(guard: LoginThrottle) -> None:
    for n in range(5):
        guard.failure("admin", f"203.0.113.{n}")
    assert guard.check("admin", "192.0.2.99") == 900.0
    assert guard.check("someone-else", "192.0.2.99") == 0.0


def test_failures_spread_wider_than_the_window_do_not_lock(guard: LoginThrottle, clock: Clock) -> None:
    for _ in range(10):
        fail(guard, 1)
        clock.now += 100
    assert guard.check("admin", IP) == 0.0


def test_the_window_slides(guard: LoginThrottle, clock: Clock) -> None:
    start = clock.now
    fail(guard, 4)  # at t=0
    clock.now = start + 301
    fail(guard, 1)  # the four old ones have left the window
    assert guard.check("admin", IP) == 0.0
    clock.now = start + 302
    fail(guard, 3)
    assert guard.check("admin", IP) == 0.0
    fail(guard, 1)  # five within the last 300 s
    assert guard.check("admin", IP) == 900.0


def test_failures_during_a_lockout_do_not_extend_it(guard: LoginThrottle, clock: Clock) -> None:
    fail(guard, 5)
    clock.now += 600
    fail(guard, 10)
    assert guard.check("admin", IP) == pytest.approx(300.0)


def test_after_a_lockout_the_count_starts_again(guard: LoginThrottle, clock: Clock) -> None:
    fail(guard, 5)
    clock.now += 900
    fail(guard, 4)
    assert guard.check("admin", IP) == 0.0
    fail(guard, 1)
    assert guard.check("admin", IP) == 900.0


def test_success_clears_the_users_failures(guard: LoginThrottle) -> None:
    fail(guard, 4)
    guard.success("admin", IP)
    fail(guard, 4)
    assert guard.check("admin", IP) == 0.0


def test_success_does_not_clear_the_ips_failures(guard: LoginThrottle) -> None:
    for n in range(19):
        guard.failure(f"user-{n}", IP)
    guard.success("admin", IP)
    guard.failure("user-19", IP)
    assert guard.check("brand-new-user", IP) == 900.0


def test_one_ip_spraying_many_usernames_is_locked(guard: LoginThrottle) -> None:
    for n in range(19):
        guard.failure(f"user-{n}", IP)
    assert guard.check("brand-new-user", IP) == 0.0
    guard.failure("user-19", IP)
    assert guard.check("brand-new-user", IP) == 900.0
    assert guard.check("brand-new-user", "192.0.2.1") == 0.0
    assert guard.check("user-0", "192.0.2.1") == 0.0  # one failure each: no user is locked


def test_ip_limit_is_configurable(clock: Clock) -> None:
    guard = LoginThrottle(max_failures=3, clock=clock, ip_max_failures=4)
    for n in range(4):
        guard.failure(f"user-{n}", IP)
    assert guard.check("another", IP) == 900.0


def test_check_reports_the_longer_of_the_two_waits(guard: LoginThrottle, clock: Clock) -> None:
    fail(guard, 5, username="admin", ip="192.0.2.1")  # admin locked until +900
    clock.now += 100
    for n in range(20):
        guard.failure(f"user-{n}", IP)  # IP locked until +1000
    assert guard.check("admin", IP) == pytest.approx(900.0)
    assert guard.check("admin", "192.0.2.2") == pytest.approx(800.0)


@pytest.mark.parametrize("variant", ["Admin", " admin ", "ADMIN", "admin\t"])
def test_username_case_and_spaces_do_not_escape_the_count(guard: LoginThrottle, variant: str) -> None:
    fail(guard, 4, username="admin")
    guard.failure(variant, "192.0.2.50")
    assert guard.check("admin", "192.0.2.51") == 900.0


def test_ipv6_addresses_count_per_64_prefix(guard: LoginThrottle) -> None:
    for n in range(20):
        guard.failure(f"user-{n}", f"2001:db8:1:2::{n + 1:x}")
    assert guard.check("fresh", "2001:db8:1:2:ffff:ffff:ffff:ffff") == 900.0
    assert guard.check("fresh", "2001:db8:1:3::1") == 0.0


def test_ip_keys_normalize_address_spellings() -> None:
    assert ip_key("::ffff:198.51.100.7") == ip_key(IP) == ip_key(f" {IP} ")
    assert ip_key("2001:DB8::1") == ip_key("2001:db8:0:0:ffff::9")
    assert ip_key("2001:db8::1") != ip_key("2001:db9::1")
    assert ip_key("not-an-ip") == ip_key("NOT-AN-IP")
    assert ip_key("not-an-ip") != ip_key(IP)


def test_long_client_text_is_stored_as_a_digest_without_collisions() -> None:
    one, two = "a" * 300 + "1", "a" * 300 + "2"
    assert user_key(one) != user_key(two)
    assert len(user_key(one)) < 80
    assert len(ip_key("x" * 10_000)) < 80
    assert user_key("a" * 256) == "u:" + "a" * 256


def test_tracked_identities_are_bounded(clock: Clock) -> None:
    guard = LoginThrottle(clock=clock, max_tracked=100)
    fail(guard, 4, username="first", ip="192.0.2.1")
    for n in range(1000):
        guard.failure(f"user-{n}", f"10.0.{n // 256}.{n % 256}")
    assert guard.tracked() == (100, 100)
    guard.failure("first", "192.0.2.1")  # "first" was dropped as the oldest: its count starts again
    assert guard.check("first", "192.0.2.2") == 0.0


def test_stale_records_are_dropped_before_live_ones(clock: Clock) -> None:
    guard = LoginThrottle(window=300, clock=clock, max_tracked=3)
    guard.failure("stale-1", "192.0.2.1")
    guard.failure("stale-2", "192.0.2.2")
    clock.now += 350
    fail(guard, 4, username="live", ip="192.0.2.3")
    guard.failure("new", "192.0.2.4")
    assert guard.tracked() == (2, 2)
    guard.failure("live", "192.0.2.3")
    assert guard.check("live", "192.0.2.9") == 900.0


def test_an_identity_being_probed_stays_tracked(clock: Clock) -> None:
    guard = LoginThrottle(clock=clock, max_tracked=3)
    fail(guard, 5, username="victim", ip="192.0.2.1")
    guard.failure("a", "192.0.2.2")
    guard.failure("b", "192.0.2.3")
    assert guard.check("victim", "192.0.2.9") == 900.0  # the attacker keeps trying: victim moves to the back
    guard.failure("c", "192.0.2.4")  # the table is full: the oldest *untouched* record ("a") goes
    assert guard.check("victim", "192.0.2.9") == 900.0


def test_instances_share_nothing(clock: Clock) -> None:
    first, second = LoginThrottle(clock=clock), LoginThrottle(clock=clock)
    fail(first, 5)
    assert first.check("admin", IP) == 900.0
    assert second.check("admin", IP) == 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: LoginThrottle(max_failures=0),
        lambda: LoginThrottle(window=0),
        lambda: LoginThrottle(lockout=-1),
        lambda: LoginThrottle(ip_max_failures=0),
        lambda: LoginThrottle(max_tracked=0),
    ],
)
def test_nonsense_limits_are_refused(make: Callable[[], LoginThrottle]) -> None:
    with pytest.raises(ValueError):
        make()


def test_default_clock_is_monotonic() -> None:
    guard = LoginThrottle()
    fail(guard, 5)
    assert 899.0 < guard.check("admin", IP) <= 900.0


IMMUTABLE = (str, bytes, int, float, bool, tuple, frozenset, type(None), types.ModuleType, type)


@pytest.mark.parametrize("module", [passwords, tokens, throttle])
def test_security_modules_hold_no_mutable_state(module: types.ModuleType) -> None:
    for name, value in vars(module).items():
        if name.startswith("__") or name == "annotations" or callable(value):  # the `from __future__` flag
            continue
        assert isinstance(value, IMMUTABLE), f"{module.__name__}.{name} is a mutable {type(value).__name__}"
