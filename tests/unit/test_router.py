"""The router: priority tiers, strategies, rpm capacity, retries with backoff inside one deadline, fallbacks by
cause, cooldowns and the trace — all on a fake clock, a seeded RNG and a sleep that only records its delays.
"""

from __future__ import annotations

import asyncio
import random
import textwrap
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.loader import parse_config
from gateway.config.snapshot import Alias, Route, Snapshot, build_snapshot
from gateway.errors import (
    GatewayError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.routing.health import Health, MemoryHealth
from gateway.routing.router import BACKOFF_BASE, NoHealthyRoute, Outcome, Router, Trace, weighted_choice
from gateway.routing.stats import RouteStats
from gateway.upstream.client import Timeouts
from plugins.providers.base import AdapterSettings
from plugins.providers.registry import create_adapter
from tests.fakes.clock import FakeClock

PROVIDERS = """
providers:
  a: {type: openai, base_url: "http://a.invalid/v1"}
  b: {type: openai, base_url: "http://b.invalid/v1"}
  c: {type: openai, base_url: "http://c.invalid/v1"}
models:
"""
# Tests about retries keep routes out of cooldown unless they are about cooldowns.
NO_COOL = "cooldown: {failures: 1000}"


class DummyClient:
    """Adapters only store the upstream client; the router never reaches it."""


def build(models: str) -> Snapshot:
    text = PROVIDERS + textwrap.indent(textwrap.dedent(models).strip("\n"), "  ") + "\n"
    cfg = parse_config(text, ["openai"], env={})
    client: Any = DummyClient()
    adapters = {name: create_adapter(name, cfg.providers[name], client, AdapterSettings()) for name in cfg.providers}
    return build_snapshot(cfg, adapters)


class Env:
    """A router on a fake clock, with its health, stats and the delays it slept."""

    def __init__(self, models: str, seed: int = 7) -> None:
        self.snapshot = build(models)
        self.clock = FakeClock()
        self.sleeps: list[float] = []
        self.health = MemoryHealth(clock=self.clock)
        self.stats = RouteStats(clock=self.clock)
        self.router = Router(self.health, self.stats, random.Random(seed), clock=self.clock, sleep=self._sleep)

    async def _sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.clock.advance(delay)

    def alias(self, name: str) -> Alias:
        return self.snapshot.aliases[name]

    def route(self, alias: str, label: str) -> Route:
        return next(r for r in self.alias(alias).routes if r.label == label)

    async def run(self, alias: str, attempt: Script) -> tuple[Outcome[Any], Trace]:
        trace = Trace()
        outcome = await self.router.run(self.snapshot, self.alias(alias), attempt, trace)
        return outcome, trace

    async def fail(self, alias: str, attempt: Script) -> tuple[BaseException, Trace]:
        trace = Trace()
        with pytest.raises(GatewayError) as info:
            await self.router.run(self.snapshot, self.alias(alias), attempt, trace)
        return info.value, trace

    async def trip(self, label: str, alias: str) -> None:
        """Cool a route at once, as an auth error would."""
        await self.health.failure(label, self.alias(alias).cooldown, hard=True)


def picked(env: Env, alias: str, exclude: set[str] | frozenset[str] = frozenset()) -> str:
    route = env.router.pick(env.alias(alias), exclude)
    assert route is not None
    return route.label


Step = Any  # a value to return, an exception to raise, or a zero-argument callable making either


class Script:
    """The `attempt` function: answers per route label (else from `default`), the last step repeating.

    `cost` seconds pass on the fake clock during each call.
    """

    def __init__(
        self,
        env: Env,
        per_route: dict[str, list[Step]] | None = None,
        *,
        default: list[Step] | None = None,
        cost: float = 0.0,
    ) -> None:
        self.env = env
        self.per_route = {k: list(v) for k, v in (per_route or {}).items()}
        self.default = list(default if default is not None else ["ok"])
        self.cost = cost
        self.calls: list[tuple[str, Timeouts]] = []

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.calls]

    async def __call__(self, route: Route, timeouts: Timeouts) -> Any:
        self.calls.append((route.label, timeouts))
        self.env.clock.advance(self.cost)
        steps = self.per_route.get(route.label, self.default)
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if callable(step) and not isinstance(step, BaseException):
            step = step()
        if isinstance(step, BaseException):
            raise step
        return step


def status(code: int, message: str = "upstream failed", *, err: str | None = None, retry_after: float | None = None):
    """A factory (so every raise is a fresh exception) for an upstream error status."""
    return lambda: UpstreamStatusError(message, upstream_status=code, code=err, retry_after=retry_after)


def connect_error() -> UpstreamConnectError:
    return UpstreamConnectError("connection refused")


def timeout_error() -> UpstreamTimeout:
    return UpstreamTimeout("upstream timed out")


TWO = f"""
x:
  {NO_COOL}
  routes:
    - {{provider: a, model: m}}
    - {{provider: b, model: m}}
"""
ONE = f"""
x:
  {NO_COOL}
  routes: [{{provider: a, model: m}}]
"""


# --- pick: priority tiers -----------------------------------------------------------------------------------
TIERS = """
x:
  routes:
    - {provider: a, model: m, priority: 2}
    - {provider: b, model: m, priority: 1}
    - {provider: c, model: m, priority: 1}
    - {provider: c, model: reserve, priority: 0}
"""


def test_pick_prefers_the_highest_priority_tier() -> None:
    env = Env(TIERS)
    picks = {picked(env, "x") for _ in range(200)}
    assert picks == {"a/m"}


async def test_pick_falls_to_a_lower_tier_while_the_top_tier_cools() -> None:
    env = Env(TIERS)
    await env.trip("a/m", "x")
    picks = Counter(picked(env, "x") for _ in range(400))
    assert set(picks) == {"b/m", "c/m"}  # the whole next tier, never the reserve below it
    await env.trip("b/m", "x")
    await env.trip("c/m", "x")
    assert picked(env, "x") == "c/reserve"


async def test_top_tier_is_used_again_once_its_cooldown_ends() -> None:
    env = Env(TIERS)
    alias = env.alias("x")
    await env.trip("a/m", "x")
    env.clock.advance(alias.cooldown.duration - 0.5)
    assert picked(env, "x") != "a/m"
    env.clock.advance(1.0)  # half-open: one probe may go
    assert picked(env, "x") == "a/m"


async def test_pick_returns_none_when_every_route_is_cooling() -> None:
    env = Env(TWO)
    await env.trip("a/m", "x")
    await env.trip("b/m", "x")
    assert env.router.pick(env.alias("x")) is None


def test_pick_honours_exclude() -> None:
    env = Env(TWO)
    alias = env.alias("x")
    assert {picked(env, "x", {"a/m"}) for _ in range(50)} == {"b/m"}
    assert env.router.pick(alias, {"a/m", "b/m"}) is None


# --- pick: strategies -----------------------------------------------------------------------------------------
def test_weighted_three_to_one_over_many_picks() -> None:
    env = Env("""
    x:
      routes:
        - {provider: a, model: m, weight: 3}
        - {provider: b, model: m, weight: 1}
    """)
    picks = Counter(picked(env, "x") for _ in range(20_000))
    assert set(picks) == {"a/m", "b/m"}
    assert 0.73 <= picks["a/m"] / 20_000 <= 0.77


@given(
    weights=st.lists(st.floats(min_value=0.001, max_value=1000), min_size=1, max_size=6),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=50, deadline=None)
def test_weighted_choice_always_returns_one_of_the_routes(weights: list[float], seed: int) -> None:
    adapter: Any = None
    routes = [Route(provider="p", model=f"m{i}", weight=w, adapter=adapter) for i, w in enumerate(weights)]
    rng = random.Random(seed)
    for _ in range(20):
        assert weighted_choice(routes, rng) in routes


def test_least_inflight_picks_the_route_with_fewer_in_flight() -> None:
    env = Env("""
    x:
      strategy: least_inflight
      routes:
        - {provider: a, model: m, weight: 100}
        - {provider: b, model: m}
    """)
    env.stats.start("a/m", None)
    env.stats.start("a/m", None)
    env.stats.start("b/m", None)
    assert {picked(env, "x") for _ in range(100)} == {"b/m"}
    env.stats.start("b/m", None)
    env.stats.start("b/m", None)
    assert {picked(env, "x") for _ in range(100)} == {"a/m"}
    env.stats.end("b/m")
    env.stats.end("b/m")
    env.stats.end("a/m")
    # 1 and 1: a tie, broken by weight
    assert {picked(env, "x") for _ in range(2000)} == {"a/m", "b/m"}


def test_lowest_latency_picks_the_lower_ewma_and_tries_unmeasured_routes_first() -> None:
    env = Env("""
    x:
      strategy: lowest_latency
      routes:
        - {provider: a, model: m, weight: 100}
        - {provider: b, model: m}
        - {provider: c, model: m}
    """)
    env.stats.first_byte("a/m", 0.9)
    env.stats.first_byte("b/m", 0.2)
    assert {picked(env, "x") for _ in range(100)} == {"c/m"}  # never measured: tried first
    env.stats.first_byte("c/m", 0.5)
    assert {picked(env, "x") for _ in range(100)} == {"b/m"}
    for _ in range(10):  # b gets slow; its EWMA climbs above c's
        env.stats.first_byte("b/m", 3.0)
    assert {picked(env, "x") for _ in range(100)} == {"c/m"}


async def test_lowest_latency_learns_from_the_routers_own_attempts() -> None:
    env = Env("""
    x:
      strategy: lowest_latency
      routes:
        - {provider: a, model: m}
        - {provider: b, model: m}
    """)
    slow = Script(env, cost=2.0)
    outcome, _ = await env.run("x", slow)
    env.router.release(outcome.route)
    first = outcome.route.label
    assert env.stats.ttfb(first) == pytest.approx(2.0)
    outcome, _ = await env.run("x", Script(env, cost=0.5))  # the unmeasured one goes next
    env.router.release(outcome.route)
    assert outcome.route.label != first
    assert env.stats.ttfb(outcome.route.label) == pytest.approx(0.5)
    outcome, _ = await env.run("x", Script(env))
    assert outcome.route.label != first


def test_cost_picks_the_cheapest_with_route_pricing_over_alias_pricing() -> None:
    env = Env("""
    x:
      strategy: cost
      pricing: {input: 1.0, output: 2.0}
      routes:
        - {provider: a, model: m, weight: 100}
        - {provider: b, model: m, pricing: {input: 0.5, output: 1.0}}
        - {provider: c, model: m, pricing: {input: 5.0, output: 5.0}}
    """)
    alias = env.alias("x")
    assert [r.price for r in alias.routes] == [3.0, 1.5, 10.0]
    assert {picked(env, "x") for _ in range(100)} == {"b/m"}
    assert {picked(env, "x", {"b/m"}) for _ in range(100)} == {"a/m"}


def test_cost_route_pricing_can_make_a_route_dearer_than_the_alias_price() -> None:
    env = Env("""
    x:
      strategy: cost
      pricing: {input: 1.0, output: 1.0}
      routes:
        - {provider: a, model: m, pricing: {input: 9.0, output: 9.0}}
        - {provider: b, model: m}
    """)
    assert {picked(env, "x") for _ in range(50)} == {"b/m"}


# --- pick: rpm capacity ---------------------------------------------------------------------------------------
RPM = """
x:
  routes:
    - {provider: a, model: m, rpm: 2, priority: 1}
    - {provider: b, model: m}
"""


def test_route_at_rpm_capacity_is_skipped_until_the_minute_passes() -> None:
    env = Env(RPM)
    route = env.route("x", "a/m")
    assert route.rpm == 2
    assert picked(env, "x") == "a/m"
    env.stats.start("a/m", route.rpm)
    env.clock.advance(1.0)
    assert picked(env, "x") == "a/m"
    env.stats.start("a/m", route.rpm)
    assert picked(env, "x") == "b/m"
    env.clock.advance(58.5)  # 59.5 s after the first start
    assert picked(env, "x") == "b/m"
    env.clock.advance(1.0)  # the first start left the window
    assert picked(env, "x") == "a/m"


async def test_run_counts_attempts_against_rpm_capacity() -> None:
    env = Env(RPM)
    labels = []
    for _ in range(3):
        outcome, _ = await env.run("x", Script(env))
        env.router.release(outcome.route)
        labels.append(outcome.route.label)
    assert labels == ["a/m", "a/m", "b/m"]
    env.clock.advance(60.5)
    outcome, _ = await env.run("x", Script(env))
    assert outcome.route.label == "a/m"


async def test_single_route_at_capacity_fails_fast_with_503() -> None:
    env = Env("""
    x:
      routes: [{provider: a, model: m, rpm: 1}]
    """)
    outcome, _ = await env.run("x", Script(env))
    env.router.release(outcome.route)
    script = Script(env)
    exc, trace = await env.fail("x", script)
    assert isinstance(exc, NoHealthyRoute)
    assert exc.status == 503
    assert script.calls == []
    assert trace.attempts == 0


# --- run: success and retries ---------------------------------------------------------------------------------
async def test_success_on_the_first_try() -> None:
    env = Env(TWO)
    script = Script(env, default=["answer"])
    outcome, trace = await env.run("x", script)
    assert outcome.result == "answer"
    assert trace.attempts == 1
    assert trace.route is outcome.route
    assert trace.errors == []
    assert env.sleeps == []
    assert script.labels == [outcome.route.label]
    assert env.stats.inflight(outcome.route.label) == 1  # held until the answer is delivered
    env.router.release(outcome.route)
    assert env.stats.inflight(outcome.route.label) == 0


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "error",
    [status(500), status(502), status(503), status(429), connect_error, timeout_error],
    ids=["500", "502", "503", "429", "connect", "timeout"],
)
async def test_retry_goes_to_a_different_route_without_sleeping(seed: int, error: Callable[[], UpstreamError]) -> None:
    env = Env(TWO, seed=seed)
    failed: list[str] = []

    async def attempt(route: Route, timeouts: Timeouts) -> str:
        if not failed:
            failed.append(route.label)
            raise error()
        return route.label

    trace = Trace()
    outcome = await env.router.run(env.snapshot, env.alias("x"), attempt, trace)
    assert outcome.result != failed[0]
    assert trace.attempts == 2
    assert env.sleeps == []


async def test_retry_to_another_route_is_traced() -> None:
    env = Env(TWO)
    script = Script(env, default=[status(500), "ok"])
    outcome, trace = await env.run("x", script)
    assert outcome.result == "ok"
    assert trace.attempts == 2
    assert len(set(script.labels)) == 2
    assert [route.label for route, _ in trace.errors] == script.labels[:1]
    assert env.sleeps == []


async def test_retry_on_the_same_route_backs_off() -> None:
    env = Env(ONE.replace("routes:", "max_retries: 4\n  routes:"))
    script = Script(env, default=[status(500), status(502), connect_error, timeout_error, "ok"])
    outcome, trace = await env.run("x", script)
    assert outcome.result == "ok"
    assert trace.attempts == 5
    assert script.labels == ["a/m"] * 5
    assert len(env.sleeps) == 4
    for retry, delay in enumerate(env.sleeps, 1):
        assert 0 <= delay <= BACKOFF_BASE * 2 ** (retry - 1)
    assert sum(env.sleeps) > 0  # full jitter, but not all zero


async def test_backoff_waits_at_least_the_retry_after_of_a_429() -> None:
    env = Env(ONE)
    script = Script(env, default=[status(429, "slow down", retry_after=2.5), "ok"])
    outcome, trace = await env.run("x", script)
    assert outcome.result == "ok"
    assert trace.attempts == 2
    assert len(env.sleeps) == 1
    assert env.sleeps[0] >= 2.5


async def test_two_routes_that_both_fail_back_off_before_the_third_attempt() -> None:
    env = Env(TWO)
    script = Script(env, default=[status(503), status(503), "ok"])
    outcome, trace = await env.run("x", script)
    assert outcome.result == "ok"
    assert trace.attempts == 3
    assert len(set(script.labels[:2])) == 2
    assert len(env.sleeps) == 1  # only the third attempt reuses a route


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 422])
async def test_client_and_auth_errors_are_never_retried(code: int) -> None:
    env = Env(TWO)
    script = Script(env, default=[status(code, "no")])
    exc, trace = await env.fail("x", script)
    assert isinstance(exc, UpstreamStatusError)
    assert exc.upstream_status == code
    assert trace.attempts == 1
    assert len(script.calls) == 1
    assert env.sleeps == []


async def test_retry_on_list_is_honoured() -> None:
    only_503 = TWO.replace("routes:", "retry_on: [503]\n  routes:")
    env = Env(only_503)
    exc, trace = await env.fail("x", Script(env, default=[status(500)]))
    assert trace.attempts == 1
    assert isinstance(exc, UpstreamStatusError)
    assert exc.upstream_status == 500

    env = Env(only_503)
    outcome, trace = await env.run("x", Script(env, default=[status(503), "ok"]))
    assert outcome.result == "ok"
    assert trace.attempts == 2


@pytest.mark.parametrize("error", [connect_error, timeout_error], ids=["connect", "timeout"])
async def test_connection_errors_and_timeouts_are_retried_whatever_retry_on_says(
    error: Callable[[], UpstreamError],
) -> None:
    env = Env(TWO.replace("routes:", "retry_on: [503]\n  routes:"))
    outcome, trace = await env.run("x", Script(env, default=[error, "ok"]))
    assert outcome.result == "ok"
    assert trace.attempts == 2


@pytest.mark.parametrize("max_retries", [0, 1, 3, 5])
async def test_max_retries_is_respected(max_retries: int) -> None:
    env = Env(TWO.replace("routes:", f"max_retries: {max_retries}\n  routes:"))
    script = Script(env, default=[status(500)])
    exc, trace = await env.fail("x", script)
    assert trace.attempts == max_retries + 1
    assert len(script.calls) == max_retries + 1
    assert exc is trace.errors[-1][1]  # the last error is the one raised


async def test_three_failures_cool_a_route_with_default_cooldown() -> None:
    env = Env("""
    x:
      routes: [{provider: a, model: m}]
    """)
    await env.fail("x", Script(env, default=[status(500)]))
    assert env.health.health("a/m") is Health.COOLING


async def test_a_route_that_cools_mid_request_ends_the_retries_with_the_upstream_error() -> None:
    env = Env("""
    x:
      max_retries: 5
      cooldown: {failures: 2}
      routes: [{provider: a, model: m}]
    """)
    script = Script(env, default=[status(500)])
    exc, trace = await env.fail("x", script)
    assert trace.attempts == 2
    assert isinstance(exc, UpstreamStatusError)  # not NoHealthyRoute: the client sees what went wrong


# --- run: the deadline ----------------------------------------------------------------------------------------
DEADLINE = f"""
x:
  {NO_COOL}
  max_retries: 5
  timeout: {{total: 10}}
  routes: [{{provider: a, model: m}}]
two:
  {NO_COOL}
  max_retries: 5
  timeout: {{total: 10}}
  routes:
    - {{provider: a, model: m}}
    - {{provider: b, model: m}}
"""


async def test_retry_after_beyond_the_deadline_stops_retrying() -> None:
    env = Env(DEADLINE)
    script = Script(env, default=[status(429, "later", retry_after=30)])
    exc, trace = await env.fail("x", script)
    assert trace.attempts == 1
    assert env.sleeps == []
    assert isinstance(exc, UpstreamStatusError)
    assert exc.upstream_status == 429


async def test_retry_after_within_the_deadline_is_waited_for() -> None:
    env = Env(DEADLINE)
    script = Script(env, default=[status(429, "later", retry_after=4), "ok"])
    outcome, _ = await env.run("x", script)
    assert outcome.result == "ok"
    assert env.sleeps[0] >= 4


async def test_attempts_that_use_up_the_deadline_end_the_request() -> None:
    env = Env(DEADLINE)
    script = Script(env, default=[timeout_error], cost=6.0)
    exc, trace = await env.fail("two", script)
    assert trace.attempts == 2  # 6 s + 6 s > 10 s: no third attempt
    assert isinstance(exc, UpstreamTimeout)


async def test_timeouts_are_cut_to_what_is_left_of_the_deadline() -> None:
    env = Env(DEADLINE)
    script = Script(env, default=[connect_error, "ok"], cost=4.0)
    await env.run("two", script)
    (_, first), (_, second) = script.calls
    assert first.total == 10
    assert second == Timeouts(connect=5.0, first_byte=6.0, idle=6.0, total=6.0)


async def test_deadline_is_the_alias_total_or_the_longest_provider_total() -> None:
    env = Env(DEADLINE + "\nplain:\n  routes: [{provider: a, model: m}]")
    assert env.alias("x").deadline == 10
    assert env.alias("plain").deadline == 600


# --- run: fallbacks -------------------------------------------------------------------------------------------
FALLBACKS = f"""
primary:
  {NO_COOL}
  max_retries: 1
  routes: [{{provider: a, model: m}}]
  fallbacks: [general]
  context_window_fallbacks: [bigctx]
  content_policy_fallbacks: [lenient]
general:
  routes: [{{provider: b, model: general}}]
bigctx:
  routes: [{{provider: b, model: big}}]
lenient:
  routes: [{{provider: c, model: lenient}}]
plain:
  {NO_COOL}
  max_retries: 0
  routes: [{{provider: a, model: m}}]
  fallbacks: [general]
"""
CONTEXT_MSG = "This model's maximum context length is 8192 tokens. However, your messages resulted in 9001 tokens."


async def test_general_fallbacks_after_retries_are_exhausted() -> None:
    env = Env(FALLBACKS)
    script = Script(env, {"a/m": [status(500)]}, default=["fallback answer"])
    outcome, trace = await env.run("primary", script)
    assert outcome.result == "fallback answer"
    assert outcome.route.label == "b/general"
    assert script.labels == ["a/m", "a/m", "b/general"]
    assert trace.attempts == 3
    assert [route.label for route, _ in trace.errors] == ["a/m", "a/m"]


@pytest.mark.parametrize(
    ("error", "target"),
    [
        (status(400, CONTEXT_MSG, err="context_length_exceeded"), "b/big"),
        (status(400, CONTEXT_MSG), "b/big"),  # the message alone says it
        (status(400, "prompt is too long: 208310 tokens > 200000 maximum"), "b/big"),  # Anthropic's wording
        (status(400, "Your request was rejected by our safety system", err="content_policy_violation"), "c/lenient"),
        (status(400, "Input data may contain inappropriate content.", err="data_inspection_failed"), "c/lenient"),
        (status(500, "context length? no, a crash"), "b/general"),
        (status(429, "rate limited"), "b/general"),
        (connect_error, "b/general"),
    ],
    ids=["context-code", "context-text", "anthropic-context", "policy-code", "qwen-policy", "500", "429", "connect"],
)
async def test_fallbacks_by_cause(error: Callable[[], UpstreamError], target: str) -> None:
    env = Env(FALLBACKS)
    script = Script(env, {"a/m": [error]})
    outcome, _ = await env.run("primary", script)
    assert outcome.route.label == target
    assert script.labels[-1] == target
    assert target not in script.labels[:-1]


async def test_context_window_error_is_not_retried_before_falling_back() -> None:
    env = Env(FALLBACKS)
    script = Script(env, {"a/m": [status(400, CONTEXT_MSG, err="context_length_exceeded")]})
    _, trace = await env.run("primary", script)
    assert script.labels == ["a/m", "b/big"]
    assert trace.attempts == 2
    assert env.sleeps == []


async def test_cause_without_specific_fallbacks_uses_the_general_ones() -> None:
    env = Env(FALLBACKS)
    script = Script(env, {"a/m": [status(400, CONTEXT_MSG, err="context_length_exceeded")]})
    outcome, _ = await env.run("plain", script)
    assert outcome.route.label == "b/general"


async def test_fallback_loop_terminates_with_each_alias_tried_once() -> None:
    env = Env(f"""
    x:
      {NO_COOL}
      max_retries: 0
      routes: [{{provider: a, model: x}}]
      fallbacks: [y]
    y:
      {NO_COOL}
      max_retries: 0
      routes: [{{provider: b, model: y}}]
      fallbacks: [x]
    """)
    script = Script(env, default=[status(500)])
    exc, trace = await env.fail("x", script)
    assert script.labels == ["a/x", "b/y"]
    assert trace.attempts == 2
    assert exc is trace.errors[-1][1]


async def test_fallbacks_are_tried_breadth_first() -> None:
    env = Env(f"""
    x:
      {NO_COOL}
      max_retries: 0
      routes: [{{provider: a, model: x}}]
      fallbacks: [y, z]
    y:
      {NO_COOL}
      max_retries: 0
      routes: [{{provider: b, model: y}}]
      fallbacks: [w, z]
    z:
      {NO_COOL}
      max_retries: 0
      routes: [{{provider: c, model: z}}]
    w:
      {NO_COOL}
      max_retries: 0
      routes: [{{provider: c, model: w}}]
    """)
    script = Script(env, default=[status(502)])
    await env.fail("x", script)
    assert script.labels == ["a/x", "b/y", "c/z", "c/w"]


async def test_fallbacks_share_the_requests_one_deadline() -> None:
    env = Env(f"""
    x:
      {NO_COOL}
      max_retries: 0
      timeout: {{total: 10}}
      routes: [{{provider: a, model: x}}]
      fallbacks: [y]
    y:
      routes: [{{provider: b, model: y}}]
    """)
    script = Script(env, {"a/x": [timeout_error]}, cost=4.0)
    await env.run("x", script)
    (_, first), (_, second) = script.calls
    assert first.total == 10
    assert second.total == pytest.approx(6.0)


# --- run: no healthy route ------------------------------------------------------------------------------------
async def test_no_healthy_route_when_every_route_is_cooling() -> None:
    env = Env(TWO)
    await env.trip("a/m", "x")
    env.clock.advance(10)
    await env.trip("b/m", "x")  # cools until 40 s from now; a/m until 20 s from now
    script = Script(env)
    exc, trace = await env.fail("x", script)
    assert isinstance(exc, NoHealthyRoute)
    assert exc.status == 503
    assert exc.retry_after == pytest.approx(20.0)
    assert exc.headers() == [(b"retry-after", b"20")]
    assert script.calls == []
    assert trace.attempts == 0


async def test_no_healthy_route_retry_after_is_at_least_one_second() -> None:
    env = Env(ONE)
    await env.trip("a/m", "x")
    env.clock.advance(env.alias("x").cooldown.duration - 0.2)
    exc, _ = await env.fail("x", Script(env))
    assert isinstance(exc, NoHealthyRoute)
    assert exc.headers() == [(b"retry-after", b"1")]


async def test_fallback_alias_serves_when_the_primary_has_no_healthy_route() -> None:
    env = Env(FALLBACKS)
    await env.trip("a/m", "primary")
    script = Script(env, default=["from fallback"])
    outcome, trace = await env.run("primary", script)
    assert outcome.result == "from fallback"
    assert outcome.route.label == "b/general"
    assert trace.attempts == 1


async def test_no_healthy_route_anywhere_raises_no_healthy_route() -> None:
    env = Env(FALLBACKS)
    await env.trip("a/m", "primary")
    await env.trip("b/general", "general")
    exc, _ = await env.fail("primary", Script(env))
    assert isinstance(exc, NoHealthyRoute)


# --- run: trace, stats, health bookkeeping --------------------------------------------------------------------
async def test_trace_lists_each_failed_attempt_with_its_route() -> None:
    env = Env(TWO)
    errors = {"a/m": status(500, "a broke"), "b/m": status(503, "b broke")}
    script = Script(env, {label: [make] for label, make in errors.items()})
    exc, trace = await env.fail("x", script)
    assert trace.attempts == 3
    assert [route.label for route, _ in trace.errors] == script.labels
    for route, error in trace.errors:
        assert isinstance(error, UpstreamStatusError)
        assert error.message == f"{route.label[0]} broke"
        assert error.provider == route.provider
    assert exc is trace.errors[-1][1]
    assert trace.route is not None
    assert trace.route.label == script.labels[-1]


async def test_inflight_returns_to_zero_after_failures_and_release() -> None:
    env = Env(TWO)
    await env.fail("x", Script(env, default=[status(500)]))
    assert env.stats.inflight("a/m") == 0
    assert env.stats.inflight("b/m") == 0
    outcome, _ = await env.run("x", Script(env, default=[status(500), "ok"]))
    assert env.stats.inflight(outcome.route.label) == 1
    assert sum(env.stats.inflight(label) for label in ("a/m", "b/m")) == 1
    env.router.release(outcome.route)
    assert env.stats.inflight("a/m") == 0
    assert env.stats.inflight("b/m") == 0


async def test_inflight_returns_to_zero_when_the_attempt_is_cancelled() -> None:
    env = Env(ONE)
    with pytest.raises(asyncio.CancelledError):
        await env.run("x", Script(env, default=[asyncio.CancelledError()]))
    assert env.stats.inflight("a/m") == 0


async def test_success_restores_a_half_open_route() -> None:
    env = Env(ONE)
    await env.trip("a/m", "x")
    env.clock.advance(env.alias("x").cooldown.duration)
    assert env.health.health("a/m") is Health.HALF_OPEN
    await env.run("x", Script(env))
    assert env.health.health("a/m") is Health.HEALTHY


async def test_failed_probe_cools_the_route_again() -> None:
    env = Env(ONE)
    await env.trip("a/m", "x")
    env.clock.advance(env.alias("x").cooldown.duration)
    await env.fail("x", Script(env, default=[status(500)]))
    assert env.health.health("a/m") is Health.COOLING


async def test_client_errors_do_not_count_against_the_route() -> None:
    env = Env("""
    x:
      cooldown: {failures: 1}
      routes: [{provider: a, model: m}]
    """)
    await env.fail("x", Script(env, default=[status(400, CONTEXT_MSG, err="context_length_exceeded")]))
    assert env.health.health("a/m") is Health.HEALTHY
    assert env.health.available("a/m")


# --- probe slots and quota errors ------------------------------------------------------------------------------
async def test_probe_ending_in_a_client_error_frees_the_half_open_route() -> None:
    """A half-open route's probe that fails for the request's own fault (400) frees the probe slot."""
    env = Env(ONE)
    await env.trip("a/m", "x")
    env.clock.advance(env.alias("x").cooldown.duration)
    await env.fail("x", Script(env, default=[status(400, CONTEXT_MSG, err="context_length_exceeded")]))
    env.clock.advance(3600)
    assert env.health.available("a/m")
    outcome, _ = await env.run("x", Script(env, default=["ok"]))
    assert outcome.result == "ok"


async def test_probe_cancelled_by_a_client_disconnect_frees_the_half_open_route() -> None:
    """Same as above when the client goes away during the probe (the attempt is cancelled)."""
    env = Env(ONE)
    await env.trip("a/m", "x")
    env.clock.advance(env.alias("x").cooldown.duration)
    with pytest.raises(asyncio.CancelledError):
        await env.run("x", Script(env, default=[asyncio.CancelledError()]))
    env.clock.advance(3600)
    assert env.health.available("a/m")


@pytest.mark.parametrize(
    "error",
    [
        status(402, "Insufficient Balance"),  # DeepSeek's out-of-credit answer
        status(
            400, "Your credit balance is too low to access the Anthropic API.", err="invalid_request_error"
        ),  # Anthropic's
    ],
    ids=["402-deepseek", "400-anthropic-credit"],
)
async def test_quota_errors_cool_the_route_at_once(error: Callable[[], UpstreamError]) -> None:
    """Quota and billing errors cool the route at once, whatever their status (402, or a 400 about credit)."""
    env = Env("""
    x:
      routes: [{provider: a, model: m}]
    """)
    await env.fail("x", Script(env, default=[error]))
    assert env.health.health("a/m") is Health.COOLING
