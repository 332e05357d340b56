"""Two gateway processes sharing one Redis see the same route cooldowns."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import FULL_KEY, start_gateway, stop_gateway, wait_until
from tests.fakes.openai_upstream import FakeOpenAI

USER = [{"role": "user", "content": "shared"}]


def shared_config(port: int, redis_url: str, prefix: str) -> str:
    return f"""
redis_url: "{redis_url}"
redis_prefix: "{prefix}"
providers:
  fake: {{type: openai, base_url: "http://127.0.0.1:{port}/v1"}}
models:
  shared:
    max_retries: 1
    cooldown: {{failures: 2, window: 60, duration: 60}}
    routes: [{{provider: fake, model: fail-503-shared, priority: 1}}, {{provider: fake, model: shared-ok}}]
keys:
  - {{name: k, key: "${{TEST_FULL_KEY}}"}}
"""


def cooling(url: str) -> bool:
    text = httpx.get(url + "/metrics").text
    return 'switchyard_route_state{route="fake/fail-503-shared",state="cooling"} 1' in text


def ask(url: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {FULL_KEY}"}
    return httpx.post(url + "/v1/chat/completions", json={"model": "shared", "messages": USER}, headers=headers)


def test_cooldown_tripped_in_one_process_is_seen_by_another(
    fake_upstream: FakeOpenAI, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"switchyard-test-{uuid.uuid4().hex[:8]}"
    config = shared_config(fake_upstream.port, redis_url, prefix)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_gateway(config, tmp_path / "a")
    second = start_gateway(config, tmp_path / "b")
    try:
        fake_upstream.recorder.clear()
        for _ in range(2):  # each: the priority route fails, the retry lands on the other one
            reply = ask(first.url)
            assert reply.status_code == 200 and reply.headers["x-switchyard-attempts"] == "2"
        assert cooling(first.url)
        assert wait_until(lambda: cooling(second.url))
        fake_upstream.recorder.clear()
        reply = ask(second.url)
        assert reply.status_code == 200
        assert reply.headers["x-switchyard-attempts"] == "1"
        assert [r.body["model"] for r in fake_upstream.recorder.requests] == ["shared-ok"]
    finally:
        stop_gateway(first)
        stop_gateway(second)
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()


def test_unreachable_redis_fails_start_up_loudly(fake_upstream: FakeOpenAI, tmp_path: Path) -> None:
    config = shared_config(fake_upstream.port, "redis://127.0.0.1:1/0", "switchyard-test-down")
    with pytest.raises(RuntimeError, match="gateway exited"):
        start_gateway(config, tmp_path)
