"""Schemathesis against the generated OpenAPI schema of the admin API, on the real server and database: whatever
the schema allows (and what it does not), no request gets a 500."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from gateway.app import create_app
from gateway.config.loader import parse_config
from tests.conftest import start_gateway, stop_gateway
from tests.e2e.test_admin_api import ENV, OWNER_PASSWORD, config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.store_fixtures import create_database, drop_database


def _schema() -> dict[str, object]:
    data_dir = tempfile.mkdtemp(prefix="switchyard-schema-")
    app = create_app(parse_config(f"data_dir: {data_dir}\nmetering: {{enabled: false}}\n", ["openai"])).app.app
    return app.openapi_schema.to_schema()


SCHEMA = schemathesis.openapi.from_dict(_schema()).include(path_regex="^/admin/api/")


@dataclass
class Target:
    url: str
    token: str


@pytest.fixture(scope="module")
def target(fake_upstream: FakeOpenAI, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    database = asyncio.run(create_database(database_url))
    gw = start_gateway(config(fake_upstream.port, database), tmp_path_factory.mktemp("fuzz"), ENV)
    login = httpx.post(gw.url + "/admin/api/auth/login", json={"username": "admin", "password": OWNER_PASSWORD})
    yield Target(gw.url, login.json()["access_token"])
    stop_gateway(gw)
    asyncio.run(drop_database(database_url, database))


@SCHEMA.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_admin_request_is_a_server_error(case: schemathesis.Case, target: Target) -> None:
    response = case.call(base_url=target.url, headers={"Authorization": f"Bearer {target.token}"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"
