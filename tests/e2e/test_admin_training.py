"""Fine-tuning through the admin API on the real server and a real PostgreSQL: base models, dataset uploads
(multipart and raw, a refused one with its rows and fields, the size limit), job validation, a real LoRA run of the
tiny model in the gateway's own scheduler watched through its metrics and its event stream, a long run cancelled
with its whole process group, hostile names, roles, and tenancy (another team's dataset or job is a 404).

Training runs LLaMA-Factory from .venv-trainer (`make trainer-env`) on the tiny random model of `trainer.tiny`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import start_gateway, stop_gateway
from tests.e2e.test_admin_api import ENV, Admin, make_user
from tests.store_fixtures import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-trainer"
LIMIT = 64 * 1024
RUN_S = 300.0
"""Upper bound for a 6-step run of the tiny model (LLaMA-Factory's imports take ~10 s): a hang fails, not waits."""
SHORT = {"max_steps": 6, "cutoff_len": 64}


def config(database: str, model: Path, data_dir: Path) -> str:
    return f"""
database_url: "{database}"
data_dir: "{data_dir}"
trainer: {{base_models: {{tiny: "{model}"}}, max_dataset_bytes: {LIMIT}}}
"""


@dataclass
class World:
    """The gateway, an owner, and two teams (red, blue) with their users' sessions."""

    admin: Admin
    owner: httpx.Client
    red: dict[str, Any]
    red_admin: httpx.Client
    red_viewer: httpx.Client
    blue_admin: httpx.Client


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2 model, built once in .venv-trainer by `python -m trainer.tiny`."""
    assert (VENV / "bin" / "llamafactory-cli").exists(), "run `make trainer-env` (creates .venv-trainer)"
    out = tmp_path_factory.mktemp("tiny") / "model"
    command = [str(VENV / "bin" / "python"), "-m", "trainer.tiny", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def world(database_url: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    database = asyncio.run(create_database(database_url))
    tmp = tmp_path_factory.mktemp("admin-training")
    gw = start_gateway(config(database, tiny_model, tmp / "data"), tmp, ENV)
    admin = Admin(gw, tmp, database)
    clients: list[httpx.Client] = []
    try:
        owner = admin.session()
        clients.append(owner)
        red = owner.post("/teams", json={"name": "red"}).json()
        blue = owner.post("/teams", json={"name": "blue"}).json()
        for name, role, team in (
            ("red-admin", "admin", red),
            ("red-viewer", "viewer", red),
            ("blue-admin", "admin", blue),
        ):
            make_user(owner, name, role, team["id"])
            clients.append(admin.session(name, f"{name}-Passw0rd-long"))
        yield World(admin, owner, red, *clients[1:])
    finally:
        for client in clients:
            client.close()
        stop_gateway(gw)
        asyncio.run(drop_database(database_url, database))


def alpaca(rows: int) -> bytes:
    lines = [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": str(2 * i + 1)} for i in range(rows)]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def preference(rows: int) -> bytes:
    lines = [{"instruction": f"Say {i}.", "chosen": str(i), "rejected": str(i + 1)} for i in range(rows)]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def upload(client: httpx.Client, name: str, data: bytes, filename: str = "train.jsonl") -> httpx.Response:
    return client.post(
        "/training/datasets", files=[("file", (filename, data, "application/jsonl"))], data={"name": name}
    )


def upload_raw(client: httpx.Client, name: str, data: bytes, filename: str = "train.jsonl") -> httpx.Response:
    params = {"name": name, "filename": filename}
    headers = {"Content-Type": "application/octet-stream"}
    return client.post("/training/datasets", params=params, content=data, headers=headers)


@pytest.fixture(scope="module")
def sums(world: World) -> str:
    """Red's 64-row alpaca dataset."""
    got = upload(world.red_admin, "sums", alpaca(64))
    assert got.status_code == 201, got.text
    return "sums"


def new_job(client: httpx.Client, name: str, dataset: str, **fields: Any) -> httpx.Response:
    return client.post("/training/jobs", json={"name": name, "base_model": "tiny", "dataset": dataset, **fields})


def job(client: httpx.Client, name: str) -> dict[str, Any]:
    got = client.get(f"/training/jobs/{name}")
    assert got.status_code == 200, got.text
    return dict(got.json())


def wait_job(client: httpx.Client, name: str, done: Callable[[dict[str, Any]], Any], timeout: float) -> dict[str, Any]:
    """Poll the job twice a second until `done(record)`; fails with the last record after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done(record := job(client, name)):
        assert time.monotonic() < deadline, record
        time.sleep(0.5)
    return record


def read_events(
    client: httpx.Client, name: str, deadline: float, hang_up_on: str | None = None
) -> list[tuple[str, Any]]:
    """The job's Server-Sent Events as (event, data) until the stream ends, or the first `hang_up_on` event."""
    events: list[tuple[str, Any]] = []
    kind, data = "message", []
    with client.stream("GET", f"/training/jobs/{name}/events", timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            assert time.monotonic() < deadline, f"the event stream did not end: {events[-3:]}"
            if line:
                field, _, value = line.partition(":")
                kind = value.strip() if field == "event" else kind
                data += [value.removeprefix(" ")] if field == "data" else []
                continue
            if data:
                events.append((kind, json.loads("\n".join(data))))
            kind, data = "message", []
            if events and events[-1][0] == hang_up_on:
                break
    return events


# --- base models, dashboard -----------------------------------------------------------------------------------


def test_base_models_and_the_dashboard(world: World, tiny_model: Path) -> None:
    seen = world.red_viewer.get("/training/base-models").json()
    assert seen["data"] == [{"name": "tiny"}] and seen["devices"] == ["cpu"] and seen["gpu"] is False
    assert world.red_admin.get("/training/base-models").json()["data"] == [{"name": "tiny", "path": str(tiny_model)}]
    board = world.red_viewer.get("/training/dashboard").json()
    assert board["url"] == "http://127.0.0.1:5092"
    assert board["command"] == "switchyard trainer dashboard --config gateway.yaml"
    config = str(world.admin.tmp / "gateway.yaml")
    assert world.red_admin.get("/training/dashboard").json()["command"].endswith(f"--config {config}")


# --- datasets -------------------------------------------------------------------------------------------------


def test_dataset_upload_preview_and_visibility(world: World, sums: str) -> None:
    record = world.red_viewer.get(f"/training/datasets/{sums}").json()
    assert record["format"] == "alpaca" and record["rows"] == 64 and record["preference"] is False
    assert record["team_id"] == world.red["id"] and record["created_by"] == "red-admin"
    raw = upload_raw(world.red_admin, "raw-pairs", preference(3))
    assert raw.status_code == 201, raw.text
    report = raw.json()["validation"]
    assert report["ok"] and report["format"] == "alpaca" and report["preference"] and report["row_count"] == 3
    assert report["preview"][0]["turns"] == [{"role": "user", "content": "Say 0."}]
    assert report["preview"][0]["chosen"] == "0" and report["stats"]["max_chars"] > 0
    preview = world.red_viewer.get(f"/training/datasets/{sums}/preview", params={"rows": 2}).json()
    assert [row["row"] for row in preview["data"]] == [1, 2]
    assert preview["data"][1]["turns"] == [
        {"role": "user", "content": "Add 1 and 2."},
        {"role": "assistant", "content": "3"},
    ]
    assert world.red_viewer.get(f"/training/datasets/{sums}/preview", params={"rows": 0}).status_code == 400
    again = upload(world.red_admin, sums, alpaca(2))
    assert again.status_code == 409 and again.json()["error"]["param"] == "name"
    assert {d["name"] for d in world.red_viewer.get("/training/datasets").json()["data"]} >= {sums, "raw-pairs"}
    assert world.blue_admin.get("/training/datasets").json()["data"] == []
    for path in (f"/training/datasets/{sums}", f"/training/datasets/{sums}/preview"):
        assert world.blue_admin.get(path).status_code == 404
    assert world.blue_admin.delete("/training/datasets/raw-pairs").status_code == 404
    assert world.red_viewer.delete("/training/datasets/raw-pairs").status_code == 403
    assert world.red_admin.delete("/training/datasets/raw-pairs").json() == {"name": "raw-pairs", "deleted": True}
    assert world.red_admin.get("/training/datasets/raw-pairs").status_code == 404
    shared = upload(world.owner, "shared-sums", alpaca(4))
    assert shared.status_code == 201 and shared.json()["team_id"] is None
    assert world.blue_admin.get("/training/datasets/shared-sums").status_code == 200  # team-less: every team sees it
    assert world.blue_admin.delete("/training/datasets/shared-sums").status_code == 403  # the owners' to change


def test_a_bad_dataset_is_refused_with_its_rows_and_fields(world: World) -> None:
    rows = [
        json.dumps({"instruction": "fine", "output": "ok"}),
        json.dumps({"instruction": "no answer"}),
        "{not json",
        json.dumps({"instruction": 7, "output": "x"}),
    ]
    got = upload(world.red_admin, "broken", "\n".join(rows).encode())
    assert got.status_code == 400, got.text
    error = got.json()["error"]
    assert error["code"] == "invalid_dataset" and error["type"] == "invalid_request_error"
    problems = {(e["row"], e["field"]) for e in error["errors"]}
    assert {(2, "output"), (3, ""), (4, "instruction")} <= problems
    assert all(set(e) == {"row", "field", "message"} for e in error["errors"])
    assert world.red_admin.get("/training/datasets/broken").status_code == 404  # nothing was stored
    many = b"".join(json.dumps({"instruction": "x"}).encode() + b"\n" for _ in range(150))
    capped = upload_raw(world.red_admin, "many-bad", many)
    assert capped.status_code == 400 and len(capped.json()["error"]["errors"]) == 100
    assert upload(world.red_admin, "empty", b"").json()["error"]["code"] == "invalid_dataset"


def test_an_upload_over_the_limit_is_a_413(world: World) -> None:
    big = alpaca(2000)
    assert len(big) > LIMIT
    for too_big in (
        upload_raw(world.red_admin, "big-raw", big),
        world.red_admin.post("/training/datasets", params={"name": "big-chunked"}, content=iter([big])),
        upload(world.red_admin, "big-multipart", big),
    ):
        assert too_big.status_code == 413, too_big.text
        assert too_big.json()["error"]["code"] == "request_too_large"
    no_name = world.red_admin.post("/training/datasets", content=alpaca(2))
    assert no_name.status_code == 400 and no_name.json()["error"]["param"] == "name"
    names = {d["name"] for d in world.owner.get("/training/datasets").json()["data"]}
    assert not names & {"big-raw", "big-chunked", "big-multipart"}


@pytest.mark.parametrize("name", ["x;rm -rf ~", "../etc", "$(id)", "a b", ".hidden", "a/b", "`id`", "x" * 101])
def test_hostile_dataset_names_are_refused(world: World, name: str) -> None:
    for got in (upload(world.red_admin, name, alpaca(2)), upload_raw(world.red_admin, name, alpaca(2))):
        assert got.status_code == 400, got.text
        assert got.json()["error"]["param"] == "name"


# --- jobs -----------------------------------------------------------------------------------------------------


def test_job_validation_names_the_field(world: World, sums: str) -> None:
    assert upload(world.red_admin, "pairs", preference(4)).status_code == 201
    upload(world.blue_admin, "blue-sums", alpaca(4))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"base_model": "huge"}, "base_model"),
        ({"base_model": "../tiny"}, "base_model"),
        ({"dataset": "missing"}, "dataset"),
        ({"dataset": "blue-sums"}, "dataset"),  # another team's: refused like a missing one
        ({"dataset": "../sums"}, "dataset"),
        ({"stage": "dpo"}, "dataset"),  # DPO needs preference data
        ({"dataset": "pairs"}, "dataset"),  # SFT does not take it
        ({"name": "job;id"}, "name"),
        ({"name": "../../x"}, "name"),
        ({"template": "qwen; rm -rf /"}, "template"),
        ({"method": "qlora"}, "method"),  # no GPU here
        ({"hyper": {"lora_target": "all --deepspeed x"}}, "hyper.lora_target"),
        ({"hyper": {"max_steps": 0}}, "hyper.max_steps"),
        ({"hyper": {"colour": 1}}, "hyper.colour"),
    ]
    for fields, param in cases:
        body = {"name": "checked", "base_model": "tiny", "dataset": sums} | fields
        got = world.red_admin.post("/training/jobs", json=body)
        assert got.status_code == 400, (fields, got.text)
        assert got.json()["error"]["param"] == param, (fields, got.json())
    missing = world.red_admin.post("/training/jobs", json={"name": "m", "base_model": "tiny", "dataset": "nope"})
    hidden = world.red_admin.post("/training/jobs", json={"name": "m", "base_model": "tiny", "dataset": "blue-sums"})
    assert missing.json()["error"]["message"].replace("nope", "X") == hidden.json()["error"]["message"].replace(
        "blue-sums", "X"
    )
    assert (
        world.red_viewer.post("/training/jobs", json={"name": "v", "base_model": "tiny", "dataset": sums}).status_code
        == 403
    )
    assert world.red_admin.get("/training/jobs").json()["data"] == []  # nothing was queued
    for path in ("/training/jobs/$(id)", "/training/jobs/a;b", "/training/datasets/a%20b"):
        assert world.red_admin.get(path).status_code == 400, path


def test_a_job_runs_to_success_with_live_metrics(world: World, sums: str) -> None:
    created = new_job(world.red_admin, "sums-lora", sums, hyper=SHORT)
    assert created.status_code == 201, created.text
    record = created.json()
    spec = record["spec"]
    assert (spec["stage"], spec["method"], spec["template"]) == ("sft", "lora", "qwen")
    assert spec["hyper"]["max_steps"] == 6 and spec["hyper"]["cutoff_len"] == 64 and spec["hyper"]["lora_rank"] == 8
    assert record["status"] == "queued" and record["team_id"] == world.red["id"] and record["created_by"] == "red-admin"
    assert new_job(world.red_admin, "sums-lora", sums).status_code == 409
    assert world.red_admin.delete(f"/training/datasets/{sums}").status_code == 409  # a queued job needs it
    assert world.red_admin.delete("/training/jobs/sums-lora").status_code == 409  # not final yet
    events = read_events(world.red_viewer, "sums-lora", time.monotonic() + RUN_S)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "status" and events[-1][1]["status"] == "succeeded", events[-1]
    metrics = [data for kind, data in events if kind == "metric"]
    assert [m["current_steps"] for m in metrics if m["loss"] is not None][-1] == 6
    assert kinds.index("metric") < len(kinds) - 1
    done = job(world.red_admin, "sums-lora")
    assert done["status"] == "succeeded" and done["final"] and done["error"] is None, done
    assert done["metrics"]["current_steps"] == 6 and done["metrics"]["loss"] is not None
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(done["adapter"]["files"])
    assert "path" in done["adapter"] and "path" not in job(world.red_viewer, "sums-lora")["adapter"]
    charted = world.red_viewer.get("/training/jobs/sums-lora/metrics").json()
    losses = [m["loss"] for m in charted["data"] if m["loss"] is not None]
    assert len(losses) == 6 and all(isinstance(loss, float) for loss in losses)
    log = world.red_viewer.get("/training/jobs/sums-lora/logs", params={"tail_bytes": 200})
    assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain")
    assert 0 < len(log.content) <= 200 and log.headers["x-content-type-options"] == "nosniff"
    assert [j["name"] for j in world.red_viewer.get("/training/jobs").json()["data"]] == ["sums-lora"]
    assert world.blue_admin.get("/training/jobs").json()["data"] == []
    for path in ("", "/logs", "/metrics", "/events"):
        assert world.blue_admin.get(f"/training/jobs/sums-lora{path}").status_code == 404, path
    assert world.blue_admin.post("/training/jobs/sums-lora/cancel").status_code == 404
    assert world.blue_admin.delete("/training/jobs/sums-lora").status_code == 404
    assert world.red_admin.post("/training/jobs/sums-lora/cancel").status_code == 409  # already final
    assert world.red_viewer.delete("/training/jobs/sums-lora").status_code == 403
    assert world.red_admin.delete("/training/jobs/sums-lora").json() == {"name": "sums-lora", "deleted": True}
    assert world.red_admin.get("/training/jobs/sums-lora").status_code == 404
    audit = world.owner.get("/audit", params={"object_type": "training_job"}).json()["data"]
    assert {(e["action"], e["object_id"]) for e in audit} >= {("create", "sums-lora"), ("delete", "sums-lora")}


def test_a_long_job_is_cancelled_with_its_process_group(world: World, sums: str) -> None:
    assert new_job(world.red_admin, "sums-long", sums, hyper={"max_steps": 2000, "cutoff_len": 64}).status_code == 201
    first = read_events(world.red_viewer, "sums-long", time.monotonic() + RUN_S, hang_up_on="metric")
    assert first[0][0] == "status" and first[-1][1]["loss"] is not None, first
    running = wait_job(world.red_admin, "sums-long", lambda j: j["status"] == "running" and j["metrics"], RUN_S)
    pid = running["pid"]
    assert isinstance(pid, int) and pid > 0
    assert world.red_viewer.post("/training/jobs/sums-long/cancel").status_code == 403
    assert world.blue_admin.post("/training/jobs/sums-long/cancel").status_code == 404
    cancelled = world.red_admin.post("/training/jobs/sums-long/cancel", timeout=60)
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["cancel_requested"] is True
    final = wait_job(world.red_admin, "sums-long", lambda j: j["final"], timeout=60)
    assert final["status"] == "cancelled" and final["adapter"] is None, final
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    events = read_events(world.red_viewer, "sums-long", time.monotonic() + 30)
    assert events[-1][0] == "status" and events[-1][1]["status"] == "cancelled"
