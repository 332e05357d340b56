"""Routing rules end to end through the openai SDK: tiers, strategies, retries, deadlines, fallbacks by
cause, cooldowns and their recovery, response headers, /metrics and `switchyard test-routes`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import FULL_KEY, SCOPED_KEY, Gateway, start_gateway, stop_gateway, wait_until
from tests.fakes.openai_upstream import FakeOpenAI

USER = [{"role": "user", "content": "route me"}]
NO_COOL = "cooldown: {failures: 1000}"


def rules_config(port: int) -> str:
    fake = f"http://127.0.0.1:{port}/v1"
    return f"""
providers:
  fake: {{type: openai, base_url: "{fake}", api_key: "${{TEST_PROVIDER_KEY}}"}}
  quick: {{type: openai, base_url: "{fake}", timeout: {{connect: 1, first_byte: 0.4, total: 30}}}}
health_checks: {{interval: 0.2}}
models:
  tiers:
    routes: [{{provider: fake, model: tier-high, priority: 2}}, {{provider: fake, model: tier-low, priority: 1}}]
  retry-elsewhere:
    max_retries: 1
    {NO_COOL}
    routes: [{{provider: fake, model: fail-500-re, priority: 1}}, {{provider: fake, model: re-ok}}]
  retry-same: {{routes: [{{provider: fake, model: flaky-2-same}}], max_retries: 2, {NO_COOL}}}
  retry-after: {{routes: [{{provider: fake, model: flaky429-1-ra}}], max_retries: 1, {NO_COOL}}}
  retry-on-list: {{routes: [{{provider: fake, model: flaky-1-list}}], max_retries: 3, retry_on: [503], {NO_COOL}}}
  deadline:
    routes: [{{provider: quick, model: hang}}]
    max_retries: 5
    timeout: {{total: 1.0}}
    {NO_COOL}
  ctx:
    routes: [{{provider: fake, model: ctx-x}}]
    context_window_fallbacks: [big]
    fallbacks: [general]
    {NO_COOL}
  policy:
    routes: [{{provider: fake, model: policy-x}}]
    content_policy_fallbacks: [safe]
    fallbacks: [general]
    {NO_COOL}
  broken: {{routes: [{{provider: fake, model: fail-502-x}}], max_retries: 0, fallbacks: [general], {NO_COOL}}}
  big: {{routes: [{{provider: fake, model: big-context}}]}}
  safe: {{routes: [{{provider: fake, model: safe-model}}]}}
  general: {{routes: [{{provider: fake, model: general-model}}]}}
  cool:
    routes: [{{provider: fake, model: flaky-2-cool}}]
    max_retries: 0
    cooldown: {{failures: 2, window: 60, duration: 2}}
  quota: {{routes: [{{provider: fake, model: quota-x}}], max_retries: 0, cooldown: {{duration: 60}}}}
  least:
    strategy: least_inflight
    routes: [{{provider: fake, model: slow-400-a}}, {{provider: fake, model: slow-400-b}}]
  fastest:
    strategy: lowest_latency
    routes: [{{provider: fake, model: slow-120-ll}}, {{provider: fake, model: ll-fast}}]
  cheapest:
    strategy: cost
    pricing: {{input: 1, output: 2}}
    routes:
      - {{provider: fake, model: cost-dear, pricing: {{input: 10, output: 30}}}}
      - {{provider: fake, model: cost-cheap}}
  capped:
    routes: [{{provider: fake, model: cap-a, rpm: 2, priority: 1}}, {{provider: fake, model: cap-b}}]
  token-capped:
    routes: [{{provider: fake, model: tok-a, tpm: 500, priority: 1}}, {{provider: fake, model: tok-b}}]
  embed-probe: {{mode: embedding, routes: [{{provider: fake, model: embed-ok}}]}}
  sticky:
    sticky: {{by: user}}
    routes: [{{provider: fake, model: st-a}}, {{provider: fake, model: st-b}}, {{provider: fake, model: st-c}}]
  sticky-header:
    sticky: {{by: header, header: X-Session-Id}}
    routes: [{{provider: fake, model: sh-a}}, {{provider: fake, model: sh-b}}, {{provider: fake, model: sh-c}}]
  think-split: {{reasoning: split, routes: [{{provider: fake, model: think-s}}]}}
  think-drop: {{reasoning: drop, routes: [{{provider: fake, model: think-d}}]}}
  think-keep: {{routes: [{{provider: fake, model: think-k}}]}}
  cached: {{cache: {{ttl: 60}}, routes: [{{provider: fake, model: cached-up}}]}}
  cached-shared: {{cache: {{ttl: 60, shared: true}}, routes: [{{provider: fake, model: shared-up}}]}}
keys:
  - {{name: full-key, key: "${{TEST_FULL_KEY}}"}}
  - {{name: other-key, key: "${{TEST_SCOPED_KEY}}"}}
"""


@pytest.fixture(scope="module")
def rules(fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(rules_config(fake_upstream.port), tmp_path_factory.mktemp("rules"))
    yield gw
    stop_gateway(gw)


def models_asked(upstream: FakeOpenAI) -> list[str]:
    return [r.body["model"] for r in upstream.recorder.requests]


def chat(gw: Gateway, alias: str) -> tuple[openai.types.chat.ChatCompletion, httpx.Headers]:
    raw = gw.client().chat.completions.with_raw_response.create(model=alias, messages=USER)
    return raw.parse(), raw.headers


def route_state(gw: Gateway, route: str) -> str:
    text = httpx.get(gw.url + "/metrics").text
    for line in text.splitlines():
        if line.startswith(f'switchyard_route_state{{route="{route}"') and line.endswith(" 1"):
            return line.split('state="')[1].split('"')[0]
    return "unknown"


def test_highest_priority_tier_serves(rules: Gateway, upstream: FakeOpenAI) -> None:
    assert {chat(rules, "tiers")[0].model for _ in range(10)} == {"tier-high"}


def test_retry_goes_to_another_route_without_waiting(rules: Gateway, upstream: FakeOpenAI) -> None:
    reply, headers = chat(rules, "retry-elsewhere")
    assert reply.model == "re-ok"
    assert models_asked(upstream) == ["fail-500-re", "re-ok"]
    assert headers["x-switchyard-attempts"] == "2"
    assert headers["x-switchyard-route"] == "fake/re-ok"


def test_retry_on_the_same_route_backs_off(rules: Gateway, upstream: FakeOpenAI) -> None:
    reply, headers = chat(rules, "retry-same")
    assert reply.model == "flaky-2-same"
    assert headers["x-switchyard-attempts"] == "3"
    assert len(upstream.recorder.requests) == 3


def test_retry_after_is_honoured(rules: Gateway, upstream: FakeOpenAI) -> None:
    assert chat(rules, "retry-after")[0].model == "flaky429-1-ra"
    first, second = upstream.recorder.requests
    assert second.at - first.at >= 0.3  # the upstream's Retry-After: 0.3


def test_only_listed_statuses_are_retried(rules: Gateway, upstream: FakeOpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        chat(rules, "retry-on-list")  # a 500, but retry_on is [503]
    assert len(upstream.recorder.requests) == 1


def test_retries_never_exceed_the_deadline(rules: Gateway, upstream: FakeOpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        chat(rules, "deadline")
    elapsed = time.monotonic() - started
    assert caught.value.status_code == 504
    assert elapsed < 1.8  # one 1 s deadline for all attempts, not 6 x 0.4 s plus backoff
    assert 2 <= len(upstream.recorder.requests) <= 3


@pytest.mark.parametrize(
    ("alias", "answer"), [("ctx", "big-context"), ("policy", "safe-model"), ("broken", "general-model")]
)
def test_fallbacks_by_cause(rules: Gateway, upstream: FakeOpenAI, alias: str, answer: str) -> None:
    assert chat(rules, alias)[0].model == answer


def test_route_cools_down_fails_fast_and_comes_back(rules: Gateway, upstream: FakeOpenAI) -> None:
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            chat(rules, "cool")
    assert route_state(rules, "fake/flaky-2-cool") == "cooling"
    with pytest.raises(openai.InternalServerError) as caught:
        chat(rules, "cool")
    assert caught.value.status_code == 503
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 2
    assert caught.value.code == "no_healthy_route"
    assert len(upstream.recorder.requests) == 2  # the cooled route was not asked
    # After the cooldown the background check (interval 0.2 s) probes the route; it answers and is restored.
    assert wait_until(lambda: route_state(rules, "fake/flaky-2-cool") == "healthy", timeout=10)
    probe = upstream.recorder.requests[2].body
    assert probe["messages"] == [{"role": "user", "content": "ping"}] and probe["max_tokens"] == 1
    assert chat(rules, "cool")[0].model == "flaky-2-cool"


def test_quota_error_cools_the_route_at_once(rules: Gateway, upstream: FakeOpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        chat(rules, "quota")
    with pytest.raises(openai.InternalServerError) as caught:
        chat(rules, "quota")
    assert caught.value.status_code == 503
    assert len(upstream.recorder.requests) == 1


async def test_least_inflight_spreads_concurrent_requests(rules: Gateway, upstream: FakeOpenAI) -> None:
    client = rules.async_client()
    replies = await asyncio.gather(*(client.chat.completions.create(model="least", messages=USER) for _ in range(4)))
    await client.close()
    assert Counter(r.model for r in replies) == {"slow-400-a": 2, "slow-400-b": 2}


def test_lowest_latency_prefers_the_fast_route(rules: Gateway, upstream: FakeOpenAI) -> None:
    answers = [chat(rules, "fastest")[0].model for _ in range(8)]
    assert set(answers) == {"slow-120-ll", "ll-fast"}  # each measured once first
    assert answers[-4:] == ["ll-fast"] * 4


def test_cost_strategy_picks_the_cheapest(rules: Gateway, upstream: FakeOpenAI) -> None:
    assert {chat(rules, "cheapest")[0].model for _ in range(6)} == {"cost-cheap"}


def test_route_at_rpm_capacity_is_skipped(rules: Gateway, upstream: FakeOpenAI) -> None:
    assert [chat(rules, "capped")[0].model for _ in range(4)] == ["cap-a", "cap-a", "cap-b", "cap-b"]


def test_route_at_tpm_capacity_is_skipped(rules: Gateway, upstream: FakeOpenAI) -> None:
    client = rules.client()

    def ask(max_tokens: int) -> str:
        return client.chat.completions.create(model="token-capped", messages=USER, max_tokens=max_tokens).model

    # Each request is estimated at its body size / 4 plus max_tokens: two of ~220 fit in 500, a third does not.
    assert [ask(200), ask(200), ask(200)] == ["tok-a", "tok-a", "tok-b"]


def test_metrics_count_requests_and_errors(rules: Gateway, upstream: FakeOpenAI) -> None:
    chat(rules, "tiers")
    chat(rules, "broken")
    text = httpx.get(rules.url + "/metrics").text
    assert 'switchyard_requests_total{alias="tiers",route="fake/tier-high",status="200"}' in text
    assert 'switchyard_upstream_errors_total{route="fake/fail-502-x",code="fake_code"}' in text
    assert 'switchyard_request_duration_seconds_bucket{alias="tiers",le="+Inf"}' in text
    assert 'switchyard_route_state{route="fake/tier-high",state="healthy"} 1' in text


def test_test_routes_command(rules: Gateway) -> None:
    cfg = rules.log_path.parent / "gateway.yaml"  # the config the module's gateway runs
    env = {"TEST_PROVIDER_KEY": "sk-x-0000000000", "TEST_FULL_KEY": FULL_KEY, "TEST_SCOPED_KEY": SCOPED_KEY}
    ok = _switchyard(["test-routes", "--config", str(cfg), "--alias", "tiers", "--alias", "embed-probe"], env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "fake/tier-high" in ok.stdout and "fake/embed-ok" in ok.stdout and "FAILED" not in ok.stdout
    bad = _switchyard(["test-routes", "--config", str(cfg), "--alias", "broken"], env)
    assert bad.returncode == 1
    assert "FAILED" in bad.stdout and "fake failure 502" in bad.stdout


def _switchyard(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_sticky_sessions_keep_a_user_on_one_route(rules: Gateway, upstream: FakeOpenAI) -> None:
    client = rules.client()
    chosen = {}
    for user in (f"user-{i}" for i in range(9)):
        answers = {client.chat.completions.create(model="sticky", messages=USER, user=user).model for _ in range(4)}
        assert len(answers) == 1, (user, answers)
        chosen[user] = answers.pop()
    assert len(set(chosen.values())) > 1  # different users spread over the routes


def test_sticky_sessions_by_header(rules: Gateway, upstream: FakeOpenAI) -> None:
    client = rules.client()
    for session in ("s-1", "s-2", "s-3"):
        answers = {
            client.chat.completions.create(
                model="sticky-header", messages=USER, extra_headers={"X-Session-Id": session}
            ).model
            for _ in range(4)
        }
        assert len(answers) == 1


def _cached(gw: Gateway, alias: str, key: str = FULL_KEY, **extra: object) -> tuple[str, httpx.Headers]:
    raw = gw.client(key).chat.completions.with_raw_response.create(model=alias, messages=USER, **extra)
    return raw.text, raw.headers


def test_response_cache_hits_for_the_same_request_and_key(rules: Gateway, upstream: FakeOpenAI) -> None:
    first, headers = _cached(rules, "cached", temperature=0.1)
    assert headers["x-switchyard-cache"] == "miss"
    again, headers = _cached(rules, "cached", temperature=0.1)
    assert headers["x-switchyard-cache"] == "hit"
    assert again == first
    assert len(upstream.recorder.requests) == 1
    assert _cached(rules, "cached", temperature=0.2)[1]["x-switchyard-cache"] == "miss"  # other parameters
    assert _cached(rules, "cached", SCOPED_KEY, temperature=0.1)[1]["x-switchyard-cache"] == "miss"  # other key
    assert len(upstream.recorder.requests) == 3


def test_shared_cache_serves_every_key(rules: Gateway, upstream: FakeOpenAI) -> None:
    _cached(rules, "cached-shared", seed=11)
    assert _cached(rules, "cached-shared", SCOPED_KEY, seed=11)[1]["x-switchyard-cache"] == "hit"
    assert len(upstream.recorder.requests) == 1


def test_cache_control_is_honoured(rules: Gateway, upstream: FakeOpenAI) -> None:
    _cached(rules, "cached", seed=21)
    fresh = _cached(rules, "cached", seed=21, extra_headers={"Cache-Control": "no-cache"})
    assert fresh[1]["x-switchyard-cache"] == "miss"
    _cached(rules, "cached", seed=22, extra_headers={"Cache-Control": "no-store"})
    assert _cached(rules, "cached", seed=22)[1]["x-switchyard-cache"] == "miss"  # nothing was stored
    assert len(upstream.recorder.requests) == 4


def test_streams_are_replayed_from_the_cache(rules: Gateway, upstream: FakeOpenAI) -> None:
    client = rules.client()

    def text() -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(model="cached", messages=USER, stream=True, seed=5)
        chunks = list(raw.parse())
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), raw.headers["x-switchyard-cache"]

    assert text() == ("echo: route me ", "miss")
    assert text() == ("echo: route me ", "hit")
    assert len(upstream.recorder.requests) == 1


ANSWER = "The answer is 42 <not a tag>."
REASONING = "\nThe user wants a number.\n"


def _message(gw: Gateway, alias: str) -> dict:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": alias, "messages": USER},
        headers={"Authorization": f"Bearer {FULL_KEY}"},
    ).json()["choices"][0]["message"]


def _streamed(gw: Gateway, alias: str) -> tuple[str, str]:
    content, reasoning = [], []
    body = {"model": alias, "messages": USER, "stream": True}
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {FULL_KEY}"}
    ) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    content.append(choice["delta"].get("content") or "")
                    reasoning.append(choice["delta"].get("reasoning_content") or "")
    return "".join(content), "".join(reasoning)


def test_reasoning_split_moves_think_blocks(rules: Gateway, upstream: FakeOpenAI) -> None:
    message = _message(rules, "think-split")
    assert (message["content"], message["reasoning_content"]) == (ANSWER, REASONING)
    assert _streamed(rules, "think-split") == (ANSWER, REASONING)  # tags cut every 3 characters upstream


def test_reasoning_drop_and_keep(rules: Gateway, upstream: FakeOpenAI) -> None:
    dropped = _message(rules, "think-drop")
    assert dropped["content"] == ANSWER and "reasoning_content" not in dropped
    assert _streamed(rules, "think-drop") == (ANSWER, "")
    kept = _message(rules, "think-keep")
    assert kept["content"].startswith("<think>") and "reasoning_content" not in kept
