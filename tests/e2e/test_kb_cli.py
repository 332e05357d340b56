"""`switchyard kb` as an operator runs it: the real CLI in a subprocess, a test database of this module's own, and
an embedding alias routed to the fake upstream's deterministic bag-of-words model (it reads English and Chinese).

The database is not the session's: the session's gateway indexes every pending document in its database, and with
no alias `emb` in its config it would fail ours before the CLI indexed them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.fakes.openai_upstream import FakeOpenAI
from tests.store_fixtures import create_database, drop_database

GUIDE = """# Installing the gateway

Download the release archive, unpack it on a Linux server and run the install script.
The gateway listens on port 8000 once the install finishes.
"""
PANDAS = "大熊猫主要生活在四川的山区。大熊猫每天要吃很多竹子。竹子是它们最重要的食物。\n"


def run_kb(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "kb", args[0], "--config", str(config), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's stderr, checked to be one line and no traceback."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def kb_database_url(database_url: str) -> Iterator[str]:
    """A database for this module alone on the test server (the CLI migrates it on first use)."""
    url = asyncio.run(create_database(database_url))
    yield url
    asyncio.run(drop_database(database_url, url))


@pytest.fixture(scope="module")
def config(fake_upstream: FakeOpenAI, kb_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("kb-cli")
    path = folder / "gateway.yaml"
    path.write_text(
        f"data_dir: {folder / 'data'}\n"
        f"database_url: '{kb_database_url}'\n"
        "providers:\n"
        f"  fake: {{type: openai, base_url: 'http://127.0.0.1:{fake_upstream.port}/v1', api_key: sk-test-kb-cli}}\n"
        "models:\n"
        "  emb: {mode: embedding, routes: [{provider: fake, model: bow-64}]}\n"
        "  chat: {routes: [{provider: fake, model: echo-upstream}]}\n"
    )
    return path


@pytest.fixture
def name() -> str:
    """A knowledge base name no other test uses (the database is shared by the session)."""
    return f"kb-cli-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    """A folder with an English guide, a Chinese text in a subfolder, an unsupported file and a corrupt PDF."""
    folder = tmp_path / "docs"
    (folder / "zh").mkdir(parents=True)
    (folder / "guide.md").write_text(GUIDE)
    (folder / "zh" / "pandas.txt").write_text(PANDAS, encoding="utf-8")
    (folder / "notes.xyz").write_text("not a supported type")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a PDF at all")
    return folder


def create(config: Path, name: str) -> None:
    out = ok(run_kb(config, "create", name, "--embedding", "emb", "--description", "test documents"))
    assert f"created knowledge base {name} (embedding emb, 64 dimensions)" in out


@pytest.fixture
def filled(config: Path, name: str, documents: Path) -> subprocess.CompletedProcess[str]:
    """`kb add` of the documents folder into a new knowledge base."""
    create(config, name)
    return run_kb(config, "add", name, str(documents))


def test_add_a_folder_indexes_each_document_and_reports_failures(
    config: Path, name: str, filled: subprocess.CompletedProcess[str]
) -> None:
    assert filled.returncode == 1, filled.stdout + filled.stderr  # the corrupt PDF failed
    lines = filled.stdout.splitlines()
    assert any(re.fullmatch(r"guide\.md: indexed \(\d+ chunks?\)", line) for line in lines), lines
    assert any(re.fullmatch(r"pandas\.txt: indexed \(\d+ chunks?\)", line) for line in lines), lines
    assert any(line.startswith("broken.pdf: failed: the PDF is malformed") for line in lines), lines
    assert any("notes.xyz: skipped (not a supported type" in line for line in lines), lines
    assert "Traceback" not in filled.stderr

    (listed,) = [kb for kb in as_json(run_kb(config, "list", "--format", "json")) if kb["name"] == name]
    assert listed["embedding"] == "emb"
    assert (listed["indexed"], listed["pending"], listed["failed"]) == (2, 0, 0)
    assert listed["chunks"] >= 2
    assert listed["description"] == "test documents"
    assert name in ok(run_kb(config, "list"))

    docs = as_json(run_kb(config, "docs", name, "--format", "json"))
    assert {d["name"]: d["status"] for d in docs} == {"guide.md": "indexed", "pandas.txt": "indexed"}
    assert {d["name"]: d["language"] for d in docs} == {"guide.md": "en", "pandas.txt": "zh"}
    table = ok(run_kb(config, "docs", name))
    assert "guide.md" in table
    assert "pandas.txt" in table


def test_search_finds_the_document_in_english_and_in_chinese(
    config: Path, name: str, filled: subprocess.CompletedProcess[str]
) -> None:
    english = as_json(run_kb(config, "search", name, "how do I install the gateway on Linux", "--format", "json"))
    assert english["knowledge_base"] == name
    assert english["data"][0]["document"] == "guide.md"
    assert "install script" in english["data"][0]["text"]

    chinese = as_json(run_kb(config, "search", name, "大熊猫吃什么食物", "--top-k", "1", "--format", "json"))
    assert [hit["document"] for hit in chinese["data"]] == ["pandas.txt"]

    table = ok(run_kb(config, "search", name, "install script"))
    assert table.startswith("[1] ")
    assert "guide.md" in table.splitlines()[0]


def test_adding_the_same_files_again_changes_nothing(
    config: Path, name: str, documents: Path, filled: subprocess.CompletedProcess[str]
) -> None:
    again = run_kb(config, "add", name, str(documents / "guide.md"), str(documents / "zh"))
    assert ok(again).splitlines() == ["guide.md: unchanged", "pandas.txt: unchanged"]

    (documents / "guide.md").write_text(GUIDE + "\nUpgrade by installing the new release over the old one.\n")
    changed = ok(run_kb(config, "add", name, str(documents / "guide.md")))
    assert changed.startswith("guide.md: indexed (")


def test_no_wait_only_queues_and_a_later_add_indexes(config: Path, name: str, documents: Path) -> None:
    create(config, name)
    queued = ok(run_kb(config, "add", name, str(documents / "guide.md"), "--no-wait"))
    assert queued.startswith("guide.md: queued")
    (doc,) = as_json(run_kb(config, "docs", name, "--format", "json"))
    assert doc["status"] == "pending"

    indexed = ok(run_kb(config, "add", name, str(documents / "guide.md")))
    assert indexed.startswith("guide.md: indexed (")


def test_rm_removes_a_document_and_the_knowledge_base_only_with_yes(
    config: Path, name: str, filled: subprocess.CompletedProcess[str]
) -> None:
    assert ok(run_kb(config, "rm", name, "--document", "guide.md")).strip() == f"removed guide.md from {name}"
    assert [d["name"] for d in as_json(run_kb(config, "docs", name, "--format", "json"))] == ["pandas.txt"]
    hits = as_json(run_kb(config, "search", name, "install script", "--format", "json"))["data"]
    assert all(hit["document"] != "guide.md" for hit in hits)

    missing = run_kb(config, "rm", name, "--document", "guide.md")
    assert missing.returncode == 2
    assert "no document named 'guide.md'" in one_error_line(missing)

    unconfirmed = run_kb(config, "rm", name)
    assert unconfirmed.returncode == 2
    assert "--yes" in one_error_line(unconfirmed)
    assert name in [kb["name"] for kb in as_json(run_kb(config, "list", "--format", "json"))]

    assert ok(run_kb(config, "rm", name, "--yes")).strip() == f"removed knowledge base {name}"
    assert name not in [kb["name"] for kb in as_json(run_kb(config, "list", "--format", "json"))]


@pytest.mark.parametrize(
    "args",
    [("add", "{name}", "{file}"), ("docs", "{name}"), ("search", "{name}", "anything"), ("rm", "{name}", "--yes")],
)
def test_an_unknown_knowledge_base_is_a_usage_error(
    config: Path, name: str, documents: Path, args: tuple[str, ...]
) -> None:
    filled_in = [a.format(name=name, file=documents / "guide.md") for a in args]
    result = run_kb(config, *filled_in)
    assert result.returncode == 2
    assert f"no knowledge base named '{name}'" in one_error_line(result)
    assert result.stdout == ""


def test_create_refuses_bad_input_with_one_line(config: Path, name: str) -> None:
    unknown_alias = run_kb(config, "create", name, "--embedding", "chat")
    assert unknown_alias.returncode == 2
    assert "no embedding alias named 'chat'" in one_error_line(unknown_alias)

    bad_name = run_kb(config, "create", "no spaces allowed", "--embedding", "emb")
    assert bad_name.returncode == 2
    assert "knowledge base name" in one_error_line(bad_name)

    overlap = run_kb(config, "create", name, "--embedding", "emb", "--chunk-tokens", "64", "--chunk-overlap", "64")
    assert overlap.returncode == 2
    assert "overlap" in one_error_line(overlap)

    no_team = run_kb(config, "create", name, "--embedding", "emb", "--team", f"team-{name}")
    assert no_team.returncode == 2
    assert f"no team named 'team-{name}'" in one_error_line(no_team)

    create(config, name)
    taken = run_kb(config, "create", name, "--embedding", "emb")
    assert taken.returncode == 1
    assert "already exists" in one_error_line(taken)


def test_a_missing_path_is_a_usage_error(config: Path, name: str, tmp_path: Path) -> None:
    create(config, name)
    result = run_kb(config, "add", name, str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "no such file or directory" in one_error_line(result)


def test_an_unreachable_embedder_fails_without_a_traceback_or_secret(config: Path, name: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(config.read_text().replace("model: bow-64", "model: fail-500"))
    result = run_kb(broken, "create", name, "--embedding", "emb")
    assert result.returncode == 1
    line = one_error_line(result)
    assert "the embedding alias 'emb' failed" in line
    assert "sk-test-kb-cli" not in result.stdout + result.stderr


def test_an_unreachable_database_is_one_line_without_its_password(config: Path, tmp_path: Path) -> None:
    closed = tmp_path / "closed.yaml"
    text = config.read_text().splitlines()
    port = free_port()
    url = f"postgresql+asyncpg://switchyard:pw-canary-51d7@127.0.0.1:{port}/switchyard"
    closed.write_text("\n".join(f"database_url: '{url}'" if line.startswith("database_url") else line for line in text))
    result = run_kb(closed, "list")
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith("kb list: database: cannot connect")
    assert "pw-canary-51d7" not in result.stdout + result.stderr
