"""The in-process response cache (expiry, byte-bounded LRU), cache keys, and sticky-session hashing."""

from __future__ import annotations

from collections import Counter

from gateway.cache import MemoryCache, cache_key, decode_events, encode_events
from gateway.config.snapshot import Route
from gateway.routing.router import rendezvous_score
from tests.fakes.clock import FakeClock


async def test_entries_expire() -> None:
    clock = FakeClock(0.0)
    cache = MemoryCache(1000, clock)
    await cache.set("k", b"v", ttl=10)
    clock.now = 9.9
    assert await cache.get("k") == b"v"
    clock.now = 10.0
    assert await cache.get("k") is None
    assert cache.size == 0


async def test_least_recently_used_is_evicted_past_the_byte_bound() -> None:
    cache = MemoryCache(10, FakeClock(0.0))
    await cache.set("a", b"aaaa", 60)
    await cache.set("b", b"bbbb", 60)
    assert await cache.get("a") == b"aaaa"  # a is now more recent than b
    await cache.set("c", b"cccc", 60)
    assert await cache.get("b") is None
    assert await cache.get("a") == b"aaaa" and await cache.get("c") == b"cccc"
    assert cache.size == 8


async def test_a_value_larger_than_the_bound_is_not_kept() -> None:
    cache = MemoryCache(4, FakeClock(0.0))
    await cache.set("big", b"12345", 60)
    assert await cache.get("big") is None and cache.size == 0


def test_cache_key_ignores_stream_switches_and_key_order_but_not_scope_or_parameters() -> None:
    body = {"model": "up", "messages": [{"role": "user", "content": "x"}], "temperature": 0.1}
    reordered = {"temperature": 0.1, "stream_options": {"include_usage": True}, **body}
    base = cache_key("alias", body, "key-a", stream=False)
    assert cache_key("alias", reordered, "key-a", stream=False) == base
    assert cache_key("alias", body, "key-b", stream=False) != base
    assert cache_key("alias", body, None, stream=False) != base
    assert cache_key("alias", body, "key-a", stream=True) != base
    assert cache_key("alias", {**body, "temperature": 0.2}, "key-a", stream=False) != base
    assert cache_key("other", body, "key-a", stream=False) != base


def test_stream_events_round_trip() -> None:
    events = [b'{"a": 1}', b'{"b": "\\u00e9"}']
    assert decode_events(encode_events(events)) == events


def _route(model: str, weight: float = 1.0) -> Route:
    return Route(provider="p", model=model, weight=weight, adapter=None)


def test_rendezvous_is_stable_and_only_moves_keys_of_a_removed_route() -> None:
    routes = [_route("a"), _route("b"), _route("c")]
    users = [f"user-{i}" for i in range(300)]
    chosen = {u: max(routes, key=lambda r: rendezvous_score(u, r)).model for u in users}
    assert chosen == {u: max(routes, key=lambda r: rendezvous_score(u, r)).model for u in users}
    remaining = [r for r in routes if r.model != "a"]
    moved = {u: max(remaining, key=lambda r: rendezvous_score(u, r)).model for u in users}
    assert all(moved[u] == chosen[u] for u in users if chosen[u] != "a")
    shares = Counter(chosen.values())
    assert all(60 < n < 140 for n in shares.values()), shares


def test_rendezvous_respects_weights() -> None:
    routes = [_route("heavy", 3.0), _route("light", 1.0)]
    shares = Counter(max(routes, key=lambda r: rendezvous_score(f"u{i}", r)).model for i in range(4000))
    assert 0.70 < shares["heavy"] / 4000 < 0.80
