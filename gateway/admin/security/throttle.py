"""Login throttling: after too many failed logins in a window, a username (or a client IP) is locked out a while.

Per username it stops guessing one account's password; per IP, with a higher limit, it stops one client from
spraying many accounts. State is in memory, per process, and bounded; N worker processes give at most N times
the limits. Callers check before verifying a password and report the outcome after.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_KEY_CHARS = 256
IPV6_PREFIX_BITS = 64  # one IPv6 client usually holds a whole /64, so it counts as one address


@dataclass(slots=True)
class _Record:
    """The recent failure times of one identity (at most the limit of them) and the end of its lockout."""

    failures: deque[float]
    locked_until: float | None = None
    last_seen: float = field(default=0.0)


class _Counter:
    """Sliding-window failure counts with lockout, for one kind of identity; at most `max_tracked` entries."""

    def __init__(self, max_failures: int, window: float, lockout: float, max_tracked: int) -> None:
        self._max = max_failures
        self._window = window
        self._lockout = lockout
        self._max_tracked = max_tracked
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def wait(self, key: str, now: float) -> float:
        """Seconds `key` must still wait (0.0 when not locked out)."""
        record = self._records.get(key)
        if record is None or record.locked_until is None or record.locked_until <= now:
            return 0.0
        self._records.move_to_end(key)  # an identity under attack stays tracked
        return record.locked_until - now

    def failure(self, key: str, now: float) -> None:
        """Record one failure; the `max_failures`-th within `window` seconds starts a lockout."""
        record = self._records.get(key)
        if record is None:
            record = self._insert(key, now)
        elif record.locked_until is not None:
            if record.locked_until > now:
                return  # already locked out: a late report (a request that passed check before the lock)
            record.locked_until = None
        record.failures.append(now)
        record.last_seen = now
        self._records.move_to_end(key)
        if len(record.failures) == self._max and now - record.failures[0] < self._window:
            record.locked_until = now + self._lockout
            record.failures.clear()

    def clear(self, key: str) -> None:
        """Forget `key` entirely (its failures and any lockout)."""
        self._records.pop(key, None)

    def _insert(self, key: str, now: float) -> _Record:
        """Add a record, first dropping stale ones from the oldest end, then the oldest if still full."""
        self._drop_stale(now)
        while len(self._records) >= self._max_tracked:
            self._records.popitem(last=False)
        record = _Record(failures=deque(maxlen=self._max), last_seen=now)
        self._records[key] = record
        return record

    def _drop_stale(self, now: float) -> None:
        """Drop least-recently-touched records that no longer matter (window passed, no lockout running)."""
        while self._records:
            record = next(iter(self._records.values()))
            locked = record.locked_until is not None and record.locked_until > now
            if locked or now - record.last_seen < self._window:
                return
            self._records.popitem(last=False)


def _bounded(text: str, kind: str) -> str:
    """A map key for arbitrary client text: itself when short, else its SHA-256 (so memory stays bounded)."""
    if len(text) <= MAX_KEY_CHARS:
        return f"{kind}:{text}"
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{kind}#{digest}"


def user_key(username: str) -> str:
    """The throttling key of a username: case and surrounding space ignored, so "Admin " is "admin"."""
    return _bounded(username.strip().casefold(), "u")


def ip_key(ip: str) -> str:
    """The throttling key of a client address: IPv4 (incl. IPv4-mapped IPv6) as is, IPv6 by its /64."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return _bounded(ip.strip().casefold(), "ip?")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return f"ip4:{address}"
    return f"ip6:{int(address) >> (128 - IPV6_PREFIX_BITS):x}"


class LoginThrottle:
    """Locks out a username after `max_failures` failed logins in `window` s, and an IP after `ip_max_failures`."""

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 300,
        lockout: float = 900,
        clock: Callable[[], float] = time.monotonic,
        *,
        ip_max_failures: int = 20,
        max_tracked: int = 10_000,
    ) -> None:
        if min(max_failures, ip_max_failures, max_tracked) < 1 or window <= 0 or lockout <= 0:
            raise ValueError("throttle limits, window and lockout must be positive")
        self._clock = clock
        self._users = _Counter(max_failures, window, lockout, max_tracked)
        self._ips = _Counter(ip_max_failures, window, lockout, max_tracked)
        self._lock = threading.Lock()

    def check(self, username: str, ip: str) -> float:
        """0.0 when a login attempt may go ahead, else the seconds to wait (the longer of user's and IP's)."""
        with self._lock:
            now = self._clock()
            return max(self._users.wait(user_key(username), now), self._ips.wait(ip_key(ip), now))

    def failure(self, username: str, ip: str) -> None:
        """Count a failed login against both the username and the IP."""
        with self._lock:
            now = self._clock()
            self._users.failure(user_key(username), now)
            self._ips.failure(ip_key(ip), now)

    def success(self, username: str, ip: str) -> None:
        """A successful login clears the username's failures; the IP's stay (it may be spraying other accounts)."""
        del ip  # deliberately unused: see the docstring
        with self._lock:
            self._users.clear(user_key(username))

    def tracked(self) -> tuple[int, int]:
        """How many usernames and IPs are tracked now (for metrics and the memory-bound test)."""
        with self._lock:
            return len(self._users), len(self._ips)
