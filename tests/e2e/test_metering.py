"""Every token counted and priced: ledger rows in the real PostgreSQL for what the real gateway served, limits and
budgets at the door, and the usage read back by the CLI and the admin API."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from sqlalchemy import text

from gateway.store.engine import create_engine
from tests.conftest import FULL_KEY, KEEP, PROVIDER_KEY, Gateway, start_gateway, stop_gateway, wait_until
from tests.fakes.openai_upstream import FakeOpenAI

LIMITED_KEY = "sk-canary-metering-limited-00112233"
BUDGET_KEY = "sk-canary-metering-budget-44556677"
ADMIN_KEY = "admin-canary-0123456789abcdef"
USER = [{"role": "user", "content": "count me"}]
PRICE = "pricing: {input: 1.0, output: 2.0, currency: USD}"


def config(upstream: int) -> str:
    fake = f"http://127.0.0.1:{upstream}/v1"
    return f"""
admin_key: "{ADMIN_KEY}"
metering: {{flush_interval: 0.1}}
providers:
  fake: {{type: openai, base_url: "{fake}", api_key: "{PROVIDER_KEY}"}}
  plain: {{type: openai, base_url: "{fake}", api_key: "{PROVIDER_KEY}", stream_options: false}}
models:
  metered: {{routes: [{{provider: fake, model: metered-up}}], {PRICE}, {KEEP}}}
  metered-quiet: {{routes: [{{provider: fake, model: no-usage-up}}], {PRICE}, {KEEP}}}
  metered-long: {{routes: [{{provider: fake, model: stream-long}}], {PRICE}, {KEEP}}}
  metered-fails: {{routes: [{{provider: fake, model: fail-500}}], fallbacks: [metered], {PRICE}, {KEEP}}}
  metered-dear: {{routes: [{{provider: fake, model: dear-up}}], pricing: {{input: 100000, output: 100000}}, {KEEP}}}
  metered-embed: {{routes: [{{provider: fake, model: embed-up}}], {PRICE}, {KEEP}}}
  metered-logged: {{routes: [{{provider: fake, model: logged-up}}], log_requests: true, {KEEP}}}
  metered-plain: {{routes: [{{provider: plain, model: plain-up}}], {PRICE}, {KEEP}}}
  metered-hang: {{routes: [{{provider: fake, model: hang}}], {PRICE}, {KEEP}}}
teams:
  research: {{}}
keys:
  - {{name: metering-full, key: "{FULL_KEY}", team: research, user: ada}}
  - {{name: metering-limited, key: "{LIMITED_KEY}", rpm: 3}}
  - {{name: metering-budget, key: "{BUDGET_KEY}", budget: {{amount: 5, currency: USD, period: daily}}}}
"""


@pytest.fixture(scope="module")
def metered(fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("metering")
    gw = start_gateway(config(fake_upstream.port), tmp)
    yield gw
    stop_gateway(gw)


async def _query(url: str, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return [dict(row) for row in (await conn.execute(text(sql), params)).mappings().all()]
    finally:
        await engine.dispose()


def ledger(url: str, request_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The request's ledger rows, once the writer flushed them (it runs a moment after the answer)."""
    sql = "SELECT * FROM usage_ledger WHERE request_id = :rid ORDER BY attempt"
    rows: list[dict[str, Any]] = []

    def arrived() -> bool:
        rows[:] = asyncio.run(_query(url, sql, {"rid": request_id}))
        return len(rows) >= count

    assert wait_until(arrived, timeout=10), f"no ledger rows for {request_id}"
    return rows


def chat(gw: Gateway, model: str, key: str = FULL_KEY, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": USER, **extra}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def test_each_request_is_one_row_with_the_upstreams_tokens_and_cost(
    metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str
) -> None:
    ids = []
    for _ in range(3):
        raw = metered.client().chat.completions.with_raw_response.create(model="metered", messages=USER)
        ids.append(raw.headers["x-request-id"])
    for rid in ids:
        [row] = ledger(gateway_database_url, rid)
        assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (5, 3, False)
        assert row["cost"] == Decimal("0.000011")  # 5 x $1/M + 3 x $2/M
        assert (row["currency"], row["status"], row["http_status"], row["attempt"]) == ("USD", "ok", 200, 1)
        assert (row["alias"], row["provider"], row["upstream_model"]) == ("metered", "fake", "metered-up")
        assert (row["key_name"], row["team"], row["user_name"]) == ("metering-full", "research", "ada")
        assert row["stream"] is False and row["request_log"] is None
        assert row["latency_ms"] > 0


def test_stream_usage_is_asked_for_metered_and_hidden_from_the_client(
    metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str
) -> None:
    with httpx.stream(
        "POST",
        metered.url + "/v1/chat/completions",
        json={"model": "metered", "messages": USER, "stream": True},
        headers={"Authorization": f"Bearer {FULL_KEY}"},
    ) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
        rid = resp.headers["x-request-id"]
    assert lines[-1] == "data: [DONE]"
    assert not any('"usage":{' in line for line in lines)  # the client did not ask for it
    assert upstream.recorder.requests[0].body["stream_options"] == {"include_usage": True}
    [row] = ledger(gateway_database_url, rid)
    assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"], row["stream"]) == (5, 3, False, True)
    assert row["ttfb_ms"] is not None


def test_an_upstream_that_takes_no_stream_options_never_gets_them(
    metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str
) -> None:
    with httpx.stream(
        "POST",
        metered.url + "/v1/chat/completions",
        json={"model": "metered-plain", "messages": USER, "stream": True, "stream_options": {"include_usage": True}},
        headers={"Authorization": f"Bearer {FULL_KEY}"},
    ) as resp:
        resp.read()
        rid = resp.headers["x-request-id"]
    assert "stream_options" not in upstream.recorder.requests[0].body
    [row] = ledger(gateway_database_url, rid)
    assert row["estimated"] is True and row["completion_tokens"] > 0


def test_a_client_that_asks_for_stream_usage_gets_it(metered: Gateway, upstream: FakeOpenAI) -> None:
    chunks = list(
        metered.client().chat.completions.create(
            model="metered", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8


def test_usage_is_estimated_when_the_upstream_reports_none(
    metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str
) -> None:
    plain = chat(metered, "metered-quiet")
    with httpx.stream(
        "POST",
        metered.url + "/v1/chat/completions",
        json={"model": "metered-quiet", "messages": USER, "stream": True},
        headers={"Authorization": f"Bearer {FULL_KEY}"},
    ) as resp:
        resp.read()
        streamed = resp.headers["x-request-id"]
    for rid in (plain.headers["x-request-id"], streamed):
        [row] = ledger(gateway_database_url, rid)
        assert row["estimated"] is True
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0  # "echo: count me", counted by tiktoken
        assert row["cost"] > 0


def test_a_client_that_leaves_mid_stream_is_billed_for_what_was_generated(
    metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str
) -> None:
    with httpx.stream(
        "POST",
        metered.url + "/v1/chat/completions",
        json={"model": "metered-long", "messages": USER, "stream": True},
        headers={"Authorization": f"Bearer {FULL_KEY}"},
    ) as resp:
        rid = resp.headers["x-request-id"]
        lines = resp.iter_lines()
        for _ in range(20):
            next(lines)
    assert upstream.recorder.wait_disconnects(1, timeout=2.0)
    [row] = ledger(gateway_database_url, rid)
    assert row["status"] == "client_closed"
    assert row["estimated"] is True
    assert row["completion_tokens"] >= 5  # at least the chunks that went by, never zero


def test_a_client_that_leaves_before_a_non_stream_answer_still_leaves_a_row(
    metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str
) -> None:
    headers = {"Authorization": f"Bearer {FULL_KEY}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            metered.url + "/v1/chat/completions",
            json={"model": "metered-hang", "messages": USER},
            headers=headers,
            timeout=httpx.Timeout(5, read=0.3),
        )
    assert upstream.recorder.wait_disconnects(1, timeout=2.0)  # the upstream call was cancelled
    rows: list[dict[str, Any]] = []

    def arrived() -> bool:
        sql = "SELECT * FROM usage_ledger WHERE alias = 'metered-hang'"
        rows[:] = asyncio.run(_query(gateway_database_url, sql, {}))
        return bool(rows)

    assert wait_until(arrived, timeout=10)
    [row] = rows
    assert (row["status"], row["estimated"], row["completion_tokens"]) == ("client_closed", True, 0)
    assert row["prompt_tokens"] > 0 and row["http_status"] is None


def test_a_failed_attempt_and_its_fallback_are_two_rows(
    metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str
) -> None:
    answer = chat(metered, "metered-fails")
    assert answer.status_code == 200
    failed, served = ledger(gateway_database_url, answer.headers["x-request-id"], count=2)
    assert (failed["attempt"], failed["http_status"], failed["cost"]) == (1, 500, 0)
    assert failed["status"] != "ok" and failed["upstream_model"] == "fail-500"
    assert (served["attempt"], served["status"], served["upstream_model"]) == (2, "ok", "metered-up")
    assert served["alias"] == "metered-fails"


def test_embeddings_are_metered(metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str) -> None:
    raw = metered.client().embeddings.with_raw_response.create(model="metered-embed", input="vectors")
    [row] = ledger(gateway_database_url, raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (3, 0, False)


def test_request_logging_is_opt_in_per_alias(metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str) -> None:
    answer = chat(metered, "metered-logged")
    [row] = ledger(gateway_database_url, answer.headers["x-request-id"])
    logged = row["request_log"]
    assert logged["request"]["messages"] == USER
    assert "echo: count me" in logged["response"]


def test_rate_limits_answer_429_with_openais_headers(metered: Gateway, upstream: FakeOpenAI) -> None:
    answers = [chat(metered, "metered", LIMITED_KEY) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[0].headers["x-ratelimit-remaining-requests"] == "2"
    refused = answers[3]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(upstream.recorder.requests) == 3
    with pytest.raises(openai.RateLimitError):
        metered.client(LIMITED_KEY).chat.completions.create(model="metered", messages=USER)


def test_a_spent_budget_answers_insufficient_quota(metered: Gateway, upstream: FakeOpenAI) -> None:
    # A request costs $0.80 (5 + 3 tokens at $100,000/M); about $3.20 is held before the call (the request's
    # bytes / 4 plus max_tokens), so the daily $5 admits three ($2.40 spent) and refuses the fourth.
    codes = [chat(metered, "metered-dear", BUDGET_KEY, max_tokens=10).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = chat(metered, "metered-dear", BUDGET_KEY, max_tokens=10)
    assert refused.json()["error"]["type"] == "insufficient_quota"
    assert refused.json()["error"]["code"] == "insufficient_quota"


def test_usage_cli_reports_per_alias(metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str) -> None:
    raw = metered.client().chat.completions.with_raw_response.create(model="metered", messages=USER)
    ledger(gateway_database_url, raw.headers["x-request-id"])
    cfg = Path(metered.log_path.parent / "gateway.yaml")
    command = [sys.executable, "-m", "gateway.cli", "usage", "--config", str(cfg), "--since", "1h"]
    done = subprocess.run([*command, "--format", "json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    rows = {row["alias"]: row for row in orjson.loads(done.stdout)}
    mine = rows["metered"]
    assert mine["requests"] >= 1 and mine["currency"] == "USD"
    assert mine["prompt_tokens"] >= 5 and mine["completion_tokens"] >= 3
    assert Decimal(mine["cost"]) >= Decimal("0.000011")
    table = subprocess.run([*command, "--by", "alias,key"], capture_output=True, text=True, check=False)
    assert table.stdout.splitlines()[0].split()[:3] == ["alias", "key", "requests"]
    bad = subprocess.run([*command, "--by", "password"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "cannot group by password" in bad.stderr


def test_admin_usage_api(metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str) -> None:
    raw = metered.client().chat.completions.with_raw_response.create(model="metered", messages=USER)
    ledger(gateway_database_url, raw.headers["x-request-id"])
    url = metered.url + "/admin/api/usage"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {FULL_KEY}"}).status_code == 401
    got = httpx.get(url, params={"since": "1h", "by": "alias,day"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert got.status_code == 200
    rows = [row for row in got.json()["data"] if row["alias"] == "metered"]
    assert rows and rows[0]["requests"] >= 1 and len(rows[0]["day"]) == 10
    bad = httpx.get(url, params={"by": "x; DROP TABLE"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "by"


def test_no_secret_reaches_the_ledger_or_the_log(
    metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str
) -> None:
    answer = chat(metered, "metered-logged")
    ledger(gateway_database_url, answer.headers["x-request-id"])
    rows = asyncio.run(_query(gateway_database_url, "SELECT row_to_json(u)::text AS r FROM usage_ledger u", {}))
    dump = " ".join(r["r"] for r in rows) + metered.log_text()
    for secret in (PROVIDER_KEY, FULL_KEY, LIMITED_KEY, BUDGET_KEY, ADMIN_KEY):
        assert secret not in dump


def test_metrics_count_tokens_cost_and_ledger_rows(
    metered: Gateway, upstream: FakeOpenAI, gateway_database_url: str
) -> None:
    raw = metered.client().chat.completions.with_raw_response.create(model="metered", messages=USER)
    ledger(gateway_database_url, raw.headers["x-request-id"])
    text = httpx.get(metered.url + "/metrics").text
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert int(samples['switchyard_tokens_total{alias="metered",kind="prompt"}']) >= 5
    assert int(samples['switchyard_tokens_total{alias="metered",kind="completion"}']) >= 3
    assert float(samples['switchyard_cost_total{alias="metered",currency="USD"}']) >= 0.000011
    assert int(samples['switchyard_usage_rows_total{outcome="written"}']) >= 1
    assert samples["switchyard_usage_ledger_up"] == "1"
