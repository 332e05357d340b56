"""The admin API on the real server and a real PostgreSQL: login and tokens, roles and object checks, keys that work
on the data plane at once, providers and models managed live, secrets that never come back, the audit log."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import FULL_KEY, KEEP, PROVIDER_KEY, Gateway, start_gateway, stop_gateway, wait_until
from tests.fakes.openai_upstream import FakeOpenAI
from tests.store_fixtures import create_database, drop_database

OWNER_PASSWORD = "owner-canary-Passw0rd-1234"
SECRET_KEY = base64.b64encode(b"k" * 32).decode()
JWT_SECRET = "jwt-canary-secret-" + "x" * 40
VENDOR_KEY = "sk-canary-vendor-via-api-99887766"
USER = [{"role": "user", "content": "hello admin"}]


def config(upstream: int, database: str) -> str:
    return f"""
database_url: "{database}"
metering: {{flush_interval: 0.1}}
provider_urls: {{allow_hosts: ["127.0.0.1"]}}
providers:
  fake: {{type: openai, base_url: "http://127.0.0.1:{upstream}/v1", api_key: "{PROVIDER_KEY}"}}
models:
  echo: {{routes: [{{provider: fake, model: echo-upstream}}], {KEEP}}}
keys:
  - {{name: file-key, key: "{FULL_KEY}"}}
"""


@dataclass
class Admin:
    gw: Gateway
    tmp: Path
    database: str

    def url(self, path: str) -> str:
        return self.gw.url + "/admin/api" + path

    def login(self, username: str = "admin", password: str = OWNER_PASSWORD) -> dict[str, Any]:
        got = httpx.post(self.url("/auth/login"), json={"username": username, "password": password})
        assert got.status_code == 200, got.text
        return dict(got.json())

    def session(self, username: str = "admin", password: str = OWNER_PASSWORD) -> httpx.Client:
        token = self.login(username, password)["access_token"]
        return httpx.Client(base_url=self.gw.url + "/admin/api", headers={"Authorization": f"Bearer {token}"})


ENV = {
    "SWITCHYARD_ADMIN_PASSWORD": OWNER_PASSWORD,
    "SWITCHYARD_SECRET_KEY": SECRET_KEY,
    "SWITCHYARD_JWT_SECRET": JWT_SECRET,
}


@pytest.fixture(scope="module")
def admin(fake_upstream: FakeOpenAI, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    database = asyncio.run(create_database(database_url))
    tmp = tmp_path_factory.mktemp("admin")
    gw = start_gateway(config(fake_upstream.port, database), tmp, ENV)
    yield Admin(gw, tmp, database)
    stop_gateway(gw)
    asyncio.run(drop_database(database_url, database))


@pytest.fixture(scope="module")
def owner(admin: Admin) -> Iterator[httpx.Client]:
    with admin.session() as client:
        yield client


@pytest.fixture(scope="module")
def team(owner: httpx.Client) -> dict[str, Any]:
    got = owner.post("/teams", json={"name": "sales", "budget": {"amount": 50, "currency": "USD"}})
    assert got.status_code == 201, got.text
    return dict(got.json())


def make_user(owner: httpx.Client, name: str, role: str, team_id: int | None) -> dict[str, Any]:
    got = owner.post(
        "/users", json={"username": name, "password": f"{name}-Passw0rd-long", "role": role, "team_id": team_id}
    )
    assert got.status_code == 201, got.text
    return dict(got.json())


def test_owner_bootstrap_login_and_tokens(admin: Admin) -> None:
    pair = admin.login()
    assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert pair["token_type"] == "bearer" and 0 < pair["expires_in"] <= 900
    me = httpx.get(admin.url("/auth/me"), headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.json()["role"] == "owner" and me.json()["username"] == "admin"
    for wrong in ({"username": "admin", "password": "admin"}, {"username": "nobody", "password": "x" * 12}):
        refused = httpx.post(admin.url("/auth/login"), json=wrong)
        assert refused.status_code == 401 and refused.json()["error"]["message"] == "wrong username or password"


def test_forged_and_tampered_tokens_are_refused(admin: Admin) -> None:
    token = admin.login()["access_token"]
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    none_head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    raised = dict(claims, sub="999")
    tampered = base64.urlsafe_b64encode(json.dumps(raised).encode()).rstrip(b"=").decode()
    for forged in (f"{none_head}.{body}.", f"{head}.{tampered}.{sig}", token[:-3] + "abc", "garbage"):
        got = httpx.get(admin.url("/auth/me"), headers={"Authorization": f"Bearer {forged}"})
        assert got.status_code == 401, forged
    assert httpx.get(admin.url("/teams")).status_code == 401


def test_refresh_rotates_and_a_reused_token_revokes_the_family(admin: Admin) -> None:
    first = admin.login()
    second = httpx.post(admin.url("/auth/refresh"), json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    replay = httpx.post(admin.url("/auth/refresh"), json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    # the replay revoked the family: the token handed out after the stolen one is dead too
    after = httpx.post(admin.url("/auth/refresh"), json={"refresh_token": second.json()["refresh_token"]})
    assert after.status_code == 401


def test_logout_revokes_refresh_tokens(admin: Admin) -> None:
    pair = admin.login()
    out = httpx.post(admin.url("/auth/logout"), headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert out.status_code == 200
    again = httpx.post(admin.url("/auth/refresh"), json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 401


def test_roles_and_object_checks(admin: Admin, owner: httpx.Client, team: dict[str, Any]) -> None:
    other = owner.post("/teams", json={"name": "support"}).json()
    lead = make_user(owner, "lead", "admin", team["id"])
    make_user(owner, "outsider", "member", other["id"])
    with admin.session("lead", "lead-Passw0rd-long") as lead_client:
        assert (
            lead_client.post(
                "/users", json={"username": "boss", "password": "boss-Passw0rd-long", "role": "admin"}
            ).status_code
            == 403
        )
        made = lead_client.post("/users", json={"username": "ann", "password": "ann-Passw0rd-long"})
        assert made.status_code == 201 and made.json()["team_id"] == team["id"]  # forced into the admin's team
        assert lead_client.patch(f"/users/{lead['id']}", json={"role": "owner"}).status_code == 403
        names = {u["username"] for u in lead_client.get("/users").json()["data"]}
        assert names == {"lead", "ann"}
        assert lead_client.get(f"/teams/{other['id']}").status_code == 404
        assert lead_client.get("/teams/support").status_code == 404  # by name: the same check
        assert lead_client.get("/teams/sales").json()["id"] == team["id"]
        assert lead_client.get("/users/ann").json()["id"] == made.json()["id"]  # by username
        assert lead_client.post("/teams", json={"name": "mine"}).status_code == 403
    with admin.session("ann", "ann-Passw0rd-long") as member:
        assert member.get("/audit").status_code == 403
        assert member.post("/providers", json={"name": "x", "type": "openai"}).status_code == 403
        key = member.post("/keys", json={"name": "ann-app"}).json()
        assert key["owner_id"] == made.json()["id"] and key["team_id"] == team["id"]
    with admin.session("outsider", "outsider-Passw0rd-long") as outsider:
        assert outsider.get(f"/keys/{key['id']}").status_code == 404
        assert outsider.delete(f"/keys/{key['id']}").status_code == 404
        assert key["id"] not in {k["id"] for k in outsider.get("/keys").json()["data"]}


def test_a_new_key_works_at_once_and_a_revoked_one_stops(admin: Admin, owner: httpx.Client) -> None:
    created = owner.post("/keys", json={"name": "crm-app", "models": ["echo"], "rpm": 100})
    assert created.status_code == 201
    secret = created.json()["key"]
    assert secret.startswith("sk-sy-") and created.json()["prefix"] == secret[:10]
    listed = owner.get("/keys").json()["data"]
    assert all("key" not in k and secret not in json.dumps(k) for k in listed)
    client = openai.OpenAI(base_url=admin.gw.url + "/v1", api_key=secret, max_retries=0)
    assert client.chat.completions.create(model="echo", messages=USER).choices[0].message.content

    def used() -> bool:
        mine = [k for k in owner.get("/keys").json()["data"] if k["id"] == created.json()["id"]]
        return bool(mine and mine[0]["last_used_at"])

    assert wait_until(used, timeout=5)  # written with the usage batch, off the request path
    info = httpx.get(admin.gw.url + "/v1/key/info", headers={"Authorization": f"Bearer {secret}"}).json()
    assert info["name"] == "crm-app" and info["models"] == ["echo"]
    rotated = owner.post(f"/keys/{created.json()['id']}/rotate").json()["key"]
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="echo", messages=USER)
    fresh = openai.OpenAI(base_url=admin.gw.url + "/v1", api_key=rotated, max_retries=0)
    assert fresh.chat.completions.create(model="echo", messages=USER).choices
    new_id = next(k["id"] for k in owner.get("/keys").json()["data"] if k["name"] == "crm-app")
    assert owner.delete(f"/keys/{new_id}").json()["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError):
        fresh.chat.completions.create(model="echo", messages=USER)


def test_providers_and_models_are_managed_live(admin: Admin, owner: httpx.Client, fake_upstream: FakeOpenAI) -> None:
    base = f"http://127.0.0.1:{fake_upstream.port}/v1"
    made = owner.post("/providers", json={"name": "vendor", "type": "openai", "base_url": base, "api_key": VENDOR_KEY})
    assert made.status_code == 201, made.text
    assert made.json()["api_key"] == "sk-...7766" and made.json()["managed_by"] == "api"
    bad = owner.post("/models", json={"alias": "broken", "routes": [{"provider": "nope", "model": "m"}]})
    assert bad.status_code == 400 and "no provider named 'nope'" in bad.json()["error"]["message"]
    model = owner.post("/models", json={"alias": "managed", "routes": [{"provider": "vendor", "model": "m-up"}]})
    assert model.status_code == 201, model.text
    fake_upstream.recorder.clear()
    client = openai.OpenAI(base_url=admin.gw.url + "/v1", api_key=FULL_KEY, max_retries=0)
    assert client.chat.completions.create(model="managed", messages=USER).model == "m-up"
    assert fake_upstream.recorder.requests[0].headers["Authorization"] == f"Bearer {VENDOR_KEY}"
    tested = owner.post("/providers/vendor/test", json={"model": "m-up"}).json()
    assert tested["ok"] is True and tested["latency_ms"] >= 0
    assert owner.patch("/providers/fake", json={"enabled": False}).status_code == 409  # the file's
    assert owner.get("/providers/fake").json()["api_key"].startswith("sk-...")
    assert owner.delete("/models/managed").status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="managed", messages=USER)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/v1",
        "http://169.254.169.254/latest",
        "http://[::1]:8000/v1",
        "ftp://example.com/",
        "http://user:pw@127.0.0.1/v1",
        "http://localhost/v1",
    ],
)
def test_provider_urls_that_reach_inside_are_refused(owner: httpx.Client, url: str) -> None:
    got = owner.post("/providers", json={"name": "ssrf", "type": "openai", "base_url": url})
    assert got.status_code == 400
    assert got.json()["error"]["param"] == "base_url"


def test_audit_log_records_changes_without_secrets(admin: Admin, owner: httpx.Client) -> None:
    owner.post("/providers", json={"name": "audited", "type": "deepseek", "api_key": VENDOR_KEY})
    entries = owner.get("/audit", params={"object_type": "provider"}).json()["data"]
    assert any(e["object_id"] == "audited" and e["action"] == "create" and e["actor"] == "admin" for e in entries)
    assert VENDOR_KEY not in json.dumps(entries)


def test_every_response_and_log_line_is_free_of_secrets(admin: Admin, owner: httpx.Client) -> None:
    dump = json.dumps([owner.get(p).json() for p in ("/providers", "/models", "/keys", "/users", "/audit")])
    log = admin.gw.log_text()
    for secret in (VENDOR_KEY, PROVIDER_KEY, FULL_KEY, JWT_SECRET, SECRET_KEY, OWNER_PASSWORD):
        assert secret not in dump
        assert secret not in log


def test_login_is_throttled(admin: Admin) -> None:
    codes = [
        httpx.post(admin.url("/auth/login"), json={"username": "victim", "password": f"guess-{n}"}).status_code
        for n in range(7)
    ]
    assert codes[:5] == [401] * 5 and codes[-1] == 429


def test_a_change_reaches_a_second_gateway_process(
    admin: Admin, owner: httpx.Client, fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    second = start_gateway(config(fake_upstream.port, admin.database), tmp_path, ENV)
    try:
        secret = owner.post("/keys", json={"name": "shared-app"}).json()["key"]
        headers = {"Authorization": f"Bearer {secret}"}
        body = {"model": "echo", "messages": USER}

        def works_there() -> bool:
            return httpx.post(second.url + "/v1/chat/completions", json=body, headers=headers).status_code == 200

        assert wait_until(works_there, timeout=3)
    finally:
        stop_gateway(second)


MATRIX = [
    ("GET", "/teams", None, "viewer"),
    ("POST", "/teams", {"name": "matrix-team"}, "owner"),
    ("GET", "/users", None, "member"),
    ("POST", "/users", {"username": "matrix-user", "password": "matrix-Passw0rd-x"}, "admin"),
    ("GET", "/keys", None, "member"),
    ("POST", "/keys", {"name": "matrix-key"}, "member"),
    ("GET", "/providers", None, "viewer"),
    ("POST", "/providers", {"name": "matrix-p", "type": "deepseek"}, "admin"),
    ("GET", "/models", None, "viewer"),
    ("POST", "/models", {"alias": "matrix-m", "routes": [{"provider": "fake", "model": "x"}]}, "admin"),
    ("GET", "/audit", None, "admin"),
    ("GET", "/usage", None, "member"),
    ("GET", "/auth/me", None, "viewer"),
    ("GET", "/knowledge-bases", None, "viewer"),
    ("POST", "/knowledge-bases", {"name": "matrix-kb", "embedding": "no-such-alias"}, "admin"),
    ("GET", "/training/base-models", None, "viewer"),
    ("GET", "/training/datasets", None, "viewer"),
    ("POST", "/training/datasets", {"name": "matrix-ds"}, "admin"),
    ("GET", "/training/jobs", None, "viewer"),
    ("POST", "/training/jobs", {"name": "matrix-job", "base_model": "none", "dataset": "none"}, "admin"),
    ("GET", "/training/dashboard", None, "viewer"),
]
RANKS = {"viewer": 1, "member": 2, "admin": 3, "owner": 4}


@pytest.mark.parametrize("role", ["viewer", "member", "admin", "owner"])
def test_role_matrix(admin: Admin, owner: httpx.Client, team: dict[str, Any], role: str) -> None:
    name = f"matrix-{role}"
    if role != "owner":
        make_user(owner, name, role, team["id"])
    login = ("admin", OWNER_PASSWORD) if role == "owner" else (name, f"{name}-Passw0rd-long")
    with admin.session(*login) as client:
        for method, path, body, needed in MATRIX:
            payload = (
                None
                if body is None
                else {k: f"{v}-{role}" if k in ("name", "alias", "username") else v for k, v in body.items()}
            )
            got = client.request(method, path, json=payload)
            allowed = RANKS[role] >= RANKS[needed]
            assert (got.status_code != 403) == allowed, f"{role} {method} {path}: {got.status_code} {got.text}"
            assert got.status_code < 500, f"{role} {method} {path}: {got.text}"


def test_the_config_file_reloads_live_and_a_broken_file_is_refused(admin: Admin, fake_upstream: FakeOpenAI) -> None:
    path = admin.tmp / "gateway.yaml"
    original = path.read_text()
    added = original.replace("models:\n", "models:\n  echo2: {routes: [{provider: fake, model: echo2-up}]}\n", 1)
    path.write_text(added)
    client = openai.OpenAI(base_url=admin.gw.url + "/v1", api_key=FULL_KEY, max_retries=0)
    assert wait_until(lambda: "echo2" in {m.id for m in client.models.list()}, timeout=5)
    path.write_text(added + "\nnot_a_key: [\n")
    assert wait_until(lambda: "not reloaded" in admin.gw.log_text(), timeout=5)
    assert client.chat.completions.create(model="echo2", messages=USER).model == "echo2-up"  # the old config stays
    path.write_text(original)


def test_bad_bodies_are_a_400_naming_the_field(admin: Admin, owner: httpx.Client) -> None:
    for body, field in (({"name": "k", "rpm": 0}, "rpm"), ({"name": "k", "colour": "red"}, "colour"), ({}, "name")):
        got = owner.post("/keys", json=body)
        assert got.status_code == 400, got.text
        assert got.json()["error"]["type"] == "invalid_request_error"
        assert field in got.json()["error"]["message"]
    assert httpx.post(admin.url("/auth/login"), json={"username": "admin"}).status_code == 400
    assert httpx.post(admin.url("/auth/login"), content=b"{not json").status_code == 400


def test_first_start_prints_a_random_owner_password_once(
    fake_upstream: FakeOpenAI, database_url: str, tmp_path: Path
) -> None:
    database = asyncio.run(create_database(database_url))
    env = {"SWITCHYARD_SECRET_KEY": SECRET_KEY, "SWITCHYARD_ADMIN_USER": "root-owner"}
    try:
        gw = start_gateway(config(fake_upstream.port, database), tmp_path, env)
        try:
            found = re.search(r"owner account 'root-owner' with the password (\S+) ", gw.log_text())
            assert found is not None
            password = found.group(1)
            assert len(password) >= 24
            ok = httpx.post(gw.url + "/admin/api/auth/login", json={"username": "root-owner", "password": password})
            assert ok.status_code == 200
            for guess in ("admin", "password", "root-owner"):
                body = {"username": "root-owner", "password": guess}
                assert httpx.post(gw.url + "/admin/api/auth/login", json=body).status_code == 401
        finally:
            stop_gateway(gw)
        (tmp_path / "again").mkdir()
        again = start_gateway(config(fake_upstream.port, database), tmp_path / "again", env)
        stop_gateway(again)
        assert "owner account" not in again.log_text()  # printed once, on the first start only
    finally:
        asyncio.run(drop_database(database_url, database))


def test_objects_are_reached_by_id_or_name(owner: httpx.Client, team: dict[str, Any]) -> None:
    key = owner.post("/keys", json={"name": "named-key"}).json()
    assert owner.get("/keys/named-key").json()["id"] == key["id"]
    assert owner.get(f"/keys/{key['id']}").json()["name"] == "named-key"
    assert owner.get("/teams/sales").json()["id"] == team["id"]
    assert owner.get("/users/admin").json()["role"] == "owner"
    for missing in ("/keys/no-such-key", "/teams/no-such-team", "/users/nobody", "/keys/99999999999999999999"):
        assert owner.get(missing).status_code == 404, missing


def test_text_postgres_cannot_hold_is_a_400_not_a_500(admin: Admin, owner: httpx.Client) -> None:
    got = httpx.post(admin.url("/auth/login"), json={"username": "a\u0000b", "password": "x" * 12})
    assert got.status_code == 400 and got.json()["error"]["type"] == "invalid_request_error"
    assert owner.delete("/keys/%C2%B9").status_code == 404  # "¹" is a digit to str.isdigit, not an id
    made = owner.post("/providers", json={"name": "nul", "type": "deepseek", "headers": {"X-A": "a\u0000"}})
    assert made.status_code == 400
