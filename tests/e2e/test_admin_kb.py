"""Knowledge bases through the admin API on the real server and a real PostgreSQL: create, upload (multipart and raw
body), background indexing, search, re-upload, reindex, delete, upload limits and bad files, hostile file names,
tenancy (another team's knowledge base is a 404) and the audit log. Embeddings come from the fake upstream's
deterministic bag-of-words model `bow-64` behind the alias `emb`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FULL_KEY, KEEP, PROVIDER_KEY, start_gateway, stop_gateway, wait_until
from tests.e2e.test_admin_api import ENV, Admin, make_user
from tests.fakes.openai_upstream import FakeOpenAI
from tests.store_fixtures import create_database, drop_database

UPLOAD_LIMIT = 64 * 1024
FIXTURES = Path(__file__).parent.parent / "fixtures" / "rag"
HANDBOOK = """# Employee handbook

## Vacation
Every employee gets twenty vacation days per year. Unused vacation days expire in March.

## 休假
每位员工每年有二十天带薪年假。
"""
EXPENSES_ZH = """差旅报销制度

出差回来后七天内提交报销单，附上发票和行程单。住宿标准为每晚五百元以内。
"""  # noqa: RUF001 - Chinese punctuation


def config(upstream: int, database: str) -> str:
    return f"""
database_url: "{database}"
metering: {{flush_interval: 0.1}}
provider_urls: {{allow_hosts: ["127.0.0.1"]}}
rag: {{max_upload_bytes: {UPLOAD_LIMIT}}}
providers:
  fake: {{type: openai, base_url: "http://127.0.0.1:{upstream}/v1", api_key: "{PROVIDER_KEY}"}}
models:
  echo: {{routes: [{{provider: fake, model: echo-upstream}}], {KEEP}}}
  emb: {{mode: embedding, routes: [{{provider: fake, model: bow-64}}], {KEEP}}}
keys:
  - {{name: file-key, key: "{FULL_KEY}"}}
"""


@dataclass
class World:
    """The gateway, an owner, and two teams (red, blue) with their users' sessions."""

    admin: Admin
    owner: httpx.Client
    red: dict[str, Any]
    blue: dict[str, Any]
    red_admin: httpx.Client
    red_viewer: httpx.Client
    blue_admin: httpx.Client
    blue_member: httpx.Client


@pytest.fixture(scope="module")
def world(fake_upstream: FakeOpenAI, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    database = asyncio.run(create_database(database_url))
    tmp = tmp_path_factory.mktemp("admin-kb")
    gw = start_gateway(config(fake_upstream.port, database), tmp, ENV)
    admin = Admin(gw, tmp, database)
    clients: list[httpx.Client] = []
    try:
        owner = admin.session()
        clients.append(owner)
        red = owner.post("/teams", json={"name": "red"}).json()
        blue = owner.post("/teams", json={"name": "blue"}).json()
        users = {"red-admin": ("admin", red), "red-viewer": ("viewer", red)}
        users |= {"blue-admin": ("admin", blue), "blue-member": ("member", blue)}
        for name, (role, team) in users.items():
            make_user(owner, name, role, team["id"])
            clients.append(admin.session(name, f"{name}-Passw0rd-long"))
        yield World(admin, owner, red, blue, *clients[1:])
    finally:
        for client in clients:
            client.close()
        stop_gateway(gw)
        asyncio.run(drop_database(database_url, database))


def new_kb(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"name": f"kb-{uuid.uuid4().hex[:8]}", "embedding": "emb", **fields}
    got = client.post("/knowledge-bases", json=body)
    assert got.status_code == 201, got.text
    return dict(got.json())


def upload_md(client: httpx.Client, kb: str, name: str, text: str) -> httpx.Response:
    return client.post(f"/knowledge-bases/{kb}/documents", files=[("file", (name, text.encode(), "text/markdown"))])


def upload_raw(client: httpx.Client, kb: str, name: str, data: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/octet-stream"}
    return client.post(f"/knowledge-bases/{kb}/documents", params={"name": name}, content=data, headers=headers)


def documents(client: httpx.Client, kb: str, **params: str) -> dict[str, dict[str, Any]]:
    got = client.get(f"/knowledge-bases/{kb}/documents", params=params)
    assert got.status_code == 200, got.text
    return {d["name"]: d for d in got.json()["data"]}


def wait_indexed(client: httpx.Client, kb: str, names: set[str], timeout: float = 30) -> dict[str, dict[str, Any]]:
    """Poll the documents until these are indexed (the indexer runs in the gateway's background)."""
    seen: dict[str, dict[str, Any]] = {}

    def indexed() -> bool:
        seen.update(documents(client, kb))
        failed = {n: seen[n]["error"] for n in names if n in seen and seen[n]["status"] == "failed"}
        assert not failed, failed
        return all(n in seen and seen[n]["status"] == "indexed" for n in names)

    assert wait_until(indexed, timeout=timeout), seen
    return seen


def search(client: httpx.Client, kb: str, query: str) -> list[dict[str, Any]]:
    got = client.post(f"/knowledge-bases/{kb}/search", json={"query": query, "top_k": 3})
    assert got.status_code == 200, got.text
    return list(got.json()["data"])


def test_create_rules(world: World) -> None:
    kb = new_kb(world.red_admin, description="red's docs", chunk_tokens=200, chunk_overlap=20)
    assert kb["team_id"] == world.red["id"] and kb["embedding"] == "emb" and kb["dimensions"] == 64
    assert kb["chunking"] == {"max_tokens": 200, "overlap": 20} and kb["description"] == "red's docs"
    assert kb["documents"] == {"pending": 0, "indexed": 0, "failed": 0} and kb["chunks"] == 0
    again = world.red_admin.post("/knowledge-bases", json={"name": kb["name"], "embedding": "emb"})
    assert again.status_code == 409 and again.json()["error"]["param"] == "name"
    missing = world.red_admin.post("/knowledge-bases", json={"name": "no-embedder", "embedding": "nope"})
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "embedder_unavailable" and missing.json()["error"]["param"] == "embedding"
    chat = world.red_admin.post("/knowledge-bases", json={"name": "chat-embedder", "embedding": "echo"})
    assert chat.status_code == 400  # a chat alias is not an embedder
    bad = {"name": "bad-chunks", "embedding": "emb", "chunk_tokens": 100, "chunk_overlap": 100}
    assert world.red_admin.post("/knowledge-bases", json=bad).json()["error"]["param"] == "chunk_overlap"
    bad_name = world.red_admin.post("/knowledge-bases", json={"name": "a/b", "embedding": "emb"})
    assert bad_name.status_code == 400 and bad_name.json()["error"]["param"] == "name"
    other_team = {"name": "red-into-blue", "embedding": "emb", "team_id": world.blue["id"]}
    assert world.red_admin.post("/knowledge-bases", json=other_team).status_code == 403
    assert world.red_admin.post("/knowledge-bases", json={**other_team, "team_id": None}).status_code == 403
    assert world.red_viewer.post("/knowledge-bases", json={"name": "v", "embedding": "emb"}).status_code == 403
    assert world.blue_member.post("/knowledge-bases", json={"name": "m", "embedding": "emb"}).status_code == 403
    unknown_team = {"name": "ghost-team", "embedding": "emb", "team_id": 987654}
    assert world.owner.post("/knowledge-bases", json=unknown_team).json()["error"]["param"] == "team_id"
    assert new_kb(world.owner)["team_id"] is None  # owners make global ones
    assert new_kb(world.owner, team_id=world.blue["id"])["team_id"] == world.blue["id"]


def test_upload_index_and_search_in_english_and_chinese(world: World) -> None:
    kb = new_kb(world.red_admin)["name"]
    got = upload_md(world.red_admin, kb, "handbook.md", HANDBOOK)
    assert got.status_code == 202, got.text
    (entry,) = got.json()["data"]
    assert entry["name"] == "handbook.md" and entry["status"] == "pending" and entry["changed"] is True
    raw = upload_raw(world.red_admin, kb, "expenses.txt", EXPENSES_ZH.encode())
    assert raw.status_code == 202 and raw.json()["data"][0]["changed"] is True
    docs = wait_indexed(world.red_admin, kb, {"handbook.md", "expenses.txt"})
    assert docs["handbook.md"]["chunk_count"] >= 1 and docs["handbook.md"]["bytes"] == len(HANDBOOK.encode())
    assert docs["expenses.txt"]["language"] == "zh"
    assert set(docs["handbook.md"]) >= {"id", "status", "error", "chunk_count", "bytes", "language", "updated_at"}
    assert set(documents(world.red_admin, kb, status="indexed")) == {"handbook.md", "expenses.txt"}
    assert documents(world.red_admin, kb, status="failed") == {}
    assert world.red_admin.get(f"/knowledge-bases/{kb}/documents", params={"status": "odd"}).status_code == 400
    english = search(world.red_viewer, kb, "how many vacation days do I get?")
    assert english[0]["document"] == "handbook.md" and "twenty vacation days" in english[0]["text"]
    assert english[0]["score"] > 0 and english[0]["heading_path"] and english[0]["snippet"]
    chinese = search(world.red_viewer, kb, "出差报销需要什么发票")
    assert chinese[0]["document"] == "expenses.txt" and "发票" in chinese[0]["text"]
    listed = {k["name"]: k for k in world.red_viewer.get("/knowledge-bases").json()["data"]}
    assert listed[kb]["documents"]["indexed"] == 2 and listed[kb]["chunks"] >= 2
    by_id = world.red_viewer.get(f"/knowledge-bases/{listed[kb]['id']}/documents/{docs['expenses.txt']['id']}")
    assert by_id.json()["name"] == "expenses.txt"
    assert world.red_viewer.get(f"/knowledge-bases/{kb}/documents/handbook.md").json()["status"] == "indexed"


def test_reupload_reindex_and_delete(world: World) -> None:
    kb = new_kb(world.red_admin)["name"]
    upload_md(world.red_admin, kb, "handbook.md", HANDBOOK)
    first = wait_indexed(world.red_admin, kb, {"handbook.md"})["handbook.md"]
    same = upload_md(world.red_admin, kb, "handbook.md", HANDBOOK).json()["data"][0]
    assert same["changed"] is False and same["status"] == "indexed" and same["id"] == first["id"]
    changed_text = HANDBOOK + "\n## Parking\nThe garage opens at seven; bicycles park for free.\n"
    changed = upload_md(world.red_admin, kb, "handbook.md", changed_text).json()["data"][0]
    assert changed["changed"] is True and changed["status"] == "pending"
    wait_indexed(world.red_admin, kb, {"handbook.md"})
    assert "bicycles" in search(world.red_admin, kb, "where do bicycles park")[0]["text"]
    assert world.red_viewer.post(f"/knowledge-bases/{kb}/documents/handbook.md/reindex").status_code == 403
    again = world.red_admin.post(f"/knowledge-bases/{kb}/documents/handbook.md/reindex")
    assert again.status_code == 202 and again.json()["status"] == "pending"
    wait_indexed(world.red_admin, kb, {"handbook.md"})
    assert world.red_viewer.delete(f"/knowledge-bases/{kb}/documents/handbook.md").status_code == 403
    gone = world.red_admin.delete(f"/knowledge-bases/{kb}/documents/handbook.md")
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    assert search(world.red_admin, kb, "where do bicycles park") == []
    assert world.red_admin.get(f"/knowledge-bases/{kb}/documents/handbook.md").status_code == 404
    assert world.red_admin.delete(f"/knowledge-bases/{kb}/documents/handbook.md").status_code == 404


def test_upload_limits_and_bad_files(world: World) -> None:
    kb = new_kb(world.red_admin)["name"]
    big = b"word " * (UPLOAD_LIMIT // 5 + 10)
    for too_big in (
        upload_raw(world.red_admin, kb, "big.txt", big),
        world.red_admin.post(f"/knowledge-bases/{kb}/documents", params={"name": "big.txt"}, content=iter([big])),
        world.red_admin.post(f"/knowledge-bases/{kb}/documents", files=[("file", ("big.txt", big, "text/plain"))]),
    ):
        assert too_big.status_code == 413, too_big.text
        assert too_big.json()["error"]["code"] == "request_too_large"
    pdf = upload_raw(world.red_admin, kb, "broken.pdf", (FIXTURES / "malformed.pdf").read_bytes())
    assert pdf.status_code == 400 and pdf.json()["error"]["code"] == "invalid_document"
    assert "malformed" in pdf.json()["error"]["message"]
    docx = world.red_admin.post(
        f"/knowledge-bases/{kb}/documents", files=[("file", ("report.docx", b"not a zip at all", "application/zip"))]
    )
    assert docx.status_code == 400 and "not a valid .docx" in docx.json()["error"]["message"]
    mixed = [("file", ("ok.txt", b"fine text", "text/plain")), ("file", ("tool.exe", b"MZ", "application/x-msdos"))]
    refused = world.red_admin.post(f"/knowledge-bases/{kb}/documents", files=mixed)
    assert refused.status_code == 400 and "unsupported file type" in refused.json()["error"]["message"]
    no_name = world.red_admin.post(f"/knowledge-bases/{kb}/documents", content=b"text")
    assert no_name.status_code == 400 and no_name.json()["error"]["param"] == "name"
    assert upload_raw(world.red_admin, kb, "empty.txt", b"").status_code == 400
    assert documents(world.red_admin, kb) == {}  # nothing of a refused request was stored


def test_hostile_file_names_are_stored_sanitized(world: World) -> None:
    kb = new_kb(world.red_admin)["name"]
    files = [
        ("file", ("../../etc/passwd.txt", b"first", "text/plain")),
        ("file", ("..\\..\\windows\\evil\u202etxt.md", b"second", "text/markdown")),
    ]
    got = world.red_admin.post(f"/knowledge-bases/{kb}/documents", files=files)
    assert got.status_code == 202, got.text
    names = [d["name"] for d in got.json()["data"]]
    assert names == ["passwd.txt", "eviltxt.md"]
    nul = upload_raw(world.red_admin, kb, "/etc/cron.d/x\x00y.txt", b"third")
    assert nul.status_code == 202 and nul.json()["data"][0]["name"] == "xy.txt"
    long_name = "a" * 10_000 + ".txt"
    long = upload_raw(world.red_admin, kb, long_name, b"fourth").json()["data"][0]["name"]
    assert len(long) <= 160 and long.endswith(".txt") and set(long[:-4]) == {"a"}
    in_form = world.red_admin.post(
        f"/knowledge-bases/{kb}/documents", files=[("file", (long_name, b"fifth", "text/plain"))]
    )
    assert in_form.status_code == 400  # over the multipart parser's part-header limit
    assert set(documents(world.red_admin, kb)) == {*names, "xy.txt", long}
    assert not [p for p in world.admin.tmp.rglob("*") if p.name in ("passwd.txt", "xy.txt", "x")]


def test_another_teams_knowledge_base_is_a_404(world: World) -> None:
    kb = new_kb(world.red_admin)
    name, kb_id = kb["name"], kb["id"]
    upload_md(world.red_admin, name, "handbook.md", HANDBOOK)
    wait_indexed(world.red_admin, name, {"handbook.md"})
    shared = new_kb(world.owner)["name"]  # global: every team reads it
    for ref in (name, str(kb_id)):
        base = f"/knowledge-bases/{ref}"
        assert world.blue_admin.get(base).status_code == 404
        assert world.blue_admin.get(base + "/documents").status_code == 404
        assert world.blue_admin.get(base + "/documents/handbook.md").status_code == 404
        assert world.blue_admin.post(base + "/search", json={"query": "vacation"}).status_code == 404
        assert upload_md(world.blue_admin, ref, "x.md", "# x").status_code == 404
        assert world.blue_admin.post(base + "/documents/handbook.md/reindex").status_code == 404
        assert world.blue_admin.delete(base + "/documents/handbook.md").status_code == 404
        assert world.blue_admin.patch(base, json={"description": "mine now"}).status_code == 404
        assert world.blue_admin.delete(base).status_code == 404
    member_sees = {k["name"] for k in world.blue_member.get("/knowledge-bases").json()["data"]}
    assert name not in member_sees and shared in member_sees
    assert name in {k["name"] for k in world.red_viewer.get("/knowledge-bases").json()["data"]}
    assert search(world.blue_member, shared, "anything") == []  # a global one is searchable by every team
    assert world.red_admin.delete(f"/knowledge-bases/{shared}").status_code == 403  # global: the owners'
    assert world.red_viewer.delete(f"/knowledge-bases/{name}").status_code == 403
    assert upload_md(world.red_viewer, name, "x.md", "# x").status_code == 403
    assert world.owner.get(f"/knowledge-bases/{name}").status_code == 200


def test_update_delete_and_audit(world: World) -> None:
    kb = new_kb(world.red_admin)
    name = kb["name"]
    upload_md(world.red_admin, name, "handbook.md", HANDBOOK)
    wait_indexed(world.red_admin, name, {"handbook.md"})
    patched = world.red_admin.patch(f"/knowledge-bases/{name}", json={"description": "the red handbook"})
    assert patched.status_code == 200 and patched.json()["description"] == "the red handbook"
    assert patched.json()["documents"]["indexed"] == 1
    assert world.red_admin.patch(f"/knowledge-bases/{name}", json={"embedding": "x"}).status_code == 400
    assert world.owner.delete(f"/teams/{world.red['id']}").status_code == 409  # red still owns knowledge bases
    deleted = world.red_admin.delete(f"/knowledge-bases/{name}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert world.red_admin.get(f"/knowledge-bases/{name}").status_code == 404
    entries = world.owner.get("/audit", params={"object_type": "knowledge_base"}).json()["data"]
    mine = [(e["action"], e["actor"]) for e in entries if e["object_id"] == str(kb["id"])]
    assert ("create", "red-admin") in mine and ("update", "red-admin") in mine and ("delete", "red-admin") in mine
    uploads = world.owner.get("/audit", params={"object_type": "kb_document"}).json()["data"]
    assert any(e["action"] == "upload" and e["after"]["knowledge_base"] == name for e in uploads)
