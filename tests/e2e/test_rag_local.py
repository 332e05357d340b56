# ruff: noqa: RUF001  (the Chinese texts use full-width punctuation, as Chinese does)
"""RAG with no vendor at all: a knowledge base on the bundled local embedder (all-MiniLM-L6-v2 in its worker
process), documents uploaded through the admin API and indexed in the background, then a chat request answered
with passages found by meaning (English) and by CJK keywords (Chinese, which the model cannot read)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import FULL_KEY, KEEP, PROVIDER_KEY, start_gateway, stop_gateway, wait_until
from tests.e2e.test_admin_api import ENV, Admin
from tests.fakes.openai_upstream import FakeOpenAI
from tests.store_fixtures import create_database, drop_database

KB = "local-handbook"
REMOTE = """# Working remotely

## Home office equipment
Staff who work from home may expense one ergonomic chair and one external monitor every three years.
"""
SECURITY = """# Security

## Laptops
Lock your laptop screen whenever you step away from your desk; disk encryption must stay on.
"""
CANTEEN_ZH = """# 食堂

## 营业时间
员工食堂午餐供应时间为十一点半至一点半，周末不营业。
"""


def config(upstream: int, database: str) -> str:
    return f"""
database_url: "{database}"
providers:
  fake: {{type: openai, base_url: "http://127.0.0.1:{upstream}/v1", api_key: "{PROVIDER_KEY}"}}
models:
  helpdesk: {{routes: [{{provider: fake, model: rag-local-up}}], knowledge_bases: [{KB}], {KEEP}}}
keys:
  - {{name: local-rag, key: "{FULL_KEY}"}}
"""


@dataclass
class Local:
    admin: Admin
    owner: httpx.Client
    fake: FakeOpenAI


@pytest.fixture(scope="module")
def local(fake_upstream: FakeOpenAI, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    database = asyncio.run(create_database(database_url))
    tmp = tmp_path_factory.mktemp("rag-local")
    gw = start_gateway(config(fake_upstream.port, database), tmp, ENV)
    admin = Admin(gw, tmp, database)
    owner = admin.session()
    try:
        yield Local(admin, owner, fake_upstream)
    finally:
        owner.close()
        stop_gateway(gw)
        asyncio.run(drop_database(database_url, database))


def documents(owner: httpx.Client) -> dict[str, dict[str, Any]]:
    got = owner.get(f"/knowledge-bases/{KB}/documents")
    assert got.status_code == 200, got.text
    return {d["name"]: d for d in got.json()["data"]}


def test_local_embedder_knowledge_base_answers_english_and_chinese(local: Local) -> None:
    created = local.owner.post("/knowledge-bases", json={"name": KB, "description": "HR and IT"})
    assert created.status_code == 201, created.text
    assert created.json()["embedding"] == "local"
    assert created.json()["dimensions"] == 384
    files = [("file", (n, t.encode(), "text/markdown")) for n, t in (("remote.md", REMOTE), ("security.md", SECURITY))]
    files.append(("file", ("食堂.md", CANTEEN_ZH.encode(), "text/markdown")))
    uploaded = local.owner.post(f"/knowledge-bases/{KB}/documents", files=files)
    assert uploaded.status_code == 202, uploaded.text

    def indexed() -> bool:
        return all(d["status"] == "indexed" for d in documents(local.owner).values())

    assert wait_until(indexed, timeout=120), documents(local.owner)

    client = openai.OpenAI(base_url=local.admin.gw.url + "/v1", api_key=FULL_KEY, max_retries=0)
    english = client.chat.completions.create(
        model="helpdesk", messages=[{"role": "user", "content": "Will the company pay for a new seat for my house?"}]
    )
    cited = (english.model_extra or {})["citations"]
    assert cited[0]["document"] == "remote.md"
    chinese = client.chat.completions.create(
        model="helpdesk", messages=[{"role": "user", "content": "食堂午餐几点开始供应？"}]
    )
    assert (chinese.model_extra or {})["citations"][0]["document"] == "食堂.md"

    search = local.owner.post(f"/knowledge-bases/{KB}/search", json={"query": "chair for working at home"})
    assert search.status_code == 200, search.text
    best = search.json()["data"][0]
    assert best["document"] == "remote.md"
