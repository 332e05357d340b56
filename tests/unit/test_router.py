"""Routing: weighted picks, breadth-first fallback plans without repeats, key hashing and key scopes."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

from gateway.config.loader import parse_config
from gateway.config.snapshot import ClientKey, Snapshot, build_snapshot, hash_key
from gateway.routing.router import attempt_plan, pick
from plugins.providers.base import AdapterSettings
from plugins.providers.registry import create_adapter, provider_types

CONFIG = """
providers:
  p1: {type: openai, base_url: "http://one.test/v1", api_key: provider-one-secret}
  p2: {type: openai, base_url: "http://two.test/v1"}
models:
  weighted:
    routes:
      - {provider: p1, model: heavy, weight: 3}
      - {provider: p2, model: light, weight: 1}
  three:
    routes:
      - {provider: p1, model: t1, weight: 0.5}
      - {provider: p1, model: t2, weight: 1.5}
      - {provider: p2, model: t3, weight: 2}
  single: {routes: [{provider: p2, model: only}]}
  a: {routes: [{provider: p1, model: a-m}], fallbacks: [b, c]}
  b: {routes: [{provider: p1, model: b-m}], fallbacks: [a, c]}
  c: {routes: [{provider: p2, model: c-m}], fallbacks: [a]}
  r: {routes: [{provider: p1, model: r-m}], fallbacks: [s, t]}
  s: {routes: [{provider: p1, model: s-m}], fallbacks: [u]}
  t: {routes: [{provider: p1, model: t-m}], fallbacks: [v, s]}
  u: {routes: [{provider: p1, model: u-m}], fallbacks: [r]}
  v: {routes: [{provider: p1, model: v-m, weight: 1}, {provider: p2, model: v-m2, weight: 1}]}
keys:
  - {name: all, key: key-all-0123456789}
  - {name: scoped, key: key-scoped-0123456789, models: [single, a]}
  - {name: none, key: key-none-0123456789, models: []}
"""


class DummyClient:
    """Adapters only store the upstream client; routing never calls it."""


def snapshot() -> Snapshot:
    cfg = parse_config(CONFIG, provider_types(), env={})
    client = DummyClient()
    adapters = {
        name: create_adapter(name, p, client, AdapterSettings())  # type: ignore[arg-type]
        for name, p in cfg.providers.items()
    }
    return build_snapshot(cfg, adapters)


def models(routes: list) -> list[str]:
    return [r.model for r in routes]


def test_snapshot_routes_and_adapters() -> None:
    snap = snapshot()
    weighted = snap.aliases["weighted"]
    assert [(r.label, r.weight) for r in weighted.routes] == [("p1/heavy", 3.0), ("p2/light", 1.0)]
    assert weighted.cumulative_weights == (3.0, 4.0)
    assert weighted.routes[0].adapter is snap.adapters["p1"]
    assert weighted.routes[1].adapter is snap.adapters["p2"]
    assert snap.aliases["a"].fallbacks == ("b", "c")
    assert snap.secrets() == ("provider-one-secret",)


def test_pick_is_deterministic_with_a_seed() -> None:
    alias = snapshot().aliases["three"]
    rng_a, rng_b = random.Random(99), random.Random(99)
    seq_a = [pick(alias, rng_a).model for _ in range(500)]
    seq_b = [pick(alias, rng_b).model for _ in range(500)]
    assert seq_a == seq_b
    assert set(seq_a) == {"t1", "t2", "t3"}
    assert pick(alias, random.Random(1234)) == pick(alias, random.Random(1234))


def test_weights_three_to_one() -> None:
    alias = snapshot().aliases["weighted"]
    rng = random.Random(2024)
    counts = Counter(pick(alias, rng).model for _ in range(20_000))
    share = counts["heavy"] / 20_000
    assert 0.73 <= share <= 0.77
    assert counts["heavy"] + counts["light"] == 20_000


def test_three_way_weights() -> None:
    alias = snapshot().aliases["three"]
    rng = random.Random(7)
    counts = Counter(pick(alias, rng).model for _ in range(20_000))
    assert abs(counts["t1"] / 20_000 - 0.125) < 0.015
    assert abs(counts["t2"] / 20_000 - 0.375) < 0.02
    assert abs(counts["t3"] / 20_000 - 0.5) < 0.02


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_pick_at_the_weight_boundaries() -> None:
    alias = snapshot().aliases["weighted"]
    assert pick(alias, FixedRandom(0.0)).model == "heavy"
    assert pick(alias, FixedRandom(0.7499)).model == "heavy"
    assert pick(alias, FixedRandom(0.75)).model == "light"
    assert pick(alias, FixedRandom(0.9999999)).model == "light"


def test_single_route_alias() -> None:
    snap = snapshot()
    alias = snap.aliases["single"]
    rng = random.Random(5)
    assert {pick(alias, rng).model for _ in range(100)} == {"only"}
    assert models(attempt_plan(snap, alias, rng)) == ["only"]


def test_plan_with_fallback_loop_visits_each_alias_once() -> None:
    snap = snapshot()
    for seed in range(20):
        assert models(attempt_plan(snap, snap.aliases["a"], random.Random(seed))) == ["a-m", "b-m", "c-m"]
    assert models(attempt_plan(snap, snap.aliases["b"], random.Random(0))) == ["b-m", "a-m", "c-m"]
    assert models(attempt_plan(snap, snap.aliases["c"], random.Random(0))) == ["c-m", "a-m", "b-m"]


def test_plan_is_breadth_first() -> None:
    snap = snapshot()
    # r -> [s, t]; s -> [u]; t -> [v, s]; u -> [r]: breadth-first is r, s, t, u, v (depth-first would be r, s, u, t, v)
    plan = attempt_plan(snap, snap.aliases["r"], random.Random(3))
    assert models(plan)[:4] == ["r-m", "s-m", "t-m", "u-m"]
    assert models(plan)[4] in {"v-m", "v-m2"}
    assert len(plan) == 5


def test_plan_takes_one_weighted_pick_per_alias() -> None:
    snap = snapshot()
    seen = Counter(models(attempt_plan(snap, snap.aliases["t"], random.Random(seed)))[1] for seed in range(400))
    assert set(seen) == {"v-m", "v-m2"}
    assert all(len(attempt_plan(snap, snap.aliases["t"], random.Random(s))) == 5 for s in range(50))


def test_plan_is_deterministic_with_a_seed() -> None:
    snap = snapshot()
    plans = {tuple(models(attempt_plan(snap, snap.aliases["t"], random.Random(11)))) for _ in range(10)}
    assert len(plans) == 1


def test_hash_key() -> None:
    assert hash_key("abc") == hashlib.sha256(b"abc").hexdigest()
    assert len(hash_key("x")) == 64
    assert hash_key("key-1") != hash_key("key-2")
    assert hash_key("\u4f60\u597d") == hashlib.sha256("\u4f60\u597d".encode()).hexdigest()


def test_snapshot_keys_are_hashed() -> None:
    snap = snapshot()
    assert "key-all-0123456789" not in snap.keys
    assert snap.keys[hash_key("key-all-0123456789")].name == "all"
    assert snap.keys[hash_key("key-scoped-0123456789")].models == frozenset({"single", "a"})
    assert snap.keys[hash_key("key-all-0123456789")].models is None


def test_client_key_allows() -> None:
    snap = snapshot()
    everything = snap.keys[hash_key("key-all-0123456789")]
    scoped = snap.keys[hash_key("key-scoped-0123456789")]
    nothing = snap.keys[hash_key("key-none-0123456789")]
    assert everything.allows("weighted") and everything.allows("no-such-alias")
    assert scoped.allows("single") and scoped.allows("a")
    assert not scoped.allows("b")
    assert not scoped.allows("Single")
    assert not nothing.allows("single")
    assert ClientKey("k", None).allows("anything")
    assert not ClientKey("k", frozenset()).allows("")
