"""Shared fixtures: the fake upstream, and the real gateway started by its CLI on a loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.fakes.openai_upstream import FakeOpenAI

pytest_plugins = ["tests.store_fixtures"]

# Canary secrets: a test greps the gateway's whole log output for them.
PROVIDER_KEY = "sk-canary-provider-7f3a9c1e5b2d4680"
FULL_KEY = "sk-canary-client-full-0123456789abcdef"
SCOPED_KEY = "sk-canary-client-scoped-fedcba9876543210"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The core suite checks single attempts and fallbacks: no retries, and no cooldown carried between tests.
KEEP = "max_retries: 0, cooldown: {failures: 1000000}"


def gateway_config(upstream: int, dead: int) -> str:
    fake = f"http://127.0.0.1:{upstream}/v1"
    return f"""
server: {{host: 127.0.0.1, port: 8000, max_body_bytes: 1048576, max_response_bytes: 1048576}}
providers:
  fake: {{type: openai, base_url: "{fake}", api_key: "${{TEST_PROVIDER_KEY}}", headers: {{X-Tenant: acme}}}}
  impatient:
    type: openai
    base_url: "{fake}"
    api_key: "${{TEST_PROVIDER_KEY}}"
    timeout: {{connect: 1, first_byte: 0.5, total: 5}}
  dead: {{type: openai, base_url: "http://127.0.0.1:{dead}/v1", api_key: "${{TEST_PROVIDER_KEY}}"}}
  native: {{type: openai, base_url: "{fake}", api_key: "${{TEST_PROVIDER_KEY}}", responses_api: true}}
models:
  echo: {{routes: [{{provider: fake, model: echo-upstream}}], {KEEP}}}
  other: {{routes: [{{provider: fake, model: other-upstream}}], {KEEP}}}
  "team/model": {{routes: [{{provider: fake, model: slash-upstream}}], {KEEP}}}
  weighted:
    max_retries: 0
    routes:
      - {{provider: fake, model: w-heavy, weight: 3}}
      - {{provider: fake, model: w-light, weight: 1}}
  stream-long: {{routes: [{{provider: fake, model: stream-long}}], {KEEP}}}
  drop: {{routes: [{{provider: fake, model: drop-mid-stream}}], {KEEP}}}
  error-in-stream: {{routes: [{{provider: fake, model: error-in-stream}}], {KEEP}}}
  no-done: {{routes: [{{provider: fake, model: no-done}}], {KEEP}}}
  stall: {{routes: [{{provider: impatient, model: stall-mid-stream}}], {KEEP}}}
  huge-event: {{routes: [{{provider: fake, model: huge-event}}], {KEEP}}}
  hang: {{routes: [{{provider: impatient, model: hang}}], {KEEP}}}
  hang-long: {{routes: [{{provider: fake, model: hang}}], {KEEP}}}
  huge: {{routes: [{{provider: fake, model: huge}}], {KEEP}}}
  bad-key: {{routes: [{{provider: fake, model: bad-key}}], {KEEP}}}
  bad-key-logs: {{routes: [{{provider: impatient, model: bad-key}}], {KEEP}}}  # its own route: no shared cooldown
  fail-400: {{routes: [{{provider: fake, model: fail-400}}], fallbacks: [echo], {KEEP}}}
  fail-400-only: {{routes: [{{provider: fake, model: fail-400}}], max_retries: 2, cooldown: {{failures: 1000000}}}}
  fail-429: {{routes: [{{provider: fake, model: fail-429}}], {KEEP}}}
  fail-500: {{routes: [{{provider: fake, model: fail-500}}], fallbacks: [echo], {KEEP}}}
  fail-503: {{routes: [{{provider: fake, model: fail-503}}], {KEEP}}}
  dead: {{routes: [{{provider: dead, model: x}}], fallbacks: [echo], {KEEP}}}
  dead-only: {{routes: [{{provider: dead, model: x}}], {KEEP}}}
  reset: {{routes: [{{provider: fake, model: reset}}], fallbacks: [other], {KEEP}}}
  timeout-fb: {{routes: [{{provider: impatient, model: hang}}], fallbacks: [echo], {KEEP}}}
  loop-a: {{routes: [{{provider: fake, model: fail-502}}], fallbacks: [loop-b], {KEEP}}}
  loop-b: {{routes: [{{provider: fake, model: fail-500}}], fallbacks: [loop-a], {KEEP}}}
  embed: {{routes: [{{provider: fake, model: embed-upstream}}], {KEEP}}}
  think-split: {{reasoning: split, routes: [{{provider: fake, model: think-m}}], {KEEP}}}
  native: {{routes: [{{provider: native, model: resp-upstream}}], {KEEP}}}
  native-then-chat: {{routes: [{{provider: native, model: resp-upstream}}], fallbacks: [echo], {KEEP}}}
keys:
  - {{name: full-key, key: "${{TEST_FULL_KEY}}"}}
  - {{name: scoped-key, key: "${{TEST_SCOPED_KEY}}", models: [echo, native]}}
"""


@dataclass
class Gateway:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def client(self, key: str = FULL_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)

    def async_client(self, key: str = FULL_KEY) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def access_lines(self, request_id: str) -> list[dict[str, Any]]:
        """The request's access-log line (and attempt lines) once written: the server logs after it answered."""
        found: list[dict[str, Any]] = []

        def logged() -> bool:
            found[:] = [json.loads(line) for line in self.log_text().splitlines() if request_id in line]
            return any("path" in entry for entry in found)

        if not wait_until(logged):
            raise AssertionError(f"no access line for {request_id}")
        return found


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    fake.start()
    yield fake
    fake.stop()


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll a condition of another process (its /metrics, say): there is no event to await across processes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling a child process's readiness: there is no event to await
    raise RuntimeError(f"gateway not ready after {timeout}s:\n{log.read_text()}")


def start_gateway(config: str, tmp: Path, extra_env: dict[str, str] | None = None, workers: int = 1) -> Gateway:
    cfg = tmp / "gateway.yaml"
    cfg.write_text(config)
    port = free_port()
    log = tmp / "gateway.log"
    env = {
        **os.environ,
        "TEST_PROVIDER_KEY": PROVIDER_KEY,
        "TEST_FULL_KEY": FULL_KEY,
        "TEST_SCOPED_KEY": SCOPED_KEY,
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg), "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,  # the default data_dir (./.switchyard: spool, embedded database) lands in the test's tmp dir
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
    except Exception:
        process.kill()
        raise
    return Gateway(url, log, process)


def stop_gateway(gw: Gateway) -> None:
    gw.process.terminate()
    try:
        gw.process.wait(15)
    except subprocess.TimeoutExpired:
        gw.process.kill()
        gw.process.wait()


@pytest.fixture(scope="session")
def gateway(fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(gateway_config(fake_upstream.port, free_port()), tmp_path_factory.mktemp("gateway"))
    yield gw
    stop_gateway(gw)


@pytest.fixture
def upstream(fake_upstream: FakeOpenAI) -> FakeOpenAI:
    """The fake upstream with its records cleared for this test."""
    fake_upstream.recorder.clear()
    return fake_upstream


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis (SWITCHYARD_TEST_REDIS_URL, default the local one); .ci/run starts one when missing."""
    url = os.environ.get("SWITCHYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"tests need Redis at {url} (set SWITCHYARD_TEST_REDIS_URL): {exc}") from exc
    finally:
        client.close()
    return url
