"""Deploying a fine-tuned adapter from the admin API: a succeeded job's adapter is loaded into (a fake of) vLLM's
runtime LoRA API and served behind a new model alias that the `openai` SDK can call through the gateway at once;
undeploy removes both. A real LLaMA-Factory run is not needed here (tests/e2e/test_trainer_cli.py does one): the
job record and its adapter files are written as the scheduler writes them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import FULL_KEY, KEEP, start_gateway, stop_gateway, wait_until
from tests.e2e.test_admin_api import ENV, Admin
from tests.fakes.vllm_server import FakeVLLM
from tests.store_fixtures import create_database, drop_database
from trainer.store import JobRecord, TrainerStore


@dataclass
class World:
    admin: Admin
    owner: httpx.Client
    vllm: FakeVLLM
    store: TrainerStore


def config(database: str, vllm: FakeVLLM, data_dir: Path, base: Path) -> str:
    return f"""
database_url: "{database}"
data_dir: "{data_dir}"
providers:
  local-vllm: {{type: vllm, base_url: "{vllm.base_url}"}}
models:
  base-chat: {{routes: [{{provider: local-vllm, model: tiny-base}}], {KEEP}}}
keys:
  - {{name: deploy-app, key: "{FULL_KEY}"}}
trainer: {{base_models: {{tiny: "{base}"}}}}
"""


def finished_job(store: TrainerStore, name: str, status: str = "succeeded") -> None:
    """A job record and adapter folder as the scheduler leaves them after a LoRA run."""
    spec = {"name": name, "base_model": "tiny", "dataset": "rows", "method": "lora", "template": "qwen"}
    store.add_job(JobRecord(name, spec))
    output = store.job_dir(name) / "output"
    output.mkdir()
    (output / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 8}')
    (output / "adapter_model.safetensors").write_bytes(b"weights")
    adapter = {"path": str(output), "files": ["adapter_config.json", "adapter_model.safetensors"]}
    store.update_job(name, status=status, finished_at=time.time(), adapter=adapter if status == "succeeded" else None)


@pytest.fixture(scope="module")
def world(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("admin-deploy")
    database = asyncio.run(create_database(database_url))
    base = tmp / "tiny-base"
    base.mkdir()
    vllm = FakeVLLM(root=str(base))
    vllm.start()
    gw = start_gateway(config(database, vllm, tmp / "data", base), tmp, ENV)
    admin = Admin(gw, tmp, database)
    owner = admin.session()
    try:
        yield World(admin, owner, vllm, TrainerStore(tmp / "data" / "trainer"))
    finally:
        owner.close()
        stop_gateway(gw)
        vllm.stop()
        asyncio.run(drop_database(database_url, database))


def test_deploy_serves_the_adapter_behind_a_new_alias_and_undeploy_removes_it(world: World) -> None:
    finished_job(world.store, "support-v1")
    deployed = world.owner.post(
        "/training/jobs/support-v1/deploy", json={"provider": "local-vllm", "alias": "support-tuned"}
    )
    assert deployed.status_code == 200, deployed.text
    assert deployed.json()["deployed"]["alias"] == "support-tuned"
    assert "support-v1" in world.vllm.loaded()
    client = openai.OpenAI(base_url=world.admin.gw.url + "/v1", api_key=FULL_KEY, max_retries=0)

    def served() -> bool:
        try:
            client.chat.completions.create(model="support-tuned", messages=[{"role": "user", "content": "hi"}])
        except openai.NotFoundError:
            return False
        return True

    assert wait_until(served, timeout=10)
    assert world.vllm.recorder.bodies_for("support-v1"), "the adapter's name never reached vLLM"
    models = world.owner.get("/models").json()["data"]
    assert "support-tuned" in [m["alias"] for m in models]
    audit = world.owner.get("/audit").json()["data"]
    assert any(e["object_type"] == "model" and e["object_id"] == "support-tuned" for e in audit)

    undeployed = world.owner.post("/training/jobs/support-v1/undeploy")
    assert undeployed.status_code == 200, undeployed.text
    assert undeployed.json()["deployed"] is None
    assert "support-v1" not in world.vllm.loaded()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="support-tuned", messages=[{"role": "user", "content": "hi"}])


def test_deploy_refuses_what_cannot_be_served(world: World) -> None:
    finished_job(world.store, "broken-run", status="failed")
    finished_job(world.store, "good-run")
    cases = [
        ("broken-run", {"provider": "local-vllm", "alias": "x-broken"}, 400, "not_ready"),
        ("good-run", {"provider": "nope", "alias": "x-good"}, 400, "unknown_provider"),
        ("good-run", {"provider": "local-vllm", "alias": "base-chat"}, 400, "conflict"),
        ("no-such-job", {"provider": "local-vllm", "alias": "x"}, 404, None),
    ]
    for job, body, status, code in cases:
        got = world.owner.post(f"/training/jobs/{job}/deploy", json=body)
        assert got.status_code == status, (job, body, got.text)
        if code:
            assert got.json()["error"]["code"] == code
    assert "good-run" not in world.vllm.loaded()
    assert world.owner.post("/training/jobs/good-run/undeploy").json()["error"]["code"] == "not_deployed"
