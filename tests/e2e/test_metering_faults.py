"""Metering and limits under faults, each with real processes: the gateway started by its CLI, a real PostgreSQL
(a dedicated embedded server where the test stops it), a real Redis (reached through a relay where the test cuts
it), the fake OpenAI upstream.

- PostgreSQL stopped mid-run, then restarted: every request served is in the ledger exactly once.
- A gateway killed (SIGKILL) with usage in its spool: the next gateway on the same data dir replays it, once.
- `on_db_down: reject`: 503 `usage_ledger_unavailable`, the upstream never called; served again once the database
  is back.
- Two gateways on one Redis enforce one `rpm` exactly, with OpenAI's rate-limit headers.
- Redis lost mid-run: `on_redis_down: allow` serves, `deny` answers 503 `limits_unavailable`.
- A budget spent: 429 `insufficient_quota`, in the process that spent it, in a restarted one (memory budgets,
  reconciled from the ledger) and in another process on the same Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai
import pytest
import redis
from sqlalchemy import NullPool, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.store.embedded import EmbeddedPostgres
from gateway.store.urls import parse_url
from tests.conftest import FULL_KEY, Gateway, free_port, start_gateway, stop_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.store_fixtures import create_database, drop_database

ALIAS = "metered"
PROMPT, COMPLETION = 5, 3  # what the fake upstream reports for every answer
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")
ERROR_FIELDS = {"message", "type", "param", "code"}


# --------------------------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def config(port: int, upstream_model: str, key_name: str, *, top: str = "", key: str = "", alias: str = "") -> str:
    """One provider (the fake), one alias `metered` on `upstream_model`, one key; `top`: top-level YAML lines,
    `key` / `alias`: extra flow-mapping entries of the key / the alias (each starting with ', ')."""
    return f"""
{top}
providers:
  fake: {{type: openai, base_url: "http://127.0.0.1:{port}/v1", api_key: "${{TEST_PROVIDER_KEY}}"}}
models:
  {ALIAS}: {{routes: [{{provider: fake, model: {upstream_model}}}], max_retries: 0{alias}}}
keys:
  - {{name: {key_name}, key: "${{TEST_FULL_KEY}}"{key}}}
"""


def dead_database_url() -> str:
    """A PostgreSQL URL where nothing listens."""
    return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/switchyard"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Poll a condition of another process (its database rows, its spool files) until it holds or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


@contextlib.contextmanager
def gateways(*started: Gateway) -> Iterator[list[Gateway]]:
    """Stop every gateway the block started (appended to the list), whatever happens."""
    running = list(started)
    try:
        yield running
    finally:
        for gw in running:
            if gw.process.poll() is None:
                stop_gateway(gw)


async def chat(
    client: httpx.AsyncClient, gw: Gateway, text_: str, *, stream: bool = False, max_tokens: int | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"model": ALIAS, "messages": [{"role": "user", "content": text_}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
    headers = {"Authorization": f"Bearer {FULL_KEY}"}
    response = await client.post(gw.url + "/v1/chat/completions", json=body, headers=headers)
    if stream and response.status_code == 200:
        assert response.text.rstrip().endswith("data: [DONE]"), response.text[-300:]
    return response


async def served(gw: Gateway, count: int, *, label: str) -> list[str]:
    """Send `count` requests one after the other (every third a stream); all must succeed. Their request ids."""
    ids = []
    async with httpx.AsyncClient(timeout=10) as client:
        for i in range(count):
            response = await chat(client, gw, f"{label} {i}", stream=i % 3 == 2)
            assert response.status_code == 200, response.text
            ids.append(response.headers["x-request-id"])
    return ids


def metric(gw: Gateway, series: str) -> float | None:
    """One series of the gateway's /metrics (`name` or `name{labels}`), None when absent."""
    for line in httpx.get(gw.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def usage_rows(gw: Gateway) -> dict[str, float | None]:
    """The writer's counters: rows written to the database, spooled to disk, replayed from the spool."""
    return {o: metric(gw, f'switchyard_usage_rows_total{{outcome="{o}"}}') for o in ("written", "spooled", "replayed")}


def upstream_calls(upstream: FakeOpenAI, model: str) -> int:
    return len(upstream.recorder.bodies_for(model))


@dataclass
class Ledger:
    rows: int
    distinct: int
    request_ids: set[str]
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal


async def read_ledger(url: str, key_name: str) -> Ledger | None:
    """The key's ledger rows, summed; None while the database (or its ledger table) is not there."""
    engine = create_async_engine(parse_url(url), poolclass=NullPool, connect_args={"timeout": 2})
    query = text(
        "SELECT request_id, attempt, prompt_tokens, completion_tokens, cost FROM usage_ledger WHERE key_name = :key"
    )
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(query, {"key": key_name})).all()
    except (DBAPIError, OSError):
        return None
    finally:
        await engine.dispose()
    return Ledger(
        rows=len(rows),
        distinct=len({(r.request_id, r.attempt) for r in rows}),
        request_ids={r.request_id for r in rows},
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        completion_tokens=sum(r.completion_tokens for r in rows),
        cost=sum((r.cost for r in rows), Decimal(0)),
    )


async def ledger_rows(url: str, key_name: str, count: int, timeout: float = 15) -> Ledger:
    """The key's ledger once it holds `count` rows (fails the test when it does not within `timeout`)."""
    found: list[Ledger | None] = [None]

    async def arrived() -> bool:
        found[0] = await read_ledger(url, key_name)
        return found[0] is not None and found[0].rows >= count

    await eventually(arrived, timeout)
    assert found[0] is not None, f"ledger at {url} unreachable"
    assert found[0].rows == count, f"expected {count} ledger rows, found {found[0].rows}"
    return found[0]


def spool_dir(tmp: Path) -> Path:
    return tmp / ".switchyard" / "spool"


def spooled_rows(tmp: Path) -> int:
    """Rows waiting in the spool files of the gateway whose working directory is `tmp`."""
    directory = spool_dir(tmp)
    if not directory.is_dir():
        return 0
    return sum(path.read_bytes().count(b"\n") for path in directory.glob("usage-*"))


def spool_files(tmp: Path) -> list[Path]:
    directory = spool_dir(tmp)
    return sorted(directory.glob("usage-*")) if directory.is_dir() else []


async def spool_holds(tmp: Path, count: int, timeout: float = 10) -> bool:
    async def check() -> bool:
        return spooled_rows(tmp) == count

    return await eventually(check, timeout)


async def spool_empty(tmp: Path, timeout: float = 15) -> bool:
    async def check() -> bool:
        return not spool_files(tmp)

    return await eventually(check, timeout)


def assert_exactly(ledger: Ledger, request_ids: list[str]) -> None:
    """One row per request served (each a single attempt), none lost, none doubled, tokens as reported."""
    n = len(request_ids)
    assert ledger.rows == n
    assert ledger.distinct == n
    assert ledger.request_ids == set(request_ids)
    assert (ledger.prompt_tokens, ledger.completion_tokens) == (n * PROMPT, n * COMPLETION)


class Answer(Protocol):
    """An HTTP response, from httpx or from the openai SDK (which may bring its own copy of httpx)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Any: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


def assert_openai_error(response: Answer, status: int, code: str, type_: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_FIELDS
    assert (error["code"], error["type"]) == (code, type_)
    assert error["message"]


class Relay:
    """A TCP relay to a real server, run on its own event loop thread; `cut()` is the server going away for
    everyone connected through it: the listener closes and every relayed connection is dropped."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> int:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(5)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._relay, "127.0.0.1", 0)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _cut(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.transport.abort()

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(), self.loop).result(5)

    def stop(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def through(url: str, port: int) -> str:
    """The Redis URL with its host and port replaced by the relay's (credentials, db and query kept)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A Redis key prefix of this test alone; its keys are deleted afterwards."""
    prefix = unique("switchyard-test-metering")
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """A new, empty database on the test server (the gateway migrates it), dropped after the test."""
    url = await create_database(database_url)
    try:
        yield url
    finally:
        await drop_database(database_url, url)


@pytest.fixture
async def embedded_server(embedded_dir: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test alone, which it may stop and start; stopped at the end."""
    server = EmbeddedPostgres(embedded_dir)
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


# --------------------------------------------------------------------------------------------- the ledger


async def test_postgres_stopped_mid_run_then_restarted_loses_and_doubles_nothing(
    upstream: FakeOpenAI, tmp_path: Path, embedded_server: EmbeddedPostgres
) -> None:
    model, key_name = unique("pg-restart"), unique("k")
    url = await asyncio.to_thread(embedded_server.start)
    top = f'database_url: "{url}"\nmetering: {{flush_interval: 0.2}}'
    with gateways(start_gateway(config(upstream.port, model, key_name, top=top), tmp_path)) as (gw,):
        before = await served(gw, 4, label="before")
        assert_exactly(await ledger_rows(url, key_name, 4), before)  # written straight to the database

        await asyncio.to_thread(embedded_server.stop)
        assert await read_ledger(url, key_name) is None  # the server is really down

        during = await served(gw, 6, label="during")  # on_db_down: serve (the default)
        assert await spool_holds(tmp_path, 6), f"spool holds {spooled_rows(tmp_path)} rows, expected 6"
        assert metric(gw, "switchyard_usage_ledger_up") == 0

        assert await asyncio.to_thread(embedded_server.start) == url
        assert_exactly(await ledger_rows(url, key_name, 10, timeout=20), before + during)
        assert await spool_empty(tmp_path), spool_files(tmp_path)
        after = await served(gw, 2, label="after")
        ledger = await ledger_rows(url, key_name, 12)
        assert metric(gw, "switchyard_usage_ledger_up") == 1
        assert usage_rows(gw) == {"written": 6, "spooled": 6, "replayed": 6}

    assert_exactly(ledger, before + during + after)
    assert upstream_calls(upstream, model) == 12


async def test_spool_of_a_killed_gateway_is_replayed_once_on_restart(
    upstream: FakeOpenAI, tmp_path: Path, fresh_database: str
) -> None:
    model, key_name = unique("crash"), unique("k")
    down = f'database_url: "{dead_database_url()}"\nmetering: {{flush_interval: 0.2}}'
    with gateways(start_gateway(config(upstream.port, model, key_name, top=down), tmp_path)) as (first,):
        spooled = await served(first, 5, label="spooled")
        assert await spool_holds(tmp_path, 5), f"spool holds {spooled_rows(tmp_path)} rows, expected 5"
        first.process.kill()  # SIGKILL: no shutdown, no drain; the spool file stays behind with its dead owner's pid
        first.process.wait(10)
    assert spool_files(tmp_path)

    up = f'database_url: "{fresh_database}"\nmetering: {{flush_interval: 0.2}}'
    with gateways(start_gateway(config(upstream.port, model, key_name, top=up), tmp_path)) as (second,):
        ledger = await ledger_rows(fresh_database, key_name, 5)
        assert await spool_empty(tmp_path), spool_files(tmp_path)
        assert_exactly(ledger, spooled)
        fresh = await served(second, 2, label="fresh")
        ledger = await ledger_rows(fresh_database, key_name, 7)
        assert usage_rows(second) == {"written": 2, "spooled": 0, "replayed": 5}

    assert_exactly(ledger, spooled + fresh)
    assert upstream_calls(upstream, model) == 7
    assert not spool_files(tmp_path)  # a clean stop leaves nothing to replay


async def test_on_db_down_reject_answers_503_and_never_calls_the_upstream(upstream: FakeOpenAI, tmp_path: Path) -> None:
    model, key_name = unique("reject"), unique("k")
    top = f'database_url: "{dead_database_url()}"\nmetering: {{on_db_down: reject, flush_interval: 0.2}}'
    with gateways(start_gateway(config(upstream.port, model, key_name, top=top), tmp_path)) as (gw,):
        async with httpx.AsyncClient(timeout=10) as client:
            for stream in (False, True):
                response = await chat(client, gw, "refused", stream=stream)
                assert_openai_error(response, 503, "usage_ledger_unavailable", "server_error")
            sdk = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=FULL_KEY, max_retries=0)
            with pytest.raises(openai.InternalServerError) as caught:
                await sdk.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "sdk"}])
            assert caught.value.status_code == 503
            await sdk.close()
    assert upstream_calls(upstream, model) == 0
    assert not spool_files(tmp_path)  # nothing was served, so nothing to record


async def test_on_db_down_reject_serves_again_once_the_database_is_back(
    upstream: FakeOpenAI, tmp_path: Path, embedded_server: EmbeddedPostgres
) -> None:
    model, key_name = unique("reject-back"), unique("k")
    url = await asyncio.to_thread(embedded_server.start)
    await asyncio.to_thread(embedded_server.stop)  # down before the gateway starts
    top = f'database_url: "{url}"\nmetering: {{on_db_down: reject, flush_interval: 0.2}}'
    with gateways(start_gateway(config(upstream.port, model, key_name, top=top), tmp_path)) as (gw,):
        async with httpx.AsyncClient(timeout=10) as client:
            assert_openai_error(await chat(client, gw, "refused"), 503, "usage_ledger_unavailable", "server_error")
            await asyncio.to_thread(embedded_server.start)
            answers: list[httpx.Response] = []

            async def serving() -> bool:
                answers.append(await chat(client, gw, "back"))
                return answers[-1].status_code == 200

            assert await eventually(serving, 8), answers[-1].text  # the writer probes a down database every 2 s
        ledger = await ledger_rows(url, key_name, 1)
    assert ledger.request_ids == {answers[-1].headers["x-request-id"]}
    assert upstream_calls(upstream, model) == 1


async def test_a_graceful_stop_writes_out_the_usage_not_flushed_yet(
    upstream: FakeOpenAI, tmp_path: Path, fresh_database: str
) -> None:
    model, key_name = unique("drain"), unique("k")
    top = f'database_url: "{fresh_database}"\nmetering: {{flush_interval: 5}}'  # nothing flushes before the stop
    with gateways(start_gateway(config(upstream.port, model, key_name, top=top), tmp_path)) as (gw,):
        ids = await served(gw, 3, label="queued")
        stop_gateway(gw)  # SIGTERM: the writer drains what is queued on its way out
        assert "Application shutdown complete" in gw.log_text()  # uvicorn ran the shutdown hooks
    ledger = await read_ledger(fresh_database, key_name)
    assert ledger is not None
    assert spooled_rows(tmp_path) == 0
    assert_exactly(ledger, ids)


# --------------------------------------------------------------------------------------------- rate limits


async def test_two_gateways_on_one_redis_enforce_one_rpm_exactly(
    upstream: FakeOpenAI, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    model, key_name = unique("rpm"), unique("k")
    top = f'redis_url: "{redis_url}"\nredis_prefix: "{redis_prefix}"'
    text_ = config(upstream.port, model, key_name, top=top, key=", rpm: 10")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with gateways(start_gateway(text_, tmp_path / "a")) as running:
        running.append(start_gateway(text_, tmp_path / "b"))
        clients = [openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=FULL_KEY, max_retries=0) for gw in running]

        async def ask(i: int) -> Answer:
            create = clients[i % 2].chat.completions.with_raw_response.create
            try:
                raw = await create(model=ALIAS, messages=[{"role": "user", "content": f"burst {i}"}])
            except openai.RateLimitError as exc:
                return exc.response
            return raw.http_response

        answers = await asyncio.gather(*(ask(i) for i in range(30)))
        for client in clients:
            await client.close()

    ok = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert (len(ok), len(refused)) == (10, 20), [a.status_code for a in answers]
    assert upstream_calls(upstream, model) == 10
    # Each admitted request took one place of the shared allowance, atomically: 9, 8, ..., 0 left.
    assert sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in ok) == list(range(10))
    for answer in ok + refused:
        assert answer.headers["x-ratelimit-limit-requests"] == "10"
        assert GO_DURATION.match(answer.headers["x-ratelimit-reset-requests"]), answer.headers
    for answer in refused:
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"
        assert int(answer.headers["retry-after"]) >= 1
        assert_openai_error(answer, 429, "rate_limit_exceeded", "rate_limit_error")


@pytest.mark.parametrize(("on_down", "status"), [("allow", 200), ("deny", 503)])
async def test_redis_lost_mid_run_follows_on_redis_down(
    upstream: FakeOpenAI, tmp_path: Path, redis_url: str, redis_prefix: str, on_down: str, status: int
) -> None:
    # An unreachable Redis at start-up stops the gateway (shared cooldowns need it), so Redis goes away after it.
    target = urlsplit(redis_url)
    relay = Relay(target.hostname or "127.0.0.1", target.port or 6379)
    relay.start()
    model, key_name = unique(f"redis-{on_down}"), unique("k")
    top = f'redis_url: "{through(redis_url, relay.port)}"\nredis_prefix: "{redis_prefix}"\non_redis_down: {on_down}'
    try:
        with gateways(start_gateway(config(upstream.port, model, key_name, top=top, key=", rpm: 100"), tmp_path)) as (
            gw,
        ):
            async with httpx.AsyncClient(timeout=10) as client:
                limited = await chat(client, gw, "limited")
                assert limited.status_code == 200, limited.text
                assert limited.headers["x-ratelimit-remaining-requests"] == "99"  # counted in Redis
                relay.cut()
                for stream in (False, True):
                    response = await chat(client, gw, "redis down", stream=stream)
                    if status == 200:
                        assert response.status_code == 200, response.text
                    else:
                        assert_openai_error(response, 503, "limits_unavailable", "server_error")
            assert (metric(gw, "switchyard_limits_unavailable_total") or 0) >= 2
    finally:
        relay.stop()
    assert upstream_calls(upstream, model) == (3 if status == 200 else 1)


# --------------------------------------------------------------------------------------------- budgets

BUDGET = Decimal("0.05")
PRICED = ", pricing: {input: 1000, output: 1000, currency: USD}"  # $0.001 a token: an answer costs $0.008
ANSWER_COST = Decimal("0.008")
MAX_TOKENS = 4  # bounds the cost held at admission: ~(request bytes / 4 + 4) tokens, about $0.025


async def spend_budget(gw: Gateway, limit: int = 20) -> tuple[list[str], httpx.Response]:
    """Requests one after the other until the first refusal: the ids of those served, and the refusal."""
    ids: list[str] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for i in range(limit):
            response = await chat(client, gw, f"spend {i}", max_tokens=MAX_TOKENS)
            if response.status_code != 200:
                return ids, response
            ids.append(response.headers["x-request-id"])
    raise AssertionError(f"{limit} requests served on a budget of {BUDGET}")


async def assert_quota_refused(gw: Gateway) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for stream in (False, True):
            assert_openai_error(
                await chat(client, gw, "more", stream=stream, max_tokens=MAX_TOKENS),
                429,
                "insufficient_quota",
                "insufficient_quota",
            )


async def test_spent_budget_is_refused_and_stays_refused_after_a_restart(
    upstream: FakeOpenAI, tmp_path: Path, fresh_database: str
) -> None:
    model, key_name = unique("budget"), unique("k")
    top = f'database_url: "{fresh_database}"\nmetering: {{flush_interval: 0.2}}'
    budget = f", budget: {{amount: {BUDGET}, currency: USD, period: monthly}}"
    text_ = config(upstream.port, model, key_name, top=top, key=budget, alias=PRICED)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with gateways(start_gateway(text_, tmp_path / "a")) as (first,):
        ids, refusal = await spend_budget(first)
        assert_openai_error(refusal, 429, "insufficient_quota", "insufficient_quota")
        assert len(ids) >= 2
        await assert_quota_refused(first)
        ledger = await ledger_rows(fresh_database, key_name, len(ids))
    assert_exactly(ledger, ids)
    assert ledger.cost == ANSWER_COST * len(ids) <= BUDGET

    # A new process keeps its budgets in memory: it starts from what the ledger says was spent this month.
    with gateways(start_gateway(text_, tmp_path / "b")) as (second,):
        await assert_quota_refused(second)
    assert upstream_calls(upstream, model) == len(ids)


async def test_budget_spent_through_one_gateway_is_refused_by_another_on_the_same_redis(
    upstream: FakeOpenAI, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    model, key_name = unique("budget-redis"), unique("k")
    top = f'redis_url: "{redis_url}"\nredis_prefix: "{redis_prefix}"\nmetering: {{flush_interval: 0.2}}'
    budget = f", budget: {{amount: {BUDGET}, currency: USD, period: daily}}"
    text_ = config(upstream.port, model, key_name, top=top, key=budget, alias=PRICED)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with gateways(start_gateway(text_, tmp_path / "a")) as running:
        running.append(start_gateway(text_, tmp_path / "b"))
        first, second = running
        ids, refusal = await spend_budget(first)
        assert_openai_error(refusal, 429, "insufficient_quota", "insufficient_quota")
        assert len(ids) >= 2
        await assert_quota_refused(second)
    assert upstream_calls(upstream, model) == len(ids)
